//! Trees compared across tools: a tar archive's entries and a directory
//! unpacked by umoci's rootless mode (owners from its
//! `user.rootlesscontainers` record), as the same per-path summary.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use libtest_mimic::Failed;
use sha2::Digest as _;

use super::tier::run;

/// What the comparison of two trees looks at, per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
    pub link: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of the file at `path`, in hex, read a piece at a time.
pub fn file_sha256(path: &Path) -> Result<String, Failed> {
    let mut f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The tree of a tar archive; hard links as the files they link to.
pub fn tar_tree(path: &Path) -> Result<BTreeMap<String, Node>, Failed> {
    let f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ar = tar::Archive::new(f);
    let mut out: BTreeMap<String, Node> = BTreeMap::new();
    for e in ar.entries()? {
        let mut e = e?;
        let name = e.path()?.display().to_string();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if name.is_empty() || name == "." {
            continue;
        }
        let h = e.header().clone();
        let link = e
            .link_name()?
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => {
                let target = link.trim_start_matches("./").to_string();
                let node = out
                    .get(&target)
                    .cloned()
                    .ok_or_else(|| format!("{name}: a hard link to {target}, not seen before"))?;
                out.insert(name, node);
                continue;
            }
            tar::EntryType::Regular => 'f',
            t => return Err(format!("{name}: unexpected entry type {t:?}").into()),
        };
        out.insert(
            name,
            Node {
                kind,
                uid: h.uid()?,
                gid: h.gid()?,
                mode: h.mode()? & 0o7777,
                size: if kind == 'f' { data.len() as u64 } else { 0 },
                sha256: if kind == 'f' {
                    sha256_hex(&data)
                } else {
                    String::new()
                },
                link: if kind == 'l' { link } else { String::new() },
            },
        );
    }
    Ok(out)
}

/// The owner umoci's rootless unpack recorded in `user.rootlesscontainers`
/// (protobuf: field 1 uid, field 2 gid, both varints; absent or
/// u32::MAX: root).
pub fn rootless_owner(path: &Path) -> Result<(u64, u64), Failed> {
    let value = match xattr_value(path, "user.rootlesscontainers")? {
        Some(v) => v,
        None => return Ok((0, 0)),
    };
    let (mut uid, mut gid) = (0u64, 0u64);
    let mut i = 0;
    while i < value.len() {
        let tag = value[i];
        i += 1;
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *value.get(i).ok_or("a truncated user.rootlesscontainers")?;
            i += 1;
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        // u32::MAX is umoci's "not set": the unpacking user's, root.
        let v = if v == u64::from(u32::MAX) { 0 } else { v };
        match tag {
            0x08 => uid = v,
            0x10 => gid = v,
            _ => {
                return Err(format!("unexpected field {tag:#x} in user.rootlesscontainers").into())
            }
        }
    }
    Ok((uid, gid))
}

pub fn xattr_value(path: &Path, name: &str) -> Result<Option<Vec<u8>>, Failed> {
    let mut buf = vec![0u8; 65536];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(format!("reading the xattr {name} of {}: {e}", path.display()).into()),
    }
}

/// The tree under `root`, owners from umoci's rootless record.
pub fn dir_tree(root: &Path) -> Result<BTreeMap<String, Node>, Failed> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for e in entries {
            let e = e?;
            let p = e.path();
            let md = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let rel = p.strip_prefix(root)?.display().to_string();
            let ft = md.file_type();
            // A file umoci left unreadable (mode 0 or 0200, as /etc/shadow
            // may be) is read with its owner's read bit lent for the moment.
            let mode = md.permissions().mode();
            let lend = !ft.is_symlink() && mode & 0o400 == 0;
            if lend {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o400))?;
            }
            let (uid, gid) = rootless_owner(&p)?;
            let (kind, size, sha, link) = if ft.is_dir() {
                stack.push(p.clone());
                ('d', 0, String::new(), String::new())
            } else if ft.is_symlink() {
                (
                    'l',
                    0,
                    String::new(),
                    fs::read_link(&p)
                        .map_err(|e| format!("{}: {e}", p.display()))?
                        .display()
                        .to_string(),
                )
            } else {
                let data = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                ('f', data.len() as u64, sha256_hex(&data), String::new())
            };
            if lend {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            }
            out.insert(
                rel,
                Node {
                    kind,
                    uid,
                    gid,
                    mode: md.permissions().mode() & 0o7777,
                    size,
                    sha256: sha,
                    link,
                },
            );
        }
    }
    Ok(out)
}

/// Compare `got` with `want` path by path: the first difference, or what
/// only one of them has.
pub fn same_trees(
    want: &BTreeMap<String, Node>,
    got: &BTreeMap<String, Node>,
    want_is: &str,
    got_is: &str,
) -> Result<(), Failed> {
    for (path, node) in want {
        match got.get(path) {
            Some(g) if g == node => {}
            Some(g) => {
                return Err(format!("{path}: {want_is} has {node:?}, {got_is} has {g:?}").into())
            }
            None => return Err(format!("{path}: in {want_is}, not in {got_is}").into()),
        }
    }
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    if !extra.is_empty() {
        return Err(format!("{got_is} has what {want_is} lacks: {extra:?}").into());
    }
    Ok(())
}

/// `umoci unpack --rootless` of `image` (`LAYOUT:TAG`) into `bundle` gives
/// the tree of the tar archive `tar`: that tree, for more checks.
pub fn umoci_unpacks_the_tar(
    image: &str,
    bundle: &Path,
    tar: &Path,
) -> Result<BTreeMap<String, Node>, Failed> {
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", image])
        .arg(bundle))?;
    let want = tar_tree(tar)?;
    let got = dir_tree(&bundle.join("rootfs"))?;
    same_trees(&want, &got, "the tar output", "umoci's unpack")?;
    Ok(want)
}
