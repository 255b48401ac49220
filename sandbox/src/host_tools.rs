//! The host tools dib and dib-helper run, and the Debian package of each.
//!
//! The list is `sandbox/host-tools.txt`, the same file `scripts/prepare-host`
//! installs from and checks against, so the package an error names is the
//! one the installer installs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The list as shipped: `tool package used-by...` lines, `#` comments.
const LIST: &str = include_str!("../host-tools.txt");

/// One line of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTool {
    /// A command name, or an absolute path (maybe a glob) for a file.
    pub tool: &'static str,
    /// The Debian package that has it.
    pub package: &'static str,
    /// Who runs it, in words.
    pub used_by: &'static str,
}

/// Every tool on the list, in its order.
pub fn all() -> &'static [HostTool] {
    static TOOLS: OnceLock<Vec<HostTool>> = OnceLock::new();
    TOOLS.get_or_init(|| parse(LIST))
}

fn parse(text: &'static str) -> Vec<HostTool> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (tool, rest) = l.split_once(char::is_whitespace)?;
            let rest = rest.trim_start();
            let (package, used_by) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let used_by = used_by.trim();
            Some(HostTool {
                tool,
                package,
                used_by,
            })
        })
        .collect()
}

/// The Debian package with `tool`, when the list has it: an entry as
/// written (a command, or a file's path or glob), else the command named by
/// the file name of a path (`/usr/sbin/mkfs.xfs`).
pub fn package(tool: &str) -> Option<&'static str> {
    let name = Path::new(tool)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(tool);
    let entry = |want: &str| all().iter().find(|t| t.tool == want).map(|t| t.package);
    entry(tool).or_else(|| entry(name))
}

/// "TOOL (Debian package PACKAGE)", as errors name a missing tool (the
/// tool alone if the list lacks it).
pub fn describe(tool: &str) -> String {
    match package(tool) {
        Some(p) => format!("{tool} (Debian package {p})"),
        None => tool.to_string(),
    }
}

/// The command `name` on `path_env` (`PATH`) or in the system directories a
/// plain user's `PATH` often lacks (mkfs, depmod and debugfs live in sbin).
pub fn find(name: &str, path_env: Option<&str>) -> Option<PathBuf> {
    path_env
        .unwrap_or("")
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(SYSTEM_DIRS)
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The system's command directories, sbin among them: where [`find`] looks
/// after `PATH`, and (as [`system_path`]) the whole `PATH` of the tools
/// dib-helper runs.
pub const SYSTEM_DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// [`SYSTEM_DIRS`] as a `PATH` value.
pub fn system_path() -> String {
    SYSTEM_DIRS.join(":")
}

/// Whether `tool` is in place: a command found by [`find`], or an absolute
/// path (its components may hold `*`) that names an existing file.
pub fn present(tool: &str, path_env: Option<&str>) -> bool {
    if tool.starts_with('/') {
        glob_exists(Path::new("/"), tool.trim_start_matches('/'))
    } else {
        find(tool, path_env).is_some()
    }
}

/// Whether `rest` (components, `*` matching any run of characters within
/// one) names something under `dir`.
fn glob_exists(dir: &Path, rest: &str) -> bool {
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let next = |p: PathBuf| {
        if tail.is_empty() {
            p.exists()
        } else {
            glob_exists(&p, tail)
        }
    };
    if !first.contains('*') {
        return next(dir.join(first));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(first, n)))
        .any(|e| next(e.path()))
}

/// `pattern` (with `*`) matches all of `name`.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some(mut rest) = name.strip_prefix(parts[0]) else {
        return false;
    };
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Each of `tools` that is not in place, described with its package.
pub fn missing<'a>(tools: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let path = std::env::var("PATH").ok();
    tools
        .into_iter()
        .filter(|t| !present(t, path.as_deref()))
        .map(describe)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_with_a_package_and_a_user_for_every_tool() {
        let tools = all();
        assert!(tools.len() > 30, "{tools:?}");
        for t in tools {
            assert!(!t.package.is_empty() && !t.used_by.is_empty(), "{t:?}");
            assert!(
                t.package
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)),
                "not a Debian package name: {t:?}"
            );
        }
        let mut names: Vec<_> = tools.iter().map(|t| t.tool).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "a tool listed twice");
    }

    #[test]
    fn tools_name_their_packages() {
        assert_eq!(package("qemu-img"), Some("qemu-utils"));
        assert_eq!(package("/usr/sbin/mkfs.xfs"), Some("xfsprogs"));
        assert_eq!(package("newgidmap"), Some("uidmap"));
        assert_eq!(describe("mcopy"), "mcopy (Debian package mtools)");
        assert_eq!(package("no-such-tool"), None);
    }

    #[test]
    fn finds_tools_on_path_then_in_the_system_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("newuidmap"), "").unwrap();
        let path = dir.path().display().to_string();
        assert_eq!(
            find("newuidmap", Some(&path)),
            Some(dir.path().join("newuidmap"))
        );
        assert_eq!(find("sh", Some("")), Some(PathBuf::from("/usr/bin/sh")));
        assert_eq!(system_path(), "/usr/bin:/usr/sbin:/bin:/sbin");
        assert_eq!(find("no-such-tool-here", Some(&path)), None);
        assert_eq!(missing(["no-such-tool-here"]), ["no-such-tool-here"]);
    }

    #[test]
    fn files_are_found_by_path_and_glob() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = dir.path().join("lib/x86_64-linux-gnu/qemu");
        std::fs::create_dir_all(&qemu).unwrap();
        std::fs::write(qemu.join("block-iscsi.so"), "").unwrap();
        let d = dir.path().display();
        assert!(present(&format!("{d}/lib/*/qemu/block-iscsi.so"), None));
        assert!(present(&format!("{d}/lib/x86_64-*-gnu/qemu/*.so"), None));
        assert!(!present(&format!("{d}/lib/*/qemu/block-nfs.so"), None));
        assert!(!present(&format!("{d}/nolib/*/qemu/block-iscsi.so"), None));
        assert!(present(&format!("{d}/lib"), None));
        for (p, n, want) in [
            ("*", "", true),
            ("a*c", "abc", true),
            ("a*c", "abcd", false),
            ("*.so", "x.so", true),
            ("x*y*z", "xaybz", true),
            ("x*y*z", "xazby", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
        ] {
            assert_eq!(wildcard(p, n), want, "{p} {n}");
        }
        assert_eq!(
            describe("/usr/lib/*/qemu/block-iscsi.so"),
            "/usr/lib/*/qemu/block-iscsi.so (Debian package qemu-block-extra)"
        );
    }
}
