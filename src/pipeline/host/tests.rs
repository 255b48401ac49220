use super::*;
use crate::config::OutputType;

#[test]
fn the_tools_a_build_needs_follow_its_outputs_and_filesystems() {
    let outs: Vec<Output> = ["qcow2", "vhd", "tar", "squashfs"]
        .iter()
        .map(|t| Output::new(OutputType::parse(t).unwrap(), "/o/x").unwrap())
        .collect();
    let (config, _) = crate::blockdev::select(
        None,
        &[(
            "block-device-efi".to_string(),
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/elements/block-device-efi"
            )),
        )],
        "amd64",
    )
    .unwrap();
    let disk = DiskJob {
        config,
        origin: "t".into(),
        backend: Backend::Offline,
        uuid_seed: None,
        options: crate::blockdev::test_options(),
    };
    let names = needed_tools(&outs, Some(&disk));
    assert_eq!(
        names,
        [
            "mkfs.fat",
            "mcopy",
            "mkfs.ext4",
            "qemu-img",
            "tar",
            "mksquashfs"
        ]
    );
    assert!(needed_tools(&[], None).is_empty());
}

#[test]
fn every_tool_dib_runs_is_on_the_host_tool_list() {
    // What scripts/prepare-host installs and checks, and what dib's
    // errors name: the same list.
    for tool in [
        "mkfs.ext2",
        "mkfs.ext3",
        "mkfs.ext4",
        "mkfs.fat",
        "mkfs.xfs",
        "mkswap",
        "mcopy",
        "tar",
        "mksquashfs",
        "cp",
        "qemu-img",
        "depmod",
        "debugfs",
        "newuidmap",
        "newgidmap",
        "mmdebstrap",
        "curl",
    ] {
        assert!(
            dib_sandbox::host_tools::package(tool).is_some(),
            "{tool} is not in sandbox/host-tools.txt"
        );
    }
}

#[test]
fn tmpfs_when_memory_allows() {
    let meminfo = |gib: u64| format!("MemTotal:       {} kB\nMemFree: 1 kB\n", gib * 1024 * 1024);
    // (policy, MemTotal in GiB, expected)
    let cases = [
        (Tmpfs::WhenMemoryAtLeastTwice(2.0), 4, true),
        (Tmpfs::WhenMemoryAtLeastTwice(2.0), 3, false),
        (Tmpfs::WhenMemoryAtLeastTwice(1.5), 3, true),
        (Tmpfs::WhenMemoryAtLeastTwice(8.0), 24, true),
        (Tmpfs::Never, 24, false),
    ];
    for (policy, gib, want) in cases {
        assert_eq!(
            use_tmpfs(policy, &meminfo(gib)),
            want,
            "{policy:?} with {gib} GiB"
        );
    }
    assert!(!use_tmpfs(Tmpfs::WhenMemoryAtLeastTwice(2.0), "garbage"));
}
