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
//! warned about and ignored, as DIB ignores them.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use serde_yaml_ng::Value;

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
    fn parse(s: &str) -> Option<Condition> {
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
    fn holds(&self, env: &BTreeMap<String, String>) -> Result<bool, String> {
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

#[cfg(test)]
#[allow(clippy::type_complexity)] // inline case tables read better than named types
mod tests {
    use super::*;

    const YAML: &str = "
libxml2:
tftp:
  phase: pre-install.d
arm-only:
  arch: arm64, armhf
not-on-amd64:
  not-arch: ppc64le , amd64
src-tool:
  installtype: source
pkg-tool:
  installtype: package
build-dep:
  build-only: true
old-thing:
  uninstall: true
  phase: post-install.d
conditional:
  when: DIB_FEATURE = on
negated:
  when:
    - DIB_FEATURE != off
    - DIB_OTHER=
py2-only:
  dib_python_version: 2
twice:
  - arch: amd64
    phase: pre-install.d
  - arch: arm64
vim:
gone:
";

    fn entries() -> Vec<Entry> {
        let (entries, warnings) = parse("el", YAML).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        entries
    }

    fn names(v: &[(String, String)]) -> Vec<&str> {
        v.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn plan_table() {
        let pkg_map = PkgMap::parse(
            "el",
            r#"{"distro": {"debian": {"vim": "vim-nox"}}, "default": {"gone": ""}}"#,
        )
        .unwrap();
        let maps: BTreeMap<String, PkgMap> = [("el".to_string(), pkg_map)].into();
        // (arch, env, install type, expected pre-install.d, install.d, post-install.d uninstalls, build-only)
        let cases: [(
            &str,
            &[(&str, &str)],
            &str,
            &[&str],
            &[&str],
            &[&str],
            &[&str],
        ); 3] = [
            (
                "amd64",
                &[
                    ("DISTRO_NAME", "debian"),
                    ("DIB_FEATURE", "on"),
                    ("DIB_OTHER", ""),
                ],
                "source",
                &["tftp", "twice"],
                &[
                    "libxml2",
                    "src-tool",
                    "build-dep",
                    "conditional",
                    "negated",
                    "vim-nox",
                ],
                &["old-thing"],
                &["build-dep"],
            ),
            (
                "arm64",
                &[
                    ("DISTRO_NAME", "ubuntu"),
                    ("DIB_FEATURE", "off"),
                    ("DIB_OTHER", ""),
                ],
                "package",
                &["tftp"],
                &[
                    "libxml2",
                    "arm-only",
                    "not-on-amd64",
                    "pkg-tool",
                    "build-dep",
                    "twice",
                    "vim",
                ],
                &["old-thing"],
                &["build-dep"],
            ),
            (
                "amd64",
                &[
                    ("DISTRO_NAME", "debian"),
                    ("DIB_FEATURE", "x"),
                    ("DIB_OTHER", "x"),
                ],
                "source",
                &["tftp", "twice"],
                &["libxml2", "src-tool", "build-dep", "vim-nox"],
                &["old-thing"],
                &["build-dep"],
            ),
        ];
        for (arch, env, it, pre, inst, uninst, build_only) in cases {
            let env: BTreeMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let installtypes = crate::hooks::InstallTypes::from_env(it, &BTreeMap::new());
            let ctx = Context {
                arch,
                env: &env,
                installtypes: &installtypes,
            };
            let p = plan(&entries(), &maps, &ctx).unwrap();
            let get = |m: &BTreeMap<String, Vec<(String, String)>>, k: &str| {
                m.get(k).map(|v| names(v).join(" ")).unwrap_or_default()
            };
            assert_eq!(
                get(&p.install, "pre-install.d"),
                pre.join(" "),
                "{arch} {env:?}"
            );
            assert_eq!(
                get(&p.install, "install.d"),
                inst.join(" "),
                "{arch} {env:?}"
            );
            assert_eq!(
                get(&p.uninstall, "post-install.d"),
                uninst.join(" "),
                "{arch} {env:?}"
            );
            assert_eq!(names(&p.build_only), build_only, "{arch} {env:?}");
        }
    }

    #[test]
    fn pkg_map_precedence() {
        let m = PkgMap::parse(
            "el",
            r#"{
              "release": {"ubuntu": {"noble": {"a": "a-noble"}}},
              "distro": {"ubuntu": {"a": "a-ubuntu", "b": "b-ubuntu"}},
              "family": {"debian": {"a": "a-fam", "b": "b-fam", "c": "c-fam"}},
              "default": {"a": "a-def", "d": "d-def", "skip": ""}
            }"#,
        )
        .unwrap();
        let d = |name: &str, release: &str| {
            Distro::from_env(
                &[
                    ("DISTRO_NAME".to_string(), name.to_string()),
                    ("DIB_RELEASE".to_string(), release.to_string()),
                ]
                .into(),
            )
        };
        let noble = d("ubuntu", "noble");
        assert_eq!(m.map("a", &noble).as_deref(), Some("a-noble"));
        assert_eq!(m.map("b", &noble).as_deref(), Some("b-ubuntu"));
        assert_eq!(m.map("c", &noble).as_deref(), Some("c-fam"));
        assert_eq!(m.map("d", &noble).as_deref(), Some("d-def"));
        assert_eq!(m.map("e", &noble).as_deref(), Some("e"));
        assert_eq!(m.map("skip", &noble), None);
        assert_eq!(
            m.map("a", &d("debian", "bookworm")).as_deref(),
            Some("a-fam")
        );
        assert_eq!(m.map("a", &d("fedora", "40")).as_deref(), Some("a-def"));
    }

    #[test]
    fn errors_name_element_package_and_key() {
        let cases = [
            ("vim:\n  phase: finalise.d\n", "package-installs.yaml of element 'el', package 'vim', key 'phase': \"finalise.d\" is not one of pre-install.d, install.d, post-install.d"),
            ("vim:\n  arch: amd64\n  not-arch: arm64\n", "package-installs.yaml of element 'el', package 'vim': arch and not-arch together; use one"),
            ("vim:\n  when: DIB_X\n", "package-installs.yaml of element 'el', package 'vim', key 'when': \"DIB_X\" is not VAR=value or VAR!=value"),
            ("vim:\n  uninstall: maybe\n", "package-installs.yaml of element 'el', package 'vim', key 'uninstall': expected true or false"),
            ("vim:\n  installtype: pip\n", "package-installs.yaml of element 'el', package 'vim', key 'installtype': \"pip\" is not source or package"),
            ("- vim\n", "package-installs.yaml of element 'el': expected a map of package names"),
            ("vim: [\n", "package-installs.yaml of element 'el' is not valid YAML"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse("el", text).unwrap_err());
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        assert_eq!(parse("el", "").unwrap(), (vec![], vec![]));
        let (_, warnings) = parse("el", "vim:\n  colour: red\n").unwrap();
        assert_eq!(
            warnings,
            ["package-installs.yaml of element 'el', package 'vim': unknown key 'colour' ignored \
              (known: phase, uninstall, build-only, installtype, arch, not-arch, when, dib_python_version)"]
        );
    }

    #[test]
    fn when_needs_its_variable_set() {
        let (entries, _) = parse("el", "vim:\n  when: DIB_TYPO = 1\n").unwrap();
        let env = BTreeMap::new();
        let installtypes = crate::hooks::InstallTypes::from_env("source", &BTreeMap::new());
        let ctx = Context {
            arch: "amd64",
            env: &env,
            installtypes: &installtypes,
        };
        let err = plan(&entries, &BTreeMap::new(), &ctx)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "package-installs.yaml of element 'el', package 'vim': when: DIB_TYPO is not set in the build's environment"
        );
        assert_eq!(Condition::parse("A-B = 1"), None);
        assert_eq!(
            Condition::parse("DIB_X!=a=b"),
            Some(Condition {
                var: "DIB_X".into(),
                equal: false,
                value: "a=b".into()
            })
        );
    }
}
