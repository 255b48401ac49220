//! The `dib` binary driven as a user would: exit codes and exact output.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{real, Fixture, GOOD_SCRIPT};

const DIB: &str = env!("CARGO_BIN_EXE_dib");

/// Run `program args` with a clean, known environment.
fn run_as(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent-home");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running dib")
}

fn dib(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_as(Path::new(DIB), args, env)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tree with an OS and a chain, under `entry` (`base` comes from the shipped tree).
fn tree(f: &Fixture, entry: &str) -> PathBuf {
    f.element(entry, "os", &[], &["operating-system"]);
    f.element(entry, "app", &["lib"], &[]);
    f.element(entry, "lib", &[], &[]);
    f.path(entry)
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = dib(&["create", "--bogus", "x"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("error: unexpected argument '--bogus' found"),
        "{err}"
    );
    assert!(
        err.contains("Usage: dib create [OPTIONS] <ELEMENT>..."),
        "{err}"
    );
}

#[test]
fn bad_values_name_the_flag() {
    // (args, exit code, fragment of stderr)
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["create", "--image-size", "abc", "x"],
            2,
            "invalid value 'abc' for '--image-size <GB>'",
        ),
        (
            &["create", "--image-size", "0", "x"],
            2,
            "invalid value '0' for '--image-size <GB>'",
        ),
        (
            &["create", "--image-extra-size=-5", "x"],
            2,
            "'--image-extra-size <MB>'",
        ),
        (
            &["create", "--install-type", "pip", "x"],
            2,
            "invalid value 'pip' for '--install-type <TYPE>'",
        ),
        (
            &["create", "--block-backend", "magic", "x"],
            2,
            "invalid value 'magic' for '--block-backend <BACKEND>'",
        ),
        (
            &["create", "-t", "qcow2,iso", "x"],
            1,
            "invalid value \"iso\" for '-t <TYPES>'",
        ),
        (
            &["create", "-a", "sparc", "x"],
            1,
            "invalid value \"sparc\" for '-a <ARCH>'",
        ),
        (
            &["create", "--qemu-img-options", "compat", "x"],
            1,
            "invalid value \"compat\" for '--qemu-img-options <K=V,..>'",
        ),
        (
            &["create"],
            2,
            "the following required arguments were not provided",
        ),
        (&["run-parts", "/tmp"], 2, "--list"),
    ];
    for (args, code, want) in cases {
        let o = dib(args, &[]);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn non_utf8_environment_is_ignored() {
    use std::os::unix::ffi::OsStrExt as _;
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    let o = Command::new(DIB)
        .args(["element-info", "app", "os"])
        .env("ELEMENTS_PATH", &ep)
        .env("NOT_UTF8", std::ffi::OsStr::from_bytes(b"\xff"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "app lib os\n");
}

#[test]
fn bad_environment_values_name_the_variable() {
    let o = dib(&["create", "x"], &[("DIB_IMAGE_SIZE", "huge")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "dib: error: DIB_IMAGE_SIZE=\"huge\" is not valid: expected a positive number\n"
    );
}

#[test]
fn element_info_prints_the_sorted_closure() {
    let f = Fixture::new();
    let path = tree(&f, "e");
    let ep = path.display().to_string();
    for args in [
        &["element-info", "os", "app"][..],
        &["element-info", "-d", "app", "os"],
    ] {
        let o = dib(args, &[("ELEMENTS_PATH", &ep)]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "app lib os\n");
    }
}

#[test]
fn classic_names_are_the_same_binary() {
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    let bin = f.path("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in [
        "disk-image-create",
        "ramdisk-image-create",
        "element-info",
        "disk-image-get-kernel",
    ] {
        symlink(DIB, bin.join(name)).unwrap();
        let o = run_as(&bin.join(name), &["--help"], &[]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("Usage: {name} [OPTIONS]")),
            "{name}: {}",
            stdout(&o)
        );
    }
    let o = run_as(
        &bin.join("element-info"),
        &["app", "os"],
        &[("ELEMENTS_PATH", &ep)],
    );
    assert_eq!(stdout(&o), "app lib os\n");
    let o = run_as(&bin.join("disk-image-create"), &["--bogus"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("Usage: disk-image-create [OPTIONS] <ELEMENT>..."),
        "{}",
        stderr(&o)
    );
}

#[test]
fn env_output_evaluates_in_bash() {
    let f = Fixture::new();
    // A directory name with every kind of character that needs quoting:
    // repeated spaces, a tab, a newline, quotes, a dollar sign, a backslash.
    let entry = "it's  a \"$dir\"\twith\nnewline \\ and é";
    let path = tree(&f, entry);
    let ep = path.display().to_string();
    let script = format!(
        r#"set -eu
eval "$("{DIB}" element-info --env app os)"
echo "IMAGE_ELEMENT=$IMAGE_ELEMENT"
eval declare -A arr=\($(get_image_element_array)\)
for k in $(printf '%s\n' "${{!arr[@]}}" | sort); do echo "$k=${{arr[$k]}}"; done
printf '%s' "$IMAGE_ELEMENT_YAML" > "$1"
bash -c 'get_image_element_array >/dev/null && echo exported'
"#
    );
    let yaml_out = f.path("yaml");
    let o = Command::new("bash")
        .args(["-c", &script, "bash", &yaml_out.display().to_string()])
        .env("ELEMENTS_PATH", &ep)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let p = |n: &str| real(&path.join(n)).display().to_string();
    assert_eq!(
        stdout(&o),
        format!(
            "IMAGE_ELEMENT=app lib os\napp={}\nlib={}\nos={}\nexported\n",
            p("app"),
            p("lib"),
            p("os")
        )
    );
    let yaml: std::collections::BTreeMap<String, String> =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&yaml_out).unwrap()).unwrap();
    let want: std::collections::BTreeMap<String, String> = ["app", "lib", "os"]
        .iter()
        .map(|n| (n.to_string(), p(n)))
        .collect();
    assert_eq!(yaml, want);
}

#[test]
fn env_output_is_dibs_format() {
    let f = Fixture::new();
    let path = tree(&f, "e");
    let o = dib(
        &["element-info", "--env", "os", "app"],
        &[("ELEMENTS_PATH", &path.display().to_string())],
    );
    let p = |n: &str| real(&path.join(n)).display().to_string();
    assert_eq!(
        stdout(&o),
        format!(
            "export IMAGE_ELEMENT='app lib os'\n\
             export IMAGE_ELEMENT_YAML='app: {a}\nlib: {l}\nos: {o}\n'\n\
             function get_image_element_array {{\n  echo \"[app]={a} [lib]={l} [os]={o} \"\n}};\n\
             export -f get_image_element_array;\n",
            a = p("app"),
            l = p("lib"),
            o = p("os")
        )
    );
}

#[test]
fn shadowed_elements_are_warned_about() {
    let f = Fixture::new();
    tree(&f, "one");
    f.element("two", "lib", &[], &[]);
    let ep = format!("{}:{}", f.path("one").display(), f.path("two").display());
    let o = dib(&["element-info", "app", "os"], &[("ELEMENTS_PATH", &ep)]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains(&format!(
            "element 'lib' at {} shadows {}",
            f.path("one/lib").display(),
            f.path("two/lib").display()
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn element_errors_exit_1_with_the_message() {
    let f = Fixture::new();
    let ep = tree(&f, "e").display().to_string();
    let o = dib(&["element-info", "app"], &[("ELEMENTS_PATH", &ep)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("dib: error: Please include an operating system element"),
        "{}",
        stderr(&o)
    );

    let o = dib(&["element-info", "os", "nope"], &[("ELEMENTS_PATH", &ep)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with(
            "dib: error: Element 'nope' not found (requested on the command line); searched "
        ),
        "{}",
        stderr(&o)
    );

    let o = dib(
        &["element-info", "os"],
        &[("ELEMENTS_PATH", "/nonexistent/elements")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "dib: error: ELEMENTS_PATH entry \"/nonexistent/elements\" is not a directory; fix or remove it\n"
    );
}

#[test]
fn create_checks_everything_then_says_what_is_not_supported_yet() {
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
        &[("ELEMENTS_PATH", &ep)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with(
            "dib: error: not supported by this version of dib:\n\
             \x20 - output type 'oci' (dib writes no OCI images; -t tar gives the tree)\n"
        ),
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
        &["create", "-n", "--image-cache", &cache, "-t", "oci", "os"],
        &[("ELEMENTS_PATH", &nb)],
    );
    assert!(
        stderr(&o).contains("output type 'oci' (dib writes no OCI images"),
        "{}",
        stderr(&o)
    );
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
