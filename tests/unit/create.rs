//! `dib create`: everything is checked before anything is built.

use std::path::Path;

use super::cli::{dib, stderr, stdout, tree};
use crate::common::{real, Fixture, GOOD_SCRIPT};

#[test]
fn create_checks_everything_before_building() {
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    let cache = f.path("cache").display().to_string();
    let o = dib(
        &[
            "create",
            "--image-cache",
            &cache,
            "-o",
            "out",
            "-t",
            "qcow2,oci",
            "os",
            "app",
        ],
        &[("ELEMENTS_PATH", &ep), ("DIB_OCI_ENV", "LANG")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with("dib: error: DIB_OCI_ENV=\"LANG\": \"LANG\" is not NAME=VALUE\n"),
        "{}",
        stderr(&o)
    );
    // Nothing was written: no output, no cache.
    assert!(!f.path("cache").exists());
    assert!(!Path::new("out.qcow2").exists());

    // Element errors come first: a bad element is reported before missing features.
    let o = dib(
        &["create", "--image-cache", &cache, "os", "nope"],
        &[("ELEMENTS_PATH", &ep)],
    );
    assert!(
        stderr(&o).contains("Element 'nope' not found"),
        "{}",
        stderr(&o)
    );

    // -n drops base: without it, base is required.
    f.element("nobase", "os", &[], &["operating-system"]);
    let nb = f.path("nobase").display().to_string();
    let shipped_base = real(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("elements/base")
            .as_path(),
    );
    let o = dib(
        &["element-info", "--env", "base", "os"],
        &[("ELEMENTS_PATH", &nb)],
    );
    assert!(
        stdout(&o).contains(&format!("base: {}", shipped_base.display())),
        "{}",
        stdout(&o)
    );
    let o = dib(
        &[
            "create",
            "-n",
            "--image-cache",
            &cache,
            "-t",
            "docker",
            "--docker-target",
            "Dib/OS",
            "os",
        ],
        &[("ELEMENTS_PATH", &nb)],
    );
    assert!(
        stderr(&o).contains(
            "invalid value \"Dib/OS\" for '--docker-target <REPO[:TAG]>': the image reference \
             \"Dib/OS\" has a bad repository \"Dib/OS\""
        ),
        "{}",
        stderr(&o)
    );
    assert!(!f.path("cache").exists());
}

#[test]
fn create_checks_package_lists_before_building() {
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    f.file(
        "e/app/package-installs.yaml",
        "vim:\n  phase: finalise.d\n",
        0o644,
    );
    let o = dib(
        &[
            "create",
            "--image-cache",
            "/tmp/x",
            "-t",
            "tar",
            "os",
            "app",
        ],
        &[("ELEMENTS_PATH", &ep)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with(
            "dib: error: package-installs.yaml of element 'app', package 'vim', key 'phase': \
             \"finalise.d\" is not one of pre-install.d, install.d, post-install.d\n"
        ),
        "{}",
        stderr(&o)
    );
    f.file("e/app/package-installs.yaml", "vim:\n", 0o644);
    f.file("e/lib/pkg-map", "{not json", 0o644);
    let o = dib(
        &[
            "create",
            "--image-cache",
            "/tmp/x",
            "-t",
            "tar",
            "os",
            "app",
        ],
        &[("ELEMENTS_PATH", &ep)],
    );
    assert!(
        stderr(&o).contains("dib: error: pkg-map of element 'lib' is not valid pkg-map JSON"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn create_reports_hook_conflicts() {
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    f.file("e/app/install.d/10-same", GOOD_SCRIPT, 0o755);
    f.file("e/lib/install.d/10-same", GOOD_SCRIPT, 0o755);
    let o = dib(
        &["create", "--image-cache", "/tmp/x", "os", "app"],
        &[("ELEMENTS_PATH", &ep)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with(
            "dib: error: merging the elements' hook trees: duplicate hook install.d/10-same: \
             shipped by both element 'app' and element 'lib'; rename one of them\n"
        ),
        "{}",
        stderr(&o)
    );
}

/// `dib create ARGS` on the fixture tree with `env`: the exit code and the
/// error line; the build's cache, TMP_DIR and output directory stay empty.
fn refused_push(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    let cache = f.path("cache").display().to_string();
    let tmp = f.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = f.path("images/img").display().to_string();
    let tmp_s = tmp.display().to_string();
    let mut all = vec!["create", "--image-cache", &cache, "-o", &out];
    all.extend_from_slice(args);
    let mut all_env = vec![("ELEMENTS_PATH", ep.as_str()), ("TMP_DIR", tmp_s.as_str())];
    all_env.extend_from_slice(env);
    let o = dib(&all, &all_env);
    assert!(!f.path("cache").exists(), "the cache was made");
    assert!(!f.path("images").exists(), "the output directory was made");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "TMP_DIR was used"
    );
    let err = stderr(&o);
    (
        o.status.code(),
        err.lines().last().unwrap_or("").to_string(),
    )
}

#[test]
#[allow(clippy::type_complexity)] // an inline case table reads better than named types
fn push_is_checked_before_anything_is_built() {
    let form = "use HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]";
    let needs_oci = "needs an OCI output: add -t oci (a container image) or -t containerdisk \
                     (a VM disk for KubeVirt)";
    // (arguments, environment, error)
    let cases: Vec<(&[&str], &[(&str, &str)], String)> = vec![
        (
            &["-t", "oci", "--push", "img:1", "os"],
            &[],
            format!(
                "dib: error: invalid value \"img:1\" for '--push <REF>': the image reference \
                 \"img:1\" names no registry: {form}"
            ),
        ),
        (
            &["-t", "oci", "os"],
            &[("DIB_PUSH", "dib/img")],
            format!(
                "dib: error: DIB_PUSH=\"dib/img\" is not valid: the image reference \"dib/img\" \
                 names no registry (\"dib\" is a repository name, not a host): {form}"
            ),
        ),
        (
            &["-t", "tar", "--push", "localhost:5000/dib/img:1", "os"],
            &[],
            format!("dib: error: --push {needs_oci}"),
        ),
        // The environment's reference, with qcow2 (the default) only.
        (
            &["os"],
            &[("DIB_PUSH", "localhost:5000/dib/img:1")],
            format!("dib: error: DIB_PUSH {needs_oci}"),
        ),
        (
            &[
                "-t",
                "oci",
                "--push",
                "localhost:5000/x:1",
                "os",
                "no-final-image",
            ],
            &[],
            "dib: error: --push has nothing to push: the elements include no-final-image, so \
             the build writes no image"
                .into(),
        ),
        (
            &["-t", "tar", "--push-insecure", "os"],
            &[],
            "dib: error: --push-insecure needs a registry to push to: add --push REF".into(),
        ),
    ];
    for (args, env, want) in cases {
        assert_eq!(refused_push(args, env), (Some(1), want), "{args:?} {env:?}");
    }
}

#[test]
fn push_to_a_registry_that_does_not_answer_builds_nothing() {
    // Nothing listens on the loopback's port 1.
    let want = if dib_sandbox::host_tools::find("skopeo", std::env::var("PATH").ok().as_deref())
        .is_some()
    {
        "dib: error: cannot reach the registry 127.0.0.1:1 of --push 127.0.0.1:1/x:1: \
         connection refused; start it, or check the reference"
    } else {
        "dib: error: --push pushes with skopeo (Debian package skopeo), which is not \
         installed: install it, or build without --push"
    };
    assert_eq!(
        refused_push(&["-t", "oci", "--push", "127.0.0.1:1/x:1", "os"], &[]),
        (Some(1), want.to_string())
    );
}

#[test]
fn a_push_of_a_path_skopeo_would_misread_builds_nothing() {
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    let cache = f.path("cache").display().to_string();
    let out = f.path("images/img:1").display().to_string();
    let o = dib(
        &[
            "create",
            "--image-cache",
            &cache,
            "-o",
            &out,
            "-t",
            "oci",
            "--push",
            "127.0.0.1:1/x:1",
            "os",
        ],
        &[("ELEMENTS_PATH", &ep)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with(&format!(
            "dib: error: --push cannot push {out}.oci: skopeo reads a ':' in a path as the end \
             of it; write the output where its path has no ':' (-o)\n"
        )),
        "{}",
        stderr(&o)
    );
    assert!(!f.path("cache").exists());
    assert!(!f.path("images").exists());
}
