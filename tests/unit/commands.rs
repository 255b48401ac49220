//! The other subcommands: `run-parts`, `lint`, `get-kernel`.

use std::path::Path;

use super::cli::{dib, stderr, stdout};
use crate::common::{Fixture, GOOD_SCRIPT};

#[test]
fn run_parts_list() {
    let f = Fixture::new();
    for name in ["10-x", "5-x", "99-b", "100-a", "10-foo.sh"] {
        f.file(&format!("d/{name}"), GOOD_SCRIPT, 0o755);
    }
    f.file("d/20-not-exec", GOOD_SCRIPT, 0o644);
    let d = f.path("d");
    let o = dib(
        &["run-parts", "--list", "-x", &d.display().to_string()],
        &[],
    );
    assert!(o.status.success());
    let p = |n: &str| d.join(n).display().to_string();
    assert_eq!(
        stdout(&o),
        format!(
            "{}\n{}\n{}\n{}\n",
            p("5-x"),
            p("10-x"),
            p("99-b"),
            p("100-a")
        )
    );
    assert_eq!(
        stderr(&o),
        format!(
            "skipping {}: name has characters other than 0-9 A-Z a-z _ -\nskipping {}: not executable\n",
            p("10-foo.sh"),
            p("20-not-exec")
        )
    );
}

#[test]
fn lint_reports_file_and_line_and_fails() {
    let f = Fixture::new();
    // A clean element.
    f.file("e/good/README.md", "# good\n", 0o644);
    f.file("e/good/install.d/10-good", GOOD_SCRIPT, 0o755);
    f.file(
        "e/good/environment.d/10-good.bash",
        "export DIB_GOOD=${DIB_GOOD:-1}\n",
        0o644,
    );
    f.file(
        "e/good/static/etc/motd",
        "tabs\tand trailing spaces are fine here  \n",
        0o644,
    );
    f.file(
        "e/good/package-installs.yaml",
        "vim:\n  phase: install.d\n",
        0o644,
    );
    // An element with one of everything wrong.
    f.file("e/bad/element-deps", "ok\ntwo names\n", 0o644);
    f.file("e/bad/install.d/10-foo.sh", GOOD_SCRIPT, 0o755);
    f.file("e/bad/install.d/noprefix", GOOD_SCRIPT, 0o755);
    f.file("e/bad/install.d/20-notexec", GOOD_SCRIPT, 0o644);
    f.file("e/bad/install.d/30-noshebang", "set -eu\n", 0o755);
    f.file(
        "e/bad/install.d/40-unsafe",
        "#!/bin/bash\nset -x\necho hi \n\techo tab\n   echo odd\n",
        0o755,
    );
    f.file(
        "e/bad/install.d/50-optout",
        "#!/bin/bash\n# dib-lint: disable=setu,dibdebugtrace\nset -e -o pipefail\n",
        0o755,
    );
    f.file("e/bad/post-instal.d/10-typo", GOOD_SCRIPT, 0o755);
    f.file(
        "e/bad/environment.d/10-env.bash",
        "export RELEASE=${RELEASE:-bookworm}\n",
        0o644,
    );
    f.file("e/bad/package-installs.yaml", "vim:\n  phase: [\n", 0o644);

    let root = f.path("e");
    let o = dib(&["lint", &root.display().to_string()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let b = |rel: &str| root.join("bad").join(rel).display().to_string();
    let want = [
        format!("{}: [readme] element has no README.md (or README.rst): say what it does and which DIB_* variables it reads", b("").trim_end_matches('/')),
        format!("{}:2: [deps] \"two names\" is not a valid element name (one name a line)", b("element-deps")),
        format!("{}:1: [defaults] overridable default 'RELEASE' should be DIB_-prefixed (DIB_RELEASE)", b("environment.d/10-env.bash")),
        format!("{}: [name] '10-foo.sh' never runs: run-parts only runs names made of 0-9 A-Z a-z _ -", b("install.d/10-foo.sh")),
        format!("{}: [executable] not executable: run-parts skips it (chmod +x)", b("install.d/20-notexec")),
        format!("{}:1: [shebang] no #! line: start the script with #!/bin/bash", b("install.d/30-noshebang")),
        format!("{}: [sete] does not 'set -e': add 'set -eu -o pipefail'", b("install.d/40-unsafe")),
        format!("{}: [setu] does not 'set -u': add 'set -eu -o pipefail'", b("install.d/40-unsafe")),
        format!("{}: [setpipefail] does not 'set -o pipefail': add 'set -eu -o pipefail'", b("install.d/40-unsafe")),
        format!("{}: [dibdebugtrace] 'set -x' without DIB_DEBUG_TRACE: trace only when DIB_DEBUG_TRACE > 0", b("install.d/40-unsafe")),
        format!("{}:3: [whitespace] trailing whitespace", b("install.d/40-unsafe")),
        format!("{}:4: [tabs] hard tab: indent with spaces", b("install.d/40-unsafe")),
        format!("{}:5: [indent] indented by 3 spaces: use multiples of 4", b("install.d/40-unsafe")),
        format!("{}: [name] 'noprefix' should start with a two-digit order prefix, like 50-noprefix", b("install.d/noprefix")),
        format!("{}:3: [yaml] invalid YAML: ", b("package-installs.yaml")),
        format!("{}: [phase] unknown directory 'post-instal.d': nothing runs it; phase directories are root.d, extra-data.d, pre-install.d, install.d, post-install.d, post-root.d, block-device.d, pre-finalise.d, finalise.d, cleanup.d", b("post-instal.d")),
    ];
    let got = stdout(&o);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), want.len(), "{got}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(
            line.starts_with(want.as_str()),
            "\n got: {line}\nwant: {want}"
        );
    }
    assert_eq!(stderr(&o), "dib lint: 16 finding(s) in 2 element(s)\n");

    let o = dib(&["lint", &root.join("good").display().to_string()], &[]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn lint_finds_elements_in_a_repository_with_its_own_readme() {
    let f = Fixture::new();
    f.file("repo/README.md", "# my elements\n", 0o644);
    f.file("repo/el/README.md", "# el\n", 0o644);
    f.file("repo/el/install.d/foo.sh", "echo hi\n", 0o644);
    // An element named like an element's file must not make the repository
    // look like one element (regression: elements/pkg-map, a directory).
    f.file("repo/element-deps/README.md", "# oddly named\n", 0o644);
    let repo = f.path("repo");
    let o = dib(&["lint", &repo.display().to_string()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let script = repo.join("el/install.d/foo.sh").display().to_string();
    assert_eq!(
        stdout(&o),
        format!(
            "{script}: [name] 'foo.sh' never runs: run-parts only runs names made of 0-9 A-Z a-z _ -\n\
             {script}: [executable] not executable: run-parts skips it (chmod +x)\n\
             {script}:1: [shebang] no #! line: start the script with #!/bin/bash\n"
        )
    );
    assert_eq!(stderr(&o), "dib lint: 3 finding(s) in 2 element(s)\n");
    // With no arguments, every ELEMENTS_PATH entry is a directory of elements.
    let o = dib(&["lint"], &[("ELEMENTS_PATH", &repo.display().to_string())]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let shipped = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("elements"))
        .unwrap()
        .count();
    assert_eq!(
        stderr(&o),
        format!("dib lint: 3 finding(s) in {} element(s)\n", 2 + shipped)
    );
}

#[test]
fn shipped_elements_pass_lint() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("elements");
    let o = dib(&["lint", &shipped.display().to_string()], &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn get_kernel_checks_its_image() {
    let o = dib(&["get-kernel", "/nonexistent.qcow2"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "dib: error: image \"/nonexistent.qcow2\" does not exist or is not a file\n"
    );
    // Not a disk image at all: no kernel in it, said plainly.
    let f = Fixture::new();
    let img = f.file("img.qcow2", "not an image\n", 0o644);
    let o = dib(
        &[
            "get-kernel",
            "-d",
            &f.path("").display().to_string(),
            &img.display().to_string(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no kernel (/boot/vmlinuz-*) in"),
        "{}",
        stderr(&o)
    );
    let o = dib(
        &[
            "get-kernel",
            "-d",
            "/nonexistent",
            &img.display().to_string(),
        ],
        &[],
    );
    assert_eq!(
        stderr(&o),
        "dib: error: destination \"/nonexistent\" (-d) is not a directory\n"
    );
}
