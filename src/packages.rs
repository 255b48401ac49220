//! Package lists of elements: `package-installs.yaml` and `pkg-map`.
//!
//! DIB squashes every element's `package-installs.yaml` into one list per
//! phase inside the build, after `environment.d` has set the distribution
//! variables that `pkg-map` and `when:` depend on. dib does the same, in
//! Rust, in pid 1 right before pre-install.d: [`parse`] reads one element's
//! file into [`Entry`] values (errors name the element, package and key),
//! [`plan`] filters and maps them into a [`Plan`] that the `package-installs`
//! element's hooks install phase by phase.
//!
//! Entry keys: `phase` (default install.d), `uninstall`, `build-only`
//! (installed in its phase, removed at the end of post-install.d),
//! `installtype` (source|package: only when the element's install type is
//! that), `arch` / `not-arch` (comma lists, spaces allowed; not both), `when`
//! (`VAR=value` or `VAR!=value`, or a list that must all hold; an unset VAR
//! is an error, as in DIB) and `dib_python_version` (against
//! `DIB_PYTHON_VERSION`, default 3). A value may be null, a map, or a list of
//! maps (the same package under several conditions). Unknown keys are
//! warned about and ignored, as DIB ignores them.//!
//! This file parses `package-installs.yaml`; `pkg_map` reads `pkg-map` and
//! maps names, `plan` evaluates the entries for a build.

mod pkg_map;
mod plan;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use serde_yaml_ng::Value;

pub use pkg_map::{Distro, PkgMap};
pub use plan::{plan, Context, Plan};

/// Phases a package may be installed in.
pub const PHASES: &[&str] = &["pre-install.d", "install.d", "post-install.d"];

/// One package line of an element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub package: String,
    pub element: String,
    pub phase: String,
    pub uninstall: bool,
    pub build_only: bool,
    pub installtype: Option<String>,
    pub arch: Option<Vec<String>>,
    pub not_arch: Option<Vec<String>>,
    pub when: Vec<Condition>,
    pub python_version: Option<String>,
}

/// `VAR=value` or `VAR!=value`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    pub var: String,
    pub equal: bool,
    pub value: String,
}

impl Condition {
    /// DIB's `\w+\s*(=|!=)\s*value`.
    pub(super) fn parse(s: &str) -> Option<Condition> {
        let s = s.trim_start();
        let var_len = s
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let (var, rest) = s.split_at(var_len);
        let rest = rest.trim_start();
        let (equal, value) = match rest.strip_prefix("!=") {
            Some(v) => (false, v),
            None => (true, rest.strip_prefix('=')?),
        };
        (!var.is_empty()).then(|| Condition {
            var: var.to_string(),
            equal,
            value: value.trim().to_string(),
        })
    }

    /// An unset variable is an error (a typo would otherwise silently
    /// change what is installed).
    pub(super) fn holds(&self, env: &BTreeMap<String, String>) -> Result<bool, String> {
        match env.get(&self.var) {
            Some(v) => Ok((*v == self.value) == self.equal),
            None => Err(self.var.clone()),
        }
    }
}

/// Parse one element's `package-installs.yaml` (or `.json`): the entries,
/// and warnings about keys DIB would ignore.
pub fn parse(element: &str, text: &str) -> Result<(Vec<Entry>, Vec<String>)> {
    let doc: Value = serde_yaml_ng::from_str(text).with_context(|| {
        format!("package-installs.yaml of element '{element}' is not valid YAML")
    })?;
    let map = match doc {
        Value::Null => return Ok((Vec::new(), Vec::new())),
        Value::Mapping(m) => m,
        _ => bail!("package-installs.yaml of element '{element}': expected a map of package names"),
    };
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (k, v) in map {
        let package = match k {
            Value::String(s) => s,
            other => bail!(
                "package-installs.yaml of element '{element}': {other:?} is not a package name"
            ),
        };
        let specs = match v {
            Value::Null => vec![Value::Null],
            Value::Sequence(seq) => seq,
            m @ Value::Mapping(_) => vec![m],
            _ => bail!("package-installs.yaml of element '{element}', package '{package}': expected nothing, a map or a list of maps"),
        };
        for spec in specs {
            out.push(entry(element, &package, spec, &mut warnings)?);
        }
    }
    Ok((out, warnings))
}

fn entry(element: &str, package: &str, spec: Value, warnings: &mut Vec<String>) -> Result<Entry> {
    let mut e = Entry {
        package: package.to_string(),
        element: element.to_string(),
        phase: "install.d".to_string(),
        uninstall: false,
        build_only: false,
        installtype: None,
        arch: None,
        not_arch: None,
        when: Vec::new(),
        python_version: None,
    };
    let ctx = |key: &str| {
        format!("package-installs.yaml of element '{element}', package '{package}', key '{key}'")
    };
    let map = match spec {
        Value::Null => return Ok(e),
        Value::Mapping(m) => m,
        _ => bail!(
            "package-installs.yaml of element '{element}', package '{package}': expected a map"
        ),
    };
    for (k, v) in map {
        let key = k
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{k:?}"));
        match key.as_str() {
            "phase" => {
                let p = scalar(&v).with_context(|| ctx("phase"))?;
                if !PHASES.contains(&p.as_str()) {
                    bail!("{}: {p:?} is not one of {}", ctx("phase"), PHASES.join(", "));
                }
                e.phase = p;
            }
            "uninstall" => e.uninstall = boolean(&v).with_context(|| ctx("uninstall"))?,
            "build-only" => e.build_only = boolean(&v).with_context(|| ctx("build-only"))?,
            "installtype" => {
                let t = scalar(&v).with_context(|| ctx("installtype"))?;
                if t != "source" && t != "package" {
                    bail!("{}: {t:?} is not source or package", ctx("installtype"));
                }
                e.installtype = Some(t);
            }
            "arch" => e.arch = Some(list(&v).with_context(|| ctx("arch"))?),
            "not-arch" => e.not_arch = Some(list(&v).with_context(|| ctx("not-arch"))?),
            "when" => {
                let items = match &v {
                    Value::Sequence(seq) => seq.iter().map(scalar).collect::<Result<Vec<_>>>(),
                    other => scalar(other).map(|s| vec![s]),
                }
                .with_context(|| ctx("when"))?;
                for item in items {
                    e.when.push(Condition::parse(&item).with_context(|| {
                        format!("{}: {item:?} is not VAR=value or VAR!=value", ctx("when"))
                    })?);
                }
            }
            "dib_python_version" => {
                e.python_version = Some(scalar(&v).with_context(|| ctx("dib_python_version"))?)
            }
            other => warnings.push(format!(
                "package-installs.yaml of element '{element}', package '{package}': unknown key '{other}' ignored \
                 (known: phase, uninstall, build-only, installtype, arch, not-arch, when, dib_python_version)"
            )),
        }
    }
    if e.arch.is_some() && e.not_arch.is_some() {
        bail!("package-installs.yaml of element '{element}', package '{package}': arch and not-arch together; use one");
    }
    Ok(e)
}

fn scalar(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("expected a single value"),
    }
}

fn boolean(v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => bail!("expected true or false"),
    }
}

/// `amd64, arm64` (a YAML list works too).
fn list(v: &Value) -> Result<Vec<String>> {
    let items = match v {
        Value::Sequence(seq) => seq.iter().map(scalar).collect::<Result<Vec<_>>>()?,
        other => scalar(other)?.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}
