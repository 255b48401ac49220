//! `dib lint`: check elements against the element conventions (docs/elements.md).
//!
//! Like DIB's `dib-lint`, each finding names a file (and line) and a check;
//! a file opts out of checks with a comment `# dib-lint: disable=check,check`.
//! Beyond DIB it catches the mistakes that silently drop a hook: a phase
//! script whose name run-parts ignores (`10-foo.sh`), one without its execute
//! bit, and a misspelt phase directory (`post-instal.d`).
//!
//! Files under `static/` are copied into images verbatim and are not checked
//! for style.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::elements::parse_name_list;
use crate::phases::PHASES;
use crate::runparts::valid_script_name;

/// Other `.d` directories the core or the ramdisk elements read.
pub const OTHER_D_DIRS: &[&str] = &["environment.d", "init.d", "binary-deps.d", "udev.d"];
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
            lint_phase_dir(&path, name == "install.d", &mut out)?;
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
        lint_text_file(dir, &file, &mut out)?;
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

fn lint_phase_dir(dir: &Path, install_d: bool, out: &mut Vec<Finding>) -> Result<()> {
    for (name, path) in children(dir)? {
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => {
                out.push(finding(
                    &path,
                    None,
                    Check::Name,
                    "dangling symlink: run-parts skips it",
                ));
                continue;
            }
        };
        if meta.is_dir() {
            if install_d && name.ends_with("-install") {
                lint_phase_dir(&path, false, out)?;
            } else {
                out.push(finding(
                    &path,
                    None,
                    Check::Name,
                    "directory in a phase directory: run-parts ignores it",
                ));
            }
            continue;
        }
        if !valid_script_name(&name) {
            out.push(finding(
                &path,
                None,
                Check::Name,
                &format!("'{name}' never runs: run-parts only runs names made of 0-9 A-Z a-z _ -"),
            ));
        } else if !has_order_prefix(&name) {
            out.push(finding(
                &path,
                None,
                Check::Name,
                &format!("'{name}' should start with a two-digit order prefix, like 50-{name}"),
            ));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            out.push(finding(
                &path,
                None,
                Check::Executable,
                "not executable: run-parts skips it (chmod +x)",
            ));
        }
        lint_script(&path, out)?;
    }
    Ok(())
}

fn has_order_prefix(name: &str) -> bool {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    digits >= 2 && name.as_bytes().get(digits) == Some(&b'-')
}

/// The interpreter of a `#!` line (`bash` for `#!/usr/bin/env bash`).
fn interpreter(first_line: &str) -> Option<&str> {
    let rest = first_line.strip_prefix("#!")?.trim();
    let mut words = rest.split_whitespace();
    let prog = words.next()?;
    let base = prog.rsplit('/').next()?;
    if base == "env" {
        words.find(|w| !w.starts_with('-'))
    } else {
        Some(base)
    }
}

fn is_shell(interp: &str) -> bool {
    matches!(interp, "bash" | "sh" | "dash")
}

/// Flags a script turns on with `set`: (e, u, pipefail, x).
fn set_flags(text: &str) -> (bool, bool, bool, bool) {
    let (mut e, mut u, mut pipefail, mut x) = (false, false, false, false);
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("set ") else {
            continue;
        };
        let mut words = rest.split_whitespace().take_while(|w| !w.starts_with('#'));
        while let Some(w) = words.next() {
            let Some(opts) = w.strip_prefix('-') else {
                continue;
            };
            for c in opts.chars() {
                match c {
                    'e' => e = true,
                    'u' => u = true,
                    'x' => x = true,
                    'o' => match words.next() {
                        Some("pipefail") => pipefail = true,
                        Some("errexit") => e = true,
                        Some("nounset") => u = true,
                        Some("xtrace") => x = true,
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    (e, u, pipefail, x)
}

fn lint_script(path: &Path, out: &mut Vec<Finding>) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {path:?}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or("");
    let Some(interp) = interpreter(first) else {
        out.push(finding(
            path,
            Some(1),
            Check::Shebang,
            "no #! line: start the script with #!/bin/bash",
        ));
        return Ok(());
    };
    if !is_shell(interp) {
        return Ok(());
    }
    let (e, u, pipefail, x) = set_flags(&text);
    if !e {
        out.push(finding(
            path,
            None,
            Check::SetE,
            "does not 'set -e': add 'set -eu -o pipefail'",
        ));
    }
    if !u {
        out.push(finding(
            path,
            None,
            Check::SetU,
            "does not 'set -u': add 'set -eu -o pipefail'",
        ));
    }
    if interp == "bash" && !pipefail {
        out.push(finding(
            path,
            None,
            Check::SetPipefail,
            "does not 'set -o pipefail': add 'set -eu -o pipefail'",
        ));
    }
    if !text.contains("DIB_DEBUG_TRACE") {
        let msg = if x {
            "'set -x' without DIB_DEBUG_TRACE: trace only when DIB_DEBUG_TRACE > 0"
        } else {
            "no trace switch: add 'if [ ${DIB_DEBUG_TRACE:-0} -gt 0 ]; then set -x; fi'"
        };
        out.push(finding(path, None, Check::DebugTrace, msg));
    }
    Ok(())
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

fn lint_text_file(element: &Path, path: &Path, out: &mut Vec<Finding>) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {path:?}"))?;
    if bytes.contains(&0) {
        return Ok(()); // binary
    }
    let text = String::from_utf8_lossy(&bytes);
    for (i, line) in text.split('\n').enumerate() {
        let n = Some(i + 1);
        if line.ends_with('\r') {
            out.push(finding(
                path,
                n,
                Check::Whitespace,
                "carriage return: use Unix line endings",
            ));
        } else if line.ends_with([' ', '\t']) {
            out.push(finding(path, n, Check::Whitespace, "trailing whitespace"));
        }
        if line.contains('\t') {
            out.push(finding(
                path,
                n,
                Check::Tabs,
                "hard tab: indent with spaces",
            ));
        }
    }
    let rel = path.strip_prefix(element).unwrap_or(path);
    let in_env_d = rel.starts_with("environment.d");
    let shell = in_env_d || interpreter(text.lines().next().unwrap_or("")).is_some_and(is_shell);
    if shell {
        check_indent(path, &text, out);
    }
    if in_env_d {
        check_defaults(path, &text, out);
    }
    let ext = path.extension().and_then(|e| e.to_str());
    if matches!(ext, Some("yaml") | Some("yml")) {
        if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
            let line = e.location().map(|l| l.line());
            out.push(finding(
                path,
                line,
                Check::Yaml,
                &format!("invalid YAML: {e}"),
            ));
        }
    }
    Ok(())
}

/// Shell indentation is a multiple of four spaces. Only lines that start
/// as code are checked: heredoc bodies, the inside of quoted strings spanning
/// lines (an `awk '...'` program) and continuation lines are free-form.
fn check_indent(path: &Path, text: &str, out: &mut Vec<Finding>) {
    let mut scan = ShellScan::default();
    let mut continued = false;
    for (i, line) in text.lines().enumerate() {
        let code_line = scan.heredocs.is_empty() && !scan.in_single && !scan.in_double;
        scan.line(line);
        if !code_line {
            continue;
        }
        let trimmed = line.trim_end();
        let was_continued = continued;
        continued = trimmed.ends_with('\\')
            || trimmed.ends_with('|')
            || trimmed.ends_with("&&")
            || trimmed.ends_with("||")
            || trimmed.ends_with('(');
        if was_continued || trimmed.is_empty() {
            continue;
        }
        let spaces = line.len() - line.trim_start_matches(' ').len();
        if spaces % INDENT != 0 {
            out.push(finding(
                path,
                Some(i + 1),
                Check::Indent,
                &format!("indented by {spaces} spaces: use multiples of {INDENT}"),
            ));
        }
    }
}

/// Just enough of a shell lexer to tell code lines from content lines:
/// quotes that stay open across lines, comments, and heredocs.
#[derive(Debug, Default)]
struct ShellScan {
    in_single: bool,
    in_double: bool,
    /// Delimiters of heredocs whose bodies are still to come, in order.
    heredocs: std::collections::VecDeque<String>,
}

impl ShellScan {
    fn line(&mut self, line: &str) {
        if let Some(end) = self.heredocs.front() {
            // `<<-` bodies may indent the delimiter with tabs.
            if line.trim_start_matches('\t') == end {
                self.heredocs.pop_front();
            }
            return;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut arithmetic = 0usize;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if self.in_single {
                if c == '\'' {
                    self.in_single = false;
                }
            } else if self.in_double {
                match c {
                    '\\' => i += 1,
                    '"' => self.in_double = false,
                    _ => {}
                }
            } else {
                match c {
                    '\\' => i += 1,
                    '\'' => self.in_single = true,
                    '"' => self.in_double = true,
                    '#' if i == 0 || chars[i - 1].is_whitespace() || chars[i - 1] == ';' => break,
                    '(' if next == Some('(') => {
                        arithmetic += 1;
                        i += 1;
                    }
                    ')' if next == Some(')') && arithmetic > 0 => {
                        arithmetic -= 1;
                        i += 1;
                    }
                    '<' if next == Some('<') && arithmetic == 0 => {
                        if chars.get(i + 2) == Some(&'<') {
                            i += 3; // here-string
                            continue;
                        }
                        let (word, len) = heredoc_word(&chars[i + 2..]);
                        if let Some(word) = word {
                            self.heredocs.push_back(word);
                        }
                        i += 2 + len;
                        continue;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
    }
}

/// The delimiter after `<<` (quotes and backslashes removed, as the shell
/// compares it) and how many characters it took.
fn heredoc_word(rest: &[char]) -> (Option<String>, usize) {
    let mut i = 0;
    if rest.first() == Some(&'-') {
        i += 1;
    }
    while rest.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    let mut word = String::new();
    let mut quote: Option<char> = None;
    while let Some(&c) = rest.get(i) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '\\' => {}
            None if c.is_whitespace() || ";&|<>()".contains(c) => break,
            None => word.push(c),
        }
        i += 1;
    }
    ((!word.is_empty()).then_some(word), i)
}

#[cfg(test)]
fn heredoc_delimiter(line: &str) -> Option<String> {
    let mut scan = ShellScan::default();
    scan.line(line);
    scan.heredocs.pop_front()
}

/// `export FOO=${FOO:-default}` in environment.d: overridable defaults are
/// `DIB_`-prefixed so users can tell them from the build's own variables.
fn check_defaults(path: &Path, text: &str, out: &mut Vec<Finding>) {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        let l = l.strip_prefix("export ").unwrap_or(l).trim_start();
        let Some((name, value)) = l.split_once('=') else {
            continue;
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let value = value.trim_start_matches('"');
        let defaulted = [":-", ":=", "-", "="]
            .iter()
            .any(|op| value.starts_with(&format!("${{{name}{op}")));
        if defaulted && !name.starts_with("DIB_") {
            out.push(finding(
                path,
                Some(i + 1),
                Check::Defaults,
                &format!("overridable default '{name}' should be DIB_-prefixed (DIB_{name})"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_flag_spellings() {
        assert_eq!(
            set_flags("set -eu -o pipefail\n"),
            (true, true, true, false)
        );
        assert_eq!(set_flags("set -euo pipefail\n"), (true, true, true, false));
        assert_eq!(
            set_flags("set -e\nset -u\nset -o pipefail\n"),
            (true, true, true, false)
        );
        assert_eq!(
            set_flags("set -o errexit -o nounset\n"),
            (true, true, false, false)
        );
        assert_eq!(set_flags("  set -x\n"), (false, false, false, true));
        assert_eq!(
            set_flags("# set -eu\necho set -e\n"),
            (false, false, false, false)
        );
    }

    #[test]
    fn interpreters() {
        assert_eq!(interpreter("#!/bin/bash"), Some("bash"));
        assert_eq!(interpreter("#!/usr/bin/env bash"), Some("bash"));
        assert_eq!(interpreter("#! /bin/sh -e"), Some("sh"));
        assert_eq!(interpreter("#!/usr/bin/env -S python3 -u"), Some("python3"));
        assert_eq!(interpreter("echo hi"), None);
    }

    #[test]
    fn heredocs() {
        assert_eq!(heredoc_delimiter("cat <<EOF > x").as_deref(), Some("EOF"));
        assert_eq!(heredoc_delimiter("cat <<-'END'").as_deref(), Some("END"));
        assert_eq!(heredoc_delimiter("cat << \"X_1\"").as_deref(), Some("X_1"));
        assert_eq!(heredoc_delimiter("grep x <<< \"$y\""), None);
        assert_eq!(heredoc_delimiter("echo hi"), None);
        assert_eq!(
            heredoc_delimiter("cat <<END-OF-TEXT").as_deref(),
            Some("END-OF-TEXT")
        );
        assert_eq!(heredoc_delimiter("cat <<\\EOF").as_deref(), Some("EOF"));
        assert_eq!(heredoc_delimiter("x=$(( 1 << 2 ))"), None);
        assert_eq!(heredoc_delimiter("echo hi # x << 2"), None);
        assert_eq!(heredoc_delimiter("echo '<<EOF'"), None);
    }

    #[test]
    fn order_prefix() {
        assert!(has_order_prefix("10-foo"));
        assert!(has_order_prefix("100-foo"));
        assert!(!has_order_prefix("1-foo"));
        assert!(!has_order_prefix("foo"));
        assert!(!has_order_prefix("10foo"));
    }

    #[test]
    fn indentation_skips_content_lines() {
        let text = "#!/bin/bash\nx=$(( 1 << 2 ))\n   odd\nawk '\n  { print }\n'\ncat <<\\EOF\n  body\nEOF\ncat <<END-X\n  body\nEND-X\n  odd\n";
        let mut out = Vec::new();
        check_indent(Path::new("s"), text, &mut out);
        let lines: Vec<_> = out.iter().map(|f| f.line.unwrap()).collect();
        assert_eq!(lines, vec![3, 13]);
    }

    #[test]
    fn indentation() {
        let text =
            "#!/bin/bash\nif x; then\n    y\n  z\nfi\ncat <<EOF\n  free\nEOF\nfoo \\\n   --bar\n";
        let mut out = Vec::new();
        check_indent(Path::new("s"), text, &mut out);
        let lines: Vec<_> = out.iter().map(|f| f.line.unwrap()).collect();
        assert_eq!(lines, vec![4]);
    }

    #[test]
    fn defaults() {
        let text = "export DIB_RELEASE=${DIB_RELEASE:-bookworm}\nexport RELEASE=${RELEASE:-x}\nFOO=\"${FOO:=y}\"\nexport DISTRO_NAME=debian\n";
        let mut out = Vec::new();
        check_defaults(Path::new("e"), text, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|f| (f.line.unwrap(), f.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    2,
                    "overridable default 'RELEASE' should be DIB_-prefixed (DIB_RELEASE)"
                ),
                (
                    3,
                    "overridable default 'FOO' should be DIB_-prefixed (DIB_FOO)"
                ),
            ]
        );
    }
}
