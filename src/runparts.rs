//! The run-parts planner: which files of a phase directory run, in what order.
//!
//! Mirrors DIB's `dib-run-parts`: only regular executable files
//! (symlinks to such files count) directly in the directory, whose names match
//! `^[0-9A-Za-z_-]+$`, run; everything else is skipped with a reason. Order is
//! `LC_ALL=C sort -n`: numeric on the leading number, names without one count
//! as 0, ties broken bytewise. `environment.d` files are sourced in byte
//! order of their names, need not be executable, and may contain dots.
//!
//! The decision is a pure function over [`Entry`] values so it can be tested
//! without a file system; [`plan_dir`] feeds it from a real directory.

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// What the planner needs to know about one directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    /// Any execute bit set (on the symlink's target for symlinks).
    pub executable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file, or a symlink resolving to one.
    File,
    Directory,
    /// A symlink to nothing, a socket, a device, ...
    Other,
}

/// Why a file does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The name has characters outside `[0-9A-Za-z_-]` (for example a `.sh` suffix).
    BadName,
    NotExecutable,
    NotAFile,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::BadName => "name has characters other than 0-9 A-Z a-z _ -",
            Skip::NotExecutable => "not executable",
            Skip::NotAFile => "not a regular file",
        })
    }
}

/// The outcome for one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names that run, in order.
    pub run: Vec<String>,
    /// Names that do not, sorted the same way, with the reason.
    pub skipped: Vec<(String, Skip)>,
}

/// Whether run-parts accepts this name: `^[0-9A-Za-z_-]+$`.
pub fn valid_script_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Decide which entries of a phase directory run and in which order.
pub fn plan(mut entries: Vec<Entry>) -> Plan {
    entries.sort_by(|a, b| sort_n(&a.name, &b.name));
    let mut out = Plan::default();
    for e in entries {
        let skip = if e.kind != EntryKind::File {
            Some(Skip::NotAFile)
        } else if !valid_script_name(&e.name) {
            Some(Skip::BadName)
        } else if !e.executable {
            Some(Skip::NotExecutable)
        } else {
            None
        };
        match skip {
            Some(why) => out.skipped.push((e.name, why)),
            None => out.run.push(e.name),
        }
    }
    out
}

/// Whether an `environment.d` file is sourced: `^[0-9A-Za-z_.-]+$`, as DIB
/// filters them (so editor backups like `10-foo~` are not).
pub fn valid_environment_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Which `environment.d` files are sourced, in order: regular files with
/// valid names, in the byte order of their paths (DIB sorts the full paths
/// with `sort -n`, where no path has a leading number, so `10-b` comes
/// before `5-a`).
pub fn plan_environment(mut entries: Vec<Entry>) -> Vec<String> {
    entries.retain(|e| e.kind == EntryKind::File && valid_environment_name(&e.name));
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    entries.into_iter().map(|e| e.name).collect()
}

/// Read a directory into planner entries. A missing directory has no entries.
pub fn read_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for dirent in rd {
        let dirent = dirent?;
        let name = dirent.file_name().to_string_lossy().into_owned();
        // fs::metadata follows symlinks: a link to an executable file runs.
        let (kind, executable) = match fs::metadata(dirent.path()) {
            Ok(m) if m.is_file() => (EntryKind::File, m.permissions().mode() & 0o111 != 0),
            Ok(m) if m.is_dir() => (EntryKind::Directory, false),
            _ => (EntryKind::Other, false),
        };
        out.push(Entry {
            name,
            kind,
            executable,
        });
    }
    Ok(out)
}

/// The plan of a real directory, as full paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirPlan {
    pub run: Vec<PathBuf>,
    pub skipped: Vec<(PathBuf, Skip)>,
}

/// Plan a real directory.
pub fn plan_dir(dir: &Path) -> io::Result<DirPlan> {
    let p = plan(read_entries(dir)?);
    Ok(DirPlan {
        run: p.run.into_iter().map(|n| dir.join(n)).collect(),
        skipped: p
            .skipped
            .into_iter()
            .map(|(n, s)| (dir.join(n), s))
            .collect(),
    })
}

/// `LC_ALL=C sort -n` order for two lines: compare the leading numbers
/// (optional `-`, digits, optional `.digits`; none means 0), then the whole
/// strings bytewise (sort's last-resort comparison).
pub fn sort_n(a: &str, b: &str) -> Ordering {
    compare_numbers(&leading_number(a), &leading_number(b))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

#[derive(Debug, PartialEq, Eq)]
struct Number<'a> {
    negative: bool,
    /// Integer digits without leading zeros.
    int: &'a str,
    /// Fraction digits without trailing zeros.
    frac: &'a str,
}

fn leading_number(s: &str) -> Number<'_> {
    let s = s.trim_start_matches([' ', '\t']);
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let int = rest[..int_len].trim_start_matches('0');
    let after = &rest[int_len..];
    let frac = match after.strip_prefix('.') {
        Some(f) => {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            f[..n].trim_end_matches('0')
        }
        None => "",
    };
    let zero = int.is_empty() && frac.is_empty();
    Number {
        negative: negative && !zero,
        int,
        frac,
    }
}

fn compare_numbers(a: &Number<'_>, b: &Number<'_>) -> Ordering {
    match (a.negative, b.negative) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (neg, _) => {
            let magnitude = a
                .int
                .len()
                .cmp(&b.int.len())
                .then_with(|| a.int.cmp(b.int))
                .then_with(|| a.frac.cmp(b.frac));
            if neg {
                magnitude.reverse()
            } else {
                magnitude
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, executable: bool) -> Entry {
        Entry {
            name: name.into(),
            kind: EntryKind::File,
            executable,
        }
    }

    #[test]
    fn sort_n_table() {
        // (a, b, expected order of a relative to b)
        let cases = [
            ("5-x", "10-x", Ordering::Less),
            ("100-a", "99-b", Ordering::Greater),
            ("10-a", "10-b", Ordering::Less),
            ("foo", "1-a", Ordering::Less),    // no number counts as 0
            ("foo", "0-a", Ordering::Greater), // 0 == 0, then bytewise: 'f' > '0'
            ("007-a", "7-a", Ordering::Less),  // equal numbers, bytewise tie-break
            ("B", "a", Ordering::Less),        // C locale: uppercase first
            ("-5x", "foo", Ordering::Less),    // sort -n reads a leading minus
            ("1.5-a", "1.25-a", Ordering::Greater),
            ("123456789012345678901234567890-a", "9-a", Ordering::Greater),
            ("10-a", "10-a", Ordering::Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(sort_n(a, b), want, "{a} vs {b}");
            assert_eq!(sort_n(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn plan_table() {
        let entries = vec![
            file("10-x", true),
            file("5-x", true),
            file("99-b", true),
            file("100-a", true),
            file("10-foo.sh", true),
            file("20-not-exec", false),
            file("name with space", true),
            file("zz", true),
            Entry {
                name: "30-dir".into(),
                kind: EntryKind::Directory,
                executable: false,
            },
            Entry {
                name: "40-dangling".into(),
                kind: EntryKind::Other,
                executable: false,
            },
        ];
        let p = plan(entries);
        assert_eq!(p.run, vec!["zz", "5-x", "10-x", "99-b", "100-a"]);
        assert_eq!(
            p.skipped,
            vec![
                ("name with space".to_string(), Skip::BadName),
                ("10-foo.sh".to_string(), Skip::BadName),
                ("20-not-exec".to_string(), Skip::NotExecutable),
                ("30-dir".to_string(), Skip::NotAFile),
                ("40-dangling".to_string(), Skip::NotAFile),
            ]
        );
    }

    #[test]
    fn environment_files_are_in_byte_order_may_have_dots_and_no_exec_bit() {
        let entries = vec![
            file("10-b.bash", false),
            file("5-a.bash", false),
            file("README", false),
            file("10-b.bash~", false),
            file("#10-b.bash#", false),
            Entry {
                name: "sub".into(),
                kind: EntryKind::Directory,
                executable: false,
            },
        ];
        assert_eq!(
            plan_environment(entries),
            vec!["10-b.bash", "5-a.bash", "README"]
        );
    }

    #[test]
    fn script_names() {
        for ok in ["10-foo", "foo_bar", "A-1", "99"] {
            assert!(valid_script_name(ok), "{ok}");
        }
        for bad in ["", "10-foo.sh", "a b", "a~", "ä"] {
            assert!(!valid_script_name(bad), "{bad}");
        }
    }
}
