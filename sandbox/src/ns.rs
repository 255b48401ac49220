//! Entering the build's namespaces from the host side.
//!
//! dib runs every phase in one user namespace (0 -> the invoking user, 1..N ->
//! the user's subordinate range, via the setuid newuidmap/newgidmap helpers of
//! Debian's `uidmap` package), a private mount namespace and a pid namespace.
//! The spawned process (the *supervisor*) is the only member of the new pid
//! namespace's parent side; its first child becomes pid 1 there. When pid 1
//! exits the kernel kills everything left in the namespace, and when the last
//! process leaves, every mount made inside disappears: nothing a build does
//! can outlive it on the host.
//!
//! Sequence (see user_namespaces(7)): the child calls unshare(2) between fork
//! and exec, then waits on a pipe; the parent writes the id maps and releases
//! it. The child also asks for SIGKILL when its parent dies
//! (PR_SET_PDEATHSIG), so `kill -9 dib` takes the build down with it.
#![allow(unsafe_code)] // pre_exec; each use says why it is sound

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid, User};

use crate::subid::{self, Range, SubIdError};

/// The environment variable telling the supervisor which fd to wait on.
pub const SYNC_FD_ENV: &str = "DIB_SANDBOX_SYNC_FD";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    SubId(#[from] SubIdError),
    #[error(
        "{} not found: install it (scripts/prepare-host does)",
        crate::host_tools::describe(tool)
    )]
    MissingTool { tool: &'static str },
    #[error(
        "unprivileged user namespaces are disabled on this host ({setting}); dib needs them. \
         As root: {fix}"
    )]
    UsernsDisabled { setting: String, fix: String },
    #[error("creating the build's namespaces: {0}; if user namespaces are restricted here (a container, AppArmor, or sysctl user.max_user_namespaces), allow them for this user")]
    Unshare(io::Error),
    #[error("{tool} failed to map ids for the build ({status}): {stderr}")]
    MapFailed {
        tool: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "looking up the current user (uid {0}) in the user database failed; dib needs a named user"
    )]
    UnknownUser(u32),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// How ids are mapped into the build's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// A plain user: 0 -> uid, 1..=count -> the subordinate range, written by
    /// the setuid helpers.
    Helpers {
        uid: u32,
        gid: u32,
        uids: Range,
        gids: Range,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
    /// dib runs as root: ids map to themselves (0..65536), written directly,
    /// so the tree is owned as the image says, as with DIB run as root.
    Identity,
}

/// Number of ids the identity mapping covers when dib runs as root.
const IDENTITY_COUNT: u32 = subid::MIN_COUNT;

/// Sysctls and LSM switches that turn unprivileged user namespaces off, with
/// the value that does and how to undo it.
const SWITCHES: &[(&str, &str, &str)] = &[
    ("/proc/sys/user/max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=15000"),
    ("/proc/sys/kernel/unprivileged_userns_clone", "0", "sysctl -w kernel.unprivileged_userns_clone=1"),
    (
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "1",
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or give dib an AppArmor profile with 'userns,')",
    ),
];

/// Check a host's switches under `proc_root` (normally "/"). Pure apart from
/// reading those files, so tests can point it at a fake tree.
pub fn check_userns_switches(proc_root: &Path) -> Result<(), SandboxError> {
    for (file, off, fix) in SWITCHES {
        let path = proc_root.join(file.trim_start_matches('/'));
        if let Ok(v) = fs::read_to_string(&path) {
            if v.trim() == *off {
                let setting = format!(
                    "{} = {off}",
                    file.trim_start_matches("/proc/sys/").replace('/', ".")
                );
                return Err(SandboxError::UsernsDisabled {
                    setting,
                    fix: fix.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Everything that can be checked before spawning: ranges, helpers, switches.
pub fn preflight() -> Result<Mapping, SandboxError> {
    let uid = Uid::current();
    if uid.is_root() {
        return Ok(Mapping::Identity);
    }
    check_userns_switches(Path::new("/"))?;
    let user = User::from_uid(uid)
        .ok()
        .flatten()
        .ok_or(SandboxError::UnknownUser(uid.as_raw()))?;
    let path_env = std::env::var("PATH").ok();
    let newuidmap = crate::host_tools::find("newuidmap", path_env.as_deref())
        .ok_or(SandboxError::MissingTool { tool: "newuidmap" })?;
    let newgidmap = crate::host_tools::find("newgidmap", path_env.as_deref())
        .ok_or(SandboxError::MissingTool { tool: "newgidmap" })?;
    let range =
        |kind: subid::Kind| subid::find(kind, Path::new(kind.file()), &user.name, uid.as_raw());
    let uids = range(subid::Kind::Uid)?;
    let gids = range(subid::Kind::Gid)?;
    Ok(Mapping::Helpers {
        uid: uid.as_raw(),
        gid: Gid::current().as_raw(),
        uids,
        gids,
        newuidmap,
        newgidmap,
    })
}

/// Spawn `cmd` in new user, mount and pid namespaces with `mapping`. The
/// child must call [`wait_for_maps`] first thing.
pub fn spawn(mut cmd: Command, mapping: &Mapping) -> Result<Child, SandboxError> {
    // Both ends close on exec; the child clears that flag on the read end
    // only, so the supervisor inherits exactly one descriptor.
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Io {
            what: "creating the sandbox's sync pipe".into(),
            source: e.into(),
        })?;
    let read_raw = read.as_raw_fd();
    cmd.env(SYNC_FD_ENV, read_raw.to_string());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, unshare, fcntl) on values
    // captured by copy; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            let flags =
                (CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)
                    .bits();
            if libc::unshare(flags) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::fcntl(read_raw, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::ENOSPC) | Some(libc::EUSERS) => {
            SandboxError::Unshare(e)
        }
        _ => SandboxError::Io {
            what: "starting the sandbox".into(),
            source: e,
        },
    })?;
    drop(read);
    let result = write_maps(child.id(), mapping);
    let mut write = fs::File::from(write);
    match result {
        Ok(()) => {
            write
                .write_all(b"1")
                .map_err(io_err("releasing the sandbox"))?;
            Ok(child)
        }
        Err(e) => {
            // Closing the pipe without a byte tells the child to give up.
            drop(write);
            let mut child = child;
            let _ = child.wait();
            Err(e)
        }
    }
}

fn write_maps(pid: u32, mapping: &Mapping) -> Result<(), SandboxError> {
    match mapping {
        Mapping::Helpers {
            uid,
            gid,
            uids,
            gids,
            newuidmap,
            newgidmap,
        } => {
            run_map_tool(newuidmap, pid, *uid, uids)?;
            run_map_tool(newgidmap, pid, *gid, gids)
        }
        Mapping::Identity => {
            let line = format!("0 0 {IDENTITY_COUNT}\n");
            fs::write(format!("/proc/{pid}/uid_map"), &line)
                .map_err(io_err("writing the build's uid map"))?;
            fs::write(format!("/proc/{pid}/gid_map"), &line)
                .map_err(io_err("writing the build's gid map"))
        }
    }
}

fn run_map_tool(tool: &Path, pid: u32, own: u32, range: &Range) -> Result<(), SandboxError> {
    let out = Command::new(tool)
        .args([pid.to_string(), "0".into(), own.to_string(), "1".into()])
        .args([
            "1".to_string(),
            range.start.to_string(),
            range.count.to_string(),
        ])
        .output()
        .map_err(io_err(format!("running {}", tool.display())))?;
    if !out.status.success() {
        return Err(SandboxError::MapFailed {
            tool: tool.display().to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// In the spawned child: wait until the parent has written the id maps.
/// Returns an error if the parent gave up (closed the pipe without writing).
pub fn wait_for_maps() -> Result<(), SandboxError> {
    let fd: i32 = std::env::var(SYNC_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| SandboxError::Io {
            what: format!("{SYNC_FD_ENV} is not set: this command is started by dib itself"),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    std::env::remove_var(SYNC_FD_ENV);
    // SAFETY: the parent left exactly this descriptor open across exec (the
    // pipe's read end) and named it in the environment; nothing else in this
    // process owns it.
    let mut pipe = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut byte = [0u8; 1];
    match pipe.read(&mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err(SandboxError::Io {
            what: "the parent did not map the build's ids".into(),
            source: io::Error::from(io::ErrorKind::UnexpectedEof),
        }),
        Err(e) => Err(io_err("waiting for the build's id maps")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_name_the_setting_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let set = |file: &str, v: &str| {
            let p = dir.path().join(file.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, v).unwrap();
        };
        assert!(check_userns_switches(dir.path()).is_ok());
        set("/proc/sys/user/max_user_namespaces", "15000\n");
        set(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1\n",
        );
        let err = check_userns_switches(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "unprivileged user namespaces are disabled on this host \
             (kernel.apparmor_restrict_unprivileged_userns = 1); dib needs them. As root: \
             sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or give dib an AppArmor \
             profile with 'userns,')"
        );
        set("/proc/sys/user/max_user_namespaces", "0\n");
        let err = check_userns_switches(dir.path()).unwrap_err().to_string();
        assert!(err.contains("(user.max_user_namespaces = 0)"), "{err}");
        assert!(
            err.ends_with("As root: sysctl -w user.max_user_namespaces=15000"),
            "{err}"
        );
    }
}
