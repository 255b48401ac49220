//! Evaluating the parsed entries for a build: filtered by its architecture,
//! install types and environment, mapped through `pkg-map`, by phase.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{Distro, Entry, PkgMap};

/// What the build installs and removes, per phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// phase -> (package, element), in element then file order.
    pub install: BTreeMap<String, Vec<(String, String)>>,
    /// phase -> packages removed at the end of that phase's installs.
    pub uninstall: BTreeMap<String, Vec<(String, String)>>,
    /// Removed at the end of post-install.d.
    pub build_only: Vec<(String, String)>,
}

/// What a plan is evaluated against.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub arch: &'a str,
    pub env: &'a BTreeMap<String, String>,
    /// Install types: an element's is DIB_INSTALLTYPE_<element>, else the
    /// default.
    pub installtypes: &'a crate::hooks::InstallTypes,
}

/// Filter entries by arch, not-arch, installtype, dib_python_version and
/// when, map their names through each element's pkg-map, and sort them
/// into phases. A `when` naming an unset variable is an error.
pub fn plan(entries: &[Entry], maps: &BTreeMap<String, PkgMap>, ctx: &Context<'_>) -> Result<Plan> {
    let distro = Distro::from_env(ctx.env);
    let mut out = Plan::default();
    for e in entries {
        if let Some(arch) = &e.arch {
            if !arch.iter().any(|a| a == ctx.arch) {
                continue;
            }
        }
        if let Some(not) = &e.not_arch {
            if not.iter().any(|a| a == ctx.arch) {
                continue;
            }
        }
        if let Some(t) = &e.installtype {
            if t != ctx.installtypes.for_prefix(&e.element) {
                continue;
            }
        }
        if let Some(v) = &e.python_version {
            if v != ctx
                .env
                .get("DIB_PYTHON_VERSION")
                .map(String::as_str)
                .unwrap_or("3")
            {
                continue;
            }
        }
        let mut holds = true;
        for c in &e.when {
            holds &= c.holds(ctx.env).map_err(|var| {
                anyhow::anyhow!(
                    "package-installs.yaml of element '{}', package '{}': when: {var} is not set in the build's environment",
                    e.element,
                    e.package
                )
            })?;
        }
        if !holds {
            continue;
        }
        let name = match maps.get(&e.element) {
            Some(m) => match m.map(&e.package, &distro) {
                Some(n) => n,
                None => continue,
            },
            None => e.package.clone(),
        };
        // A mapped name may hold several packages ("a b").
        for pkg in name.split_whitespace() {
            let item = (pkg.to_string(), e.element.clone());
            if e.uninstall {
                out.uninstall.entry(e.phase.clone()).or_default().push(item);
            } else {
                out.install
                    .entry(e.phase.clone())
                    .or_default()
                    .push(item.clone());
                if e.build_only {
                    out.build_only.push(item);
                }
            }
        }
    }
    Ok(out)
}
