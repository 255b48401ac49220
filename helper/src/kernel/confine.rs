//! The helper's own privilege: its environment and capabilities at start,
//! the listening socket systemd may pass it, and a session process's tie
//! to the main process.

#![allow(unsafe_code)] // taking fd 3 from systemd, prctl; each block says why it is sound

use std::os::fd::{FromRawFd, OwnedFd};

/// Clear the helper's environment and drop every capability but
/// `CAP_SYS_ADMIN` (loop, BLKPG, mounts, joining the client's user
/// namespace), from the bounding set too, so mkfs runs with no more.
pub fn confine() -> Result<(), String> {
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    std::env::set_var("PATH", dib_sandbox::host_tools::system_path());
    use caps::{CapSet, Capability, CapsHashSet};
    let keep: CapsHashSet = [Capability::CAP_SYS_ADMIN].into_iter().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let now = caps::read(None, set).map_err(|e| format!("reading capabilities: {e}"))?;
        caps::set(None, set, &now.intersection(&keep).copied().collect())
            .map_err(|e| format!("dropping capabilities: {e}"))?;
    }
    Ok(())
}

/// The listening socket systemd passed (socket activation,
/// sd_listen_fds(3)): fd 3, when `LISTEN_PID` is this process and
/// `LISTEN_FDS` is 1. Read before [`confine`] clears the environment.
pub fn systemd_listener() -> Result<OwnedFd, String> {
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    let n = std::env::var("LISTEN_FDS").ok();
    if pid != Some(std::process::id()) || n.as_deref() != Some("1") {
        return Err("--systemd: no socket was passed (run it from dib-helper.socket)".into());
    }
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID matches) and
    // nothing else in it owns fd 3; it is taken once, here.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("--systemd: fd 3: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return Err("--systemd: fd 3 is not a socket".into());
    }
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| format!("--systemd: fd 3: {e}"))?;
    Ok(fd)
}

/// Die (SIGKILL) when the process that started this one does; `parent` is
/// its pid, to catch a parent that died before the request was made.
pub fn die_with_parent(parent: u32) -> Result<(), String> {
    // SAFETY: prctl with these arguments only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(format!(
            "setting the parent-death signal: {}",
            std::io::Error::last_os_error()
        ));
    }
    if std::os::unix::process::parent_id() != parent {
        return Err("dib-helper's main process is gone".into());
    }
    Ok(())
}
