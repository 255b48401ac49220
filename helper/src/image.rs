//! Which filesystems an image file may be on. A loop device reads its
//! backing file from the kernel, so a file whose reads can wait on a
//! process (FUSE, an overlay or other stacked filesystem over it) or on a
//! server (NFS, CIFS, 9p, Ceph) could stall the device, and with it mkfs,
//! its close and root's `losetup`. So: only local block filesystems,
//! mounted in the helper's own mount table (the host's disks, not a
//! filesystem on one of the helper's loop devices that a client moved into
//! its namespace), and tmpfs, whose pages are memory (dib builds in one
//! of its own by default).

use dib_sandbox::mounts::unescape_mountinfo;

/// How a filesystem the helper accepts holds its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// On block devices: it must be mounted in the helper's mount table.
    Block,
    /// In memory: nothing to stall on, wherever it is mounted.
    Memory,
}

/// The filesystems an image file may be on: statfs `f_type`, name, the
/// `fstype` names its mounts have in mountinfo, and its backing.
pub const ALLOWED: &[(i64, &str, &[&str], Backing)] = &[
    (
        0xEF53,
        "ext2/3/4",
        &["ext2", "ext3", "ext4"],
        Backing::Block,
    ),
    (0x5846_5342, "xfs", &["xfs"], Backing::Block),
    (0x9123_683E, "btrfs", &["btrfs"], Backing::Block),
    (0xF2F5_2010, "f2fs", &["f2fs"], Backing::Block),
    (0x0102_1994, "tmpfs", &["tmpfs"], Backing::Memory),
];

/// Filesystems refused by name, for the message.
const REFUSED: &[(i64, &str)] = &[
    (0x794C_7630, "overlayfs"),
    (0x6573_5546, "FUSE"),
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "Ceph"),
    (0x5346_414F, "AFS"),
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x8584_58F6, "ramfs"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0x2FC1_2FC1, "zfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0xF15F, "ecryptfs"),
];

/// The filesystem `f_type` names, and how it holds its data; `Err` is the
/// refusal for a filesystem not on the list.
pub fn classify(f_type: i64) -> Result<(&'static str, &'static [&'static str], Backing), String> {
    if let Some((_, name, fstypes, backing)) = ALLOWED.iter().find(|a| a.0 == f_type) {
        return Ok((name, fstypes, *backing));
    }
    let on = REFUSED.iter().find(|r| r.0 == f_type).map_or_else(
        || format!("a filesystem of type 0x{f_type:x}"),
        |r| r.1.to_string(),
    );
    Err(format!(
        "the image file is on {on}, which dib-helper does not attach from (reads there can wait \
         on a process or a server, and a loop device would wait with them): keep the image on \
         a local disk filesystem ({}) or on tmpfs",
        ALLOWED
            .iter()
            .filter(|a| a.3 == Backing::Block)
            .map(|a| a.1)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// One line of `/proc/self/mountinfo`: the device (`major:minor`), the
/// filesystem type and the mount source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: (u32, u32),
    pub fstype: String,
    pub source: String,
}

/// The mounts of a mountinfo text (proc_pid_mountinfo(5)); lines it
/// cannot read are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let dev = head.split(' ').nth(2)?;
            let (major, minor) = dev.split_once(':')?;
            let mut tail = tail.split(' ');
            let fstype = tail.next()?;
            let source = tail.next()?;
            Some(Mount {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                fstype: unescape_mountinfo(fstype),
                source: unescape_mountinfo(source),
            })
        })
        .collect()
}

/// Whether a block filesystem of `fstypes` whose devices are `devices` is
/// mounted in `mounts`. Most filesystems report their one device as each
/// file's `st_dev` and as their mounts' `major:minor`. btrfs does not (each
/// subvolume has a device number of its own): its `devices` are the block
/// devices it is on, and a mount counts when its source is one of them
/// (`rdev` says which device a source path is).
pub fn mounted_here(
    mounts: &[Mount],
    fstypes: &[&str],
    devices: &[(u32, u32)],
    rdev: impl Fn(&str) -> Option<(u32, u32)>,
) -> bool {
    let btrfs = fstypes == ["btrfs"];
    mounts
        .iter()
        .filter(|m| fstypes.contains(&m.fstype.as_str()))
        .any(|m| {
            if btrfs {
                rdev(&m.source).is_some_and(|d| devices.contains(&d))
            } else {
                devices.contains(&m.dev)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw
67 27 0:40 / /srv/b\\040tree rw - btrfs /dev/loop0 rw,subvolid=5,subvol=/
68 27 0:41 /sv /srv/sv rw shared:3 - btrfs /dev/mapper/my\\040disk rw,subvolid=256
";

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[1],
            Mount {
                dev: (254, 0),
                fstype: "ext4".into(),
                source: "/dev/vda".into()
            }
        );
        assert_eq!(m[4].source, "/dev/mapper/my disk");
        assert!(parse_mountinfo("garbage\n1 2 x:y / / - ext4 /dev/a\n").is_empty());
    }

    #[test]
    fn block_filesystems_count_only_when_mounted_here() {
        let m = parse_mountinfo(MOUNTINFO);
        let rdev = |s: &str| match s {
            "/dev/loop0" => Some((7, 0)),
            "/dev/mapper/my disk" => Some((254, 3)),
            _ => None,
        };
        let ext = ["ext2", "ext3", "ext4"];
        assert!(mounted_here(&m, &ext, &[(254, 0)], rdev));
        // A filesystem on one of the helper's loop partitions: no mount here.
        assert!(!mounted_here(&m, &ext, &[(259, 1)], rdev));
        // The same device under another type does not count.
        assert!(!mounted_here(&m, &["xfs"], &[(254, 0)], rdev));
        assert!(mounted_here(&m, &["btrfs"], &[(7, 0)], rdev));
        assert!(mounted_here(&m, &["btrfs"], &[(8, 1), (254, 3)], rdev));
        assert!(!mounted_here(&m, &["btrfs"], &[(0, 40)], rdev));
    }

    #[test]
    fn filesystems_are_classified_and_refusals_name_them() {
        assert_eq!(classify(0xEF53).unwrap().2, Backing::Block);
        assert_eq!(classify(0x0102_1994).unwrap().2, Backing::Memory);
        let e = classify(0x794C_7630).unwrap_err();
        assert_eq!(
            e,
            "the image file is on overlayfs, which dib-helper does not attach from (reads there \
             can wait on a process or a server, and a loop device would wait with them): keep \
             the image on a local disk filesystem (ext2/3/4, xfs, btrfs, f2fs) or on tmpfs"
        );
        assert!(classify(0x6573_5546)
            .unwrap_err()
            .starts_with("the image file is on FUSE,"));
        assert!(classify(0x1234)
            .unwrap_err()
            .starts_with("the image file is on a filesystem of type 0x1234,"));
    }
}
