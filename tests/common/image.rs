//! Looking into a built disk image without mounting it: its partition
//! table (sfdisk), each filesystem's identity (blkid), an ext filesystem
//! copied out for e2fsck and debugfs, a FAT filesystem's directories
//! (mtools); and a tree (mounted or extracted) listed line by line, so two
//! trees compare as text.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libtest_mimic::Failed;

use super::tier::{check, eq, succeeded};

/// Bytes in a sector, as sfdisk counts them.
pub const SECTOR: u64 = 512;

/// A partition as `sfdisk --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its first sector.
    pub start: u64,
    /// Its type: an MBR type (`83`) or a GPT type GUID.
    pub kind: String,
    /// Its GPT name, if it has one.
    pub name: Option<String>,
    pub bootable: bool,
}

impl Partition {
    /// Its first byte.
    pub fn offset(&self) -> u64 {
        self.start * SECTOR
    }
}

/// An image's partition table: its label (`dos`, `gpt`) and partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub label: String,
    pub partitions: Vec<Partition>,
}

/// `sfdisk --json` of an image.
pub fn partitions(image: &Path) -> Result<Table, Failed> {
    let o = Command::new("sfdisk").arg("--json").arg(image).output()?;
    succeeded(&o)?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let t = &v["partitiontable"];
    let partitions = t["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| Partition {
            start: p["start"].as_u64().unwrap_or(0),
            kind: p["type"].as_str().unwrap_or("").to_string(),
            name: p["name"].as_str().map(String::from),
            bootable: p["bootable"].as_bool().unwrap_or(false),
        })
        .collect();
    Ok(Table {
        label: t["label"].as_str().unwrap_or("").to_string(),
        partitions,
    })
}

/// `sfdisk -d` of an image, as text that does not depend on where the
/// image is: without its `device:` line, the image's path written `IMG`.
pub fn sfdisk_dump(image: &Path) -> Result<String, Failed> {
    let o = Command::new("sfdisk").arg("-d").arg(image).output()?;
    succeeded(&o)?;
    let mut d = String::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if !l.starts_with("device:") {
            d.push_str(&l.replace(&image.display().to_string(), "IMG"));
            d.push('\n');
        }
    }
    Ok(d)
}

/// What blkid's low-level probe (`blkid -p -o export`) printed for a
/// device or image file. blkid's exit status is the caller's to judge
/// (it fails where it finds nothing, as on a BIOS boot partition).
#[derive(Debug)]
pub struct Probe {
    pub output: Output,
}

impl Probe {
    /// The KEY=value lines `keep` keeps, sorted, on one line.
    pub fn keys(&self, keep: impl Fn(&str) -> bool) -> String {
        let mut keys: Vec<String> = String::from_utf8_lossy(&self.output.stdout)
            .lines()
            .filter(|l| keep(l))
            .map(String::from)
            .collect();
        keys.sort();
        keys.join(" ")
    }

    /// The value of `key`, if blkid printed it.
    pub fn get(&self, key: &str) -> Option<String> {
        String::from_utf8_lossy(&self.output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(String::from))
    }

    /// The values of `keys`, `-` for one blkid did not print, on one line.
    pub fn values(&self, keys: &[&str]) -> String {
        keys.iter()
            .map(|k| self.get(k).unwrap_or_else(|| "-".to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// blkid's low-level probe of `dev` (a device, or an image file), of the
/// filesystem at byte `offset` of it if given.
pub fn blkid(dev: &Path, offset: Option<u64>) -> Result<Probe, Failed> {
    let mut cmd = Command::new("blkid");
    cmd.args(["-p", "-o", "export"]);
    if let Some(offset) = offset {
        cmd.args(["-O", &offset.to_string()]);
    }
    Ok(Probe {
        output: cmd.arg(dev).output()?,
    })
}

/// A line of a filesystem's identity: its TYPE, LABEL or UUID.
pub fn is_identity(line: &str) -> bool {
    ["LABEL=", "UUID=", "TYPE="]
        .iter()
        .any(|k| line.starts_with(k))
}

/// The identity of the filesystem at `sector` of `image`, blkid's
/// `LABEL=... TYPE=... UUID=...` (those it has); blkid must find one.
pub fn identity(image: &Path, sector: u64) -> Result<String, Failed> {
    let probe = blkid(image, Some(sector * SECTOR))?;
    succeeded(&probe.output)?;
    Ok(probe.keys(is_identity))
}

/// The partition from `sector` of `image` to its end, copied out (sparse)
/// to `to`, for tools that read a filesystem image (e2fsck, debugfs).
pub fn copy_partition(image: &Path, sector: u64, to: &Path) -> Result<PathBuf, Failed> {
    let o = Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=1M", "conv=sparse", "status=none"])
        .arg(format!("skip={}", sector * SECTOR))
        .arg("iflag=skip_bytes")
        .output()?;
    succeeded(&o)?;
    Ok(to.to_path_buf())
}

/// `e2fsck -fn` finds nothing wrong with the ext filesystem image `fs`.
pub fn e2fsck(fs: &Path) -> Result<(), Failed> {
    let fsck = Command::new("e2fsck").arg("-fn").arg(fs).output()?;
    check(
        fsck.status.success(),
        format!(
            "e2fsck -fn: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        ),
    )
}

/// What `debugfs -R REQUEST` prints for the ext filesystem image `fs`.
pub fn debugfs(fs: &Path, request: &str) -> Result<String, Failed> {
    let o = Command::new("debugfs")
        .args(["-R", request])
        .arg(fs)
        .output()?;
    succeeded(&o)?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `mdir FLAGS... DIR` of the FAT filesystem at byte `offset` of `image`.
pub fn mdir(image: &Path, offset: u64, flags: &[&str], dir: &str) -> Result<String, Failed> {
    let o = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(flags)
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(dir)
        .output()?;
    succeeded(&o)?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// What the ext root filesystem of a bootable image is to show.
#[derive(Debug, Clone, Copy)]
pub struct BootRoot<'a> {
    /// Its identity (`identity`), its UUID (whatever it is) written `U`.
    pub ids: &'a str,
    /// Files, each with the owners `debugfs stat` prints for it
    /// (`User: ...   Group: ...`).
    pub owners: &'a [(&'a str, &'a str)],
    /// A line of its /etc/fstab.
    pub fstab: &'a str,
}

/// The ext root filesystem at `sector` of `image` (copied out to
/// `scratch`): blkid sees `want.ids`, it passes `e2fsck -fn`, its files
/// have their owners, its grub.cfg boots its UUID and its fstab has
/// `want.fstab`. Returns its UUID.
pub fn check_boot_root(
    image: &Path,
    sector: u64,
    scratch: &Path,
    want: &BootRoot<'_>,
) -> Result<String, Failed> {
    let ids = identity(image, sector)?;
    let uuid = ids
        .split(' ')
        .find_map(|k| k.strip_prefix("UUID="))
        .unwrap_or_default()
        .to_string();
    eq(
        &ids.replace(&uuid, "U"),
        want.ids,
        "the root filesystem (blkid)",
    )?;
    let root = copy_partition(image, sector, scratch)?;
    e2fsck(&root)?;
    for (path, owners) in want.owners {
        let stat = debugfs(&root, &format!("stat {path}"))?;
        check(
            stat.contains(owners),
            format!("{path} in the image is not {owners:?}:\n{stat}"),
        )?;
    }
    let grub = debugfs(&root, "cat /boot/grub/grub.cfg")?;
    check(
        grub.contains(&format!("root=UUID={uuid} ")),
        format!("grub.cfg does not boot root UUID {uuid}:\n{grub}"),
    )?;
    let fstab = debugfs(&root, "cat /etc/fstab")?;
    check(fstab.contains(want.fstab), format!("fstab:\n{fstab}"))?;
    Ok(uuid)
}

/// The tree of a mounted filesystem: one line per file with type, mode,
/// owner, links, size, content hash or link target, and xattrs.
pub fn tree_listing(root: &Path) -> Result<Vec<String>, Failed> {
    use sha2::Digest as _;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            let md = fs::symlink_metadata(&p)?;
            let rel = p.strip_prefix(root)?.display().to_string();
            let what = if md.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p)?.display())
            } else if md.is_file() {
                sha2::Sha256::digest(fs::read(&p)?)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            } else {
                String::new()
            };
            let mut xattrs = Vec::new();
            let mut names = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&p, &mut names).unwrap_or(0);
            for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
                let name = String::from_utf8_lossy(name).into_owned();
                let mut v = vec![0u8; 4096];
                let len = rustix::fs::lgetxattr(&p, name.as_str(), &mut v).unwrap_or(0);
                xattrs.push(format!("{name}={:?}", String::from_utf8_lossy(&v[..len])));
            }
            out.push(format!(
                "{rel} {:o} {}:{} n{} {} {what} {}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.nlink(),
                if md.is_dir() { 0 } else { md.size() },
                xattrs.join(",")
            ));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
