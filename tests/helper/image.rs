//! Looking into a built image as root: its partitions attached to a loop
//! device, each filesystem's identity, a mounted filesystem's tree; and all
//! of an image the backends must agree on (with `common::image` for the
//! partition table, the ESP and the listing).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::image::{self, tree_listing};
use crate::common::tier::succeeded;
use libtest_mimic::Failed;

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
        let part = format!("{}p{n}", self.dev);
        Ok(image::blkid(Path::new(&part), None)?.keys(keep))
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
    let mut d = image::sfdisk_dump(image)?;
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
    d.push_str(&image::mdir(image, 1 << 20, &["-/", "-b"], "::/")?);
    // The BIOS boot partition (finalise.d wrote to it).
    let bytes = fs::read(image)?;
    let bsp = 41 << 20;
    d.push_str(&format!(
        "bios boot: {:?}\n",
        String::from_utf8_lossy(&bytes[bsp..bsp + 32])
    ));
    Ok(d)
}
