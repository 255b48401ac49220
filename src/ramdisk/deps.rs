//! Copying executables out of the image tree with the shared libraries they
//! need. Libraries are found from the ELF headers (`PT_INTERP`,
//! `DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH`) and the tree's own library paths:
//! nothing of the target is run (it may not even run on this host).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};

// Where a name in `binary-deps.d` is looked for in the tree.
use crate::pipeline::environment::IMAGE_BIN_DIRS as BIN_DIRS;

/// Library directories searched after the ELF's own run paths and
/// `/etc/ld.so.conf`, as the dynamic loader does.
const DEFAULT_LIB_DIRS: &[&str] = &["lib64", "usr/lib64", "lib", "usr/lib"];

/// Most symlinks followed when resolving one path (the kernel's limit).
const MAX_LINKS: usize = 40;

#[derive(Debug)]
pub struct Copier {
    tree: PathBuf,
    staging: PathBuf,
    /// Tree-relative paths already copied.
    done: BTreeSet<PathBuf>,
    /// Library directories from the tree's ld.so.conf, tree-relative.
    lib_dirs: Vec<PathBuf>,
    /// Symlinks to make in the staging tree, only at the very end
    /// ([`Copier::finish`]): until then the staging tree holds real
    /// directories and files only, so no write into it can follow a link
    /// out of it.
    links: Vec<(PathBuf, PathBuf)>,
    /// Directories (ramdisk paths) libraries were put in.
    pub used_lib_dirs: BTreeSet<PathBuf>,
    /// Directories copied by [`Copier::dir`]: real tree path to where.
    dirs: std::collections::BTreeMap<PathBuf, PathBuf>,
}

impl Copier {
    pub fn new(tree: &Path, staging: &Path) -> Result<Copier> {
        let mut lib_dirs = Vec::new();
        ld_so_conf(tree, Path::new("etc/ld.so.conf"), &mut lib_dirs, 0);
        lib_dirs.extend(DEFAULT_LIB_DIRS.iter().map(PathBuf::from));
        Ok(Copier {
            tree: tree.to_path_buf(),
            staging: staging.to_path_buf(),
            done: BTreeSet::new(),
            lib_dirs,
            links: Vec::new(),
            used_lib_dirs: BTreeSet::new(),
            dirs: std::collections::BTreeMap::new(),
        })
    }

    /// An executable by name (searched in the tree's bin directories) or by
    /// absolute path, with its libraries; returns where it is in the ramdisk.
    pub fn binary(&mut self, name: &str) -> Result<PathBuf> {
        let rel = if let Some(abs) = name.strip_prefix('/') {
            let p = PathBuf::from(abs);
            if resolve(&self.tree, &p).is_none_or(|r| !self.tree.join(r).is_file()) {
                bail!("{name} is not in the image");
            }
            p
        } else {
            BIN_DIRS
                .iter()
                .map(|d| Path::new(d.trim_start_matches('/')).join(name))
                .find(|p| resolve(&self.tree, p).is_some_and(|r| self.tree.join(r).is_file()))
                .with_context(|| format!("{name} is not in the image's {}", BIN_DIRS.join(", ")))?
        };
        self.file(&rel)?;
        Ok(rel)
    }

    /// Every file under the tree's `rel` directory (if there is one), ELF
    /// files with their libraries; symlinks recreated as they are.
    pub fn dir(&mut self, rel: &str) -> Result<()> {
        let Some(real) = resolve(&self.tree, Path::new(rel)) else {
            return Ok(());
        };
        if !self.tree.join(&real).is_dir() {
            return Ok(());
        }
        // With a merged /usr, lib/udev and usr/lib/udev are one directory:
        // copied once, the other name a link to it.
        if let Some(first) = self.dirs.get(&real) {
            let target = Path::new("/").join(first);
            self.link(target, PathBuf::from(rel));
            return Ok(());
        }
        self.dirs.insert(real.clone(), PathBuf::from(rel));
        let mut stack = vec![(real, PathBuf::from(rel))];
        while let Some((from, to)) = stack.pop() {
            fs::create_dir_all(self.staging.join(&to))?;
            for e in fs::read_dir(self.tree.join(&from))? {
                let e = e?;
                let t = e.file_type()?;
                let (f, d) = (from.join(e.file_name()), to.join(e.file_name()));
                if t.is_dir() {
                    stack.push((f, d));
                } else if t.is_symlink() {
                    let target = fs::read_link(self.tree.join(&f))?;
                    self.link(target, d);
                } else if t.is_file() {
                    self.copy_as(&f, &d)?;
                }
            }
        }
        Ok(())
    }

    /// A symlink at `at` (ramdisk path) to `target`, made by [`finish`].
    ///
    /// [`finish`]: Copier::finish
    pub fn link(&mut self, target: PathBuf, at: PathBuf) {
        self.links.push((target, at));
    }

    /// Make the symlinks, where nothing else took the place; nothing is
    /// written into the staging tree after this.
    pub fn finish(self) -> Result<()> {
        for (target, at) in self.links {
            let at = self.staging.join(at);
            // Only in a real directory of the staging tree.
            let parent_real = at
                .parent()
                .is_some_and(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
            if parent_real && fs::symlink_metadata(&at).is_err() {
                std::os::unix::fs::symlink(&target, &at)
                    .with_context(|| format!("linking {at:?}"))?;
            }
        }
        Ok(())
    }

    /// The tree's `rel` (symlinks followed inside the tree) at `rel` in the
    /// staging tree, and its libraries if it is an ELF file.
    fn file(&mut self, rel: &Path) -> Result<()> {
        let real = resolve(&self.tree, rel)
            .with_context(|| format!("/{} is not in the image", rel.display()))?;
        self.copy_as(&real, rel)
    }

    fn copy_as(&mut self, real: &Path, rel: &Path) -> Result<()> {
        if !self.done.insert(rel.to_path_buf()) {
            return Ok(());
        }
        let from = self.tree.join(real);
        let to = self.staging.join(rel);
        if let Some(p) = to.parent() {
            fs::create_dir_all(p)?;
        }
        fs::copy(&from, &to)
            .with_context(|| format!("copying /{} into the ramdisk", rel.display()))?;
        let bytes = fs::read(&from)?;
        if !bytes.starts_with(b"\x7fELF") {
            return Ok(());
        }
        let (interp, needed, paths) = elf_needs(&bytes, real)
            .with_context(|| format!("reading the ELF headers of /{}", rel.display()))?;
        let kind = elf_kind(&bytes);
        if let Some(i) = interp {
            self.file(Path::new(i.trim_start_matches('/')))
                .with_context(|| format!("the loader of /{}", rel.display()))?;
        }
        for lib in needed {
            let found = paths
                .iter()
                .chain(self.lib_dirs.iter())
                .map(|d| d.join(&lib))
                .find(|p| {
                    resolve(&self.tree, p).is_some_and(|r| {
                        let f = self.tree.join(r);
                        // A library of the binary's own class and machine
                        // (multiarch trees hold i386 ones beside amd64).
                        f.is_file() && file_kind(&f) == kind
                    })
                });
            let Some(found) = found else {
                bail!(
                    "/{} needs {lib}, which is in none of the image's library directories",
                    rel.display()
                );
            };
            if let Some(d) = found.parent() {
                self.used_lib_dirs.insert(Path::new("/").join(d));
            }
            self.file(&found)?;
        }
        Ok(())
    }
}

/// An ELF file's class and machine (`EI_CLASS`, `EI_DATA`, `e_machine`).
fn elf_kind(bytes: &[u8]) -> Option<[u8; 4]> {
    (bytes.len() >= 20 && bytes.starts_with(b"\x7fELF"))
        .then(|| [bytes[4], bytes[5], bytes[18], bytes[19]])
}

fn file_kind(path: &Path) -> Option<[u8; 4]> {
    use std::io::Read as _;
    let mut head = [0u8; 20];
    fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    elf_kind(&head)
}

/// The loader, the needed libraries and the run paths (tree-relative,
/// `$ORIGIN` expanded) of an ELF file at tree-relative `real`.
fn elf_needs(bytes: &[u8], real: &Path) -> Result<(Option<String>, Vec<String>, Vec<PathBuf>)> {
    let elf = goblin::elf::Elf::parse(bytes)?;
    let origin = real.parent().unwrap_or(Path::new(""));
    let paths = elf
        .runpaths
        .iter()
        .chain(elf.rpaths.iter())
        .flat_map(|p| p.split(':'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            let p = p
                .replace("${ORIGIN}", &format!("/{}", origin.display()))
                .replace("$ORIGIN", &format!("/{}", origin.display()));
            PathBuf::from(p.trim_start_matches('/'))
        })
        .collect();
    Ok((
        elf.interpreter.map(String::from),
        elf.libraries.iter().map(|s| s.to_string()).collect(),
        paths,
    ))
}

/// Directories of the tree's `ld.so.conf` (and its `include`s).
fn ld_so_conf(tree: &Path, rel: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Some(real) = resolve(tree, rel) else {
        return;
    };
    let Ok(text) = fs::read_to_string(tree.join(real)) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim().trim_start_matches('/');
            // Only `DIR/*.conf` style patterns: list DIR, match the suffix.
            let (dir, file) = pattern.rsplit_once('/').unwrap_or(("", pattern));
            let suffix = file.trim_start_matches('*');
            if let Some(d) = resolve(tree, Path::new(dir)) {
                let mut names: Vec<PathBuf> = fs::read_dir(tree.join(&d))
                    .map(|r| {
                        r.flatten()
                            .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                            .map(|e| Path::new(dir).join(e.file_name()))
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                for n in names {
                    ld_so_conf(tree, &n, out, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line.trim_start_matches('/')));
        }
    }
}

/// `rel` resolved inside `tree` as the image would see it (symlinks,
/// absolute or relative, followed within the tree; `..` stops at its
/// root): the tree-relative real path, if it exists.
pub fn resolve(tree: &Path, rel: &Path) -> Option<PathBuf> {
    let mut done = PathBuf::new();
    let mut todo: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&c);
        let md = fs::symlink_metadata(tree.join(&next)).ok()?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = fs::read_link(tree.join(&next)).ok()?;
            if target.is_absolute() {
                done = PathBuf::new();
            }
            for t in target.components().rev() {
                match t {
                    Component::Normal(n) => todo.push(n.to_os_string()),
                    Component::ParentDir => todo.push("..".into()),
                    _ => {}
                }
            }
        } else {
            done = next;
        }
    }
    Some(done)
}

/// The tree's `rel` as a real directory on the host, if it is one.
pub fn real_dir(tree: &Path, rel: &Path) -> Result<Option<PathBuf>> {
    Ok(resolve(tree, rel)
        .map(|r| tree.join(r))
        .filter(|p| p.is_dir()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_resolve_inside_the_tree_like_a_chroot() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::write(r.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"c").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            r.join("usr/lib/libc-abs"),
        )
        .unwrap();
        symlink("../../../../../etc/passwd", r.join("usr/lib/escape")).unwrap();
        assert_eq!(
            resolve(r, Path::new("lib/x86_64-linux-gnu/libc.so.6")),
            Some(PathBuf::from("usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            resolve(r, Path::new("lib/libc-abs")),
            Some(PathBuf::from("usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        // `..` stops at the tree's root: the host's /etc/passwd is not reached.
        assert_eq!(resolve(r, Path::new("usr/lib/escape")), None);
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve(r, Path::new("loop")), None);
    }

    #[test]
    fn a_host_binary_comes_with_its_loader_and_libraries() {
        // The host's own /usr/bin/env and libc stand in for an image tree.
        let staging = tempfile::tempdir().unwrap();
        let mut c = Copier::new(Path::new("/"), staging.path()).unwrap();
        c.binary("env").unwrap();
        let s = staging.path();
        assert!(s.join("usr/bin/env").is_file() || s.join("bin/env").is_file());
        let bytes = fs::read("/usr/bin/env").unwrap();
        let (interp, needed, _) = elf_needs(&bytes, Path::new("usr/bin/env")).unwrap();
        let interp = interp.expect("a dynamic executable");
        assert!(s.join(interp.trim_start_matches('/')).is_file(), "{interp}");
        assert!(needed.iter().any(|n| n.starts_with("libc.so")));
        let libc_copied = c
            .done
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "libc.so.6"));
        assert!(libc_copied, "{:?}", c.done);
        assert!(c.binary("no-such-tool-anywhere").is_err());
    }
}
