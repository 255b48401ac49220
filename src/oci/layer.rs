//! A layer from a tree: one tar stream of every file, made the same way
//! each time so the same tree gives the same bytes (and so the same
//! digest).
//!
//! Entries are sorted by name, owners are numeric (no user or group
//! names), modes keep setuid, setgid and sticky, xattrs go in PAX records
//! (sorted), hard links are links to the first path met, and with a clamp
//! (`SOURCE_DATE_EPOCH`) no mtime is later than it. Device nodes and
//! sockets are left out: a container gets its /dev from its runtime, and
//! a rootless unpack could not make them.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use tar::{EntryType, Header};

/// What a layer holds, for the log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub entries: u64,
    /// Device nodes and sockets of the tree, left out.
    pub skipped: Vec<String>,
}

/// One entry to write that is not read from a tree (the containerDisk's
/// directory and disk file).
#[derive(Debug, Clone)]
pub struct Meta {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
    pub mtime: u64,
}

/// A tar stream being written.
pub struct LayerWriter<W: Write> {
    out: tar::Builder<W>,
    clamp: Option<u64>,
    /// (dev, inode) of files with more than one link → the first path.
    links: HashMap<(u64, u64), Vec<u8>>,
    written: Written,
}

impl<W: Write> std::fmt::Debug for LayerWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("clamp", &self.clamp)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// mkfs's directory at the top of an ext filesystem: not part of the tree.
const LOST_FOUND: &[u8] = b"lost+found";

impl<W: Write> LayerWriter<W> {
    /// A writer whose mtimes are clamped to `clamp` when given.
    pub fn new(out: W, clamp: Option<u64>) -> LayerWriter<W> {
        LayerWriter {
            out: tar::Builder::new(out),
            clamp,
            links: HashMap::new(),
            written: Written::default(),
        }
    }

    /// Every file under `tree` (not `tree` itself), sorted by name.
    pub fn tree(&mut self, tree: &Path) -> Result<()> {
        let mut path = Vec::new();
        self.dir(tree, &mut path, true)
    }

    fn dir(&mut self, dir: &Path, rel: &mut Vec<u8>, top: bool) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading {dir:?}"))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("reading {dir:?}"))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            if top && name.as_bytes() == LOST_FOUND {
                continue;
            }
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let path = dir.join(&name);
            let md = fs::symlink_metadata(&path).with_context(|| format!("reading {path:?}"))?;
            self.one(rel, &path, &md)?;
            if md.file_type().is_dir() {
                self.dir(&path, rel, false)?;
            }
            rel.truncate(len);
        }
        Ok(())
    }

    /// The entry of one file of a tree, `rel` its name in the layer, `md`
    /// what lstat said of `path` (a directory's entry only, not what is in
    /// it).
    fn one(&mut self, rel: &[u8], path: &Path, md: &fs::Metadata) -> Result<()> {
        let ft = md.file_type();
        if ft.is_dir() {
            let mut name = rel.to_vec();
            name.push(b'/');
            self.entry(&name, EntryType::Directory, md, path, None, io::empty())?;
        } else if ft.is_file() {
            let first = (md.nlink() > 1)
                .then(|| self.links.get(&(md.dev(), md.ino())).cloned())
                .flatten();
            if let Some(target) = first {
                self.entry(rel, EntryType::Link, md, path, Some(&target), io::empty())?;
            } else {
                if md.nlink() > 1 {
                    self.links.insert((md.dev(), md.ino()), rel.to_vec());
                }
                // The file lstat saw, not what a symlink put in its
                // place since would lead to.
                let f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(path)
                    .with_context(|| format!("reading {path:?}"))?;
                let now = f.metadata().with_context(|| format!("reading {path:?}"))?;
                if (now.dev(), now.ino()) != (md.dev(), md.ino()) {
                    anyhow::bail!("{path:?} was replaced while the layer was written");
                }
                // Exactly the size the header says, even if the file
                // changed since.
                let data = f.take(md.len()).chain(io::repeat(0)).take(md.len());
                self.entry(rel, EntryType::Regular, md, path, None, data)?;
            }
        } else if ft.is_symlink() {
            let target =
                fs::read_link(path).with_context(|| format!("reading the link {path:?}"))?;
            let target = target.as_os_str().as_bytes().to_vec();
            self.entry(
                rel,
                EntryType::Symlink,
                md,
                path,
                Some(&target),
                io::empty(),
            )?;
        } else if ft.is_fifo() {
            self.entry(rel, EntryType::Fifo, md, path, None, io::empty())?;
        } else {
            self.written
                .skipped
                .push(String::from_utf8_lossy(rel).into_owned());
        }
        Ok(())
    }

    /// The entries of `rels`, paths under `root`, in the order given (a
    /// directory's entry alone): what changed in a tree since a snapshot.
    pub fn paths(&mut self, root: &Path, rels: &[Vec<u8>]) -> Result<()> {
        for rel in rels {
            let path = root.join(std::ffi::OsStr::from_bytes(rel));
            let md = fs::symlink_metadata(&path).with_context(|| format!("reading {path:?}"))?;
            self.one(rel, &path, &md)?;
        }
        Ok(())
    }

    /// A whiteout: `rel` (and all under it) is gone from the lower layers.
    pub fn whiteout(&mut self, rel: &[u8]) -> Result<()> {
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..=i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let mut wh = dir.to_vec();
        wh.extend_from_slice(b".wh.");
        wh.extend_from_slice(name);
        let meta = Meta {
            uid: 0,
            gid: 0,
            mode: 0o644,
            mtime: 0,
        };
        self.append(&wh, EntryType::Regular, &meta, 0, None, &[], io::empty())
            .with_context(|| format!("writing the whiteout of {}", String::from_utf8_lossy(rel)))
    }

    fn entry(
        &mut self,
        name: &[u8],
        kind: EntryType,
        md: &fs::Metadata,
        path: &Path,
        link: Option<&[u8]>,
        data: impl Read,
    ) -> Result<()> {
        let meta = Meta {
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mode: md.mode() & 0o7777,
            mtime: md.mtime().max(0) as u64,
        };
        let size = if kind == EntryType::Regular {
            md.len()
        } else {
            0
        };
        let xattrs = xattrs(path)?;
        self.append(name, kind, &meta, size, link, &xattrs, data)
            .with_context(|| format!("writing {path:?} into the layer"))
    }

    /// One entry with the given metadata (its mtime clamped).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        name: &[u8],
        kind: EntryType,
        meta: &Meta,
        size: u64,
        link: Option<&[u8]>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        data: impl Read,
    ) -> io::Result<()> {
        let mut pax = Vec::new();
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        if !set_bytes(&mut h.as_ustar_mut().expect("ustar").name, name) {
            pax_record(&mut pax, b"path", name);
            set_bytes(
                &mut h.as_ustar_mut().expect("ustar").name,
                &name[name.len() - 99.min(name.len())..],
            );
        }
        if let Some(link) = link {
            if !set_bytes(&mut h.as_ustar_mut().expect("ustar").linkname, link) {
                pax_record(&mut pax, b"linkpath", link);
            }
        }
        for (k, v) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(self.clamp.map_or(meta.mtime, |c| meta.mtime.min(c)));
        h.set_size(size);
        if size >= 0o77777777777 {
            pax_record(&mut pax, b"size", size.to_string().as_bytes());
        }
        h.set_cksum();
        if !pax.is_empty() {
            let mut x = Header::new_ustar();
            x.set_entry_type(EntryType::XHeader);
            set_bytes(
                &mut x.as_ustar_mut().expect("ustar").name,
                b"././@PaxHeader",
            );
            x.set_mode(0o644);
            x.set_size(pax.len() as u64);
            x.set_cksum();
            self.out.append(&x, pax.as_slice())?;
        }
        self.out.append(&h, data)?;
        self.written.entries += 1;
        Ok(())
    }

    /// End the stream; the inner writer and what was written.
    pub fn finish(self) -> Result<(W, Written)> {
        let w = self.out.into_inner().context("ending the layer")?;
        Ok((w, self.written))
    }
}

/// Copy `value` into a ustar field when it fits (NUL-padded).
fn set_bytes(field: &mut [u8], value: &[u8]) -> bool {
    if value.len() > field.len() || value.contains(&0) {
        return false;
    }
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
    true
}

/// A PAX record: `LEN key=value\n`, LEN counting the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The xattrs of `path` (not followed), sorted by name.
fn xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = Vec::new();
    match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => names.resize(n, 0),
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing the xattrs of {path:?}")),
    }
    let n = rustix::fs::llistxattr(path, &mut names[..])
        .with_context(|| format!("listing the xattrs of {path:?}"))?;
    names.truncate(n);
    let mut out = Vec::new();
    // The host's SELinux labels are not the image's.
    // Nor are overlayfs's own (a box's upper directory has them).
    let kept = |n: &&[u8]| {
        !n.is_empty()
            && *n != b"security.selinux"
            && !n.starts_with(b"user.overlay.")
            && !n.starts_with(b"trusted.overlay.")
    };
    for name in names.split(|&b| b == 0).filter(kept) {
        let name_os = std::ffi::OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr_query(path, name_os) {
            Ok(n) => n,
            // Gone, or not readable here (trusted.*): nothing to keep.
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::PERM) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading the xattrs of {path:?}")),
        };
        let mut value = vec![0u8; len];
        let n = rustix::fs::lgetxattr(path, name_os, &mut value[..])
            .with_context(|| format!("reading the xattrs of {path:?}"))?;
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn layer(tree: &Path, clamp: Option<u64>) -> (Vec<u8>, Written) {
        let mut w = LayerWriter::new(Vec::new(), clamp);
        w.tree(tree).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        out.clear();
        // 98 bytes and a 2-digit length would be 100: the length grows a
        // digit.
        pax_record(&mut out, b"k", &[b'v'; 94]);
        assert_eq!(out.len(), 101);
        assert!(out.starts_with(b"101 k="));
    }

    #[test]
    fn a_tree_gives_sorted_entries_links_and_long_names_the_same_each_time() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        fs::create_dir_all(t.join("b/c")).unwrap();
        fs::create_dir(t.join("lost+found")).unwrap();
        fs::write(t.join("b/c/file"), "data").unwrap();
        fs::hard_link(t.join("b/c/file"), t.join("a-link")).unwrap();
        std::os::unix::fs::symlink("b/c/file", t.join("sym")).unwrap();
        let long = "x".repeat(150);
        fs::write(t.join(&long), "long").unwrap();
        fs::set_permissions(t.join("b/c/file"), fs::Permissions::from_mode(0o4755)).unwrap();

        let (bytes, written) = layer(t, Some(1_000));
        assert_eq!(written.entries, 6);
        assert!(written.skipped.is_empty());
        let mut ar = tar::Archive::new(bytes.as_slice());
        let got: Vec<(String, EntryType, u32, u64, Option<String>)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    e.link_name().unwrap().map(|l| l.display().to_string()),
                )
            })
            .collect();
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        // Sorted by name; the first path of the hard link keeps the data.
        assert_eq!(
            names,
            ["a-link", "b/", "b/c/", "b/c/file", "sym", long.as_str()]
        );
        assert_eq!(got[0].1, EntryType::Regular);
        assert_eq!(got[3].1, EntryType::Link);
        assert_eq!(got[3].4.as_deref(), Some("a-link"));
        assert_eq!(got[3].2, 0o4755);
        assert_eq!(got[4].4.as_deref(), Some("b/c/file"));
        assert!(got.iter().all(|g| g.3 <= 1_000), "mtimes are clamped");
        // The same tree, the same bytes.
        assert_eq!(layer(t, Some(1_000)).0, bytes);
    }
}
