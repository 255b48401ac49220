//! The merged hook tree (`$TMP_HOOKS_PATH`, docs/elements.md).
//!
//! Every sub-directory of every element (except `tests/`) is merged into one
//! tree: `install.d/10-foo` of element a and `install.d/20-bar` of element b
//! end up side by side, and `static/etc/a` and `static/etc/b` share `etc/`.
//! Directories merge; two elements shipping the same file (or a file where
//! the other has a directory) is an error naming both (DIB's message names
//! neither). Top-level files (README, element-deps, ...) are copied too and
//! do not conflict; the last element in sorted order wins, as DIB's `cp`
//! would. Symlinks inside element directories are recreated as they are, as
//! DIB's `cp -a` does: following them would copy host files into the build
//! (a `static/` link to `/etc/hostname`) or fail on links that only resolve
//! inside the image.
//!
//! Install types: `install.d/<prefix>-<type>-install/` directories hold the
//! scripts for one way of installing something (`source`, `package`). For each
//! prefix the scripts of the selected type are linked into `install.d` itself,
//! as DIB's `install-types` element does; the type is `DIB_INSTALLTYPE_<prefix>`
//! (with `-` written `_`) or else the default (`--install-type`).
//!
//! [`plan`] computes the tree as data; [`HookTree::materialize`] writes it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::elements::ResolvedElement;

/// Element sub-directories that are never merged (DIB skips them too).
const NOT_MERGED: &[&str] = &["tests"];
const INSTALL_D: &str = "install.d";
const INSTALL_SUFFIX: &str = "-install";

/// One entry of the merged tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Source {
    /// A directory (several elements may share it); the mode is the first
    /// element's.
    Dir { element: String, mode: u32 },
    /// A regular file copied from an element, mode included.
    File { element: String, path: PathBuf },
    /// A symlink, recreated with this target.
    Symlink { element: String, target: PathBuf },
}

impl Source {
    pub fn element(&self) -> &str {
        match self {
            Source::Dir { element, .. }
            | Source::File { element, .. }
            | Source::Symlink { element, .. } => element,
        }
    }
}

/// The merged tree as data: relative path -> entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookTree {
    pub entries: BTreeMap<PathBuf, Source>,
}

/// How install types are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallTypes {
    /// `--install-type` / `DIB_DEFAULT_INSTALLTYPE`.
    pub default: String,
    /// `DIB_INSTALLTYPE_<var>` values, keyed by `<var>` as written in the
    /// environment (prefix with `-` spelled `_`).
    pub overrides: BTreeMap<String, String>,
}

impl InstallTypes {
    /// Collect `DIB_INSTALLTYPE_*` from an environment.
    pub fn from_env<'a>(
        default: &str,
        env: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        let overrides = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("DIB_INSTALLTYPE_")?.to_string(), v.clone())))
            .collect();
        InstallTypes {
            default: default.to_string(),
            overrides,
        }
    }

    /// The install type for `prefix` (an install-type directory's prefix,
    /// or an element name).
    pub fn for_prefix(&self, prefix: &str) -> &str {
        self.choose(prefix).0
    }

    fn choose(&self, prefix: &str) -> (&str, Option<String>) {
        let var = prefix.replace('-', "_");
        match self.overrides.get(&var) {
            Some(t) => (t, Some(format!("DIB_INSTALLTYPE_{var}"))),
            None => (&self.default, None),
        }
    }
}

/// Compute the merged tree of `elements` (in the given order). Install
/// types are linked later, once environment.d has had its say
/// ([`HookTree::link_install_types`]).
pub fn plan(elements: &[ResolvedElement]) -> Result<HookTree> {
    let mut tree = HookTree::default();
    for el in elements {
        for (name, path) in sorted_children(&el.path)? {
            // Top-level entries are followed (DIB's `find -follow`): an
            // element may symlink a whole phase directory from elsewhere.
            let meta = fs::metadata(&path).with_context(|| format!("reading {path:?}"))?;
            if meta.is_dir() {
                if !NOT_MERGED.contains(&name.as_str()) {
                    merge_dir(&mut tree, &el.name, Path::new(&name), &path, &meta)?;
                }
            } else if meta.is_file() {
                let src = Source::File {
                    element: el.name.clone(),
                    path,
                };
                tree.entries.insert(PathBuf::from(&name), src);
            }
        }
    }
    Ok(tree)
}

fn merge_dir(
    tree: &mut HookTree,
    element: &str,
    rel: &Path,
    path: &Path,
    meta: &fs::Metadata,
) -> Result<()> {
    match tree.entries.get(rel) {
        Some(Source::Dir { .. }) => {}
        Some(other) => return Err(conflict(rel, other.element(), element)),
        None => {
            let src = Source::Dir {
                element: element.to_string(),
                mode: meta.permissions().mode() & 0o7777,
            };
            tree.entries.insert(rel.to_path_buf(), src);
        }
    }
    for (name, child) in sorted_children(path)? {
        let child_rel = rel.join(&name);
        let meta = fs::symlink_metadata(&child).with_context(|| format!("reading {child:?}"))?;
        let src = if meta.is_symlink() {
            let target =
                fs::read_link(&child).with_context(|| format!("reading link {child:?}"))?;
            Source::Symlink {
                element: element.to_string(),
                target,
            }
        } else if meta.is_dir() {
            merge_dir(tree, element, &child_rel, &child, &meta)?;
            continue;
        } else if meta.is_file() {
            Source::File {
                element: element.to_string(),
                path: child,
            }
        } else {
            tracing::debug!("hook tree: skipping {child:?}: not a file, directory or symlink");
            continue;
        };
        insert_unique(tree, child_rel, src)?;
    }
    Ok(())
}

fn conflict(rel: &Path, first: &str, second: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "duplicate hook {}: shipped by both element '{first}' and element '{second}'; rename one of them",
        rel.display()
    )
}

fn insert_unique(tree: &mut HookTree, rel: PathBuf, src: Source) -> Result<()> {
    if let Some(prev) = tree.entries.get(&rel) {
        return Err(conflict(&rel, prev.element(), src.element()));
    }
    tree.entries.insert(rel, src);
    Ok(())
}

/// Split `<prefix>-<type>-install` into (prefix, type).
fn split_install_dir(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_suffix(INSTALL_SUFFIX)?;
    let (prefix, ty) = rest.rsplit_once('-')?;
    (!prefix.is_empty() && !ty.is_empty()).then_some((prefix, ty))
}

/// A link to make in the hook tree: (link, target).
type Link = (PathBuf, PathBuf);

/// The links that put the chosen install type's scripts into install.d:
/// (link, target), relative to the hook tree; and, for each prefix whose
/// explicitly chosen type no element ships, a note (nothing of it runs, as
/// in DIB).
fn install_links(tree: &HookTree, install: &InstallTypes) -> Result<(Vec<Link>, Vec<String>)> {
    // prefix -> type -> (element, scripts)
    let mut by_prefix: BTreeMap<String, BTreeMap<String, (String, Vec<String>)>> = BTreeMap::new();
    for (rel, src) in tree.dir(INSTALL_D) {
        let Source::Dir { element, .. } = src else {
            continue;
        };
        if let Some((prefix, ty)) = split_install_dir(rel) {
            let dir = Path::new(INSTALL_D).join(rel);
            let scripts = tree
                .entries
                .iter()
                .filter(|(p, s)| {
                    p.parent() == Some(dir.as_path()) && !matches!(s, Source::Dir { .. })
                })
                .filter_map(|(p, _)| Some(p.file_name()?.to_str()?.to_string()))
                .collect();
            by_prefix
                .entry(prefix.to_string())
                .or_default()
                .insert(ty.to_string(), (element.clone(), scripts));
        }
    }
    let (mut links, mut notes) = (Vec::new(), Vec::new());
    let mut linked: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (prefix, types) in by_prefix {
        let (chosen, var) = install.choose(&prefix);
        let Some((element, scripts)) = types.get(chosen) else {
            // The default type simply absent for a prefix is normal.
            if let Some(var) = var {
                let have: Vec<&str> = types.keys().map(String::as_str).collect();
                notes.push(format!(
                    "{var}={chosen}, but no element ships install.d/{prefix}-{chosen}-install \
                     (install types for '{prefix}': {}), so none of its install scripts run",
                    have.join(", ")
                ));
            }
            continue;
        };
        let dirname = format!("{prefix}-{chosen}{INSTALL_SUFFIX}");
        for script in scripts {
            let link = Path::new(INSTALL_D).join(script);
            let other = tree.entries.get(&link).map(|s| s.element().to_string());
            if let Some(other) = other.or_else(|| linked.get(&link).cloned()) {
                return Err(conflict(&link, &other, element)).with_context(|| {
                    format!("linking install type '{chosen}' of '{prefix}' into install.d")
                });
            }
            linked.insert(link.clone(), element.clone());
            links.push((link, Path::new(&dirname).join(script)));
        }
    }
    Ok((links, notes))
}

/// Non-hidden children of a directory, sorted by name (as DIB's `ls`).
fn sorted_children(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for dirent in fs::read_dir(dir).with_context(|| format!("reading {dir:?}"))? {
        let dirent = dirent.with_context(|| format!("reading {dir:?}"))?;
        let name = dirent
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("{n:?} in {dir:?} is not valid UTF-8; rename it"))?;
        if !name.starts_with('.') {
            out.push((name, dirent.path()));
        }
    }
    out.sort();
    Ok(out)
}

impl HookTree {
    /// Entries directly under one top-level directory (e.g. `install.d`), by name.
    pub fn dir(&self, top: &str) -> impl Iterator<Item = (&str, &Source)> {
        let top = PathBuf::from(top);
        self.entries.iter().filter_map(move |(rel, src)| {
            if rel.parent() != Some(top.as_path()) {
                return None;
            }
            Some((rel.file_name()?.to_str()?, src))
        })
    }

    /// Link the install type `install` chooses for each prefix into
    /// `dest/install.d` (a materialised copy of this tree); returns notes on
    /// chosen types no element ships.
    pub fn link_install_types(&self, dest: &Path, install: &InstallTypes) -> Result<Vec<String>> {
        let (links, notes) = install_links(self, install)?;
        for (link, target) in links {
            let to = dest.join(&link);
            symlink(&target, &to).with_context(|| format!("linking {to:?} -> {target:?}"))?;
        }
        Ok(notes)
    }

    /// Write the tree into `dest` (created if missing; should be empty).
    /// Directory modes are applied last, so a read-only directory of an
    /// element can still be filled.
    pub fn materialize(&self, dest: &Path) -> Result<()> {
        fs::create_dir_all(dest).with_context(|| format!("creating {dest:?}"))?;
        for (rel, src) in &self.entries {
            let to = dest.join(rel);
            match src {
                Source::Dir { .. } => {
                    fs::create_dir(&to).with_context(|| format!("creating {to:?}"))?
                }
                Source::File { path, .. } => {
                    fs::copy(path, &to).with_context(|| format!("copying {path:?} to {to:?}"))?;
                }
                Source::Symlink { target, .. } => {
                    symlink(target, &to).with_context(|| format!("linking {to:?} -> {target:?}"))?
                }
            }
        }
        for (rel, src) in self.entries.iter().rev() {
            if let Source::Dir { mode, .. } = src {
                let to = dest.join(rel);
                fs::set_permissions(&to, fs::Permissions::from_mode(*mode))
                    .with_context(|| format!("setting the mode of {to:?}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_dir_names() {
        assert_eq!(
            split_install_dir("nova-source-install"),
            Some(("nova", "source"))
        );
        assert_eq!(
            split_install_dir("nova-api-package-install"),
            Some(("nova-api", "package"))
        );
        assert_eq!(split_install_dir("source-install"), None);
        assert_eq!(split_install_dir("10-foo"), None);
    }

    #[test]
    fn install_type_choice() {
        let env: BTreeMap<String, String> = [(
            "DIB_INSTALLTYPE_nova_api".to_string(),
            "package".to_string(),
        )]
        .into();
        let it = InstallTypes::from_env("source", &env);
        assert_eq!(
            it.choose("nova-api"),
            ("package", Some("DIB_INSTALLTYPE_nova_api".to_string()))
        );
        assert_eq!(it.choose("glance"), ("source", None));
    }
}
