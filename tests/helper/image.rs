//! Looking into a built image as root: its partition table, each
//! filesystem's identity, a mounted filesystem's tree, the ESP, the BIOS
//! boot area.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;

use crate::common::tier::succeeded;
use libtest_mimic::Failed;

/// The tree of a mounted filesystem: one line per file with type, mode,
/// owner, links, size, content hash or link target, and xattrs.
fn tree_listing(root: &Path) -> Result<Vec<String>, Failed> {
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

/// An image attached read-only by the harness (root) to look into, its
/// partitions added; detached when dropped.
pub struct Attached {
    dev: String,
}

impl Attached {
    pub fn new(image: &Path) -> Result<Attached, Failed> {
        let o = Command::new("losetup")
            .args(["--show", "-f", "-r", "-P"])
            .arg(image)
            .output()?;
        succeeded(&o)?;
        let a = Attached {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        };
        let _ = Command::new("partx").args(["-a", &a.dev]).output();
        Ok(a)
    }

    /// blkid's low-level probe of partition `n`: the KEY=value lines `keep`
    /// keeps, sorted, on one line.
    pub fn blkid(&self, n: u32, keep: impl Fn(&str) -> bool) -> Result<String, Failed> {
        let o = Command::new("blkid")
            .args(["-p", "-o", "export", &format!("{}p{n}", self.dev)])
            .output()?;
        let mut keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| keep(l))
            .map(String::from)
            .collect();
        keys.sort();
        Ok(keys.join(" "))
    }

    /// Partition `n` mounted read-only under `scratch`: its tree
    /// (`tree_listing`) and its /etc/fstab.
    pub fn tree(&self, n: u32, scratch: &Path) -> Result<(Vec<String>, String), Failed> {
        let mnt = scratch.join("mnt");
        fs::create_dir_all(&mnt)?;
        succeeded(
            &Command::new("mount")
                .args(["-o", "ro", &format!("{}p{n}", self.dev)])
                .arg(&mnt)
                .output()?,
        )?;
        let listing = tree_listing(&mnt);
        let fstab = fs::read_to_string(mnt.join("etc/fstab")).unwrap_or_default();
        let _ = Command::new("umount").arg(&mnt).output();
        Ok((listing?, fstab))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

/// Everything of an image that both backends must agree on: the table,
/// each filesystem's identity, the root tree, the ESP's files, the BIOS
/// boot area.
pub fn describe(image: &Path, scratch: &Path) -> Result<String, Failed> {
    let mut d = String::new();
    let o = Command::new("sfdisk").arg("-d").arg(image).output()?;
    succeeded(&o)?;
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if !l.starts_with("device:") {
            d.push_str(&l.replace(&image.display().to_string(), "IMG"));
            d.push('\n');
        }
    }
    let attached = Attached::new(image)?;
    for n in 1..=4 {
        // Which loop device showed it is no property of the image.
        let keys = attached.blkid(n, |l| {
            !l.starts_with("DEVNAME=") && !l.starts_with("PART_ENTRY_DISK=")
        })?;
        d.push_str(&format!("p{n}: {keys}\n"));
    }
    let (listing, _) = attached.tree(4, scratch)?;
    drop(attached);
    d.push_str(&listing.join("\n"));
    d.push('\n');
    // The ESP (vfat: this kernel may not mount it) through mtools.
    let o = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-/", "-b", "-i"])
        .arg(format!("{}@@{}", image.display(), 1 << 20))
        .arg("::/")
        .output()?;
    succeeded(&o)?;
    d.push_str(&String::from_utf8_lossy(&o.stdout));
    // The BIOS boot partition (finalise.d wrote to it).
    let bytes = fs::read(image)?;
    let bsp = 41 << 20;
    d.push_str(&format!(
        "bios boot: {:?}\n",
        String::from_utf8_lossy(&bytes[bsp..bsp + 32])
    ));
    Ok(d)
}
