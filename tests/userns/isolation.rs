//! The sandbox's isolation: what chroot phases see (ids, /proc, pid 1, the
//! environment, resolv.conf), symlinks in the image that point at the host,
//! daemons a hook leaves behind, and the identity mapping as root.

use std::fs;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::processes_with;

const PROBE: &str = r#"#!/bin/sh
set -eu
id -u > /root/uid
touch /root/owned
chown 1234:1234 /root/owned
if touch /tmp/in_target.d/x 2>/dev/null; then echo writable; else echo read-only; fi > /root/in_target
ls /proc | grep -c '^[0-9]' > /root/nprocs
tr '\0' ' ' < /proc/1/cmdline > /root/pid1
echo "$TMP_HOOKS_PATH $HOME $PATH" > /root/env
echo "${DIB_FROM_ENV_D:-unset}" > /root/envd
cat /etc/resolv.conf > /root/resolv_during
"#;

const REPORT: &str = r#"#!/bin/bash
set -eu -o pipefail
cd "$TARGET_ROOT/root"
cp uid in_target nprocs pid1 env envd resolv_during "$DIB_TEST_OUT/"
stat -c %u:%g owned > "$DIB_TEST_OUT/owned"
sudo id -u > "$DIB_TEST_OUT/sudo"
get_image_element_array > "$DIB_TEST_OUT/array"
echo "$IMAGE_ELEMENT" > "$DIB_TEST_OUT/image_element"
cat "$TARGET_ROOT/etc/resolv.conf" > "$DIB_TEST_OUT/resolv_after"
"#;

pub fn chroot_phases_run_as_root_in_an_isolated_tree() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/10-probe", PROBE, 0o755);
    b.f.file(
        "e/probe/environment.d/10-probe.bash",
        "export DIB_FROM_ENV_D=sourced\n",
        0o644,
    );
    b.f.file("e/probe/cleanup.d/90-report", REPORT, 0o755);
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    eq(&b.out("uid"), "0", "id -u in the chroot")?;
    eq(
        &b.out("owned"),
        "1234:1234",
        "owner of a chowned file, seen from cleanup.d",
    )?;
    eq(&b.out("in_target"), "read-only", "/tmp/in_target.d")?;
    let nprocs: usize = b.out("nprocs").parse()?;
    check(
        nprocs < 10,
        format!("/proc in the chroot shows {nprocs} processes"),
    )?;
    check(
        b.out("pid1").contains("__sandbox-init"),
        format!("pid 1 is {:?}", b.out("pid1")),
    )?;
    eq(
        &b.out("env"),
        "/tmp/in_target.d /root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TMP_HOOKS_PATH HOME PATH in the chroot",
    )?;
    eq(
        &b.out("envd"),
        "sourced",
        "a variable exported by environment.d",
    )?;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    eq(
        &b.out("resolv_during"),
        host_resolv.trim_end(),
        "resolv.conf during the build",
    )?;
    eq(
        &b.out("resolv_after"),
        "nameserver 192.0.2.1",
        "the image's resolv.conf afterwards",
    )?;
    eq(&b.out("sudo"), "0", "sudo id -u in an outside phase")?;
    eq(
        &b.out("image_element"),
        "no-final-image probe tiny-os",
        "IMAGE_ELEMENT",
    )?;
    check(
        b.out("array").contains("[probe]="),
        format!("get_image_element_array: {}", b.out("array")),
    )?;
    b.assert_clean()
}

pub fn resolv_conf_follows_what_the_hooks_did() -> Result<(), Failed> {
    // (install.d hook, what /etc/resolv.conf is after the build)
    let cases = [
        (
            "ln -sf ../run/resolve/stub-resolv.conf /etc/resolv.conf",
            "link:../run/resolve/stub-resolv.conf",
        ),
        ("rm -f /etc/resolv.conf", "file:nameserver 192.0.2.1"),
        (
            "echo 'nameserver 198.51.100.1' > /etc/resolv.conf",
            "file:nameserver 192.0.2.1",
        ),
    ];
    for (hook, want) in cases {
        let b = Build::new();
        b.f.file(
            "e/probe/install.d/10-resolv",
            &format!("#!/bin/sh\nset -eu\n{hook}\n"),
            0o755,
        );
        b.f.file(
            "e/probe/cleanup.d/90-report",
            "#!/bin/bash\nset -eu\nf=\"$TARGET_ROOT/etc/resolv.conf\"\n\
             if [ -L \"$f\" ]; then echo \"link:$(readlink \"$f\")\"; else echo \"file:$(cat \"$f\")\"; fi > \"$DIB_TEST_OUT/resolv\"\n\
             ls -A \"$TARGET_ROOT/etc\" > \"$DIB_TEST_OUT/etc\"\n",
            0o755,
        );
        let o = b.run(&["tiny-os", "probe"], &[]);
        succeeded(&o)?;
        eq(&b.out("resolv"), want, hook)?;
        check(
            !b.out("etc").contains("dib-saved"),
            format!("{hook}: /etc holds {}", b.out("etc")),
        )?;
    }
    Ok(())
}

pub fn symlinks_in_the_image_cannot_point_the_build_at_the_host() -> Result<(), Failed> {
    // (directory replaced by a symlink to a host directory, expected message)
    for dir in ["tmp", "etc"] {
        let b = Build::new();
        let victim = b.out.join("victim");
        fs::create_dir(&victim)?;
        fs::write(victim.join("keep"), "mine\n")?;
        b.f.file(
            "e/probe/root.d/20-hostile",
            &format!(
                "#!/bin/bash\nset -eu\nrm -rf \"$TARGET_ROOT/{dir}\"\nln -s {} \"$TARGET_ROOT/{dir}\"\n",
                victim.display()
            ),
            0o755,
        );
        b.f.file("e/probe/install.d/10-nop", "#!/bin/sh\ntrue\n", 0o755);
        let o = b.run(&["tiny-os", "probe"], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        check(
            !o.status.success()
                && err.contains(&format!(
                    "the image's /{dir} is not a directory (a symlink?); refusing to use it"
                )),
            format!("/{dir} as a symlink: {}\n{err}", o.status),
        )?;
        let names: Vec<_> = fs::read_dir(&victim)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        check(
            names == ["keep"],
            format!("the host directory was touched: {names:?}"),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

pub fn a_daemon_started_by_a_hook_dies_with_its_phase() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/10-daemon",
        "#!/bin/sh\nsleep 876541 >/dev/null 2>&1 &\necho started\n",
        0o755,
    );
    b.f.file(
        "e/probe/post-install.d/10-check",
        "#!/bin/sh\nif ps | grep -v grep | grep -q 'sleep 876541'; then echo alive; else echo gone; fi > /root/daemon\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/90-report",
        "#!/bin/bash\nset -eu\ncp \"$TARGET_ROOT/root/daemon\" \"$DIB_TEST_OUT/\"\n",
        0o755,
    );
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    eq(&b.out("daemon"), "gone", "the daemon in the next phase")?;
    let left = processes_with("876541");
    check(
        left.is_empty(),
        format!("left running on the host: {left:?}"),
    )?;
    b.assert_clean()
}

pub fn as_root_ids_map_to_themselves() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/10-own",
        "#!/bin/sh\nset -eu\nid -u > /root/uid\ntouch /root/owned\nchown 1234:1234 /root/owned\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/90-report",
        "#!/bin/bash\nset -eu\ncp \"$TARGET_ROOT/root/uid\" \"$DIB_TEST_OUT/\"\nstat -c %u:%g \"$TARGET_ROOT/root/owned\" > \"$DIB_TEST_OUT/owned\"\ngrep -E '^ *0 +0 +65536$' /proc/self/uid_map > \"$DIB_TEST_OUT/uid_map\"\n",
        0o755,
    );
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    eq(&b.out("uid"), "0", "id -u in the chroot")?;
    eq(&b.out("owned"), "1234:1234", "owner of a chowned file")?;
    check(
        !b.out("uid_map").is_empty(),
        "the uid map is not the identity 0 0 65536",
    )?;
    b.assert_clean()
}
