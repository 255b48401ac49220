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
