//! The socket and who may connect: the socket path appears only once the
//! helper accepts, `dib-helper ping`, the socket's directory, and a peer
//! outside `--allow-group` refused (by the helper, and dib's message for it).

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tier::{check, eq, succeeded};
use crate::support::{
    as_user, chown_tree, dib, helper_bin, ping_helper, probe, serve, user, user_build, user_dir,
    Helper,
};
use dib_sandbox::client::Client;
use dib_sandbox::proto;
use libtest_mimic::Failed;

/// The socket path appears only once the helper accepts: a client that
/// connects the moment it sees the path is answered, and `dib-helper ping`
/// waits for that answer. A restart replaces the old socket and leaves no
/// temporary name behind.
pub fn the_socket_appears_only_when_it_accepts() -> Result<(), Failed> {
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

pub fn a_peer_outside_the_allowed_groups_is_refused() -> Result<(), Failed> {
    // `disk` exists on Debian and the test user is not in it.
    let h = Helper::start(&["--allow-group", "disk"])?;
    let scratch = user_dir()?;
    let out = probe("hello", &h.socket, scratch.path())?;
    let uid = user().uid;
    eq(
        &out,
        &format!(
            "hello: NotAllowed: uid {uid} is not allowed to use this dib-helper: ask its \
             administrator to add --allow-user with your user name, or to add you to a group \
             it allows (--allow-group)\n"
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
                "the dib-helper at {} refused this build: uid {uid} is not allowed",
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

/// `scripts/start-helper` installs and runs as root only a binary that no
/// one but root can change: a helper in the user's `~/.local/bin`, a
/// root-owned one below a directory of the user's, one in a directory its
/// group may write, a root-owned symlink to the user's file: each refused,
/// saying why and what to pass instead, and nothing installed.
pub fn start_helper_runs_as_root_only_a_binary_only_root_can_change() -> Result<(), Failed> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/start-helper");
    let installed = Path::new("/usr/local/sbin/dib-helper");
    let before = fs::metadata(installed)
        .ok()
        .map(|m| (m.ino(), m.mtime_nsec()));
    let u = user();
    let copy_to = |p: &Path, owner: Option<(u32, u32)>| -> Result<(), Failed> {
        fs::create_dir_all(p.parent().unwrap())?;
        fs::copy(helper_bin(), p)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
        }
        Ok(())
    };
    // The user's ~/.local/bin (a scratch home: the same ownership).
    let home = user_dir()?;
    let local = home.path().join(".local/bin/dib-helper");
    copy_to(&local, Some((u.uid, u.gid)))?;
    chown_tree(home.path(), u.uid, u.gid)?;
    // Root's file in a root-owned directory below the user's.
    let below = home.path().join("rootdir/dib-helper");
    copy_to(&below, None)?;
    // Root's file in a directory its group may write.
    let group_dir = tempfile::Builder::new().prefix("dib-gw-").tempdir()?;
    fs::set_permissions(group_dir.path(), fs::Permissions::from_mode(0o775))?;
    let group_writable = group_dir.path().join("dib-helper");
    copy_to(&group_writable, None)?;
    // A root-owned symlink, in a root-only directory, to the user's file.
    let link_dir = tempfile::Builder::new().prefix("dib-ln-").tempdir()?;
    fs::set_permissions(link_dir.path(), fs::Permissions::from_mode(0o755))?;
    let link = link_dir.path().join("dib-helper");
    std::os::unix::fs::symlink(&local, &link)?;
    let socket = link_dir.path().join("helper.sock");
    let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    for (what, binary, why) in [
        (
            "the user's ~/.local/bin",
            &local,
            format!(
                "{} is owned by uid {}, not by root",
                real(&local).display(),
                u.uid
            ),
        ),
        (
            "below the user's directory",
            &below,
            format!(
                "{} is owned by uid {}, not by root",
                real(home.path()).display(),
                u.uid
            ),
        ),
        (
            "in a group-writable directory",
            &group_writable,
            format!(
                "{} is writable by its group or by others (mode 775)",
                real(group_dir.path()).display()
            ),
        ),
        (
            "a symlink to the user's file",
            &link,
            format!(
                "{} is owned by uid {}, not by root",
                real(&local).display(),
                u.uid
            ),
        ),
    ] {
        let o = Command::new(&script)
            .arg("--binary")
            .arg(binary)
            .arg("--socket")
            .arg(&socket)
            .args(["--user", &u.name])
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        check(
            !o.status.success()
                && err.contains(&format!(
                    "start-helper: refusing to install {} as root: {why}, so a user could \
                     replace it",
                    binary.display()
                ))
                && err.contains("and pass --binary PATH"),
            format!("start-helper with a binary {what}: {}: {err}", o.status),
        )?;
        check(
            !socket.exists(),
            format!("start-helper started a helper from a binary {what}"),
        )?;
    }
    let after = fs::metadata(installed)
        .ok()
        .map(|m| (m.ino(), m.mtime_nsec()));
    check(
        before == after,
        "start-helper changed /usr/local/sbin/dib-helper while refusing",
    )
}
