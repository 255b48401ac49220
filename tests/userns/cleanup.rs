//! Cleanup after a build: files owned by subordinate ids on disk, and host
//! directories a hook bind-mounted into the image.

use std::fs;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};

pub fn on_disk_builds_clean_up_chowned_files_and_log_to_a_file() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/10-own",
        "#!/bin/sh\nset -eu\nmkdir -p /srv/deep\ntouch /srv/deep/f\nchown -R 4321:4321 /srv\nchmod 0500 /srv/deep\necho owned\n",
        0o755,
    );
    let log = b.f.path("build.log");
    let mut cmd = b.command(&["tiny-os", "probe"], &[]);
    cmd.arg("--no-tmpfs").arg("--logfile").arg(&log);
    let o = cmd.output()?;
    succeeded(&o)?;
    let text = fs::read_to_string(&log)?;
    for want in [
        "| running install.d (1 scripts)\n",
        "| owned\n",
        "|   ",
        "10-own (probe)\n",
        "| build finished\n",
    ] {
        check(
            text.contains(want),
            format!("{want:?} not in the log file:\n{text}"),
        )?;
    }
    // Files the host user could not delete (owned by subordinate ids) are
    // removed from inside the namespace.
    b.assert_clean()
}

pub fn cleanup_never_reaches_through_a_hooks_bind_mount() -> Result<(), Failed> {
    // TMP_DIR as given, and through a symlink (regression: the build
    // directory's mounts were then not recognised and cleanup emptied the
    // bind-mounted host directory).
    for via_link in [false, true] {
        let b = Build::new();
        let victim = b.out.join("victim");
        fs::create_dir(&victim)?;
        fs::write(victim.join("data"), "precious\n")?;
        b.f.file(
            "e/probe/root.d/20-bind",
            &format!(
                "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/var/cache/x\"\nmount --bind {} \"$TARGET_ROOT/var/cache/x\"\n",
                victim.display()
            ),
            0o755,
        );
        b.f.file("e/probe/install.d/20-fail", "#!/bin/sh\nexit 5\n", 0o755);
        let link = b.f.path("tmp-link");
        std::os::unix::fs::symlink(&b.tmp, &link)?;
        let tmp_dir = if via_link {
            link.display().to_string()
        } else {
            b.tmp.display().to_string()
        };
        let mut cmd = b.command(&["tiny-os", "probe"], &[("TMP_DIR", &tmp_dir)]);
        cmd.arg("--no-tmpfs");
        let o = cmd.output()?;
        check(!o.status.success(), "the build should fail")?;
        eq(
            &fs::read_to_string(victim.join("data")).unwrap_or_default(),
            "precious\n",
            &format!("the bind-mounted host file (TMP_DIR through a symlink: {via_link})"),
        )?;
        let err = String::from_utf8_lossy(&o.stderr);
        check(!err.contains("warning"), format!("cleanup warned:\n{err}"))?;
        b.assert_clean()?;
    }
    Ok(())
}
