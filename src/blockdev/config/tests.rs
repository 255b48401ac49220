use super::values::parse_rel_size;
use super::*;

const EFI: &str = "
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 550MiB
        mkfs:
          type: vfat
          mount:
            mount_point: /boot/efi
            fstab:
              options: \"defaults\"
              fsck-passno: 2
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: root
        type: '8300'
        size: 100%
        mkfs:
          label: cloudimg-rootfs
          mount:
            mount_point: /
            fstab:
              options: \"defaults\"
              fsck-passno: 1
";

const FLAT: &str = "
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 550MiB
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: root
        type: '8300'
        size: 100%
- mkfs:
    name: mkfs_ESP
    base: ESP
    type: vfat
- mount:
    base: mkfs_ESP
    mount_point: /boot/efi/
- fstab:
    base: mount_mkfs_ESP
    options: defaults
    fsck-passno: 2
- mkfs:
    name: mkfs_root
    base: root
    label: cloudimg-rootfs
- mount:
    name: mount_root
    base: mkfs_root
    mount_point: /
- fstab:
    base: mount_root
    options: defaults
    fsck-passno: 1
";

#[test]
fn nested_and_flat_forms_agree() {
    let a = parse(EFI, "t").unwrap();
    let b = parse(FLAT, "t").unwrap();
    assert_eq!(a, b);
    let t = a.table.as_ref().unwrap();
    assert_eq!(t.label, Label::Gpt);
    assert_eq!(t.align, 1 << 20);
    let types: Vec<_> = t.partitions.iter().map(|p| p.ptype).collect();
    assert_eq!(types, [PartType::Esp, PartType::BiosBoot, PartType::Linux]);
    assert_eq!(t.partitions[0].size, Size::Bytes(550 << 20));
    assert_eq!(t.partitions[2].size, Size::Percent(100.0));
    let esp = &a.filesystems[0];
    assert_eq!(esp.kind, Some(FsType::Vfat));
    assert_eq!(esp.mount_point.as_deref(), Some("/boot/efi"));
    assert_eq!(esp.fstab.as_ref().unwrap().fsck_passno, 2);
    let root = &a.filesystems[1];
    assert_eq!(root.kind, None);
    assert_eq!(root.label.as_deref(), Some("cloudimg-rootfs"));
}

#[test]
fn sizes() {
    assert_eq!(parse_abs_size("8MiB").unwrap(), 8 << 20);
    assert_eq!(parse_abs_size("1.5GiB").unwrap(), 3 << 29);
    assert_eq!(parse_abs_size("4096").unwrap(), 4096);
    // DIB's decimal units.
    assert_eq!(parse_abs_size("2G").unwrap(), 2_000_000_000);
    assert_eq!(parse_abs_size("3MB").unwrap(), 3_000_000);
    assert!(parse_abs_size("2 parsecs").is_err());
    assert!(parse_abs_size("-1M").is_err());
    assert_eq!(parse_rel_size("50%").unwrap(), Size::Percent(50.0));
    assert!(parse_rel_size("150%").is_err());
}

#[test]
fn lvm_says_whether_the_kernel_lacks_device_mapper() {
    assert!(lvm_unsupported(" 10 loop-control\n").contains("lacks (no device-mapper"));
    assert!(lvm_unsupported("236 device-mapper\n").contains("neither backend"));
}

#[test]
fn errors_name_the_node_and_key() {
    let cases: &[(&str, &str)] = &[
            ("- lvm: {name: lvm}", "LVM ('lvm' node)"),
            ("- frobnicate: {}", "unknown node type \"frobnicate\""),
            (
                "- partitioning: {base: image0, label: mbr, partitions: [{name: root}]}",
                "partition 'root': 'size' is missing",
            ),
            (
                "- partitioning: {base: image0, label: zfs, partitions: []}",
                "'label' must be mbr or gpt",
            ),
            (
                "- partitioning: {base: image0, label: mbr, partitions: [{name: r, size: 1G, flags: [fast]}]}",
                "partition 'r': unknown flag",
            ),
            (
                "- partitioning: {base: image0, label: mbr, partitions: [{name: r, size: 1G, mkfs: {type: zfs}}]}",
                "mkfs 'mkfs_r': unknown 'type' \"zfs\"",
            ),
            (
                "- mkfs: {base: nowhere, mount: {mount_point: /}}",
                "mkfs 'mkfs_nowhere': 'base' 'nowhere' is not a partition",
            ),
            ("- mkfs: {base: image0}", "no filesystem is mounted at '/'"),
            (
                "- mkfs: {base: image0, sizes: 3, mount: {mount_point: /}}",
                "unknown key 'sizes'",
            ),
            (
                "- mkfs: {base: image0, type: vfat, label: waytoolongforfat, mount: {mount_point: /}}",
                "longer than vfat allows",
            ),
            ("- mkfs: {base: image0, uuid: nope, mount: {mount_point: /}}", "is not a UUID"),
            ("[1, 2", "is not valid YAML"),
            (
                "- partitioning: {label: mbr, partitions: [{name: r, size: 1G, type: 0x83}]}",
                "partition 'r': 'type' 131 is a number to YAML",
            ),
            (
                "- partitioning: {label: gpt, partitions: [{name: a, size: 1G, mkfs: {label: x}}, {name: b, size: 1G, mkfs: {label: x, mount: {mount_point: /}}}]}",
                "two filesystems are labelled \"x\"",
            ),
        ];
    for (yaml, want) in cases {
        let err = format!("{:#}", parse(yaml, "DIB_BLOCK_DEVICE_CONFIG").unwrap_err());
        assert!(err.contains(want), "{yaml}\n  gave: {err}\n  want: {want}");
        assert!(err.contains("DIB_BLOCK_DEVICE_CONFIG"), "{err}");
    }
}

#[test]
fn mbr_types_and_limits() {
    let c = parse(
            "- partitioning:\n    label: mbr\n    partitions:\n      - {name: root, size: 100%, flags: [boot, primary], type: '0x83', mkfs: {mount: {mount_point: /}}}\n",
            "t",
        )
        .unwrap();
    let p = &c.table.unwrap().partitions[0];
    assert!(p.boot && p.primary);
    assert_eq!(p.ptype, PartType::Linux);
    let five = (1..=5)
        .map(|i| format!("{{name: p{i}, size: 10%}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let err = parse(
        &format!("- partitioning: {{label: mbr, partitions: [{five}]}}"),
        "t",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("use label: gpt"));
}

#[test]
fn default_is_one_filesystem_on_the_image() {
    let c = default_config();
    assert!(c.table.is_none());
    assert_eq!(c.filesystems[0].base, "image0");
    assert_eq!(c.filesystems[0].mount_point.as_deref(), Some("/"));
}
