//! `dib lint`: check elements against the element conventions (docs/elements.md).
//!
//! Like DIB's `dib-lint`, each finding names a file (and line) and a check;
//! a file opts out of checks with a comment `# dib-lint: disable=check,check`.
//! Beyond DIB it catches the mistakes that silently drop a hook: a phase
//! script whose name run-parts ignores (`10-foo.sh`), one without its execute
//! bit, and a misspelt phase directory (`post-instal.d`).
//!
//! Files under `static/` are copied into images verbatim and are not checked
//! for style.//!
//! `scripts` checks phase directories and their scripts (names, execute
//! bits, `#!`, `set` flags, tracing); `text` checks every text file
//! (whitespace, tabs, shell indentation, environment.d defaults, YAML);
//! `shell` is the bit of a shell lexer the indentation check needs.

mod scripts;
mod shell;
#[cfg(test)]
mod tests;
mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::elements::parse_name_list;
use crate::phases::PHASES;

/// Other `.d` directories the core, the ramdisk elements or DIB's elements
/// read: data that an element copies into the image (`modprobe.d` by
/// modprobe, `dracut.conf.d` and `dracut-drivers.d` by the dracut elements,
/// `yum.repos.d` by yum), not scripts.
pub const OTHER_D_DIRS: &[&str] = &[
    "environment.d",
    "init.d",
    "binary-deps.d",
    "udev.d",
    "modprobe.d",
    "dracut.conf.d",
    "dracut-drivers.d",
    "ramdisk-install.d",
    "yum.repos.d",
];
/// Sub-directories copied verbatim into images: not style-checked.
const VERBATIM_DIRS: &[&str] = &["static"];
/// Indentation unit of shell scripts.
const INDENT: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    Readme,
    Deps,
    Phase,
    Name,
    Executable,
    Shebang,
    SetE,
    SetU,
    SetPipefail,
    DebugTrace,
    Whitespace,
    Tabs,
    Indent,
    Defaults,
    Yaml,
}

impl Check {
    /// The name used in output and in `dib-lint: disable=` comments (DIB's
    /// names where DIB has the check).
    pub fn name(self) -> &'static str {
        match self {
            Check::Readme => "readme",
            Check::Deps => "deps",
            Check::Phase => "phase",
            Check::Name => "name",
            Check::Executable => "executable",
            Check::Shebang => "shebang",
            Check::SetE => "sete",
            Check::SetU => "setu",
            Check::SetPipefail => "setpipefail",
            Check::DebugTrace => "dibdebugtrace",
            Check::Whitespace => "whitespace",
            Check::Tabs => "tabs",
            Check::Indent => "indent",
            Check::Defaults => "defaults",
            Check::Yaml => "yaml",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub check: Check,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(
                f,
                "{}:{l}: [{}] {}",
                self.path.display(),
                self.check.name(),
                self.message
            ),
            None => write!(
                f,
                "{}: [{}] {}",
                self.path.display(),
                self.check.name(),
                self.message
            ),
        }
    }
}

/// Whether `dir` looks like one element rather than a directory of elements:
/// it has an element's files or directories, or it has a README and none of
/// its sub-directories looks like an element (a repository of elements often
/// has a README of its own).
pub fn is_element_dir(dir: &Path) -> bool {
    has_element_markers(dir)
        || (readme(dir).is_some()
            && !fs::read_dir(dir).into_iter().flatten().flatten().any(|d| {
                let p = d.path();
                p.is_dir() && (has_element_markers(&p) || readme(&p).is_some())
            }))
}

/// An element's own files (regular files) or directories. The kind matters:
/// a directory of elements may hold an *element* called `pkg-map` or `bin`.
fn has_element_markers(dir: &Path) -> bool {
    [
        "element-deps",
        "element-provides",
        "package-installs.yaml",
        "pkg-map",
    ]
    .iter()
    .any(|n| dir.join(n).is_file())
        || ["bin", "static"]
            .iter()
            .chain(OTHER_D_DIRS)
            .any(|n| dir.join(n).is_dir())
        || PHASES.iter().any(|p| dir.join(p.dir()).is_dir())
}

fn readme(dir: &Path) -> Option<PathBuf> {
    ["README.md", "README.rst", "README"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Lint one element directory.
pub fn lint_element(dir: &Path) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    if readme(dir).is_none() {
        out.push(finding(dir, None, Check::Readme, "element has no README.md (or README.rst): say what it does and which DIB_* variables it reads"));
    }
    for list in ["element-deps", "element-provides"] {
        let path = dir.join(list);
        if let Ok(text) = fs::read_to_string(&path) {
            if let Err(e) = parse_name_list(&path, &text) {
                out.push(finding(
                    &path,
                    Some(e.line),
                    Check::Deps,
                    &format!("{:?} is not a valid element name (one name a line)", e.text),
                ));
            }
        }
    }
    for (name, path) in children(dir)? {
        let meta = fs::metadata(&path).with_context(|| format!("reading {path:?}"))?;
        if !meta.is_dir() {
            continue;
        }
        if PHASES.iter().any(|p| p.dir() == name) {
            scripts::lint_phase_dir(&path, name == "install.d", &mut out)?;
        } else if name.ends_with(".d") && !OTHER_D_DIRS.contains(&name.as_str()) {
            out.push(finding(
                &path,
                None,
                Check::Phase,
                &format!(
                    "unknown directory '{name}': nothing runs it; phase directories are {}",
                    PHASES
                        .iter()
                        .map(|p| p.dir())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let mut files = Vec::new();
    collect_files(dir, true, &mut files)?;
    for file in files {
        text::lint_text_file(dir, &file, &mut out)?;
    }
    let mut opt_outs: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut filtered = Vec::with_capacity(out.len());
    for f in out {
        if !opt_outs.contains_key(&f.path) {
            opt_outs.insert(f.path.clone(), disabled(&f.path)?);
        }
        if !opt_outs[&f.path].contains(f.check.name()) {
            filtered.push(f);
        }
    }
    filtered.sort();
    filtered.dedup();
    Ok(filtered)
}

fn finding(path: &Path, line: Option<usize>, check: Check, message: &str) -> Finding {
    Finding {
        path: path.to_path_buf(),
        line,
        check,
        message: message.to_string(),
    }
}

fn children(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for d in fs::read_dir(dir).with_context(|| format!("reading {dir:?}"))? {
        let d = d.with_context(|| format!("reading {dir:?}"))?;
        let name = d.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            out.push((name, d.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Checks names from `dib-lint: disable=a,b c` comments in a file.
fn disabled(path: &Path) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    if !path.is_file() {
        return Ok(set);
    }
    let text =
        String::from_utf8_lossy(&fs::read(path).with_context(|| format!("reading {path:?}"))?)
            .into_owned();
    for line in text.lines() {
        if let Some((_, rest)) = line.split_once("dib-lint: disable=") {
            set.extend(
                rest.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }
    Ok(set)
}

/// Regular files under `dir`, skipping hidden entries, symlinks and verbatim dirs.
fn collect_files(dir: &Path, top: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    for (name, path) in children(dir)? {
        let meta = fs::symlink_metadata(&path).with_context(|| format!("reading {path:?}"))?;
        if meta.is_dir() {
            if !(top && VERBATIM_DIRS.contains(&name.as_str())) {
                collect_files(&path, false, out)?;
            }
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}
