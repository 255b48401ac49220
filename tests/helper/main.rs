//! Tier 3, the root tier: dib-helper running as root, dib and a probe
//! client as the non-root test user (docs/testing.md).
//!
//! The harness runs as root: it starts helpers on sockets of its own, runs
//! dib as the test user, and looks at loop devices, mounts and the images
//! with root's tools. The probe client is this same binary, re-run as the
//! test user with `DIB_HELPER_PROBE=CASE`: it speaks the protocol directly,
//! to send what dib never would.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tier::{check, eq, run_trials, succeeded, Build};
use dib_sandbox::client::{Client, ClientError};
use dib_sandbox::mkfs::{FsType, MkfsSpec};
use dib_sandbox::proto::{self, Reply, Request};
use libtest_mimic::Failed;

/// The environment variable that turns this binary into the probe client.
const PROBE_ENV: &str = "DIB_HELPER_PROBE";

/// The test user: name, uid, gid, home.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn test_user() -> Option<User> {
    let name = std::env::var("DIB_TEST_USER").unwrap_or_else(|_| "dibtest".into());
    let u = nix::unistd::User::from_name(&name).ok().flatten()?;
    Some(User {
        name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    })
}

fn user() -> User {
    test_user().expect("the test user (checked before the trials)")
}

fn helper_bin() -> PathBuf {
    std::env::var_os("DIB_HELPER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/dib-helper"))
}

fn skip_reason() -> Option<String> {
    if std::env::var("DIB_TIER3").as_deref() != Ok("1") {
        return Some("the root tier runs from scripts/test (as root, with DIB_TIER3=1)".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("the root tier runs as root (dib-helper needs it)".into());
    }
    let Some(u) = test_user() else {
        return Some("no test user (run scripts/prepare-host --test-user)".into());
    };
    if !helper_bin().is_file() {
        return Some(format!(
            "no dib-helper at {} (cargo build -p dib-helper)",
            helper_bin().display()
        ));
    }
    if !u.home.is_dir() {
        return Some(format!("the test user {} has no home directory", u.name));
    }
    None
}

/// `dib-helper serve` on `socket`, allowing `allow`, its stderr to `stderr`.
fn serve(socket: &Path, allow: &[&str], stderr: Stdio) -> std::io::Result<Child> {
    Command::new(helper_bin())
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(allow)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
}

/// `dib-helper ping` of `socket`, trying for `timeout` seconds.
fn ping_helper(socket: &Path, timeout: u32) -> std::io::Result<std::process::Output> {
    Command::new(helper_bin())
        .args(["ping", "--timeout", &timeout.to_string(), "--socket"])
        .arg(socket)
        .output()
}

/// A dib-helper serving on a socket in a directory of its own.
struct Helper {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
}

impl Helper {
    fn start(allow: &[&str]) -> Result<Helper, Failed> {
        let dir = tempfile::Builder::new().prefix("dib-helper-").tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let socket = dir.path().join("helper.sock");
        let log = dir.path().join("helper.log");
        let child = serve(&socket, allow, File::create(&log)?.into())?;
        let mut h = Helper {
            child,
            _dir: dir,
            socket,
            log,
        };
        h.wait_ready()?;
        Ok(h)
    }

    fn for_test_user() -> Result<Helper, Failed> {
        Helper::start(&["--allow-user", &user().name])
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the helper answers a Hello (as root, always allowed):
    /// ready is when it answers, not when its socket path appears.
    fn wait_ready(&mut self) -> Result<(), Failed> {
        let started = Instant::now();
        loop {
            match Client::connect(&self.socket) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let exited = self.child.try_wait()?;
                    check(
                        exited.is_none() && started.elapsed() < Duration::from_secs(10),
                        format!(
                            "dib-helper did not answer ({e}; exit: {exited:?}): {}",
                            self.log_text()
                        ),
                    )?;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The helper still answers (as root, always allowed).
    fn alive(&self) -> Result<(), Failed> {
        let c = Client::connect(&self.socket).map_err(|e| format!("{e}: {}", self.log_text()))?;
        c.ping()?;
        Ok(())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `cmd` as the test user (no supplementary groups, its HOME).
fn as_user(cmd: &mut Command) -> &mut Command {
    let u = user();
    cmd.uid(u.uid).gid(u.gid).env("HOME", &u.home)
}

/// A build's scratch space, owned by the test user.
fn user_build() -> Result<Build, Failed> {
    let b = Build::new();
    fs::create_dir_all(b.f.path("home"))?;
    chown_tree(b.f.dir.path(), user().uid, user().gid)?;
    Ok(b)
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<(), Failed> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if fs::symlink_metadata(p)?.is_dir() {
        for e in fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `dib create -n ARGS...` as the test user through `helper` (`None`: the
/// offline backend).
fn dib(b: &Build, helper: Option<&Helper>, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut all = vec!["create", "-n"];
    match helper {
        Some(_) => all.extend(["--block-backend", "helper"]),
        None => all.extend(["--block-backend", "offline"]),
    }
    all.extend_from_slice(args);
    let mut cmd = b.dib(&all, env);
    if let Some(h) = helper {
        cmd.env("DIB_HELPER_SOCKET", &h.socket);
    }
    as_user(&mut cmd);
    cmd
}

/// Loop devices now attached, with their backing files.
fn attached_loops() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
            out.insert(name, b.trim().to_string());
        }
    }
    out
}

/// Mounts of loop devices in the host's mount table.
fn loop_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/dev/loop"))
        .map(String::from)
        .collect()
}

/// Wait until no loop device is backed by a file under `dir` and no loop
/// device is mounted (the kernel detaches autoclear devices when their
/// last user goes, which can trail the client's death a little).
fn no_leaks_under(dir: &Path) -> Result<(), Failed> {
    let dir = dir.display().to_string();
    let started = Instant::now();
    loop {
        let ours: Vec<_> = attached_loops()
            .into_iter()
            .filter(|(_, f)| f.starts_with(&dir))
            .collect();
        let mounts = loop_mounts();
        if ours.is_empty() && mounts.is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(format!("leaked loop devices {ours:?}, mounts {mounts:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run this binary as the test user in probe mode.
fn probe(case: &str, socket: &Path, scratch: &Path) -> Result<String, Failed> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env_clear()
        .env(PROBE_ENV, case)
        .env("DIB_HELPER_SOCKET", socket)
        .env("DIB_PROBE_DIR", scratch)
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
    as_user(&mut cmd);
    let o = cmd.output()?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    check(
        o.status.success(),
        format!(
            "the probe '{case}' failed ({}):\n{out}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
    )?;
    Ok(out)
}

/// A scratch directory the test user owns.
fn user_dir() -> Result<tempfile::TempDir, Failed> {
    let d = tempfile::Builder::new().prefix("dib-probe-").tempdir()?;
    std::os::unix::fs::chown(d.path(), Some(user().uid), Some(user().gid))?;
    Ok(d)
}

fn bad_requests_are_refused_and_the_helper_keeps_serving() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let scratch = user_dir()?;
    // A file the test user may write but does not own.
    let foreign = scratch.path().join("roots.img");
    File::create(&foreign)?.set_len(64 << 20)?;
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o666))?;
    let out = probe("refusals", &h.socket, scratch.path())?;
    let u = user();
    let want = format!(
        "version: Version: dib speaks helper protocol version 2, this dib-helper speaks version 1: install dib and dib-helper from the same release
first: Version: Hello must come first
chardev: BadFd: the image fd is a character device: send an image file you own
directory: BadFd: the image fd is a directory: send an image file you own
foreign: BadFd: the image file belongs to uid 0, not to you (uid {uid}): send an image file you own
read-only: BadFd: the image fd is not open for reading and writing
procfs: BadFd: the image file is on a filesystem of type 0x9fa0: keep images on a local filesystem (ext2/3/4, xfs, btrfs, tmpfs, f2fs, overlayfs, zfs, bcachefs)
userns-not-owned: BadFd: the user namespace sent for idmapping belongs to uid 0, not to you (uid {uid})
not-a-namespace: BadFd: the fd sent for idmapping is not a namespace
other-connection: NoSuchHandle: handle H is not a loop device this connection attached
limit: Limit: this connection already holds 4 loop devices, the limit
truncated: Malformed
oversize: Malformed
unknown: Malformed
too-many-fds: Malformed
after-all-that: Pong
per-user: Limit: your connections hold 16 loop devices (some kept by mounts still alive), the limit
",
        uid = u.uid
    );
    eq(&out, &want, "the probe's refusals")?;
    // The block device case needs a block device the peer can open: as
    // root (always allowed), the fd check still refuses it.
    let blk = File::open("/dev/loop-control").ok();
    let c = Client::connect(&h.socket)?;
    if let Some(dev) = fs::read_dir("/dev")?.flatten().find(|e| {
        e.file_name().to_string_lossy().starts_with("loop")
            && e.path() != Path::new("/dev/loop-control")
    }) {
        let f = File::open(dev.path())?;
        match c.attach_loop(f.as_fd(), true) {
            Err(ClientError::Refused { message, .. }) => eq(
                &message,
                "the image fd is a block device: send an image file you own",
                "a block device",
            )?,
            other => return Err(format!("a block device was accepted: {other:?}").into()),
        }
    }
    drop(blk);
    no_leaks_under(scratch.path())?;
    h.alive()
}

/// The socket path appears only once the helper accepts: a client that
/// connects the moment it sees the path is answered, and `dib-helper ping`
/// waits for that answer. A restart replaces the old socket and leaves no
/// temporary name behind.
fn the_socket_appears_only_when_it_accepts() -> Result<(), Failed> {
    let dir = tempfile::Builder::new().prefix("dib-helper-").tempdir()?;
    let socket = dir.path().join("helper.sock");
    for round in 0..5 {
        // Round 0 starts on a clean directory, later ones over the socket
        // the previous helper left: wait for the new helper to take it.
        let old = fs::symlink_metadata(&socket).ok().map(|m| m.ino());
        let log = File::create(dir.path().join("helper.log"))?;
        let mut child = serve(&socket, &["--allow-user", "root"], log.into())?;
        let started = Instant::now();
        let seen = loop {
            if let Ok(m) = fs::symlink_metadata(&socket) {
                if Some(m.ino()) != old {
                    break m;
                }
            }
            if started.elapsed() > Duration::from_secs(10) || child.try_wait()?.is_some() {
                let _ = child.kill();
                let log = fs::read_to_string(dir.path().join("helper.log"))?;
                return Err(format!("round {round}: no socket from dib-helper: {log}").into());
            }
            std::thread::yield_now();
        };
        let answered = Client::connect(&socket);
        let ping = ping_helper(&socket, 5)?;
        let _ = child.kill();
        child.wait()?;
        check(
            std::os::unix::fs::FileTypeExt::is_socket(&seen.file_type()),
            format!("round {round}: the path is not a socket"),
        )?;
        answered.map_err(|e| format!("round {round}: the path was there, the helper not: {e}"))?;
        succeeded(&ping)?;
        eq(
            String::from_utf8_lossy(&ping.stdout).trim(),
            &format!(
                "dib-helper at {}: serving protocol version {}",
                socket.display(),
                proto::VERSION
            ),
            "dib-helper ping",
        )?;
    }
    let left: Vec<_> = fs::read_dir(dir.path())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "helper.sock" && n != "helper.log")
        .collect();
    check(
        left.is_empty(),
        format!("left in the socket's directory: {left:?}"),
    )?;
    // Nobody serving: ping says so within its timeout.
    fs::remove_file(&socket)?;
    let ping = ping_helper(&socket, 1)?;
    check(!ping.status.success(), "ping succeeded with no helper")?;
    let err = String::from_utf8_lossy(&ping.stderr);
    check(
        err.starts_with("dib-helper: no answer within 1 s: cannot connect to dib-helper at"),
        format!("ping's error: {err}"),
    )?;
    // A directory where others could swap the socket is refused; a sticky
    // one (as /tmp) is not.
    for (mode, refused) in [(0o777, true), (0o1777, false)] {
        let d = dir.path().join(format!("d{mode:o}"));
        fs::create_dir(&d)?;
        fs::set_permissions(&d, fs::Permissions::from_mode(mode))?;
        let sock = d.join("helper.sock");
        let mut child = serve(&sock, &["--allow-user", "root"], Stdio::piped())?;
        if refused {
            let o = child.wait_with_output()?;
            let err = String::from_utf8_lossy(&o.stderr);
            check(
                !o.status.success()
                    && err.contains("other users can replace files in")
                    && err.contains("such as /run"),
                format!("a world-writable directory: {:?} {err}", o.status),
            )?;
        } else {
            let ping = ping_helper(&sock, 10);
            let _ = child.kill();
            child.wait()?;
            succeeded(&ping?)?;
        }
    }
    Ok(())
}

fn a_peer_outside_the_allowed_groups_is_refused() -> Result<(), Failed> {
    // `disk` exists on Debian and the test user is not in it.
    let h = Helper::start(&["--allow-group", "disk"])?;
    let scratch = user_dir()?;
    let out = probe("hello", &h.socket, scratch.path())?;
    let name = user().name;
    eq(
        &out,
        &format!(
            "hello: NotAllowed: user {name} is not allowed to use this dib-helper: ask its \
             administrator to add --allow-user {name}, or to add you to a group it allows \
             (--allow-group)\n"
        ),
        "the refusal",
    )?;
    check(
        h.log_text().contains("refused pid"),
        format!("the helper did not log the refusal: {}", h.log_text()),
    )?;
    // dib says so before the build, and leaves nothing.
    let b = user_build()?;
    let out = b.f.path("images/img").display().to_string();
    let o = dib(&b, Some(&h), &["-t", "raw", "-o", &out, "tiny-os"], &[]).output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        !o.status.success()
            && err.contains(&format!(
                "the dib-helper at {} refused this build: user {name} is not allowed",
                h.socket.display()
            )),
        format!("dib with a helper that refuses it: {err}"),
    )?;
    check(
        !b.f.path("images/img.raw").exists(),
        "an image was left behind",
    )?;
    b.assert_clean()?;
    // With `auto`, dib builds offline instead, and says why.
    let mut cmd = b.dib(&["create", "-n", "-t", "raw", "-o", &out, "tiny-os"], &[]);
    cmd.env("DIB_HELPER_SOCKET", &h.socket);
    let o = as_user(&mut cmd).output()?;
    succeeded(&o)?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains("block devices: offline (the dib-helper at"),
        format!("auto with a refusing helper: {err}"),
    )?;
    h.alive()
}

fn mounts_are_idmapped_with_nodev_and_nosuid_locked() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let scratch = user_dir()?;
    let out = probe("idmap", &h.socket, scratch.path())?;
    let want = "mounted: nodev nosuid idmapped\n\
                clear-nodev: Operation not permitted (os error 1)\n\
                clear-nosuid: Operation not permitted (os error 1)\n\
                wrote: /hello\n\
                detached\n";
    eq(&out, want, "the probe's view of its mount")?;
    no_leaks_under(scratch.path())?;
    // As namespace root the probe wrote uid 0's file into the filesystem.
    let img = scratch.path().join("probe.img");
    let o = Command::new("debugfs")
        .args(["-R", "stat /hello"])
        .arg(&img)
        .output()?;
    let stat = String::from_utf8_lossy(&o.stdout);
    check(
        stat.contains("User:     0   Group:     0"),
        format!("/hello in the image: {stat}"),
    )?;
    h.alive()
}

/// The tree of a mounted filesystem: one line per file with type, mode,
/// owner, links, size, content hash or link target, and xattrs.
fn tree_listing(root: &Path) -> Result<Vec<String>, Failed> {
    use sha2::Digest as _;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            let md = fs::symlink_metadata(&p)?;
            let rel = p.strip_prefix(root)?.display().to_string();
            let what = if md.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p)?.display())
            } else if md.is_file() {
                sha2::Sha256::digest(fs::read(&p)?)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            } else {
                String::new()
            };
            let mut xattrs = Vec::new();
            let mut names = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&p, &mut names).unwrap_or(0);
            for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
                let name = String::from_utf8_lossy(name).into_owned();
                let mut v = vec![0u8; 4096];
                let len = rustix::fs::lgetxattr(&p, name.as_str(), &mut v).unwrap_or(0);
                xattrs.push(format!("{name}={:?}", String::from_utf8_lossy(&v[..len])));
            }
            out.push(format!(
                "{rel} {:o} {}:{} n{} {} {what} {}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.nlink(),
                if md.is_dir() { 0 } else { md.size() },
                xattrs.join(",")
            ));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// An image attached read-only by the harness (root) to look into, its
/// partitions added; detached when dropped.
struct Attached {
    dev: String,
}

impl Attached {
    fn new(image: &Path) -> Result<Attached, Failed> {
        let o = Command::new("losetup")
            .args(["--show", "-f", "-r", "-P"])
            .arg(image)
            .output()?;
        succeeded(&o)?;
        let a = Attached {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        };
        let _ = Command::new("partx").args(["-a", &a.dev]).output();
        Ok(a)
    }

    /// blkid's low-level probe of partition `n`: the KEY=value lines `keep`
    /// keeps, sorted, on one line.
    fn blkid(&self, n: u32, keep: impl Fn(&str) -> bool) -> Result<String, Failed> {
        let o = Command::new("blkid")
            .args(["-p", "-o", "export", &format!("{}p{n}", self.dev)])
            .output()?;
        let mut keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| keep(l))
            .map(String::from)
            .collect();
        keys.sort();
        Ok(keys.join(" "))
    }

    /// Partition `n` mounted read-only under `scratch`: its tree
    /// (`tree_listing`) and its /etc/fstab.
    fn tree(&self, n: u32, scratch: &Path) -> Result<(Vec<String>, String), Failed> {
        let mnt = scratch.join("mnt");
        fs::create_dir_all(&mnt)?;
        succeeded(
            &Command::new("mount")
                .args(["-o", "ro", &format!("{}p{n}", self.dev)])
                .arg(&mnt)
                .output()?,
        )?;
        let listing = tree_listing(&mnt);
        let fstab = fs::read_to_string(mnt.join("etc/fstab")).unwrap_or_default();
        let _ = Command::new("umount").arg(&mnt).output();
        Ok((listing?, fstab))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

/// Everything of an image that both backends must agree on: the table,
/// each filesystem's identity, the root tree, the ESP's files, the BIOS
/// boot area.
fn describe(image: &Path, scratch: &Path) -> Result<String, Failed> {
    let mut d = String::new();
    let o = Command::new("sfdisk").arg("-d").arg(image).output()?;
    succeeded(&o)?;
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if !l.starts_with("device:") {
            d.push_str(&l.replace(&image.display().to_string(), "IMG"));
            d.push('\n');
        }
    }
    let attached = Attached::new(image)?;
    for n in 1..=4 {
        // Which loop device showed it is no property of the image.
        let keys = attached.blkid(n, |l| {
            !l.starts_with("DEVNAME=") && !l.starts_with("PART_ENTRY_DISK=")
        })?;
        d.push_str(&format!("p{n}: {keys}\n"));
    }
    let (listing, _) = attached.tree(4, scratch)?;
    drop(attached);
    d.push_str(&listing.join("\n"));
    d.push('\n');
    // The ESP (vfat: this kernel may not mount it) through mtools.
    let o = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-/", "-b", "-i"])
        .arg(format!("{}@@{}", image.display(), 1 << 20))
        .arg("::/")
        .output()?;
    succeeded(&o)?;
    d.push_str(&String::from_utf8_lossy(&o.stdout));
    // The BIOS boot partition (finalise.d wrote to it).
    let bytes = fs::read(image)?;
    let bsp = 41 << 20;
    d.push_str(&format!(
        "bios boot: {:?}\n",
        String::from_utf8_lossy(&bytes[bsp..bsp + 32])
    ));
    Ok(d)
}

fn both_backends_build_the_same_image() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let b = user_build()?;
    b.f.file(
        "e/probe/root.d/50-files",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/boot/efi/EFI/BOOT\" \"$TARGET_ROOT/srv/d\"\n\
         echo hello > \"$TARGET_ROOT/boot/efi/EFI/BOOT/hello.txt\"\n\
         echo data > \"$TARGET_ROOT/srv/owned\"\nchown 1234:4321 \"$TARGET_ROOT/srv/owned\"\n\
         chmod 4750 \"$TARGET_ROOT/srv/owned\"\nln \"$TARGET_ROOT/srv/owned\" \"$TARGET_ROOT/srv/d/hard\"\n\
         ln -s ../owned \"$TARGET_ROOT/srv/d/soft\"\nmkfifo \"$TARGET_ROOT/srv/fifo\"\n\
         chown -h 7:8 \"$TARGET_ROOT/srv/d/soft\"\nchmod 0711 \"$TARGET_ROOT/srv/d\"\n\
         python3 -c 'import os,sys; os.setxattr(sys.argv[1], \"user.dib\", b\"backends\")' \"$TARGET_ROOT/srv/owned\"\n\
         yes dib-backends | head -c 3000000 > \"$TARGET_ROOT/srv/big\"\ntruncate -s 50M \"$TARGET_ROOT/srv/sparse\"\n",
        0o755,
    );
    b.f.file(
        "e/probe/finalise.d/50-write",
        "#!/bin/sh\nset -eu\necho \"finalise saw $DIB_ROOT_FS_UUID\" > /etc/finalise-saw\n\
         echo bios-area-from-finalise | dd of=\"$IMAGE_BLOCK_DEVICE\" bs=512 seek=\"$DIB_BIOS_BOOT_SECTOR\" conv=notrunc 2>/dev/null\n\
         echo efi > /boot/efi/EFI/BOOT/from-finalise.txt\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/50-clean",
        "#!/bin/sh\nset -eu\necho cleaned > \"$TARGET_ROOT/etc/cleaned\"\n",
        0o755,
    );
    chown_tree(b.f.dir.path(), user().uid, user().gid)?;
    let layout = common::full_gpt_layout();
    let mut described = Vec::new();
    for (name, helper) in [("offline", None), ("helper", Some(&h))] {
        let out = b.f.path(&format!("images/{name}"));
        let out_s = out.display().to_string();
        let o = dib(
            &b,
            helper,
            &["-t", "raw,tar", "-o", &out_s, "tiny-os", "probe"],
            &[
                ("DIB_BLOCK_DEVICE_CONFIG", &layout),
                ("DIB_IMAGE_UUID_SEED", "same-image"),
            ],
        )
        .output()?;
        succeeded(&o)?;
        let err = String::from_utf8_lossy(&o.stderr);
        if helper.is_some() {
            check(
                err.contains("dib-helper: /dev/loop"),
                format!("the helper backend was not used:\n{err}"),
            )?;
        }
        let mut d = describe(&out.with_extension("raw"), &b.f.path(name))?;
        // The tar output: the same members, owners and modes.
        let o = Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(out.with_extension("tar"))
            .output()?;
        succeeded(&o)?;
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            // mode owner size date time name: all but the date and time.
            let f: Vec<&str> = l.split_whitespace().collect();
            d.push_str(&format!(
                "tar: {} {} {} {}\n",
                f[0],
                f[1],
                f[2],
                f[5..].join(" ")
            ));
        }
        described.push(d);
    }
    if described[0] != described[1] {
        let diff: Vec<String> = described[0]
            .lines()
            .zip(described[1].lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("  offline: {a}\n  helper:  {b}"))
            .collect();
        return Err(format!(
            "the backends' images differ:\n{}\n(offline has {} lines, helper {})",
            diff.join("\n"),
            described[0].lines().count(),
            described[1].lines().count()
        )
        .into());
    }
    // And what is the same is right: the files the hooks made are there.
    for want in [
        "srv/owned 104750 1234:4321 n2",
        "user.dib=\"backends\"",
        "etc/finalise-saw",
        "etc/cleaned",
        "::/EFI/BOOT/hello.txt",
        "bios-area-from-finalise",
        "srv/d/soft 120777 7:8",
        "srv/fifo 10644",
    ] {
        check(
            described[0].contains(want),
            format!("the image lacks {want:?}:\n{}", described[0]),
        )?;
    }
    no_leaks_under(b.f.dir.path())?;
    b.assert_clean()?;
    h.alive()
}

/// xfs, which the offline backend cannot fill, through the helper.
fn xfs_is_built_through_the_helper() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let b = user_build()?;
    b.f.file(
        "e/probe/root.d/50-files",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/srv\"\necho data > \"$TARGET_ROOT/srv/owned\"\n\
         chown 1234:4321 \"$TARGET_ROOT/srv/owned\"\nchmod 2755 \"$TARGET_ROOT/srv/owned\"\n",
        0o755,
    );
    chown_tree(b.f.dir.path(), user().uid, user().gid)?;
    let out = b.f.path("images/xfs");
    let out_s = out.display().to_string();
    let args = [
        "-t",
        "raw",
        "-o",
        &out_s,
        "tiny-os",
        "block-device-mbr",
        "probe",
    ];
    let env = [("FS_TYPE", "xfs"), ("DIB_IMAGE_UUID_SEED", "xfs")];
    // The offline backend says what to do instead.
    let o = dib(&b, None, &args, &env).output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        !o.status.success() && err.contains("or the helper backend (--block-backend helper"),
        format!("an offline xfs build: {err}"),
    )?;
    succeeded(&dib(&b, Some(&h), &args, &env).output()?)?;
    let attached = Attached::new(&out.with_extension("raw"))?;
    let keys = attached.blkid(1, |l| {
        ["TYPE=", "LABEL=", "UUID="]
            .iter()
            .any(|k| l.starts_with(k))
    })?;
    let (tree, fstab) = attached.tree(1, &b.f.path("view"))?;
    drop(attached);
    check(
        keys.starts_with("LABEL=img-rootfs TYPE=xfs UUID="),
        format!("the root filesystem: {keys}"),
    )?;
    for want in ["bin/busybox 100755 0:0", "srv/owned 102755 1234:4321"] {
        check(
            tree.iter().any(|l| l.starts_with(want)),
            format!("the xfs root lacks {want:?}:\n{}", tree.join("\n")),
        )?;
    }
    check(
        fstab.contains("LABEL=img-rootfs / xfs "),
        format!("/etc/fstab: {fstab}"),
    )?;
    no_leaks_under(b.f.dir.path())?;
    b.assert_clean()?;
    h.alive()
}

fn killed_builds_leave_no_loop_device_or_mount() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let b = user_build()?;
    let runs: u32 = std::env::var("DIB_HELPER_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let out = b.f.path("images/img").display().to_string();
    let args = [
        "-t",
        "raw",
        "-o",
        out.as_str(),
        "tiny-os",
        "block-device-gpt",
    ];
    // One whole build first: the steps a build goes through (its log
    // lines), so each run can be killed at a step picked at random.
    let first = dib(&b, Some(&h), &args, &[]).output()?;
    succeeded(&first)?;
    let steps = String::from_utf8_lossy(&first.stderr).lines().count() as u64;
    fs::remove_file(b.f.path("images/img.raw"))?;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    eprintln!("  {runs} builds killed at one of {steps} steps (seed {seed})");
    let mut finished = 0;
    let mut holding = 0;
    let dir = b.f.dir.path().display().to_string();
    for i in 0..runs {
        // xorshift: a fresh step each time, and up to 30 ms into it.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let step = seed % steps;
        let delay = (seed >> 32) % 30;
        let mut child = dib(&b, Some(&h), &args, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
            child.stderr.take().ok_or("no stderr")?,
        ));
        let mut seen = 0;
        while seen < step && lines.next().is_some() {
            seen += 1;
        }
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait()?.is_some() {
            finished += 1;
        }
        if attached_loops().values().any(|f| f.starts_with(&dir)) {
            holding += 1;
        }
        let _ = child.kill();
        child.wait()?;
        drop(lines);
        let _ = fs::remove_file(b.f.path("images/img.raw"));
        no_leaks_under(b.f.dir.path())
            .map_err(|e| format!("after run {i} (step {step}, +{delay} ms): {e:?}"))?;
    }
    eprintln!(
        "  {finished} of {runs} builds finished before their kill, {holding} were killed \
         holding a loop device"
    );
    check(
        holding * 10 >= runs,
        format!("only {holding} of {runs} builds were killed while holding a loop device"),
    )?;
    check(
        finished < runs / 2,
        format!("{finished} of {runs} builds finished before the kill: too few were killed"),
    )?;
    no_leaks_under(b.f.dir.path())?;
    h.alive()
}

// ---------------------------------------------------------------------------
// The probe client (this binary as the test user).

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Refused { kind, message }) => format!("{kind:?}: {message}"),
        other => format!("NOT REFUSED: {other:?}"),
    }
}

fn raw(sock: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> String {
    if let Err(e) = rustix::net::send(sock, bytes, rustix::net::SendFlags::empty()) {
        return format!("send: {e}");
    }
    match proto::recv::<Reply>(sock) {
        Ok((Reply::Error { kind, .. }, _)) => format!("{kind:?}"),
        other => format!("{other:?}"),
    }
}

fn probe_image(dir: &Path, name: &str) -> File {
    let p = dir.join(name);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("creating the probe's image");
    f.set_len(64 << 20).unwrap();
    f
}

fn probe_main(case: &str) -> i32 {
    let socket = PathBuf::from(std::env::var_os("DIB_HELPER_SOCKET").unwrap());
    let dir = PathBuf::from(std::env::var_os("DIB_PROBE_DIR").unwrap());
    let mut out = std::io::stdout();
    match case {
        "hello" => match Client::connect(&socket) {
            Ok(_) => writeln!(out, "hello: accepted").unwrap(),
            Err(e) => writeln!(out, "hello: {}", refusal::<()>(Err(e))).unwrap(),
        },
        "refusals" => probe_refusals(&socket, &dir, &mut out),
        "idmap" => probe_idmap(&socket, &dir, &mut out),
        other => {
            eprintln!("unknown probe {other}");
            return 2;
        }
    }
    0
}

fn connect_raw(socket: &Path) -> std::os::fd::OwnedFd {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let s = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    connect(&s, &SocketAddrUnix::new(socket).unwrap()).unwrap();
    s
}

fn probe_refusals(socket: &Path, dir: &Path, out: &mut impl std::io::Write) {
    // Handshake errors, on connections of their own.
    for (name, first) in [
        ("version", Request::Hello { version: 2 }),
        ("first", Request::Ping),
    ] {
        let s = connect_raw(socket);
        proto::send(&s, &first, &[]).unwrap();
        let r = match proto::recv::<Reply>(&s) {
            Ok((Reply::Error { kind, message }, _)) => format!("{kind:?}: {message}"),
            other => format!("{other:?}"),
        };
        writeln!(out, "{name}: {r}").unwrap();
    }

    let c = Client::connect(socket).unwrap();
    let rw = |p: &Path| File::options().read(true).write(true).open(p).unwrap();
    let mine = probe_image(dir, "mine.img");
    // Image fds the helper must refuse to attach read-write.
    let refused_images = [
        ("chardev", rw(Path::new("/dev/null"))),
        ("directory", File::open("/").unwrap()),
        ("foreign", rw(&dir.join("roots.img"))),
        ("read-only", File::open(dir.join("mine.img")).unwrap()),
        // A regular file of the peer's, writable, on procfs.
        ("procfs", rw(Path::new("/proc/self/oom_score_adj"))),
    ];
    for (name, f) in &refused_images {
        writeln!(out, "{name}: {}", refusal(c.attach_loop(f.as_fd(), false))).unwrap();
    }
    let (h, _, _) = c.attach_loop(mine.as_fd(), false).unwrap();
    // The initial user namespace (root's), and a file that is no namespace.
    let userns = File::open("/proc/self/ns/user").unwrap();
    writeln!(
        out,
        "userns-not-owned: {}",
        refusal(c.mount_idmapped(h, 0, FsType::Ext4, userns.as_fd()))
    )
    .unwrap();
    writeln!(
        out,
        "not-a-namespace: {}",
        refusal(c.mount_idmapped(h, 0, FsType::Ext4, mine.as_fd()))
    )
    .unwrap();
    let other = Client::connect(socket).unwrap();
    let r = refusal(other.detach(h)).replace(&h.to_string(), "H");
    writeln!(out, "other-connection: {r}").unwrap();
    for i in 1..4 {
        let f = probe_image(dir, &format!("more{i}.img"));
        c.attach_loop(f.as_fd(), false).unwrap();
    }
    let f = probe_image(dir, "one-too-many.img");
    writeln!(out, "limit: {}", refusal(c.attach_loop(f.as_fd(), false))).unwrap();
    let sock = c.socket();
    writeln!(
        out,
        "truncated: {}",
        raw(sock, b"{\"request\":\"Hello\",\"vers")
    )
    .unwrap();
    writeln!(
        out,
        "oversize: {}",
        raw(sock, &vec![b' '; proto::MAX_MESSAGE + 1])
    )
    .unwrap();
    writeln!(
        out,
        "unknown: {}",
        raw(sock, b"{\"request\":\"Format\",\"device\":\"/dev/sda\"}")
    )
    .unwrap();
    {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let fds = [mine.as_fd(), mine.as_fd(), mine.as_fd()];
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        anc.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(
            sock,
            &[std::io::IoSlice::new(b"{\"request\":\"Ping\"}")],
            &mut anc,
            SendFlags::empty(),
        )
        .unwrap();
        let r = match proto::recv::<Reply>(sock) {
            Ok((Reply::Error { kind, .. }, _)) => format!("{kind:?}"),
            other => format!("{other:?}"),
        };
        writeln!(out, "too-many-fds: {r}").unwrap();
    }
    let r = c
        .ping()
        .map(|()| "Pong".to_string())
        .unwrap_or_else(|e| e.to_string());
    writeln!(out, "after-all-that: {r}").unwrap();
    // Across connections: 16 loop devices per user (4 here, 12 more).
    let more: Vec<Client> = (0..3).map(|_| Client::connect(socket).unwrap()).collect();
    let mut files = Vec::new();
    for (i, m) in more.iter().enumerate() {
        for j in 0..4 {
            let f = probe_image(dir, &format!("user{i}-{j}.img"));
            m.attach_loop(f.as_fd(), false).unwrap();
            files.push(f);
        }
    }
    let last = Client::connect(socket).unwrap();
    let f = probe_image(dir, "seventeenth.img");
    writeln!(
        out,
        "per-user: {}",
        refusal(last.attach_loop(f.as_fd(), false))
    )
    .unwrap();
    // Hanging up with every loop device attached: the helper detaches them.
}

fn probe_idmap(socket: &Path, dir: &Path, out: &mut impl std::io::Write) {
    use dib_sandbox::mounts::{change_mount_attrs, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID};
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let img = probe_image(dir, "probe.img");
    // A user and mount namespace of the probe's own, root mapped to itself.
    nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
    )
    .unwrap();
    fs::write("/proc/self/uid_map", format!("0 {uid} 1\n")).unwrap();
    fs::write("/proc/self/setgroups", "deny").unwrap();
    fs::write("/proc/self/gid_map", format!("0 {gid} 1\n")).unwrap();
    let c = Client::connect(socket).unwrap();
    let (h, _, _) = c.attach_loop(img.as_fd(), false).unwrap();
    let spec = MkfsSpec {
        fs: FsType::Ext4,
        label: Some("probe".into()),
        uuid: "6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e".into(),
        size: 64 << 20,
        journal: None,
        max_online_resize: None,
        extended: vec![],
        options: vec![],
    };
    c.mkfs(h, 0, &spec).unwrap();
    let userns = File::open("/proc/self/ns/user").unwrap();
    let mnt = c
        .mount_idmapped(h, 0, FsType::Ext4, userns.as_fd())
        .unwrap();
    let at = dir.join("mnt");
    fs::create_dir_all(&at).unwrap();
    dib_sandbox::mounts::attach_detached(mnt.as_fd(), &at).unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", at.display())))
        .unwrap_or_default();
    let opts = line.split(' ').nth(5).unwrap_or_default();
    let flags: Vec<&str> = ["nodev", "nosuid", "idmapped"]
        .into_iter()
        .filter(|f| opts.split(',').any(|o| o == *f))
        .collect();
    writeln!(out, "mounted: {}", flags.join(" ")).unwrap();
    for (name, flag) in [
        ("clear-nodev", MOUNT_ATTR_NODEV),
        ("clear-nosuid", MOUNT_ATTR_NOSUID),
    ] {
        let r = change_mount_attrs(mnt.as_fd(), 0, flag, None)
            .map(|()| "CLEARED".to_string())
            .unwrap_or_else(|e| e.to_string());
        writeln!(out, "{name}: {r}").unwrap();
    }
    fs::write(at.join("hello"), "from the probe\n").unwrap();
    writeln!(out, "wrote: /hello").unwrap();
    // An open fd of the mount would keep it busy.
    drop(mnt);
    dib_sandbox::mounts::unmount(&at).unwrap();
    c.detach(h).unwrap();
    writeln!(out, "detached").unwrap();
}

fn main() {
    if let Ok(case) = std::env::var(PROBE_ENV) {
        std::process::exit(probe_main(&case));
    }
    let tests = trials![
        bad_requests_are_refused_and_the_helper_keeps_serving,
        the_socket_appears_only_when_it_accepts,
        a_peer_outside_the_allowed_groups_is_refused,
        mounts_are_idmapped_with_nodev_and_nosuid_locked,
        both_backends_build_the_same_image,
        killed_builds_leave_no_loop_device_or_mount,
        xfs_is_built_through_the_helper,
    ];
    let in_ci = std::env::var("CI").as_deref() == Ok("true")
        && std::env::var("DIB_TIER3").as_deref() == Ok("1");
    run_trials("tier 3", tests, skip_reason(), in_ci, Vec::new())
}
