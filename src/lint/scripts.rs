//! Phase directories and their scripts: what run-parts would skip, and the
//! `#!`, `set -eu -o pipefail` and `DIB_DEBUG_TRACE` conventions.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::{children, finding, Check, Finding};
use crate::runparts::valid_script_name;

pub(super) fn lint_phase_dir(dir: &Path, install_d: bool, out: &mut Vec<Finding>) -> Result<()> {
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

pub(super) fn has_order_prefix(name: &str) -> bool {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    digits >= 2 && name.as_bytes().get(digits) == Some(&b'-')
}

/// The interpreter of a `#!` line (`bash` for `#!/usr/bin/env bash`).
pub(super) fn interpreter(first_line: &str) -> Option<&str> {
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

pub(super) fn is_shell(interp: &str) -> bool {
    matches!(interp, "bash" | "sh" | "dash")
}

/// Flags a script turns on with `set`: (e, u, pipefail, x).
pub(super) fn set_flags(text: &str) -> (bool, bool, bool, bool) {
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
