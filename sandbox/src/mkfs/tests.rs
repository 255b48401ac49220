use super::*;

fn spec(fs: FsType, options: &[&str]) -> MkfsSpec {
    MkfsSpec {
        fs,
        label: Some("root".into()),
        uuid: if fs == FsType::Vfat {
            "1234-ABCD".into()
        } else {
            "6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e".into()
        },
        size: 100 << 20,
        journal: Some(64 << 20),
        max_online_resize: Some(1 << 40),
        extended: vec![],
        options: options.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn both_backends_get_the_same_filesystem_arguments() {
    let s = spec(FsType::Ext4, &["-O", "^metadata_csum", "-i", "8192"]);
    let (prog, dev) = s.argv(Target::Device(Path::new("/dev/loop0p1")));
    assert_eq!(prog, "mkfs.ext4");
    let dev: Vec<String> = dev.iter().map(|a| a.to_string_lossy().into()).collect();
    assert_eq!(
        dev.join(" "),
        "-F -q -b 4096 -E nodiscard,resize=268435456 -U 6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e \
             -L root -J size=64 -O ^metadata_csum -i 8192 /dev/loop0p1 102400k"
    );
    let (_, img) = s.argv(Target::Image {
        file: Path::new("disk.raw"),
        offset: 1 << 20,
        tree: Some(Path::new("/t")),
    });
    let img: Vec<String> = img.iter().map(|a| a.to_string_lossy().into()).collect();
    assert_eq!(
        img.join(" "),
        "-F -q -b 4096 -E offset=1048576,nodiscard,resize=268435456 -U \
             6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e -L root -J size=64 -d /t -O ^metadata_csum \
             -i 8192 disk.raw 102400k"
    );
    let (prog, fat) = spec(FsType::Vfat, &["-F", "32"]).argv(Target::Image {
        file: Path::new("disk.raw"),
        offset: 1 << 20,
        tree: None,
    });
    assert_eq!(prog, "mkfs.fat");
    assert_eq!(
        fat,
        [
            "--offset=2048",
            "-i",
            "1234ABCD",
            "-n",
            "root",
            "-F",
            "32",
            "disk.raw",
            "102400"
        ]
        .map(OsString::from)
    );
}

#[test]
fn options_that_reach_host_files_are_refused() {
    for (fs, opts) in [
        (FsType::Ext4, &["-d", "/etc"][..]),
        (FsType::Ext4, &["-z", "/tmp/undo"]),
        (FsType::Ext4, &["-l", "/etc/shadow"]),
        (FsType::Ext4, &["-J", "device=/dev/sda"]),
        (FsType::Ext4, &["-O"]),
        (FsType::Ext4, &["-O", "has_journal;rm"]),
        (FsType::Ext4, &["-T", "-d"]),
        (FsType::Ext4, &["-e", "panic"]),
        (FsType::Ext4, &["-é"]),
        (FsType::Ext4, &["-Oé,x"]),
        (FsType::Ext4, &["é"]),
        (FsType::Vfat, &["-m", "/etc/shadow"]),
        (FsType::Vfat, &["-O", "x"]),
        (FsType::Swap, &["-p", "4096"]),
        (FsType::Xfs, &["-p", "/etc/protofile"]),
        (FsType::Xfs, &["-d", "file,name=/etc/shadow"]),
        (FsType::Xfs, &["-l", "logdev=/dev/sda"]),
        (FsType::Xfs, &["-r", "rtdev=/dev/sda"]),
        (FsType::Xfs, &["-m", "crc=1,uuid=x/y"]),
    ] {
        let e = spec(fs, opts).check().unwrap_err();
        assert!(
            e.contains("is not allowed through dib-helper"),
            "{opts:?}: {e}"
        );
    }
    let mut s = spec(FsType::Ext4, &[]);
    s.extended = vec!["offset=4096".into()];
    assert!(s.check().unwrap_err().contains("-E offset=4096"));
    s.extended = vec!["root_owner=0:0".into(), "lazy_itable_init=1".into()];
    s.check().unwrap();
    for ok in [
        &["-O", "^has_journal,64bit"][..],
        &["-Ohas_journal"],
        &["-j", "-m", "0.5"],
    ] {
        spec(FsType::Ext4, ok).check().unwrap();
    }
    spec(FsType::Vfat, &["-F", "32", "-a"]).check().unwrap();
    let mut x = spec(
        FsType::Xfs,
        &["-m", "crc=1,reflink=1", "-i", "size=512", "-K"],
    );
    x.label = Some("img-rootfs".into());
    x.check().unwrap();
    let (prog, args) = x.argv(Target::Device(Path::new("/dev/loop0p1")));
    assert_eq!(prog, "mkfs.xfs");
    assert_eq!(
        args,
        [
            "-f",
            "-q",
            "-m",
            "uuid=6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e",
            "-L",
            "img-rootfs",
            "-m",
            "crc=1,reflink=1",
            "-i",
            "size=512",
            "-K",
            "/dev/loop0p1"
        ]
        .map(OsString::from)
    );
    let mut s = spec(FsType::Ext4, &[]);
    s.uuid = "--help".into();
    assert!(s.check().unwrap_err().contains("not a valid ext4 UUID"));
    s = spec(FsType::Vfat, &[]);
    s.label = Some("twelve chars".into());
    assert!(s.check().unwrap_err().contains("at most 11 bytes"));
}
