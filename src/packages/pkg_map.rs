//! `pkg-map`: an element's table from generic package names to each
//! distribution's.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

/// An element's `pkg-map` (JSON): generic names to distribution names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PkgMap {
    #[serde(default)]
    pub release: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(default)]
    pub distro: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub family: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub default: BTreeMap<String, String>,
}

/// What a distribution is, for `pkg-map`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distro {
    pub name: String,
    pub release: String,
    pub family: String,
}

impl Distro {
    /// From the build's environment (DISTRO_NAME, DIB_RELEASE); the family
    /// is derived as DIB's pkg-map does.
    pub fn from_env(env: &BTreeMap<String, String>) -> Distro {
        let name = env.get("DISTRO_NAME").cloned().unwrap_or_default();
        let family = match name.as_str() {
            "debian" | "ubuntu" => "debian",
            "fedora" | "centos" | "rhel" | "rocky" | "almalinux" | "openeuler" => "redhat",
            "opensuse" | "sles" => "suse",
            "gentoo" => "gentoo",
            other => other,
        }
        .to_string();
        Distro {
            release: env.get("DIB_RELEASE").cloned().unwrap_or_default(),
            name,
            family,
        }
    }
}

impl PkgMap {
    pub fn parse(element: &str, text: &str) -> Result<PkgMap> {
        serde_json::from_str(text)
            .with_context(|| format!("pkg-map of element '{element}' is not valid pkg-map JSON"))
    }

    /// Every generic name the map mentions anywhere, sorted.
    pub fn generic_names(&self) -> std::collections::BTreeSet<String> {
        let nested = self
            .release
            .values()
            .flat_map(|r| r.values())
            .flat_map(|m| m.keys());
        let flat = self
            .distro
            .values()
            .chain(self.family.values())
            .flat_map(|m| m.keys());
        nested
            .chain(flat)
            .chain(self.default.keys())
            .cloned()
            .collect()
    }

    /// The name to install for `generic` (release > distro > family >
    /// default, else unchanged); `None` when the map says to skip it (an
    /// empty name).
    pub fn map(&self, generic: &str, d: &Distro) -> Option<String> {
        let found = self
            .release
            .get(&d.name)
            .and_then(|r| r.get(&d.release))
            .and_then(|m| m.get(generic))
            .or_else(|| self.distro.get(&d.name).and_then(|m| m.get(generic)))
            .or_else(|| self.family.get(&d.family).and_then(|m| m.get(generic)))
            .or_else(|| self.default.get(generic));
        match found {
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(s.clone()),
            None => Some(generic.to_string()),
        }
    }
}
