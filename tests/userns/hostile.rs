//! Hooks that try to leave the build's box (docs/security.md): write the
//! user's home, its caches or another build; reach the host through
//! /proc/1/root; unmount what the box is made of; make the system calls the
//! seccomp filter refuses. Each attempt is made by a hook and must fail,
//! and the host must be as it was. The builds also show what the box keeps
//! working: reading the home in extra-data.d, writing declared caches and
//! files named after the image.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};

/// Runs `$1` as a command line; records `NAME: refused` or `NAME: DONE`.
const TRY: &str = r#"try() { if (eval "$2") >/dev/null 2>&1; then echo "$1: DONE"; else echo "$1: refused"; fi >> "$DIB_TEST_OUT/attempts"; }
"#;

fn attempts(b: &Build) -> Vec<String> {
    b.out("attempts").lines().map(str::to_string).collect()
}

fn all_refused(b: &Build) -> Result<(), Failed> {
    let got = attempts(b);
    let done: Vec<&String> = got.iter().filter(|l| !l.ends_with(": refused")).collect();
    check(
        done.is_empty() && !got.is_empty(),
        format!("attempts that were not refused: {done:?} (of {got:?})"),
    )
}

pub fn hooks_cannot_write_the_home_caches_or_the_job() -> Result<(), Failed> {
    let b = Build::new();
    let home = b.f.path("home");
    fs::create_dir_all(home.join(".cache/image-create/debian-minimal")).unwrap();
    fs::write(home.join(".bashrc"), "# the user's\n").unwrap();
    fs::write(home.join(".secret_key"), "s3cret\n").unwrap();
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::write(home.join(".ssh/id.pub"), "ssh-ed25519 AAAA me\n").unwrap();
    let hook = format!(
        "#!/bin/bash\n{TRY}\
         try home-file 'echo x > $HOME/PWNED'\n\
         try bashrc 'echo evil >> $HOME/.bashrc'\n\
         try image-cache 'echo x > $DIB_IMAGE_CACHE/debian-minimal/base.tar'\n\
         try cache-root 'mkdir $DIB_IMAGE_CACHE/new'\n\
         try job-file 'test -e $TMP_BUILD_DIR/.dib-job.json'\n\
         try remount-home 'mount -o remount,bind,rw $HOME'\n\
         try unmount-proc 'umount /proc || umount -l /proc'\n\
         try other-proc 'test $(ls /proc | grep -c \"^[0-9]\") -gt 40'\n\
         try pid1-root 'ls /proc/1/root/'\n\
         try pid1-fd 'readlink /proc/1/fd/0'\n\
         try pid1-cwd 'ls /proc/1/cwd/'\n\
         try pid1-environ 'cat /proc/1/environ'\n\
         try host-etc 'touch /etc/dib-was-here'\n\
         # the box's own parts are out of reach: swapping the overlay's upper\n\
         # directory for a link to the home must not send later /tmp writes there\n\
         rm -rf $TMP_BUILD_DIR/.dib-private/tmp/upper 2>/dev/null; ln -s $HOME $TMP_BUILD_DIR/.dib-private/tmp/upper 2>/dev/null || true\n\
         # what keeps working: reading the home, the build's own directories\n\
         echo ok > $TMP_BUILD_DIR/own && echo ok > /tmp/scratch && cat /tmp/scratch > $DIB_TEST_OUT/tmp\n"
    );
    b.f.file("e/grabby/root.d/99-grab", &hook, 0o755);
    // The chroot's own /proc: unmounting it must fail as well, and pid 1
    // stays out of reach.
    let chroot_hook = format!(
        "#!/bin/sh\nDIB_TEST_OUT=/root\n{TRY}\
         try chroot-unmount-proc 'umount /proc || umount -l /proc'\n\
         try chroot-pid1-root 'ls /proc/1/root/'\n\
         try chroot-in-target 'touch /tmp/in_target.d/x'\n"
    );
    b.f.file("e/grabby/install.d/99-grab", &chroot_hook, 0o755);
    // As DIB's elements do in extra-data.d: read a key from the home.
    b.f.file(
        "e/grabby/extra-data.d/50-key",
        "#!/bin/sh\ncat $HOME/.ssh/id.pub > $DIB_TEST_OUT/key\n",
        0o755,
    );
    b.f.file(
        "e/grabby/cleanup.d/99-report",
        "#!/bin/sh\ncat $TARGET_ROOT/root/attempts >> $DIB_TEST_OUT/attempts\necho x > /tmp/swapped\n",
        0o755,
    );
    b.f.file("e/grabby/element-deps", "", 0o644);
    let o = b.run(
        &["tiny-os", "grabby"],
        &[(
            "DIB_IMAGE_CACHE",
            &home.join(".cache/image-create").display().to_string(),
        )],
    );
    succeeded(&o)?;
    all_refused(&b)?;
    check(
        attempts(&b).len() == 16,
        format!("every attempt ran: {:?}", attempts(&b)),
    )?;
    check(!home.join("PWNED").exists(), "~/PWNED was written")?;
    check(
        !home.join("swapped").exists(),
        "a hook sent /tmp writes into the home by swapping the box's parts",
    )?;
    eq(
        &fs::read_to_string(home.join(".bashrc")).unwrap(),
        "# the user's\n",
        "~/.bashrc",
    )?;
    check(
        fs::read_dir(home.join(".cache/image-create/debian-minimal"))
            .unwrap()
            .next()
            .is_none(),
        "the image cache was written",
    )?;
    check(
        !std::path::Path::new("/etc/dib-was-here").exists(),
        "/etc was written",
    )?;
    eq(
        &b.out("key"),
        "ssh-ed25519 AAAA me",
        "a key read from ~ in extra-data.d",
    )?;
    eq(&b.out("tmp"), "ok", "the build's own /tmp")?;
    b.assert_clean()
}

pub fn strict_box_hides_the_home_and_the_network() -> Result<(), Failed> {
    let b = Build::new();
    let home = b.f.path("home");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join(".secret_key"), "s3cret\n").unwrap();
    let hook = format!(
        "#!/bin/bash\n{TRY}\
         try read-secret 'cat $HOME/.secret_key'\n\
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ' \
         > $DIB_TEST_OUT/net-$(basename $(dirname $0))\n"
    );
    b.f.file("e/nosy/root.d/50-nosy", &hook, 0o755);
    b.f.file("e/nosy/cleanup.d/50-nosy", &hook, 0o755);
    let o = b.run(&["tiny-os", "nosy"], &[("DIB_STRICT_BOX", "1")]);
    succeeded(&o)?;
    all_refused(&b)?;
    let root_net = b.out("net-root.d");
    check(
        root_net.split_whitespace().any(|i| i != "lo"),
        format!("root.d (a download phase) sees the host's interfaces: {root_net:?}"),
    )?;
    eq(&b.out("net-cleanup.d"), "lo", "interfaces in cleanup.d")?;
    // Without the strict box, the same hook reads the key.
    let b2 = Build::new();
    fs::create_dir_all(b2.f.path("home")).unwrap();
    fs::write(b2.f.path("home/.secret_key"), "s3cret\n").unwrap();
    b2.f.file("e/nosy/root.d/50-nosy", &hook, 0o755);
    succeeded(&b2.run(&["tiny-os", "nosy"], &[]))?;
    eq(&b2.out("attempts"), "read-secret: DONE", "the plain box")?;
    Ok(())
}

pub fn seccomp_refuses_what_no_build_needs() -> Result<(), Failed> {
    let b = Build::new();
    // root.d runs the host's python3, which can make any system call.
    let hook = r#"#!/bin/bash
set -eu
grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t ' ' ' > $DIB_TEST_OUT/status
python3 - "$DIB_TEST_OUT/errnos" <<'EOF'
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
# x86_64 numbers: init_module, finit_module, kexec_load, bpf, keyctl, add_key, getpid
out = []
for name, nr in [("init_module", 175), ("finit_module", 313), ("kexec_load", 246),
                 ("bpf", 321), ("keyctl", 250), ("add_key", 248)]:
    r = libc.syscall(nr, 0, 0, 0, 0, 0)
    out.append(f"{name}={ctypes.get_errno() if r < 0 else 'ran'}")
out.append("getpid=" + ("ok" if libc.syscall(39) > 0 else "failed"))
open(sys.argv[1], "w").write(" ".join(out))
EOF
"#;
    b.f.file("e/syscalls/root.d/50-syscalls", hook, 0o755);
    let o = b.run(&["tiny-os", "syscalls"], &[]);
    succeeded(&o)?;
    eq(
        &b.out("status"),
        "NoNewPrivs: 1\nSeccomp: 2",
        "/proc/self/status",
    )?;
    eq(
        &b.out("errnos"),
        "init_module=1 finit_module=1 kexec_load=1 bpf=1 keyctl=1 add_key=1 getpid=ok",
        "errno of each refused system call (1 = EPERM)",
    )
}

pub fn a_build_cannot_reach_another_build() -> Result<(), Failed> {
    // Build A (on disk, --no-tmpfs) waits in root.d until the test lets it
    // go; build B, in the same TMP_DIR, looks for A and tries to plant a
    // hook in A's hook tree.
    let a = Build::new();
    let wait = "#!/bin/bash\nset -eu\necho ready > $DIB_TEST_OUT/ready\n\
                while [ ! -e $DIB_TEST_OUT/go ]; do sleep 0.05; done\n";
    a.f.file("e/waiter/root.d/10-wait", wait, 0o755);
    let mut child = a
        .command(&["tiny-os", "waiter"], &[("DIB_NO_TMPFS", "1")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting build A");
    let start = Instant::now();
    while !a.out.join("ready").exists() {
        if start.elapsed() > Duration::from_secs(60) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("build A never reached its root.d hook".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let a_dirs: Vec<_> = fs::read_dir(&a.tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    if a_dirs.len() != 1 {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("build A's directory: {a_dirs:?}").into());
    }
    let a_dir = a_dirs[0].display().to_string();
    let b = Build::new();
    let hook = format!(
        "#!/bin/bash\n{TRY}\
         try see-a 'ls -d {a_dir}'\n\
         try plant 'echo \"#!/bin/sh\" > {a_dir}/hooks/install.d/00-planted'\n\
         try list-tmp-dir 'ls -a {tmp} | grep -qx {a_name}'\n",
        tmp = a.tmp.display(),
        a_name = a_dirs[0].file_name().unwrap().to_string_lossy()
    );
    b.f.file("e/neighbour/root.d/50-neighbour", &hook, 0o755);
    let ob = b.run(
        &["tiny-os", "neighbour"],
        &[("TMP_DIR", &a.tmp.display().to_string())],
    );
    fs::write(a.out.join("go"), "").unwrap();
    let oa = child.wait_with_output().expect("waiting for build A");
    succeeded(&ob)?;
    succeeded(&oa)?;
    all_refused(&b)?;
    check(
        !std::path::Path::new(&format!("{a_dir}/hooks/install.d/00-planted")).exists(),
        "a hook was planted in build A",
    )?;
    a.assert_clean()
}

pub fn hooks_write_beside_the_image_only_under_its_name() -> Result<(), Failed> {
    let b = Build::new();
    let hook = "#!/bin/bash\nset -eu\nmkdir -p $IMAGE_NAME.d && echo m > $IMAGE_NAME.d/manifest\n\
                echo k > $IMAGE_NAME.vmlinuz\necho x > $(dirname $IMAGE_NAME)/elsewhere || true\n";
    b.f.file("e/beside/cleanup.d/50-beside", hook, 0o755);
    let out_dir = b.f.path("images");
    fs::create_dir_all(&out_dir).unwrap();
    let name = out_dir.join("img").display().to_string();
    let o = b
        .dib(
            &[
                "create", "-n", "-o", &name, "-t", "tar", "tiny-os", "beside",
            ],
            &[],
        )
        .output()
        .expect("running dib");
    succeeded(&o)?;
    eq(
        &fs::read_to_string(out_dir.join("img.d/manifest")).unwrap_or_default(),
        "m\n",
        "img.d/manifest",
    )?;
    eq(
        &fs::read_to_string(out_dir.join("img.vmlinuz")).unwrap_or_default(),
        "k\n",
        "img.vmlinuz",
    )?;
    check(
        !out_dir.join("elsewhere").exists(),
        "a file not named after the image was kept",
    )?;
    check(out_dir.join("img.tar").exists(), "the tar output")?;
    // A failed build keeps none of it.
    let failed_hook = format!("{hook}exit 1\n");
    b.f.file("e/beside/cleanup.d/50-beside", &failed_hook, 0o755);
    let name2 = out_dir.join("img2").display().to_string();
    let o = b
        .dib(
            &[
                "create", "-n", "-o", &name2, "-t", "tar", "tiny-os", "beside",
            ],
            &[],
        )
        .output()
        .expect("running dib");
    check(!o.status.success(), "the failing build failed")?;
    check(
        !out_dir.join("img2.d").exists(),
        "a failed build kept img2.d",
    )?;
    b.assert_clean()
}
