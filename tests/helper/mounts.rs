//! Mounts: the helper mounts a client's filesystem idmapped into the
//! client's user namespace, with nodev and nosuid the client cannot clear.
//! The trial (as root) and the probe's side (as the test user).

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::Path;

use crate::common::tier::{check, eq};
use crate::support::{no_leaks_under, probe, probe_image, user_dir, Helper};
use dib_sandbox::client::Client;
use dib_sandbox::mkfs::{FsType, MkfsSpec};
use libtest_mimic::Failed;

pub fn mounts_are_idmapped_with_nodev_and_nosuid_locked() -> Result<(), Failed> {
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
    let stat = crate::common::image::debugfs(&img, "stat /hello")?;
    check(
        stat.contains("User:     0   Group:     0"),
        format!("/hello in the image: {stat}"),
    )?;
    h.alive()
}

// ---------------------------------------------------------------------------
// The probe's side (this binary as the test user).

pub fn probe_idmap(socket: &Path, dir: &Path, out: &mut impl std::io::Write) {
    use dib_sandbox::mounts::{change_mount_attrs, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID};
    let img = probe_image(dir, "probe.img");
    own_namespaces();
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
    let opts = attach_at(&mnt, &at);
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

/// A user and mount namespace of the probe's own, root mapped to itself.
pub fn own_namespaces() {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
    )
    .unwrap();
    fs::write("/proc/self/uid_map", format!("0 {uid} 1\n")).unwrap();
    fs::write("/proc/self/setgroups", "deny").unwrap();
    fs::write("/proc/self/gid_map", format!("0 {gid} 1\n")).unwrap();
}

/// Attach the detached mount `mnt` at `at` (made if missing): its mount
/// options, as this namespace's mountinfo shows them.
pub fn attach_at(mnt: &impl AsFd, at: &Path) -> String {
    fs::create_dir_all(at).unwrap();
    dib_sandbox::mounts::attach_detached(mnt.as_fd(), at).unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&format!(" {} ", at.display())))
        .unwrap_or_default();
    line.split(' ').nth(5).unwrap_or_default().to_string()
}
