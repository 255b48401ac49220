//! Idmapped detached mounts with nodev and nosuid locked: the filesystem
//! on a partition the helper made, handed to the client as a mount fd that
//! only its own user namespace sees as its ids.

#![allow(unsafe_code)] // fork, setns and the new mount syscalls; each block says why it is sound

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use dib_sandbox::mkfs::FsType;
use dib_sandbox::proto::ErrorKind;

use super::last_os_error;
use crate::Fail;

/// Mount the filesystem `fs` on `dev` (detached: it is in no mount table),
/// idmapped into `userns`, with nodev and nosuid locked; read-only (the
/// superblock and the mount, locked too) when the device was attached
/// read-only, where a read-write mount could only fail.
pub(super) fn mount_idmapped(
    dev: &Path,
    fs: FsType,
    userns: BorrowedFd<'_>,
    read_only: bool,
) -> Result<OwnedFd, Fail> {
    use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen};
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
    let ctx = fsopen(fs.name(), FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
        if e == rustix::io::Errno::NODEV {
            (
                ErrorKind::Unsupported,
                format!("this kernel cannot mount {} filesystems", fs.name()),
            )
        } else {
            (ErrorKind::Failed, format!("fsopen {}: {e}", fs.name()))
        }
    })?;
    // ext takes its error behaviour from the superblock, which the
    // client controls: never `panic` the host.
    let errors = if fs.is_ext() {
        fsconfig_set_string(&ctx, "errors", "remount-ro")
    } else {
        Ok(())
    };
    errors
        .and_then(|()| {
            if read_only {
                fsconfig_set_flag(&ctx, "ro")
            } else {
                Ok(())
            }
        })
        .and_then(|()| fsconfig_set_string(&ctx, "source", dev))
        .and_then(|()| fsconfig_create(&ctx))
        .map_err(|e| {
            (
                ErrorKind::Failed,
                format!("mounting {} ({}): {e}", dev.display(), fs.name()),
            )
        })?;
    let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
    if read_only {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    let mnt = fsmount(&ctx, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| (ErrorKind::Failed, format!("fsmount {}: {e}", dev.display())))?;
    idmap(mnt.as_fd(), userns)?;
    lock_flags(mnt.as_fd(), userns)
}

/// Set the detached mount's idmapping to the client's user namespace.
fn idmap(mnt: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Fail> {
    dib_sandbox::mounts::change_mount_attrs(
        mnt,
        dib_sandbox::mounts::MOUNT_ATTR_IDMAP,
        0,
        Some(userns),
    )
    .map_err(|e| {
        (
            ErrorKind::Failed,
            format!("idmapping the mount for the client: {e}"),
        )
    })
}

/// A clone of `mnt` whose nodev and nosuid the client cannot clear.
///
/// A mount's flags are locked (`MNT_LOCK_NODEV`...) only when a mount
/// namespace is copied into one owned by another user namespace. So a child
/// process attaches `mnt` in a private mount namespace, joins the client's
/// user namespace, unshares a mount namespace there (which locks every
/// flag) and sends back a clone of the mount: the client can move it, but a
/// device node in an image it crafted stays unopenable and a setuid file
/// gives no privilege.
fn lock_flags(mnt: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<OwnedFd, Fail> {
    let (ours, theirs) = dib_sandbox::proto::socket_pair()
        .map_err(|e| (ErrorKind::Failed, format!("socketpair: {e}")))?;
    let at = CString::new("/dev").expect("no NUL");
    // SAFETY: fork(2) in a threaded process: the child calls only raw
    // syscalls (no allocation, no locks) and ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_os_error("forking"));
    }
    if pid == 0 {
        let code = lock_child(mnt.as_raw_fd(), userns.as_raw_fd(), theirs.as_raw_fd(), &at);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    let got = dib_sandbox::proto::recv::<u32>(&ours);
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match got {
        Ok((_, mut fds)) if fds.len() == 1 => Ok(fds.remove(0)),
        _ => Err((
            ErrorKind::Failed,
            format!(
                "locking the mount's flags failed (step {})",
                libc::WEXITSTATUS(status)
            ),
        )),
    }
}

/// The child of [`lock_flags`]: returns the failed step's number, or 0.
fn lock_child(mnt: RawFd, userns: RawFd, sock: RawFd, at: &CString) -> i32 {
    // SAFETY: raw syscalls with valid fds and NUL-terminated paths that live
    // for the calls; this process is the single-threaded child of fork.
    unsafe {
        // Nothing of the helper's (other clients' devices and images) stays
        // open in a process that is about to join a client's namespace, and
        // the client may not ptrace it.
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return 8;
        }
        let mut keep = [mnt, userns, sock];
        keep.sort_unstable();
        let mut from = 3;
        for k in keep {
            if k > from {
                libc::syscall(libc::SYS_close_range, from as u32, (k - 1) as u32, 0u32);
            }
            from = from.max(k + 1);
        }
        libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0u32);
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 1;
        }
        // Nothing done here may reach the host's mount table.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return 2;
        }
        if libc::syscall(
            libc::SYS_move_mount,
            mnt,
            c"".as_ptr(),
            libc::AT_FDCWD,
            at.as_ptr(),
            0x4u32, // MOVE_MOUNT_F_EMPTY_PATH
        ) != 0
        {
            return 3;
        }
        if libc::setns(userns, libc::CLONE_NEWUSER) != 0 {
            return 4;
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return 5;
        }
        let clone = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            at.as_ptr(),
            1u32 | libc::O_CLOEXEC as u32, // OPEN_TREE_CLONE
        );
        if clone < 0 {
            return 6;
        }
        let fd = OwnedFd::from_raw_fd(clone as RawFd);
        let sock = BorrowedFd::borrow_raw(sock);
        if send_fd(sock, fd.as_fd()).is_err() {
            return 7;
        }
        0
    }
}

/// Send one fd with the message `0` (a JSON number), allocation-free.
fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> rustix::io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    anc.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(b"0")],
        &mut anc,
        SendFlags::empty(),
    )
}
