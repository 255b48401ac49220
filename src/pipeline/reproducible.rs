//! Reproducible outputs (`SOURCE_DATE_EPOCH`): the finished tree made the
//! same however and whenever it was built, before any output is written
//! from it.
//!
//! - The per-build identities are dropped: `/etc/machine-id` emptied (a
//!   system makes its own at first boot), D-Bus's copy, systemd's random
//!   seed and ldconfig's cache of inode numbers removed, the files under
//!   `/var/log` emptied (they hold the build's dates).
//! - Every directory's entries are added again in name order, so a tool
//!   that reads them in directory order (mke2fs -d) meets them in one
//!   order whatever order the hooks made them in (a tmpfs lists a
//!   directory by when its entries were added).
//! - Every time is clamped to the epoch and cut to whole seconds, atime
//!   set to mtime.
//!
//! What mke2fs then copies of each file's change time (which no program
//! may set) is settled in the image afterwards
//! ([`crate::blockdev::ext4_times`]).

use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

/// Files whose content is this build's alone, emptied or removed.
const EMPTIED: &[&str] = &["etc/machine-id"];
const REMOVED: &[&str] = &[
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "var/cache/ldconfig/aux-cache",
];
/// Directories whose regular files are emptied.
const LOGS: &str = "var/log";

/// What [`normalize`] did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    pub paths: u64,
    pub identities: u64,
}

/// Make the tree at `tree` reproducible for `epoch` (seconds).
pub fn normalize(tree: &Path, epoch: u64) -> Result<Normalized> {
    let mut n = Normalized::default();
    for rel in EMPTIED {
        let p = tree.join(rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.len() > 0) {
            fs::write(&p, "").with_context(|| format!("emptying {p:?}"))?;
            n.identities += 1;
        }
    }
    for rel in REMOVED {
        let p = tree.join(rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            fs::remove_file(&p).with_context(|| format!("removing {p:?}"))?;
            n.identities += 1;
        }
    }
    let logs = tree.join(LOGS);
    if fs::symlink_metadata(&logs).is_ok_and(|m| m.is_dir()) {
        empty_files(&logs, &mut n)?;
    }
    reorder(tree)?;
    settle_times(tree, epoch, &mut n)?;
    Ok(n)
}

fn empty_files(dir: &Path, n: &mut Normalized) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {dir:?}"))? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            empty_files(&e.path(), n)?;
        } else if t.is_file() && e.metadata()?.len() > 0 {
            fs::File::options()
                .write(true)
                .truncate(true)
                .open(e.path())
                .with_context(|| format!("emptying {:?}", e.path()))?;
            n.identities += 1;
        }
    }
    Ok(())
}

/// The entries of every directory under `dir` renamed away and back in
/// name order, so that they are listed in that order.
fn reorder(dir: &Path) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {dir:?}"))?
        .map(|e| e.map(|e| (e.file_name(), e.file_type())))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {dir:?}"))?;
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let aside = dir.join(".dib-reorder");
    for (name, _) in &names {
        let p = dir.join(name);
        fs::rename(&p, &aside).with_context(|| format!("reordering {p:?}"))?;
        fs::rename(&aside, &p).with_context(|| format!("reordering {p:?}"))?;
    }
    for (name, t) in names {
        if t?.is_dir() {
            reorder(&dir.join(name))?;
        }
    }
    Ok(())
}

/// Every path's atime and mtime to its mtime clamped to `epoch`, in whole
/// seconds; directories after what is in them.
fn settle_times(path: &Path, epoch: u64, n: &mut Normalized) -> Result<()> {
    let md = fs::symlink_metadata(path).with_context(|| format!("reading {path:?}"))?;
    if md.is_dir() {
        for e in fs::read_dir(path).with_context(|| format!("reading {path:?}"))? {
            settle_times(&e?.path(), epoch, n)?;
        }
    }
    let t = (md.mtime().max(0) as u64).min(epoch);
    let ts = Timespec {
        tv_sec: t as i64,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting the times of {path:?}"))?;
    n.paths += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_go_times_settle_and_entries_list_in_name_order() {
        // A tmpfs lists entries in the order they were added, as the build
        // directory's does.
        let shm = Path::new("/dev/shm");
        let t = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let r = t.path();
        for d in ["etc", "var/log/apt", "var/lib/systemd", "d"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        fs::write(r.join("var/lib/systemd/random-seed"), "seed").unwrap();
        fs::write(r.join("var/log/apt/history.log"), "Start-Date: today").unwrap();
        for name in ["zz", "b", "a", "m"] {
            fs::write(r.join("d").join(name), name).unwrap();
        }
        // The same names made in another order elsewhere.
        let other = r.join("other");
        fs::create_dir(&other).unwrap();
        for name in ["m", "a", "zz", "b"] {
            fs::write(other.join(name), name).unwrap();
        }
        let n = normalize(r, 1_700_000_000).unwrap();
        // (Reading a file or listing a directory sets its atime.)
        for p in ["d/a", "d", "etc/machine-id", ""] {
            let md = fs::symlink_metadata(r.join(p)).unwrap();
            assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 0), "{p}");
            assert_eq!(md.atime(), 1_700_000_000, "{p}");
        }
        assert_eq!(n.identities, 3);
        assert_eq!(fs::read(r.join("etc/machine-id")).unwrap(), b"");
        assert!(!r.join("var/lib/systemd/random-seed").exists());
        assert_eq!(fs::read(r.join("var/log/apt/history.log")).unwrap(), b"");
        let listed = |d: &Path| -> Vec<String> {
            fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        if shm.is_dir() {
            assert_eq!(listed(&r.join("d")), listed(&other), "listed in one order");
        }
    }
}
