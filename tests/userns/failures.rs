//! Failed builds and their messages: a failing script, an empty root, an
//! ubuntu build with no mirror or keyring.

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, Build};

pub fn a_failing_script_fails_the_build_naming_it() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/20-fail",
        "#!/bin/sh\necho about to fail\nexit 3\n",
        0o755,
    );
    b.f.file(
        "e/probe/post-install.d/10-never",
        "#!/bin/sh\ntouch /never\n",
        0o755,
    );
    let o = b.run(&["tiny-os", "probe"], &[]);
    eq(&format!("{:?}", o.status.code()), "Some(1)", "exit code")?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.ends_with(
            "dib: error: install.d/20-fail of element 'probe' failed with exit status 3; its last lines:\n    about to fail\n",
        ),
        format!("stderr:\n{err}"),
    )?;
    check(
        !err.contains("post-install.d"),
        "a phase ran after the failure",
    )?;
    b.assert_clean()
}

pub fn an_empty_root_is_a_failed_deploy() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/nothing-os/element-provides", "operating-system\n", 0o644);
    b.f.file("e/nothing-os/root.d/10-nothing", "#!/bin/sh\ntrue\n", 0o755);
    let o = b.run(&["nothing-os"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains(
            "dib: error: Failed to deploy the root element: root.d left TARGET_ROOT empty",
        ),
        format!("stderr:\n{err}"),
    )?;
    b.assert_clean()
}

pub fn ubuntu_without_a_mirror_or_keyring_fails_clearly() -> Result<(), Failed> {
    // (environment, expected message)
    let cases: [(&[(&str, &str)], &str); 2] = [
        (
            &[],
            "ubuntu-minimal: no ubuntu mirror for 'noble': set DIB_DISTRIBUTION_MIRROR, or add a deb source for noble",
        ),
        (
            &[
                ("DIB_DISTRIBUTION_MIRROR", "http://mirror.invalid/ubuntu"),
                ("DIB_DEBOOTSTRAP_KEYRING", "/nonexistent/ubuntu-archive-keyring.gpg"),
            ],
            "ubuntu-minimal: the archive keyring /nonexistent/ubuntu-archive-keyring.gpg is missing",
        ),
    ];
    for (env, want) in cases {
        let b = Build::new();
        let o = b
            .dib(
                &[
                    "create",
                    "-n",
                    "-t",
                    "tar",
                    "-o",
                    &b.out.join("u").display().to_string(),
                    "ubuntu-minimal",
                ],
                env,
            )
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        check(
            !o.status.success() && err.contains(want),
            format!("{env:?}:\n{err}"),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

/// An unknown `-a` names the architectures dib builds; a host that cannot
/// run a foreign architecture's binaries (here: a user namespace with an
/// empty binfmt_misc of its own, as a host without qemu-user-static's
/// handlers has) fails before anything is bootstrapped, naming the package
/// and the command, and leaves nothing behind.
pub fn foreign_architectures_fail_clearly_without_binfmt() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.out.join("x").display().to_string();
    let o = b
        .dib(
            &[
                "create",
                "-a",
                "sparc",
                "-t",
                "tar",
                "-o",
                &out,
                "debian-minimal",
            ],
            &[],
        )
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        !o.status.success()
            && err.contains(
                "invalid value \"sparc\" for '-a <ARCH>': use one of amd64, arm64, armhf, i386",
            ),
        format!("-a sparc:\n{err}"),
    )?;
    for (arch, handler) in [("arm64", "qemu-aarch64"), ("armhf", "qemu-arm")] {
        let inner = b.dib(
            &[
                "create",
                "-a",
                arch,
                "-t",
                "tar",
                "-o",
                &out,
                "debian-minimal",
            ],
            &[],
        );
        let mut cmd = std::process::Command::new("unshare");
        cmd.args([
            "-Urm",
            "sh",
            "-c",
            "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && exec \"$@\"",
            "sh",
        ])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear();
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let o = cmd.output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        let want = format!(
            "this host cannot run {arch} binaries: no binfmt_misc handler is registered for them; \
             install the Debian packages qemu-user-static and binfmt-support"
        );
        check(
            !o.status.success()
                && err.contains(&want)
                && err.contains(&format!("sudo update-binfmts --enable {handler}"))
                && !err.contains("running root.d"),
            format!("-a {arch} without binfmt handlers:\n{err}"),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}
