//! The environment snapshot a configuration is read from, and reading its
//! values: every error names the variable.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// An environment snapshot.
pub type Env = BTreeMap<String, String>;

/// The environment of the current process. Entries that are not UTF-8 are
/// dropped (with a debug line): dib reads none of them, and hooks still get
/// the process environment.
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => Some((k, v)),
            (k, _) => {
                tracing::debug!("ignoring environment variable {k:?}: not UTF-8");
                None
            }
        })
        .collect()
}

/// Variables kept by `-c` besides `DIB_*`.
const KEPT_BY_CLEAR: &[&str] = &[
    "ELEMENTS_PATH",
    "PATH",
    "HOME",
    "TERM",
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
];

/// The environment `-c` leaves.
pub fn cleared_env(env: &Env) -> Env {
    env.iter()
        .filter(|(k, _)| k.starts_with("DIB_") || KEPT_BY_CLEAR.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(super) fn env_flag(env: &Env, var: &str) -> Result<bool> {
    match env.get(var).map(String::as_str) {
        None | Some("") | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => bail!("{var}={other:?} is not valid: use 1 to enable or 0 to disable"),
    }
}

pub(super) fn env_parse<T: std::str::FromStr>(
    env: &Env,
    var: &str,
    what: &str,
) -> Result<Option<T>> {
    match env.get(var).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{var}={v:?} is not valid: expected {what}")),
    }
}

pub(super) fn env_positive(env: &Env, var: &str) -> Result<Option<f64>> {
    let v: Option<f64> = env_parse(env, var, "a positive number")?;
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            bail!("{var}={x} is not valid: expected a positive number")
        }
        other => Ok(other),
    }
}
