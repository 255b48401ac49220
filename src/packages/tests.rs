#![allow(clippy::type_complexity)] // inline case tables read better than named types

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
