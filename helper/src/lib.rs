//! dib-helper's server side: who may connect ([`Allow`]), and one
//! connection's [`Session`], which checks every request of its untrusted
//! client before the [`Devices`] act on it (docs/security.md).
//!
//! The policy is here, separate from the kernel work ([`kernel`]), so that
//! tier 1 exercises every refusal over a real socket with a fake device
//! layer, and a reviewer reads what the helper allows in one file.

pub mod kernel;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::sync::atomic::{AtomicU32, Ordering};

use dib_sandbox::mkfs::{FsType, MkfsSpec};
use dib_sandbox::proto::{self, ErrorKind, Handle, ProtoError, Reply, Request};
use dib_sandbox::table::Table;

/// An error for the client: its kind and a message naming what was wrong.
pub type Fail = (ErrorKind, String);

/// What a connection may hold at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub loops: usize,
    pub mounts: usize,
    /// Loop devices a user's connections may have bound at once, counting
    /// those a closed connection left bound to mounts still alive.
    pub loops_per_user: usize,
}

/// Enough for any DIB layout (one disk; a mount per filesystem).
pub const LIMITS: Limits = Limits {
    loops: 4,
    mounts: 32,
    loops_per_user: 16,
};

/// Filesystems an image file may live on (statfs `f_type`): local ones.
/// Not FUSE or network filesystems, whose I/O the client could stall
/// forever, nor proc, sysfs and the like.
const IMAGE_FILESYSTEMS: &[(i64, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0xF2F5_2010, "f2fs"),
    (0x794C_7630, "overlayfs"),
    (0x2FC1_2FC1, "zfs"),
    (0xCA45_1A4E, "bcachefs"),
];

/// Loop devices each user's connections attached, by device name.
static BOUND: std::sync::Mutex<BTreeMap<u32, Vec<String>>> = std::sync::Mutex::new(BTreeMap::new());

/// The block-device work a session asks for, once a request has passed
/// its checks.
pub trait Devices {
    type Loop: std::fmt::Debug;
    fn attach(&mut self, image: OwnedFd, read_only: bool) -> Result<Self::Loop, Fail>;
    fn size(&self, l: &Self::Loop) -> u64;
    fn name(&self, l: &Self::Loop) -> String;
    fn write_table(&mut self, l: &mut Self::Loop, table: &Table) -> Result<Vec<String>, Fail>;
    fn mkfs(&mut self, l: &Self::Loop, partition: u32, spec: &MkfsSpec) -> Result<(), Fail>;
    fn mount(
        &mut self,
        l: &Self::Loop,
        partition: u32,
        fs: FsType,
        userns: BorrowedFd<'_>,
    ) -> Result<OwnedFd, Fail>;
    fn detach(&mut self, l: Self::Loop) -> Result<(), Fail>;
    /// Whether the loop device named `name` is still attached.
    fn still_bound(&self, name: &str) -> bool;
}

/// The connecting process, as SO_PEERCRED reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// Who may use the helper: root, the named users, and members of the named
/// groups (their primary or supplementary group, looked up at connect time).
#[derive(Debug, Clone, Default)]
pub struct Allow {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Allow {
    /// Whether `peer` may connect; the refusal says why.
    /// Root and the listed users: allowed with no lookup.
    pub fn lists(&self, uid: u32) -> bool {
        uid == 0 || self.uids.contains(&uid)
    }

    pub fn check(&self, peer: &Peer) -> Result<(), String> {
        if self.lists(peer.uid) {
            return Ok(());
        }
        let user = nix::unistd::User::from_uid(peer.uid.into()).ok().flatten();
        let name = user
            .as_ref()
            .map_or_else(|| format!("uid {}", peer.uid), |u| u.name.clone());
        if let Some(u) = &user {
            let cname = std::ffi::CString::new(u.name.clone()).unwrap_or_default();
            let groups = nix::unistd::getgrouplist(&cname, u.gid).unwrap_or_default();
            if groups.iter().any(|g| self.gids.contains(&g.as_raw())) {
                return Ok(());
            }
        }
        Err(format!(
            "user {name} is not allowed to use this dib-helper: ask its administrator to add \
             --allow-user {name}, or to add you to a group it allows (--allow-group)"
        ))
    }
}

/// Handles are unique across the helper's connections, so a handle from
/// another connection is never mistaken for one of this one.
static NEXT_HANDLE: AtomicU32 = AtomicU32::new(1);

/// One client connection: what it attached, and the checks on each request.
#[derive(Debug)]
pub struct Session<D: Devices> {
    devices: D,
    peer: Peer,
    limits: Limits,
    greeted: bool,
    loops: BTreeMap<Handle, D::Loop>,
    mounts: usize,
}

impl<D: Devices> Session<D> {
    pub fn new(devices: D, peer: Peer, limits: Limits) -> Self {
        Session {
            devices,
            peer,
            limits,
            greeted: false,
            loops: BTreeMap::new(),
            mounts: 0,
        }
    }

    /// Serve requests from `sock` until the client hangs up (or fails the
    /// handshake), then undo everything it left attached.
    pub fn serve(mut self, sock: impl AsFd) {
        loop {
            let (reply, fd) = match proto::recv::<Request>(&sock) {
                Ok((req, fds)) => self.handle(req, fds),
                Err(ProtoError::Malformed(m)) => (error(ErrorKind::Malformed, m), None),
                Err(_) => break,
            };
            let fds: Vec<BorrowedFd<'_>> = fd.iter().map(|f| f.as_fd()).collect();
            let end = matches!(
                reply,
                Reply::Error {
                    kind: ErrorKind::Version,
                    ..
                }
            );
            if proto::send(&sock, &reply, &fds).is_err() || end {
                break;
            }
        }
        self.close();
    }

    /// Answer one request.
    pub fn handle(&mut self, req: Request, fds: Vec<OwnedFd>) -> (Reply, Option<OwnedFd>) {
        match self.dispatch(req, fds) {
            Ok(r) => r,
            Err((kind, message)) => (Reply::Error { kind, message }, None),
        }
    }

    fn dispatch(
        &mut self,
        req: Request,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(Reply, Option<OwnedFd>), Fail> {
        let want_fds = matches!(
            req,
            Request::AttachLoop { .. } | Request::MountIdmapped { .. }
        ) as usize;
        if fds.len() != want_fds {
            return Err((
                ErrorKind::BadFd,
                format!("this request takes {want_fds} fds, not {}", fds.len()),
            ));
        }
        if !self.greeted {
            return match req {
                Request::Hello { version } if version == proto::VERSION => {
                    self.greeted = true;
                    Ok((
                        Reply::Hello {
                            version: proto::VERSION,
                        },
                        None,
                    ))
                }
                Request::Hello { version } => Err((
                    ErrorKind::Version,
                    format!(
                        "dib speaks helper protocol version {version}, this dib-helper speaks \
                         version {}: install dib and dib-helper from the same release",
                        proto::VERSION
                    ),
                )),
                _ => Err((ErrorKind::Version, "Hello must come first".into())),
            };
        }
        match req {
            Request::Hello { .. } => Err((ErrorKind::Invalid, "Hello was already said".into())),
            Request::Ping {} => Ok((Reply::Pong {}, None)),
            Request::AttachLoop { read_only } => {
                if self.loops.len() >= self.limits.loops {
                    return Err((
                        ErrorKind::Limit,
                        format!(
                            "this connection already holds {} loop devices, the limit",
                            self.limits.loops
                        ),
                    ));
                }
                let image = fds.remove(0);
                self.check_image(image.as_fd(), read_only)?;
                let mut bound = BOUND.lock().unwrap_or_else(|p| p.into_inner());
                let mine = bound.entry(self.peer.uid).or_default();
                mine.retain(|n| self.devices.still_bound(n));
                if mine.len() >= self.limits.loops_per_user {
                    return Err((
                        ErrorKind::Limit,
                        format!(
                            "your connections hold {} loop devices (some kept by mounts still \
                             alive), the limit",
                            mine.len()
                        ),
                    ));
                }
                let l = self.devices.attach(image, read_only)?;
                mine.push(self.devices.name(&l));
                drop(bound);
                let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
                let reply = Reply::LoopAttached {
                    handle,
                    device: self.devices.name(&l),
                    size: self.devices.size(&l),
                };
                self.loops.insert(handle, l);
                Ok((reply, None))
            }
            Request::WritePartitions { handle, table } => {
                let l = self
                    .loops
                    .get_mut(&handle)
                    .ok_or_else(|| no_handle(handle))?;
                let devices = self.devices.write_table(l, &table)?;
                Ok((Reply::PartitionsWritten { devices }, None))
            }
            Request::Mkfs {
                handle,
                partition,
                spec,
            } => {
                spec.check().map_err(|m| (ErrorKind::Invalid, m))?;
                let l = self.loops.get(&handle).ok_or_else(|| no_handle(handle))?;
                self.devices.mkfs(l, partition, &spec)?;
                Ok((Reply::Formatted {}, None))
            }
            Request::MountIdmapped {
                handle,
                partition,
                fs,
            } => {
                if self.mounts >= self.limits.mounts {
                    return Err((
                        ErrorKind::Limit,
                        format!(
                            "this connection already made {} mounts, the limit",
                            self.limits.mounts
                        ),
                    ));
                }
                let userns = fds.remove(0);
                self.check_userns(userns.as_fd())?;
                let l = self.loops.get(&handle).ok_or_else(|| no_handle(handle))?;
                let fd = self.devices.mount(l, partition, fs, userns.as_fd())?;
                self.mounts += 1;
                Ok((Reply::Mounted {}, Some(fd)))
            }
            Request::Detach { handle } => {
                let l = self
                    .loops
                    .remove(&handle)
                    .ok_or_else(|| no_handle(handle))?;
                self.devices.detach(l)?;
                Ok((Reply::Detached {}, None))
            }
        }
    }

    /// The image must be a regular file of the peer's, open for writing
    /// unless attached read-only: the helper then gives the loop device no
    /// more access to it than the client has.
    fn check_image(&self, fd: BorrowedFd<'_>, read_only: bool) -> Result<(), Fail> {
        let md = std::fs::File::from(
            fd.try_clone_to_owned()
                .map_err(|e| (ErrorKind::BadFd, format!("the image fd: {e}")))?,
        )
        .metadata()
        .map_err(|e| (ErrorKind::BadFd, format!("examining the image fd: {e}")))?;
        let t = md.file_type();
        if !t.is_file() {
            let what = if t.is_dir() {
                "a directory"
            } else if md.mode() & libc::S_IFMT == libc::S_IFBLK {
                "a block device"
            } else if md.mode() & libc::S_IFMT == libc::S_IFCHR {
                "a character device"
            } else {
                "not a regular file"
            };
            return Err((
                ErrorKind::BadFd,
                format!("the image fd is {what}: send an image file you own"),
            ));
        }
        if md.uid() != self.peer.uid {
            return Err((
                ErrorKind::BadFd,
                format!(
                    "the image file belongs to uid {}, not to you (uid {}): send an image \
                     file you own",
                    md.uid(),
                    self.peer.uid
                ),
            ));
        }
        let on = rustix::fs::fstatfs(fd)
            .map_err(|e| (ErrorKind::BadFd, format!("examining the image fd: {e}")))?
            .f_type;
        if !IMAGE_FILESYSTEMS.iter().any(|(m, _)| *m == on) {
            let names: Vec<&str> = IMAGE_FILESYSTEMS.iter().map(|f| f.1).collect();
            return Err((
                ErrorKind::BadFd,
                format!(
                    "the image file is on a filesystem of type 0x{on:x}: keep images on a local \
                     filesystem ({})",
                    names.join(", ")
                ),
            ));
        }
        let mode = rustix::fs::fcntl_getfl(fd).map_err(|e| {
            (
                ErrorKind::BadFd,
                format!("reading the image fd's mode: {e}"),
            )
        })?;
        if !read_only && !mode.contains(rustix::fs::OFlags::RDWR) {
            return Err((
                ErrorKind::BadFd,
                "the image fd is not open for reading and writing".into(),
            ));
        }
        Ok(())
    }

    /// The user namespace for idmapping must be one the peer owns.
    fn check_userns(&self, fd: BorrowedFd<'_>) -> Result<(), Fail> {
        let (kind, owner) = kernel::namespace_owner(fd)?;
        if kind != libc::CLONE_NEWUSER {
            return Err((
                ErrorKind::BadFd,
                "the fd sent for idmapping is not a user namespace".into(),
            ));
        }
        if owner != self.peer.uid {
            return Err((
                ErrorKind::BadFd,
                format!(
                    "the user namespace sent for idmapping belongs to uid {owner}, not to you \
                     (uid {})",
                    self.peer.uid
                ),
            ));
        }
        Ok(())
    }

    /// Detach everything the connection still holds (on disconnect too).
    pub fn close(mut self) {
        self.release();
    }

    fn release(&mut self) {
        for (_, l) in std::mem::take(&mut self.loops) {
            // The kernel detaches the device when its mounts are gone
            // (autoclear); a failed flush is all that can go wrong here.
            if let Err((_, m)) = self.devices.detach(l) {
                eprintln!("dib-helper: cleaning up after pid {}: {m}", self.peer.pid);
            }
        }
    }
}

impl<D: Devices> Drop for Session<D> {
    fn drop(&mut self) {
        self.release();
    }
}

fn no_handle(h: Handle) -> Fail {
    (
        ErrorKind::NoSuchHandle,
        format!("handle {h} is not a loop device this connection attached"),
    )
}

fn error(kind: ErrorKind, message: String) -> Reply {
    Reply::Error { kind, message }
}
