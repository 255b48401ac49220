//! A peer's credentials on the helper's socket, as the kernel reports them
//! (SO_PEERCRED, SO_PEERGROUPS: no lookup in the user or group database),
//! and whether fds may be passed to a socket (SO_PASSRIGHTS).

#![allow(unsafe_code)] // getsockopt and setsockopt without wrappers; each block says why it is sound

use std::os::fd::{AsFd, AsRawFd};

use crate::Peer;

/// socket(7): the peer's supplementary groups (Linux 4.13).
const SO_PEERGROUPS: libc::c_int = 59;
/// socket(7): whether SCM_RIGHTS may be sent to this socket (Linux 6.16).
const SO_PASSRIGHTS: libc::c_int = 83;
/// Groups read at the first try; more take a second call.
const FIRST_TRY: usize = 64;

/// The connecting process: uid, gid and pid from SO_PEERCRED, its
/// supplementary groups from SO_PEERGROUPS, all as they were when it
/// connected, in the helper's user namespace.
pub fn peer_credentials(conn: impl AsFd) -> std::io::Result<Peer> {
    let c = rustix::net::sockopt::socket_peercred(&conn)?;
    Ok(Peer {
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
        pid: c.pid.as_raw_nonzero().get(),
        groups: peer_groups(conn.as_fd())?,
    })
}

fn peer_groups(conn: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    let mut groups = vec![0u32; FIRST_TRY];
    loop {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: `groups` is a live, exclusively borrowed buffer of `len`
        // bytes; the kernel writes at most `len` bytes and sets `len`.
        let r = unsafe {
            libc::getsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / 4);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        // ERANGE: the buffer was too small, and `len` says how large.
        if e.raw_os_error() == Some(libc::ERANGE) && len as usize > groups.len() * 4 {
            groups = vec![0u32; len as usize / 4];
            continue;
        }
        return Err(e);
    }
}

/// Let fds be passed to `sock` or not (SO_PASSRIGHTS). A listening
/// socket's setting is its connections' too, from the moment they connect.
/// `Ok(false)`: this kernel cannot refuse them (before Linux 6.16).
pub fn allow_fd_passing(sock: impl AsFd, allow: bool) -> std::io::Result<bool> {
    let value: libc::c_int = allow.into();
    // SAFETY: `value` is a live c_int of the size passed; the kernel only
    // reads it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOPROTOOPT) | Some(libc::EINVAL) => Ok(false),
        _ => Err(e),
    }
}
