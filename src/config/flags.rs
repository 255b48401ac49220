//! Small values of a build: `break=` points, the tmpfs policy, and the
//! `key=value` lists of `--qemu-img-options`.

use anyhow::{bail, Result};

/// A `break=` point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Breakpoint {
    Before(crate::phases::Phase),
    After(crate::phases::Phase),
    AfterError,
}

impl Breakpoint {
    /// Parse `before-<phase>`, `after-<phase>` or `after-error`. A trailing
    /// `.d` on the phase is accepted (`after-install.d`).
    pub(super) fn parse(s: &str) -> Option<Breakpoint> {
        if s == "after-error" {
            return Some(Breakpoint::AfterError);
        }
        let phase_of = |p: &str| {
            let p = p.strip_suffix(".d").unwrap_or(p);
            crate::phases::by_name(p)
        };
        if let Some(p) = s.strip_prefix("before-") {
            return phase_of(p).map(Breakpoint::Before);
        }
        s.strip_prefix("after-")
            .and_then(phase_of)
            .map(Breakpoint::After)
    }

    /// The point as `break=` names it (`before-install`).
    pub fn label(self) -> String {
        match self {
            Breakpoint::Before(p) => format!("before-{p}"),
            Breakpoint::After(p) => format!("after-{p}"),
            Breakpoint::AfterError => "after-error".to_string(),
        }
    }
}

/// Whether to build in a tmpfs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tmpfs {
    Never,
    /// Use one when MemTotal >= 2 * this many GB.
    WhenMemoryAtLeastTwice(f64),
}

/// Default `--min-tmpfs`, in GB.
pub const DEFAULT_MIN_TMPFS_GB: f64 = 2.0;

/// Parse `k=v,k=v` (keys non-empty, no spaces around).
pub(super) fn parse_kv_list(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                Ok((k.to_string(), v.to_string()))
            }
            _ => bail!("{item:?} is not of the form key=value"),
        })
        .collect()
}
