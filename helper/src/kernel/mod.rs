//! The helper's kernel work: loop devices, partition devices (BLKPG),
//! mkfs and what the checks read of fds (here), idmapped detached mounts
//! with locked flags (`mount`), the helper's own capabilities, systemd
//! socket and process life (`confine`), and a peer's credentials on the
//! socket (`peer`). Only dib-helper, as root, calls this; every ioctl and
//! raw syscall of the helper is in this module and its children, each
//! wrapped at once in a safe function.
//!
//! Loop devices are attached with `LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN`
//! (loop(4)): the kernel detaches one when its last user closes it and then
//! drops its partitions, so whatever happens to the client or to the helper
//! itself, no loop device outlives the mounts made on it.
#![allow(unsafe_code)] // ioctls and syscalls without wrappers; each block says why it is sound

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dib_sandbox::mkfs::{FsType, MkfsSpec, Target};
use dib_sandbox::proto::ErrorKind;
use dib_sandbox::table::Table;

use super::{Devices, Fail};

mod confine;
mod mount;
mod peer;

pub use confine::{confine, die_with_parent, systemd_listener};
pub use peer::{allow_fd_passing, peer_credentials};

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
/// BTRFS_IOC_FS_INFO: `_IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)`.
const BTRFS_IOC_FS_INFO: libc::c_ulong = 0x8400_941F;
/// How often to retry a loop device another process took first.
const ATTACH_TRIES: usize = 8;

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

pub(crate) fn last_os_error(what: &str) -> Fail {
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

/// btrfs' `struct btrfs_ioctl_fs_info_args` (1024 bytes): only `fsid` is
/// read.
#[repr(C)]
struct BtrfsFsInfo {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 1024 - 32],
}

/// The block devices (`major`, `minor`) the filesystem of `fd` is on, by
/// what its mounts show as `fstypes`: `st_dev` for most; for btrfs, whose
/// files' `st_dev` is a number of their subvolume's, the devices its sysfs
/// directory lists (found by the filesystem's UUID, BTRFS_IOC_FS_INFO:
/// read-only, asked only of an fd fstatfs says is on btrfs).
pub fn filesystem_devices(fd: BorrowedFd<'_>, fstypes: &[&str]) -> Result<Vec<(u32, u32)>, Fail> {
    let bad =
        |e: &dyn std::fmt::Display| (ErrorKind::BadFd, format!("examining the image fd: {e}"));
    if fstypes != ["btrfs"] {
        let st = rustix::fs::fstat(fd).map_err(|e| bad(&e))?;
        return Ok(vec![(
            rustix::fs::major(st.st_dev),
            rustix::fs::minor(st.st_dev),
        )]);
    }
    let mut info = BtrfsFsInfo {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        rest: [0; 1024 - 32],
    };
    if ioctl_ptr(fd, BTRFS_IOC_FS_INFO, &mut info) < 0 {
        return Err(bad(&std::io::Error::last_os_error()));
    }
    let uuid = uuid::Uuid::from_bytes(info.fsid).hyphenated().to_string();
    let dir = Path::new("/sys/fs/btrfs").join(uuid).join("devices");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| bad(&format!("{}: {e}", dir.display())))? {
        let dev = e
            .and_then(|e| std::fs::read_to_string(e.path().join("dev")))
            .map_err(|e| bad(&format!("{}: {e}", dir.display())))?;
        if let Some((a, b)) = dev.trim().split_once(':') {
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                out.push((a, b));
            }
        }
    }
    Ok(out)
}

/// The block device a path of the helper's mount table names (a mount's
/// source), if it is one.
pub fn block_device(source: &str) -> Option<(u32, u32)> {
    if !source.starts_with("/dev/") {
        return None;
    }
    let st = rustix::fs::stat(source).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::BlockDevice)
        .then(|| (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)))
}

/// Whether the loop device named `name` (`/dev/loop3`) is still attached.
pub fn loop_still_attached(name: &str) -> bool {
    let dev = name.trim_start_matches("/dev/");
    Path::new("/sys/block")
        .join(dev)
        .join("loop/backing_file")
        .exists()
}

/// A loop device attached for one connection.
#[derive(Debug)]
pub struct Loop {
    number: u32,
    dev: File,
    size: u64,
    read_only: bool,
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
#[derive(Debug)]
pub struct Kernel {
    /// How long mkfs may take before it is killed.
    pub mkfs_timeout: std::time::Duration,
}

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
                read_only,
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
            .env("PATH", dib_sandbox::host_tools::system_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                (
                    ErrorKind::Failed,
                    format!("running {}: {e}", dib_sandbox::host_tools::describe(prog)),
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
                Ok(None) if started.elapsed() > self.mkfs_timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((
                        ErrorKind::Failed,
                        format!(
                            "{prog} on {} took over {} s; killed",
                            dev.display(),
                            self.mkfs_timeout.as_secs()
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
        mount::mount_idmapped(&dev, fs, userns, l.read_only)
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
