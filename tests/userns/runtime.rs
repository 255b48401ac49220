//! What DIB's hooks rely on of their runtime besides the phases: the order
//! of environment.d, `DIB_OFFLINE`, `_LIB`, `dib-run-parts`, `sudo -u` and
//! `mknod` outside the chroot, `DIB_ENV` and the other variables, and
//! install types chosen by environment.d.

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};

pub fn hooks_get_dibs_runtime() -> Result<(), Failed> {
    let b = Build::new();
    let o = b.run(
        &["tiny-os", "runtime-probe"],
        &[
            ("DIB_PROBE_VALUE", "a \"quoted\" $value"),
            ("USER", "builder"),
        ],
    );
    succeeded(&o)?;
    let got = b.out("runtime");
    let value = |name: &str| -> String {
        got.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or("<missing>")
            .trim_end()
            .to_string()
    };
    for (name, want) in [
        // Byte order of the paths: 10-b before 5-a.
        ("order", "10-b 5-a"),
        // Set and empty when online.
        ("offline", "set:"),
        ("DIB_CHECKSUM", "0"),
        ("DIB_MIN_TMPFS", "2"),
        ("python", "executable"),
        (
            "dib_env",
            r#"declare -x DIB_PROBE_VALUE="a \"quoted\" \$value""#,
        ),
        ("run_in_target", "/root"),
        // Elements copy img-functions alone into images: it sources nothing.
        ("alone", "function"),
        ("die", "exit 1"),
        ("run_parts", "first from-env"),
        ("on_path", "bin/dib-run-parts"),
        ("sudo_root", "ok"),
        ("sudo_self", "ok"),
        ("mknod_fifo", "ok"),
        ("install_type", "package"),
    ] {
        eq(&value(name), want, name)?;
    }
    let home = b.f.path("home").display().to_string();
    eq(
        &value("DIB_LOCKFILES"),
        &format!("{home}/.cache/dib/lockfiles"),
        "DIB_LOCKFILES",
    )?;
    check(
        ["0", "1"].contains(&value("DIB_NO_TMPFS").as_str()),
        format!("DIB_NO_TMPFS={}", value("DIB_NO_TMPFS")),
    )?;
    for (name, says) in [
        ("sudo_other", "cannot become 'nobody'"),
        ("mknod_dev", "a rootless build cannot make device nodes"),
    ] {
        let v = value(name);
        check(
            v.contains(says) && v.ends_with("refused"),
            format!("{name}={v}"),
        )?;
    }
    // A type chosen for a prefix that has none of it runs nothing, as in
    // DIB, and says so.
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains(
            "warning: DIB_INSTALLTYPE_probe_other=pip, but no element ships \
             install.d/probe-other-pip-install (install types for 'probe-other': source)",
        ),
        format!("stderr:\n{err}"),
    )?;
    b.assert_clean()
}
