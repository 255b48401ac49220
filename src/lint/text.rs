//! Every text file of an element: whitespace, tabs, shell indentation,
//! environment.d defaults, YAML.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::scripts::{interpreter, is_shell};
use super::shell::ShellScan;
use super::{finding, Check, Finding, INDENT};

pub(super) fn lint_text_file(element: &Path, path: &Path, out: &mut Vec<Finding>) -> Result<()> {
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
pub(super) fn check_indent(path: &Path, text: &str, out: &mut Vec<Finding>) {
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

/// `export FOO=${FOO:-default}` in environment.d: overridable defaults are
/// `DIB_`-prefixed so users can tell them from the build's own variables.
pub(super) fn check_defaults(path: &Path, text: &str, out: &mut Vec<Finding>) {
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
