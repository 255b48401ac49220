//! The merged hook tree and install types, on real directories.
#![allow(clippy::type_complexity)] // inline case tables read better than named types

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};

use crate::common::{real, Fixture, GOOD_SCRIPT};
use dib::elements::ResolvedElement;
use dib::hooks::{plan, InstallTypes};
use dib::runparts::plan_dir;

fn elements(f: &Fixture, names: &[&str]) -> Vec<ResolvedElement> {
    names
        .iter()
        .map(|n| ResolvedElement {
            name: n.to_string(),
            path: real(&f.path("e").join(n)),
        })
        .collect()
}

fn source_default() -> InstallTypes {
    InstallTypes::from_env("source", &BTreeMap::new())
}

#[test]
fn phase_directories_merge_and_keep_modes() {
    let f = Fixture::new();
    f.file("e/a/install.d/10-a", GOOD_SCRIPT, 0o755);
    f.file("e/a/environment.d/10-a.bash", "export DIB_A=1\n", 0o644);
    f.file("e/a/README.md", "a\n", 0o644);
    f.file("e/b/install.d/20-b", GOOD_SCRIPT, 0o755);
    f.file("e/b/root.d/10-b", GOOD_SCRIPT, 0o700);
    f.file("e/b/README.md", "b\n", 0o644);
    f.file("e/b/tests/README", "element tests are not merged\n", 0o644);

    let tree = plan(&elements(&f, &["a", "b"])).unwrap();
    let rels: Vec<String> = tree
        .entries
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        rels,
        [
            "README.md",
            "environment.d",
            "environment.d/10-a.bash",
            "install.d",
            "install.d/10-a",
            "install.d/20-b",
            "root.d",
            "root.d/10-b"
        ]
    );
    // Top-level files do not conflict: the last element wins.
    assert_eq!(
        tree.entries[std::path::Path::new("README.md")].element(),
        "b"
    );

    let out = f.path("hooks");
    tree.materialize(&out).unwrap();
    let mode = |p: &str| fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("install.d/10-a"), 0o755);
    assert_eq!(mode("root.d/10-b"), 0o700);
    assert_eq!(mode("environment.d/10-a.bash"), 0o644);
    assert_eq!(fs::read_to_string(out.join("README.md")).unwrap(), "b\n");
    assert!(!out.join("tests").exists());
}

#[test]
fn duplicate_hook_names_both_elements() {
    let f = Fixture::new();
    f.file("e/a/install.d/50-same", GOOD_SCRIPT, 0o755);
    f.file("e/b/install.d/50-same", GOOD_SCRIPT, 0o755);
    let err = plan(&elements(&f, &["a", "b"])).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "duplicate hook install.d/50-same: shipped by both element 'a' and element 'b'; rename one of them"
    );
}

#[test]
fn directories_merge_and_only_files_clash() {
    let f = Fixture::new();
    f.file("e/a/static/etc/a.conf", "a\n", 0o644);
    f.file("e/b/static/etc/b.conf", "b\n", 0o644);
    let tree = plan(&elements(&f, &["a", "b"])).unwrap();
    let out = f.path("hooks");
    tree.materialize(&out).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("static/etc/a.conf")).unwrap(),
        "a\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("static/etc/b.conf")).unwrap(),
        "b\n"
    );

    // The same file deep down clashes, naming both elements.
    f.file("e/c/static/etc/a.conf", "c\n", 0o644);
    let err = plan(&elements(&f, &["a", "c"])).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "duplicate hook static/etc/a.conf: shipped by both element 'a' and element 'c'; rename one of them"
    );
    // So does a file where another element has a directory.
    f.file("e/d/static/etc", "not a directory\n", 0o644);
    let err = plan(&elements(&f, &["a", "d"])).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "duplicate hook static/etc: shipped by both element 'a' and element 'd'; rename one of them"
    );
}

#[test]
fn symlinks_are_recreated_not_followed() {
    let f = Fixture::new();
    f.file("e/a/README.md", "a\n", 0o644);
    fs::create_dir_all(f.path("e/a/static/etc/systemd/system")).unwrap();
    // A link to a host file must not copy the host's file into the build,
    // and a link that only resolves inside the image must not fail.
    symlink("/etc/hostname", f.path("e/a/static/etc/hostname-link")).unwrap();
    symlink(
        "/lib/systemd/system/foo.service",
        f.path("e/a/static/etc/systemd/system/foo.service"),
    )
    .unwrap();
    // A link pointing up its own tree must not recurse.
    symlink("..", f.path("e/a/static/etc/loop")).unwrap();
    let tree = plan(&elements(&f, &["a"])).unwrap();
    let out = f.path("hooks");
    tree.materialize(&out).unwrap();
    let link = |p: &str| fs::read_link(out.join(p)).unwrap();
    assert_eq!(
        link("static/etc/hostname-link"),
        std::path::Path::new("/etc/hostname")
    );
    assert_eq!(
        link("static/etc/systemd/system/foo.service"),
        std::path::Path::new("/lib/systemd/system/foo.service")
    );
    assert_eq!(link("static/etc/loop"), std::path::Path::new(".."));
}

fn install_type_fixture() -> Fixture {
    let f = Fixture::new();
    f.file(
        "e/svc/install.d/nova-api-source-install/10-from-git",
        GOOD_SCRIPT,
        0o755,
    );
    f.file(
        "e/svc/install.d/nova-api-package-install/10-from-deb",
        GOOD_SCRIPT,
        0o755,
    );
    f.file("e/svc/install.d/50-common", GOOD_SCRIPT, 0o755);
    f
}

#[test]
fn install_types_link_the_chosen_scripts() {
    // (environment, default type, scripts that run from install.d)
    let cases: &[(&[(&str, &str)], &str, &[&str])] = &[
        (&[], "source", &["10-from-git", "50-common"]),
        (&[], "package", &["10-from-deb", "50-common"]),
        (
            &[("DIB_INSTALLTYPE_nova_api", "package")],
            "source",
            &["10-from-deb", "50-common"],
        ),
        (
            &[("DIB_INSTALLTYPE_nova_api", "source")],
            "package",
            &["10-from-git", "50-common"],
        ),
        (
            &[("DIB_INSTALLTYPE_other", "package")],
            "source",
            &["10-from-git", "50-common"],
        ),
    ];
    for (env, default, want) in cases {
        let f = install_type_fixture();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tree = plan(&elements(&f, &["svc"])).unwrap();
        let out = f.path("hooks");
        tree.materialize(&out).unwrap();
        let notes = tree
            .link_install_types(&out, &InstallTypes::from_env(default, &env))
            .unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let dib::runparts::DirPlan { run, skipped } = plan_dir(&out.join("install.d")).unwrap();
        let names: Vec<String> = run
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, *want, "{env:?} default {default}");
        // The type directories themselves are skipped by run-parts.
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        let link = fs::read_link(out.join("install.d").join(want[0])).unwrap();
        assert!(link.is_relative(), "{link:?}");
    }
}

#[test]
fn install_type_with_no_scripts_for_it_runs_nothing_of_it() {
    let f = install_type_fixture();
    let env: BTreeMap<String, String> =
        [("DIB_INSTALLTYPE_nova_api".to_string(), "pip".to_string())].into();
    let tree = plan(&elements(&f, &["svc"])).unwrap();
    let out = f.path("hooks");
    tree.materialize(&out).unwrap();
    let notes = tree
        .link_install_types(&out, &InstallTypes::from_env("source", &env))
        .unwrap();
    assert_eq!(
        notes,
        [
            "DIB_INSTALLTYPE_nova_api=pip, but no element ships install.d/nova-api-pip-install \
          (install types for 'nova-api': package, source), so none of its install scripts run"
        ]
    );
    let run = plan_dir(&out.join("install.d")).unwrap().run;
    assert_eq!(run.len(), 1, "only 50-common: {run:?}");
}

#[test]
fn install_type_script_clashing_with_a_plain_hook() {
    let f = install_type_fixture();
    f.file("e/other/install.d/10-from-git", GOOD_SCRIPT, 0o755);
    let tree = plan(&elements(&f, &["other", "svc"])).unwrap();
    let out = f.path("hooks");
    tree.materialize(&out).unwrap();
    let err = tree
        .link_install_types(&out, &source_default())
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "linking install type 'source' of 'nova-api' into install.d: duplicate hook install.d/10-from-git: \
         shipped by both element 'other' and element 'svc'; rename one of them"
    );
}
