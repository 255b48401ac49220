//! The merged hook tree (`$TMP_HOOKS_PATH`, SPEC §3).
//!
//! Every sub-directory of every element (except `tests/`) is merged into one
//! tree: `install.d/10-foo` of element a and `install.d/20-bar` of element b
//! end up side by side. Two elements shipping the same name in the same
//! directory is an error naming both (DIB's message names neither). Top-level
//! files (README, element-deps, ...) are copied too and do not conflict; the
//! last element in sorted order wins, as DIB's `cp` would.
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
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::elements::ResolvedElement;

/// Element sub-directories that are never merged (DIB skips them too).
const NOT_MERGED: &[&str] = &["tests"];
const INSTALL_D: &str = "install.d";
const INSTALL_SUFFIX: &str = "-install";

/// Where one entry of the merged tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file (or, inside a phase directory, a whole sub-directory) copied
    /// from an element.
    Copy { element: String, path: PathBuf },
    /// A relative symlink inside the tree (install types).
    Link { element: String, target: PathBuf },
}

impl Source {
    pub fn element(&self) -> &str {
        match self {
            Source::Copy { element, .. } | Source::Link { element, .. } => element,
        }
    }
}

/// The merged tree as data: relative path -> source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    fn choose(&self, prefix: &str) -> (&str, Option<String>) {
        let var = prefix.replace('-', "_");
        match self.overrides.get(&var) {
            Some(t) => (t, Some(format!("DIB_INSTALLTYPE_{var}"))),
            None => (&self.default, None),
        }
    }
}

/// Compute the merged tree of `elements` (in the given order).
pub fn plan(elements: &[ResolvedElement], install: &InstallTypes) -> Result<HookTree> {
    let mut tree = HookTree::default();
    for el in elements {
        for (name, path, is_dir) in sorted_children(&el.path)? {
            if !is_dir {
                tree.entries.insert(
                    PathBuf::from(&name),
                    Source::Copy {
                        element: el.name.clone(),
                        path,
                    },
                );
                continue;
            }
            if NOT_MERGED.contains(&name.as_str()) || name.starts_with('.') {
                continue;
            }
            for (child, child_path, _) in sorted_children(&path)? {
                let rel = Path::new(&name).join(&child);
                let src = Source::Copy {
                    element: el.name.clone(),
                    path: child_path,
                };
                insert_unique(&mut tree, rel, src)?;
            }
        }
    }
    link_install_types(&mut tree, install)?;
    Ok(tree)
}

fn insert_unique(tree: &mut HookTree, rel: PathBuf, src: Source) -> Result<()> {
    if let Some(prev) = tree.entries.get(&rel) {
        bail!(
            "duplicate hook {}: shipped by both element '{}' and element '{}'; rename one of them",
            rel.display(),
            prev.element(),
            src.element()
        );
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

fn link_install_types(tree: &mut HookTree, install: &InstallTypes) -> Result<()> {
    // prefix -> type -> (element, dir path)
    let mut by_prefix: BTreeMap<String, BTreeMap<String, (String, PathBuf)>> = BTreeMap::new();
    for (rel, src) in &tree.entries {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let Source::Copy { element, path } = src else {
            continue;
        };
        if parent != Path::new(INSTALL_D) || !path.is_dir() {
            continue;
        }
        if let Some((prefix, ty)) = name.to_str().and_then(split_install_dir) {
            by_prefix
                .entry(prefix.to_string())
                .or_default()
                .insert(ty.to_string(), (element.clone(), path.clone()));
        }
    }
    for (prefix, types) in by_prefix {
        let (chosen, var) = install.choose(&prefix);
        let Some((element, dir)) = types.get(chosen) else {
            if let Some(var) = var {
                let have: Vec<&str> = types.keys().map(String::as_str).collect();
                bail!(
                    "{var}={chosen}, but no element ships install.d/{prefix}-{chosen}-install \
                     (available install types for '{prefix}': {}); set {var} to one of them",
                    have.join(", ")
                );
            }
            // The default type is simply absent for this prefix: nothing runs,
            // as in DIB.
            continue;
        };
        let dirname = format!("{prefix}-{chosen}{INSTALL_SUFFIX}");
        for (script, _, _) in sorted_children(dir)? {
            let rel = Path::new(INSTALL_D).join(&script);
            let src = Source::Link {
                element: element.clone(),
                target: Path::new(&dirname).join(&script),
            };
            insert_unique(tree, rel, src).with_context(|| {
                format!("linking install type '{chosen}' of '{prefix}' into install.d")
            })?;
        }
    }
    Ok(())
}

/// Children of a directory, sorted by name: (name, path, is_dir following symlinks).
fn sorted_children(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut out = Vec::new();
    for dirent in fs::read_dir(dir).with_context(|| format!("reading {dir:?}"))? {
        let dirent = dirent.with_context(|| format!("reading {dir:?}"))?;
        let name = dirent
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("{:?} in {dir:?} is not valid UTF-8; rename it", n))?;
        let path = dirent.path();
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort();
    Ok(out)
}

impl HookTree {
    /// Entries under one top-level directory (e.g. `install.d`), by name.
    pub fn dir(&self, top: &str) -> impl Iterator<Item = (&str, &Source)> {
        let top = PathBuf::from(top);
        self.entries.iter().filter_map(move |(rel, src)| {
            if rel.parent() != Some(top.as_path()) {
                return None;
            }
            Some((rel.file_name()?.to_str()?, src))
        })
    }

    /// Write the tree into `dest` (created if missing, must be empty).
    /// Files are copied with their permission bits; symlinks inside elements
    /// are followed, so the tree does not point back into element sources.
    pub fn materialize(&self, dest: &Path) -> Result<()> {
        fs::create_dir_all(dest).with_context(|| format!("creating {dest:?}"))?;
        for (rel, src) in &self.entries {
            let to = dest.join(rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).with_context(|| format!("creating {parent:?}"))?;
            }
            match src {
                Source::Copy { path, .. } => copy_tree(path, &to)?,
                Source::Link { target, .. } => {
                    symlink(target, &to).with_context(|| format!("linking {to:?} -> {target:?}"))?
                }
            }
        }
        Ok(())
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::metadata(from).with_context(|| format!("reading {from:?}"))?;
    if meta.is_dir() {
        fs::create_dir(to).with_context(|| format!("creating {to:?}"))?;
        for (_, child, _) in sorted_children(from)? {
            copy_tree(
                &child,
                &to.join(child.file_name().expect("read_dir entries have names")),
            )?;
        }
        fs::set_permissions(to, meta.permissions())
            .with_context(|| format!("setting mode of {to:?}"))?;
        Ok(())
    } else {
        fs::copy(from, to)
            .map(drop)
            .with_context(|| format!("copying {from:?} to {to:?}"))
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
