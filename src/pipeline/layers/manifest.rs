//! What the build directory holds at a step's end, file by file, and what
//! changed between two such snapshots: the paths a layer must hold and the
//! paths it must white out.
//!
//! A file counts as changed when anything `lstat` says of it changed: its
//! inode, change time, modification time, size, mode, owners or link count.
//! Every write, chmod, chown, rename or new link moves the change time, and
//! the kernel gives a changed file a fine-grained one once its old one was
//! read, so two snapshots taken a moment apart still tell it apart.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// What `lstat` said of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: u64,
    mode: u32,
    owner: (u32, u32),
    nlink: u64,
}

impl Stamp {
    fn of(md: &fs::Metadata) -> Stamp {
        Stamp {
            ino: md.ino(),
            ctime: (md.ctime(), md.ctime_nsec()),
            mtime: (md.mtime(), md.mtime_nsec()),
            size: md.len(),
            mode: md.mode(),
            owner: (md.uid(), md.gid()),
            nlink: md.nlink(),
        }
    }

    fn kind(&self) -> u32 {
        self.mode & 0o170000
    }

    fn is_dir(&self) -> bool {
        self.kind() == 0o040000
    }
}

/// Every path under a directory (relative, as bytes, sorted bytewise so a
/// directory comes before what is in it) with its [`Stamp`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest(BTreeMap<Vec<u8>, Stamp>);

/// What changed from one manifest to the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// New or changed paths, parents first.
    pub changed: Vec<Vec<u8>>,
    /// Paths gone, or replaced by another kind of file (which is then in
    /// `changed` too); only the topmost of a removed directory.
    pub gone: Vec<Vec<u8>>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.gone.is_empty()
    }
}

impl Manifest {
    /// Scan `root`, leaving out the relative paths in `skip` (and what is
    /// under them) and anything on another filesystem (a mount point).
    pub fn scan(root: &Path, skip: &[&str]) -> Result<Manifest> {
        let top = fs::symlink_metadata(root).with_context(|| format!("reading {root:?}"))?;
        let mut m = BTreeMap::new();
        let skip: HashSet<&[u8]> = skip.iter().map(|s| s.as_bytes()).collect();
        let mut stack = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(std::ffi::OsStr::from_bytes(&rel));
            for e in fs::read_dir(&dir).with_context(|| format!("reading {dir:?}"))? {
                let e = e.with_context(|| format!("reading {dir:?}"))?;
                let mut path = rel.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(e.file_name().as_bytes());
                if skip.contains(path.as_slice()) {
                    continue;
                }
                let md = fs::symlink_metadata(e.path())
                    .with_context(|| format!("reading {:?}", e.path()))?;
                if md.dev() != top.dev() {
                    continue;
                }
                let stamp = Stamp::of(&md);
                if stamp.is_dir() {
                    stack.push(path.clone());
                }
                m.insert(path, stamp);
            }
        }
        Ok(Manifest(m))
    }

    /// How many paths it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What a layer on top of `self` must hold to give `new`.
    pub fn diff(&self, new: &Manifest) -> Diff {
        let mut d = Diff::default();
        let mut gone: HashSet<&[u8]> = HashSet::new();
        for (path, old) in &self.0 {
            let replaced = match new.0.get(path) {
                None => true,
                Some(now) => now.kind() != old.kind(),
            };
            if replaced {
                gone.insert(path);
            }
        }
        for path in self.0.keys() {
            // A directory's whiteout takes what was under it.
            if gone.contains(path.as_slice()) && !parents(path).any(|p| gone.contains(p)) {
                d.gone.push(path.clone());
            }
        }
        for (path, now) in &new.0 {
            if self.0.get(path) != Some(now) {
                d.changed.push(path.clone());
            }
        }
        d
    }
}

/// The parent paths of `path`, nearest first.
fn parents(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = path.len();
    std::iter::from_fn(move || {
        let i = path[..end].iter().rposition(|&b| b == b'/')?;
        end = i;
        Some(&path[..i])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn names(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn a_diff_holds_what_changed_and_whites_out_what_went() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["a/b", "keep", "gone/deep", "swap", "skip"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("a/b/f"), "1").unwrap();
        fs::write(r.join("keep/k"), "k").unwrap();
        fs::write(r.join("gone/deep/x"), "x").unwrap();
        fs::write(r.join("mode"), "m").unwrap();
        let before = Manifest::scan(r, &["skip"]).unwrap();
        assert!(!before.0.keys().any(|k| k.starts_with(b"skip")));

        fs::write(r.join("a/b/f"), "22").unwrap();
        fs::write(r.join("a/new"), "n").unwrap();
        fs::remove_dir_all(r.join("gone")).unwrap();
        fs::remove_dir(r.join("swap")).unwrap();
        fs::write(r.join("swap"), "now a file").unwrap();
        fs::set_permissions(r.join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(r.join("skip/ignored"), "").unwrap();
        let after = Manifest::scan(r, &["skip"]).unwrap();
        let d = before.diff(&after);
        assert_eq!(names(&d.gone), ["gone", "swap"]);
        // a (its mtime), a/b/f, a/new, mode, swap; keep/ and keep/k not.
        assert_eq!(names(&d.changed), ["a", "a/b/f", "a/new", "mode", "swap"]);
        assert!(after.diff(&after).is_empty());
    }
}
