//! Elements: discovery over `ELEMENTS_PATH` and dependency expansion.
//!
//! An element is a directory. Discovery (this module) only maps names to
//! directories; the metadata files (`element-deps`, `element-provides`) are read
//! lazily by [`resolve`] for the elements that end up in the closure, so a
//! broken element elsewhere on the path never breaks an unrelated build.
//!
//! Mirrors DIB's `element_dependencies.py`: the first path entry that
//! has a name wins and a shadowed copy is reported; the shipped tree is always
//! searched last.

mod resolve;

pub use resolve::{resolve, Resolution, ResolveError, ResolvedElement};

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Errors from scanning the element search path.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("ELEMENTS_PATH entry {0:?} is not a directory; fix or remove it")]
    NotADirectory(PathBuf),
    #[error("reading element directory {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One element directory found on the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementDir {
    pub name: String,
    /// The directory, under its search path entry as given.
    pub path: PathBuf,
    /// The same directory with every symlink resolved.
    pub real_path: PathBuf,
}

/// An element hidden by an earlier search path entry with the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    pub name: String,
    /// The copy that is used.
    pub used: PathBuf,
    /// The copy that is ignored.
    pub ignored: PathBuf,
}

impl std::fmt::Display for Shadowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "element '{}' at {} shadows {} (the first ELEMENTS_PATH entry wins)",
            self.name,
            self.used.display(),
            self.ignored.display()
        )
    }
}

/// Every element visible on the search path, by name.
#[derive(Debug, Clone, Default)]
pub struct ElementSet {
    elements: BTreeMap<String, ElementDir>,
    search_path: Vec<PathBuf>,
    shadowed: Vec<Shadowed>,
}

impl ElementSet {
    /// Scan `ELEMENTS_PATH` (colon-separated, may be empty) followed by the
    /// shipped tree. Empty entries are ignored; an entry that is not a
    /// directory is an error naming it. The shipped tree is skipped when the
    /// user already listed it, so it never shadows itself.
    pub fn discover(elements_path: Option<&str>, shipped: &Path) -> Result<Self, DiscoverError> {
        let mut entries: Vec<PathBuf> = elements_path
            .unwrap_or("")
            .split(':')
            .filter(|e| !e.is_empty())
            .map(PathBuf::from)
            .collect();
        entries.push(shipped.to_path_buf());
        // The same directory twice (`/x:/x/`, or the shipped tree listed by
        // hand) would only shadow itself: keep its first occurrence.
        let mut seen = std::collections::BTreeSet::new();
        entries.retain(|e| match fs::canonicalize(e) {
            Ok(real) => seen.insert(real),
            Err(_) => true, // reported by scan
        });
        Self::scan(entries)
    }

    /// Scan exactly these directories, in order.
    pub fn scan(entries: Vec<PathBuf>) -> Result<Self, DiscoverError> {
        let mut set = ElementSet::default();
        for entry in entries {
            if !entry.is_dir() {
                return Err(DiscoverError::NotADirectory(entry));
            }
            let read = |source| DiscoverError::Read {
                path: entry.clone(),
                source,
            };
            // Resolved once per entry: an element that is a plain directory
            // is then real without a syscall of its own.
            let entry_real = fs::canonicalize(&entry).map_err(read)?;
            let mut names = Vec::new();
            for dirent in fs::read_dir(&entry).map_err(read)? {
                let dirent = dirent.map_err(read)?;
                let name = match dirent.file_name().into_string() {
                    Ok(name) if !name.starts_with('.') => name,
                    _ => continue,
                };
                let path = dirent.path();
                let kind = dirent.file_type().map_err(read)?;
                let real_path = if kind.is_dir() {
                    entry_real.join(&name)
                } else if kind.is_symlink() && path.is_dir() {
                    // A symlinked element is an element, at its target.
                    fs::canonicalize(&path).map_err(read)?
                } else {
                    continue;
                };
                names.push((name, path, real_path));
            }
            names.sort();
            for (name, path, real_path) in names {
                match set.elements.get(&name) {
                    Some(used) => set.shadowed.push(Shadowed {
                        name,
                        used: used.path.clone(),
                        ignored: path,
                    }),
                    None => {
                        set.elements.insert(
                            name.clone(),
                            ElementDir {
                                name,
                                path,
                                real_path,
                            },
                        );
                    }
                }
            }
            set.search_path.push(entry);
        }
        Ok(set)
    }

    pub fn get(&self, name: &str) -> Option<&ElementDir> {
        self.elements.get(name)
    }

    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ElementDir> {
        self.elements.values()
    }

    /// The directories searched, in order (the shipped tree last).
    pub fn search_path(&self) -> &[PathBuf] {
        &self.search_path
    }

    /// Elements hidden by an earlier entry, in discovery order.
    pub fn shadowed(&self) -> &[Shadowed] {
        &self.shadowed
    }
}

/// Whether `name` may name an element: a single non-empty path component
/// without whitespace. DIB does not check; a typo there otherwise surfaces as
/// a confusing "not found" much later.
pub fn valid_element_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A parse error in an `element-deps` / `element-provides` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {text:?} is not a valid element name (one name a line; '#' starts a comment)", file.display())]
pub struct ListError {
    pub file: PathBuf,
    pub line: usize,
    pub text: String,
}

/// Parse a one-name-a-line list (`element-deps`, `element-provides`): blank
/// lines and lines starting with `#` are ignored, surrounding whitespace is
/// trimmed.
pub fn parse_name_list(file: &Path, text: &str) -> Result<Vec<String>, ListError> {
    let mut names = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !valid_element_name(line) {
            return Err(ListError {
                file: file.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
            });
        }
        names.push(line.to_string());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lists_skip_comments_and_blanks() {
        let text = "# deps\n\n  b  \na\n#c\n";
        assert_eq!(
            parse_name_list(Path::new("x/element-deps"), text).unwrap(),
            vec!["b", "a"]
        );
    }

    #[test]
    fn name_lists_reject_two_names_on_a_line() {
        let err = parse_name_list(Path::new("x/element-deps"), "a\nb c\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/element-deps:2: \"b c\" is not a valid element name (one name a line; '#' starts a comment)"
        );
    }

    #[test]
    fn element_names() {
        for ok in ["a", "block-device-mbr", "x_y.z", "0"] {
            assert!(valid_element_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a\tb"] {
            assert!(!valid_element_name(bad), "{bad:?}");
        }
    }
}
