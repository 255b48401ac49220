use super::super::config::{default_config, parse};
use super::mkfs_options::split as split_mkfs_options;
use super::size::need;
use super::*;

/// Counting identifiers, so layouts compare exactly.
struct Seq(u32);
impl Ids for Seq {
    fn uuid(&mut self) -> String {
        self.0 += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.0)
    }
    fn vfat_id(&mut self) -> String {
        self.0 += 1;
        format!("0000-{:04X}", self.0)
    }
}

fn opts() -> Options {
    Options {
        image_size: None,
        extra_size: 0,
        fs_type: FsType::Ext4,
        root_label: "cloudimg-rootfs".into(),
        journal: None,
        mkfs_options: vec![],
        max_online_resize: None,
        helper: false,
    }
}

fn usage(pairs: &[(&str, u64)]) -> Usage {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

const EFI: &str = include_str!("../../../elements/block-device-efi/block-device-default.yaml");
const MBR: &str = include_str!("../../../elements/block-device-mbr/block-device-default.yaml");

#[test]
fn a_seed_gives_the_same_identifiers_every_time() {
    let c = crate::blockdev::config::parse(
        include_str!("../../../elements/block-device-efi/block-device-default.yaml"),
        "t",
    )
    .unwrap();
    let u = usage(&[("/", 10 << 20)]);
    let a = plan(&c, &opts(), &u, &mut SeededIds::new("x")).unwrap();
    let b = plan(&c, &opts(), &u, &mut SeededIds::new("x")).unwrap();
    let other = plan(&c, &opts(), &u, &mut SeededIds::new("y")).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.disk_id, other.disk_id);
    assert_ne!(a.root().uuid, other.root().uuid);
    uuid::Uuid::parse_str(&a.root().uuid).unwrap();
}

#[test]
fn root_is_content_over_fill_plus_journal_rounded() {
    let l = plan(
        &default_config(),
        &opts(),
        &usage(&[("/", 600 * MIB)]),
        &mut Seq(0),
    )
    .unwrap();
    assert_eq!(l.size, 1000 * MIB + DEFAULT_JOURNAL);
    assert_eq!(l.size % ROUND, 0);
    let root = l.root();
    assert_eq!((root.offset, root.size, root.partition), (0, l.size, None));
    assert_eq!(root.label.as_deref(), Some("cloudimg-rootfs"));
    assert_eq!(root.max_online_resize, Some(1 << 50));
}

#[test]
fn mbr_layout_puts_root_at_one_mib_with_room_for_grub() {
    let c = parse(MBR, "t").unwrap();
    let l = plan(&c, &opts(), &usage(&[("/", 300 * MIB)]), &mut Seq(0)).unwrap();
    assert_eq!(l.label, Some(Label::Mbr));
    let p = &l.partitions[0];
    assert_eq!((p.number, p.start, p.boot), (1, MIB, true));
    assert!(p.start + p.size <= l.size);
    assert!(p.size >= need(FsType::Ext4, 300 * MIB, 0, None));
    assert_eq!(l.bios_boot_area(), Some((1, 2047)));
    assert_eq!(l.root().offset, MIB);
}

#[test]
fn efi_layout_sizes_the_esp_and_the_root() {
    let c = parse(EFI, "t").unwrap();
    let l = plan(
        &c,
        &opts(),
        &usage(&[("/", 400 * MIB), ("/boot/efi", 5 * MIB)]),
        &mut Seq(0),
    )
    .unwrap();
    let names: Vec<_> = l
        .partitions
        .iter()
        .map(|p| (p.name.as_str(), p.number))
        .collect();
    assert_eq!(names, [("ESP", 1), ("BSP", 2), ("root", 3)]);
    assert_eq!(l.partitions[0].size, 550 * MIB);
    assert_eq!(
        l.bios_boot_area(),
        Some((l.partitions[1].start / 512, 8 * MIB / 512))
    );
    let root = l.root();
    assert!(root.size >= need(FsType::Ext4, 400 * MIB, 0, None));
    // GPT's backup table fits after the last partition.
    assert!(root.offset + root.size + 33 * 512 <= l.size);
    let esp = &l.filesystems[0];
    assert_eq!(esp.kind, FsType::Vfat);
    assert_eq!(esp.uuid.len(), 9);
    assert_eq!(
        l.fstab(),
        format!(
            "# Written by dib from the block-device configuration.\n\
                 LABEL=cloudimg-rootfs / ext4 defaults 0 1\n\
                 UUID={} /boot/efi vfat defaults 0 2\n",
            esp.uuid
        )
    );
}

#[test]
fn percentages_are_of_the_space_left() {
    let c = parse(
            "- partitioning:\n    label: gpt\n    partitions:\n      - {name: a, size: 50%, mkfs: {mount: {mount_point: /}}}\n      - {name: b, size: 100%, mkfs: {type: swap}}\n",
            "t",
        )
        .unwrap();
    let o = Options {
        image_size: Some(1 << 30),
        ..opts()
    };
    let l = plan(&c, &o, &usage(&[("/", 10 * MIB)]), &mut Seq(0)).unwrap();
    let (a, b) = (&l.partitions[0], &l.partitions[1]);
    let usable = (1 << 30) - GPT_TAIL - MIB;
    assert_eq!(a.size, usable / 2 / 512 * 512);
    assert_eq!(b.start, round_up(a.start + a.size, MIB));
    // 100% of what is left: up to the GPT backup area.
    assert_eq!(b.start + b.size, (1 << 30) - GPT_TAIL);
}

#[test]
fn too_small_is_an_error_that_says_what_to_do() {
    let o = Options {
        image_size: Some(100 * MIB),
        ..opts()
    };
    let e = plan(
        &default_config(),
        &o,
        &usage(&[("/", 600 * MIB)]),
        &mut Seq(0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("larger --image-size"), "{e}");
    let c = parse(EFI, "t").unwrap();
    let e = plan(
        &c,
        &opts(),
        &usage(&[("/", MIB), ("/boot/efi", 600 * MIB)]),
        &mut Seq(0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("partition 'ESP' is 550 MiB"), "{e}");
    let x = Options {
        fs_type: FsType::Xfs,
        ..opts()
    };
    let e = plan(&default_config(), &x, &usage(&[]), &mut Seq(0)).unwrap_err();
    assert!(e.to_string().contains("helper backend"), "{e}");
}

#[test]
fn gpt_partitions_never_overlap_the_table_whatever_the_alignment() {
    for (align, first) in [("4KiB", 5 * 4096), ("512", 34 * 512), ("1MiB", MIB)] {
        let c = parse(
                &format!("- partitioning:\n    label: gpt\n    align: {align}\n    partitions:\n      - {{name: r, size: 100%, mkfs: {{mount: {{mount_point: /}}}}}}\n"),
                "t",
            )
            .unwrap();
        let l = plan(&c, &opts(), &usage(&[("/", MIB)]), &mut Seq(0)).unwrap();
        assert_eq!(l.partitions[0].start, first, "align {align}");
    }
}

#[test]
fn mkfs_options_merge_extended_and_refuse_placement() {
    let (rest, ext) = split_mkfs_options(
        FsType::Ext4,
        &[
            "-E".into(),
            "lazy_itable_init=0,stride=16".into(),
            "-Enodiscard".into(),
            "-m".into(),
            "1".into(),
        ],
    )
    .unwrap();
    assert_eq!(rest, ["-m", "1"]);
    assert_eq!(ext, ["lazy_itable_init=0", "stride=16", "nodiscard"]);
    let e = split_mkfs_options(FsType::Ext4, &["-E".into(), "offset=0".into()]).unwrap_err();
    assert!(e.to_string().contains("offset"), "{e}");
    let e = split_mkfs_options(FsType::Vfat, &["-S".into(), "4096".into()]).unwrap_err();
    assert!(e.to_string().contains("-S changes"), "{e}");
    // Through plan: --mkfs-options reach the root only, split.
    let o = Options {
        mkfs_options: vec!["-E".into(), "stride=8".into(), "-m".into(), "0".into()],
        ..opts()
    };
    let l = plan(&default_config(), &o, &usage(&[("/", MIB)]), &mut Seq(0)).unwrap();
    assert_eq!(
        (l.root().opts.clone(), l.root().extended.clone()),
        (vec!["-m".into(), "0".into()], vec!["stride=8".to_string()])
    );
}

#[test]
fn fstab_escapes_spaces_and_dib_defaults_apply() {
    let c = parse(
        "- mkfs:\n    base: image0\n    mount:\n      mount_point: /\n      fstab: {}\n",
        "t",
    )
    .unwrap();
    let mut l = plan(&c, &opts(), &usage(&[]), &mut Seq(0)).unwrap();
    l.filesystems[0].mount_point = Some("/my data".into());
    assert!(
        l.fstab()
            .contains("LABEL=cloudimg-rootfs /my\\040data ext4 defaults 0 2\n"),
        "{}",
        l.fstab()
    );
    let dup = Options {
        root_label: "data".into(),
        ..opts()
    };
    let c = parse(
            "- partitioning:\n    label: gpt\n    partitions:\n      - {name: d, size: 1GiB, mkfs: {label: data}}\n      - {name: r, size: 100%, mkfs: {mount: {mount_point: /}}}\n",
            "t",
        )
        .unwrap();
    let e = plan(&c, &dup, &usage(&[]), &mut Seq(0)).unwrap_err();
    assert!(
        e.to_string()
            .contains("two filesystems are labelled \"data\""),
        "{e}"
    );
}

#[test]
fn extra_size_and_journal_grow_the_root() {
    let o = Options {
        extra_size: 100 * MIB,
        journal: Some(16 * MIB),
        ..opts()
    };
    let l = plan(
        &default_config(),
        &o,
        &usage(&[("/", 60 * MIB)]),
        &mut Seq(0),
    )
    .unwrap();
    assert_eq!(l.size, 100 * MIB + 100 * MIB + 16 * MIB);
}
