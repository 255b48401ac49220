//! The helper's kernel work: loop devices, partition devices (BLKPG),
//! mkfs, and idmapped detached mounts with locked flags. Only dib-helper,
//! as root, calls this; every ioctl and raw syscall is here, each wrapped
//! at once in a safe function.
//!
//! Loop devices are attached with `LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN`
//! (loop(4)): the kernel detaches one when its last user closes it and then
//! drops its partitions, so whatever happens to the client or to the helper
//! itself, no loop device outlives the mounts made on it.
#![allow(unsafe_code)] // ioctls and syscalls without wrappers; each block says why it is sound

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::mkfs::{FsType, MkfsSpec, Target};
use crate::proto::ErrorKind;
use crate::table::Table;

use super::{Devices, Fail};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKGETSIZE64: libc::c_ulong = 0x80081272;
/// ioctl(2) on a namespace fd (ioctl_ns(2)).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
/// statfs(2) `f_type` of nsfs, where namespace fds live.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// How long mkfs may take before it is killed.
const MKFS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);
/// How often to retry a loop device another process took first.
const ATTACH_TRIES: usize = 8;
/// `PATH` for the tools the helper runs.
const TOOL_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

fn last_os_error(what: &str) -> Fail {
    let e = std::io::Error::last_os_error();
    (ErrorKind::Failed, format!("{what}: {e}"))
}

/// An ioctl whose argument is a plain integer or nothing.
fn ioctl_value(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: libc::c_ulong) -> libc::c_int {
    // SAFETY: `fd` is a live descriptor; requests passed here take an
    // integer argument (or none), so the kernel reads no memory of ours.
    unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) }
}

/// An ioctl whose argument points at `arg`.
fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: &mut T) -> libc::c_int {
    // SAFETY: `fd` is live and `arg` is a valid, exclusively borrowed value
    // of the #[repr(C)] type the request expects, alive for the call.
    unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) }
}

/// The type (`CLONE_NEW*`) and owner uid of a namespace fd.
pub fn namespace_owner(fd: BorrowedFd<'_>) -> Result<(i32, u32), Fail> {
    // No ioctl, as root, on whatever else a client sent.
    let on_nsfs = rustix::fs::fstatfs(fd).is_ok_and(|s| s.f_type == NSFS_MAGIC);
    if !on_nsfs {
        return Err((
            ErrorKind::BadFd,
            "the fd sent for idmapping is not a namespace".into(),
        ));
    }
    let kind = ioctl_value(fd, NS_GET_NSTYPE, 0);
    if kind < 0 {
        return Err((
            ErrorKind::BadFd,
            "the fd sent for idmapping is not a namespace".into(),
        ));
    }
    let mut uid: libc::uid_t = 0;
    if ioctl_ptr(fd, NS_GET_OWNER_UID, &mut uid) < 0 {
        return Err((
            ErrorKind::BadFd,
            "the fd sent for idmapping is not a user namespace".into(),
        ));
    }
    Ok((kind, uid))
}

/// A loop device attached for one connection.
#[derive(Debug)]
pub struct Loop {
    number: u32,
    dev: File,
    size: u64,
    partitions: Vec<(u32, PathBuf)>,
}

impl Loop {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/loop{}", self.number))
    }

    fn partition(&self, n: u32) -> Result<PathBuf, Fail> {
        if n == 0 {
            return Ok(self.path());
        }
        self.partitions
            .iter()
            .find(|p| p.0 == n)
            .map(|p| p.1.clone())
            .ok_or_else(|| {
                (
                    ErrorKind::NoSuchHandle,
                    format!(
                        "partition {n} of {} was not made on this connection",
                        self.path().display()
                    ),
                )
            })
    }
}

/// The real thing: loop devices of this kernel.
#[derive(Debug, Default)]
pub struct Kernel;

impl Devices for Kernel {
    type Loop = Loop;

    fn attach(&mut self, image: OwnedFd, read_only: bool) -> Result<Loop, Fail> {
        let control = File::options()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .map_err(|e| (ErrorKind::Failed, format!("opening /dev/loop-control: {e}")))?;
        let mut flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN;
        if read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        for _ in 0..ATTACH_TRIES {
            let n = ioctl_value(control.as_fd(), LOOP_CTL_GET_FREE, 0);
            if n < 0 {
                return Err(last_os_error("finding a free loop device"));
            }
            let path = format!("/dev/loop{n}");
            let dev = File::options()
                .read(true)
                .write(!read_only)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| (ErrorKind::Failed, format!("opening {path}: {e}")))?;
            let mut cfg = LoopConfig {
                fd: image.as_raw_fd() as u32,
                block_size: 0,
                info: LoopInfo64 {
                    lo_device: 0,
                    lo_inode: 0,
                    lo_rdevice: 0,
                    lo_offset: 0,
                    lo_sizelimit: 0,
                    lo_number: 0,
                    lo_encrypt_type: 0,
                    lo_encrypt_key_size: 0,
                    lo_flags: flags,
                    lo_file_name: [0; 64],
                    lo_crypt_name: [0; 64],
                    lo_encrypt_key: [0; 32],
                    lo_init: [0; 2],
                },
                reserved: [0; 8],
            };
            if ioctl_ptr(dev.as_fd(), LOOP_CONFIGURE, &mut cfg) < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EBUSY) {
                    continue; // another process took it between the two calls
                }
                return Err((ErrorKind::Failed, format!("attaching {path}: {e}")));
            }
            let mut size: u64 = 0;
            if ioctl_ptr(dev.as_fd(), BLKGETSIZE64, &mut size) < 0 {
                return Err(last_os_error("reading the loop device's size"));
            }
            return Ok(Loop {
                number: n as u32,
                dev,
                size,
                partitions: Vec::new(),
            });
        }
        Err((
            ErrorKind::Failed,
            "every free loop device was taken by another process first".into(),
        ))
    }

    fn size(&self, l: &Loop) -> u64 {
        l.size
    }

    fn name(&self, l: &Loop) -> String {
        l.path().display().to_string()
    }

    fn write_table(&mut self, l: &mut Loop, table: &Table) -> Result<Vec<String>, Fail> {
        if !l.partitions.is_empty() {
            return Err((
                ErrorKind::Invalid,
                format!("{} already has its partitions", l.path().display()),
            ));
        }
        table
            .write(&l.dev, l.size)
            .map_err(|e| (ErrorKind::Invalid, e.to_string()))?;
        l.dev.sync_all().map_err(|e| {
            (
                ErrorKind::Failed,
                format!("flushing the partition table: {e}"),
            )
        })?;
        let mut names = Vec::new();
        for e in &table.entries {
            let mut part = BlkpgPartition {
                start: e.start as i64,
                length: e.size as i64,
                pno: e.number as libc::c_int,
                devname: [0; 64],
                volname: [0; 64],
            };
            let mut arg = BlkpgIoctlArg {
                op: BLKPG_ADD_PARTITION,
                flags: 0,
                datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
                data: (&mut part as *mut BlkpgPartition).cast(),
            };
            if ioctl_ptr(l.dev.as_fd(), BLKPG, &mut arg) < 0 {
                return Err(last_os_error(&format!(
                    "adding partition {} of {}",
                    e.number,
                    l.path().display()
                )));
            }
            let p = PathBuf::from(format!("/dev/loop{}p{}", l.number, e.number));
            names.push(p.display().to_string());
            l.partitions.push((e.number, p));
        }
        Ok(names)
    }

    fn mkfs(&mut self, l: &Loop, partition: u32, spec: &MkfsSpec) -> Result<(), Fail> {
        let dev = l.partition(partition)?;
        wait_for_node(&dev)?;
        let (prog, args) = spec.argv(Target::Device(&dev));
        let mut child = Command::new(prog)
            .args(&args)
            .env_clear()
            .env("PATH", TOOL_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                (
                    ErrorKind::Failed,
                    format!("running {}: {e}", crate::host_tools::describe(prog)),
                )
            })?;
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if started.elapsed() > MKFS_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((
                        ErrorKind::Failed,
                        format!(
                            "{prog} on {} took over {MKFS_TIMEOUT:?}; killed",
                            dev.display()
                        ),
                    ));
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => return Err((ErrorKind::Failed, format!("waiting for {prog}: {e}"))),
            }
        };
        let err = reader.join().unwrap_or_default();
        if !status.success() {
            return Err((
                ErrorKind::Failed,
                format!(
                    "{prog} on {} failed ({status}): {}",
                    dev.display(),
                    err.trim()
                ),
            ));
        }
        Ok(())
    }

    fn mount(
        &mut self,
        l: &Loop,
        partition: u32,
        fs: FsType,
        userns: BorrowedFd<'_>,
    ) -> Result<OwnedFd, Fail> {
        let dev = l.partition(partition)?;
        wait_for_node(&dev)?;
        if fs == FsType::Swap {
            return Err((ErrorKind::Invalid, "swap is not mounted".into()));
        }
        use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen};
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
            .and_then(|()| fsconfig_set_string(&ctx, "source", &dev))
            .and_then(|()| fsconfig_create(&ctx))
            .map_err(|e| {
                (
                    ErrorKind::Failed,
                    format!("mounting {} ({}): {e}", dev.display(), fs.name()),
                )
            })?;
        let mnt = fsmount(
            &ctx,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )
        .map_err(|e| (ErrorKind::Failed, format!("fsmount {}: {e}", dev.display())))?;
        idmap(mnt.as_fd(), userns)?;
        lock_flags(mnt.as_fd(), userns)
    }

    fn still_bound(&self, name: &str) -> bool {
        let dev = name.trim_start_matches("/dev/");
        Path::new("/sys/block")
            .join(dev)
            .join("loop/backing_file")
            .exists()
    }

    fn detach(&mut self, l: Loop) -> Result<(), Fail> {
        // Flush what the filesystems wrote; closing the last fd (ours, once
        // no mount holds the device) detaches it (autoclear).
        let r = l.dev.sync_all();
        drop(l);
        r.map_err(|e| (ErrorKind::Failed, format!("flushing the loop device: {e}")))
    }
}

/// devtmpfs makes partition nodes as the kernel adds partitions; wait the
/// moment it may take.
fn wait_for_node(p: &Path) -> Result<(), Fail> {
    for _ in 0..100 {
        if p.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err((ErrorKind::Failed, format!("{} did not appear", p.display())))
}

/// Set the detached mount's idmapping to the client's user namespace.
fn idmap(mnt: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), Fail> {
    crate::mounts::change_mount_attrs(mnt, crate::mounts::MOUNT_ATTR_IDMAP, 0, Some(userns))
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
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
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
    let got = crate::proto::recv::<u32>(&ours);
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

/// Clear the helper's environment and drop every capability but
/// `CAP_SYS_ADMIN` (loop, BLKPG, mounts, joining the client's user
/// namespace), from the bounding set too, so mkfs runs with no more.
pub fn confine() -> Result<(), String> {
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    std::env::set_var("PATH", TOOL_PATH);
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
