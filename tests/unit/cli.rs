//! The `dib` binary driven as a user would: exit codes and exact output.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{real, Fixture};

pub(crate) const DIB: &str = env!("CARGO_BIN_EXE_dib");

/// Run `program args` with a clean, known environment.
pub(crate) fn run_as(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
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

pub(crate) fn dib(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_as(Path::new(DIB), args, env)
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tree with an OS and a chain, under `entry` (`base` comes from the shipped tree).
pub(crate) fn tree(f: &Fixture, entry: &str) -> PathBuf {
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
