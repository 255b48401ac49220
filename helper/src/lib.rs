//! dib-helper's server side: who may connect ([`Allow`]), and one
//! connection's [`Session`], which checks every request of its untrusted
//! client before the [`Devices`] act on it, each request within a time
//! limit ([`watchdog`]), its loop devices counted per user across
//! connections ([`Ledger`]) (docs/security.md).
//!
//! The policy is here, separate from the kernel work ([`kernel`]), so that
//! tier 1 exercises every refusal over a real socket with a fake device
//! layer, and a reviewer reads what the helper allows in one place: this
//! file (requests), `allow.rs` (peers) and `image.rs` (image files).

mod allow;
mod image;
pub mod kernel;
mod ledger;
pub mod watchdog;

pub use allow::{Allow, LogLimit};
pub use ledger::{answer, report_stuck, ControlLedger, Ledger, LocalLedger, Loops};

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use dib_sandbox::mkfs::{FsType, MkfsSpec};
use dib_sandbox::proto::{self, ErrorKind, Handle, ProtoError, Reply, Request};
use dib_sandbox::table::Table;

use watchdog::{OnStuck, Watchdog};

/// An error for the client: its kind and a message naming what was wrong.
pub type Fail = (ErrorKind, String);

/// What a connection may hold at once, and how long its requests may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub loops: usize,
    pub mounts: usize,
    /// Loop devices a user's connections may have bound at once, counting
    /// those a closed connection left bound to mounts still alive.
    pub loops_per_user: usize,
    /// Longest a request other than Mkfs may take (the kernel's part of it:
    /// examining an fd, attaching, writing a table, mounting, detaching).
    pub step: Duration,
    /// Longest mkfs may run before it is killed (its request may take
    /// `step` more).
    pub mkfs: Duration,
}

/// Enough for any DIB layout (one disk; a mount per filesystem).
pub const LIMITS: Limits = Limits {
    loops: 4,
    mounts: 32,
    loops_per_user: 16,
    step: Duration::from_secs(60),
    mkfs: Duration::from_secs(900),
};

/// The block-device work a session asks for, once a request has passed
/// its checks.
pub trait Devices {
    type Loop: std::fmt::Debug;
    fn attach(&mut self, image: OwnedFd, read_only: bool) -> Result<Self::Loop, Fail>;
    fn size(&self, l: &Self::Loop) -> u64;
    fn name(&self, l: &Self::Loop) -> String;
    fn write_table(&mut self, l: &mut Self::Loop, table: &Table) -> Result<Vec<String>, Fail>;
    fn mkfs(&mut self, l: &Self::Loop, partition: u32, spec: &MkfsSpec) -> Result<(), Fail>;
    /// Mount a filesystem of `l`: read-only when `l` was attached read-only.
    fn mount(
        &mut self,
        l: &Self::Loop,
        partition: u32,
        fs: FsType,
        userns: BorrowedFd<'_>,
    ) -> Result<OwnedFd, Fail>;
    fn detach(&mut self, l: Self::Loop) -> Result<(), Fail>;
}

/// The connecting process, as the kernel reports it: SO_PEERCRED's uid,
/// gid and pid, SO_PEERGROUPS' supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub groups: Vec<u32>,
}

/// A loop device of this connection's, and how it was attached.
#[derive(Debug)]
struct Attached<L> {
    l: L,
    read_only: bool,
}

/// One client connection: what it attached, and the checks on each request.
pub struct Session<D: Devices, L: Ledger> {
    devices: D,
    ledger: L,
    peer: Peer,
    limits: Limits,
    greeted: bool,
    loops: BTreeMap<Handle, Attached<D::Loop>>,
    mounts: usize,
    on_stuck: OnStuck,
    /// The watchdog gave up on a request: nothing more is done.
    stuck: bool,
}

impl<D: Devices, L: Ledger> std::fmt::Debug for Session<D, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("loops", &self.loops.len())
            .field("mounts", &self.mounts)
            .finish_non_exhaustive()
    }
}

impl<D: Devices, L: Ledger> Session<D, L> {
    pub fn new(devices: D, ledger: L, peer: Peer, limits: Limits) -> Self {
        Session {
            devices,
            ledger,
            peer,
            limits,
            greeted: false,
            loops: BTreeMap::new(),
            mounts: 0,
            on_stuck: std::sync::Arc::new(|| {}),
            stuck: false,
        }
    }

    /// What to do, besides answering the client and hanging up, when a
    /// request runs over its time limit (the session process exits).
    pub fn on_stuck(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_stuck = std::sync::Arc::new(f);
        self
    }

    /// Serve requests from `sock` until the client hangs up (or fails the
    /// handshake), then undo everything it left attached. Each request
    /// runs under the watchdog: past its limit the client is told so and
    /// hung up on, and the session ends.
    pub fn serve(mut self, sock: impl AsFd) {
        let dog = match sock
            .as_fd()
            .try_clone_to_owned()
            .and_then(|dup| Watchdog::start(dup, self.on_stuck.clone()))
        {
            Ok(d) => d,
            Err(e) => {
                // No time limit, no session: say so rather than serve unbounded.
                let _ = proto::send(
                    &sock,
                    &error(
                        ErrorKind::Failed,
                        format!("dib-helper cannot watch this session: {e}"),
                    ),
                    &[],
                );
                return;
            }
        };
        loop {
            let (reply, fd, sent) = match proto::recv_keeping_fds::<Request>(&sock) {
                Ok((Ok(req), mut fds)) => {
                    dog.arm(what(&req), self.time_limit(&req));
                    let (reply, fd) = self.handle(req, &mut fds);
                    if !dog.disarm() {
                        self.stuck = true;
                        return;
                    }
                    (reply, fd, fds)
                }
                Ok((Err(ProtoError::Malformed(m)), fds)) => {
                    (error(ErrorKind::Malformed, m), None, fds)
                }
                Ok((Err(_), _)) | Err(_) => break,
            };
            let fds: Vec<BorrowedFd<'_>> = fd.iter().map(|f| f.as_fd()).collect();
            let end = matches!(
                reply,
                Reply::Error {
                    kind: ErrorKind::Version,
                    ..
                }
            );
            let sent_reply = proto::send(&sock, &reply, &fds).is_ok();
            // The fds the request brought and did not use, closed once it
            // is answered: a close can wait on the fd's filesystem.
            if !sent.is_empty() {
                dog.arm(
                    "closing the fds the request brought".into(),
                    self.limits.step,
                );
                drop(sent);
                if !dog.disarm() {
                    self.stuck = true;
                    return;
                }
            }
            if !sent_reply || end {
                break;
            }
        }
        dog.arm(
            "detaching what the connection left".into(),
            self.limits.step * 4,
        );
        self.release();
        if !dog.disarm() {
            self.stuck = true;
        }
    }

    /// How long `req` may take.
    fn time_limit(&self, req: &Request) -> Duration {
        match req {
            Request::Mkfs { .. } => self.limits.mkfs + self.limits.step,
            _ => self.limits.step,
        }
    }

    /// Answer one request.
    /// Answer one request. The fds it uses are taken from `fds`; those
    /// left (all of them, for a refused request) are the caller's to close.
    pub fn handle(&mut self, req: Request, fds: &mut Vec<OwnedFd>) -> (Reply, Option<OwnedFd>) {
        match self.dispatch(req, fds) {
            Ok(r) => r,
            Err((kind, message)) => (Reply::Error { kind, message }, None),
        }
    }

    fn dispatch(
        &mut self,
        req: Request,
        fds: &mut Vec<OwnedFd>,
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
                self.check_image(fds[0].as_fd(), read_only)?;
                let image = fds.remove(0);
                let handle = self.ledger.reserve()?;
                let l = match self.devices.attach(image, read_only) {
                    Ok(l) => l,
                    Err(e) => {
                        self.ledger.cancel(handle);
                        return Err(e);
                    }
                };
                self.ledger.bound(handle, &self.devices.name(&l));
                let reply = Reply::LoopAttached {
                    handle,
                    device: self.devices.name(&l),
                    size: self.devices.size(&l),
                };
                self.loops.insert(handle, Attached { l, read_only });
                Ok((reply, None))
            }
            Request::WritePartitions { handle, table } => {
                let a = writable(&mut self.loops, handle)?;
                let devices = self.devices.write_table(&mut a.l, &table)?;
                Ok((Reply::PartitionsWritten { devices }, None))
            }
            Request::Mkfs {
                handle,
                partition,
                spec,
            } => {
                spec.check().map_err(|m| (ErrorKind::Invalid, m))?;
                let a = writable(&mut self.loops, handle)?;
                self.devices.mkfs(&a.l, partition, &spec)?;
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
                self.check_userns(fds[0].as_fd())?;
                let userns = fds.remove(0);
                let a = self.loops.get(&handle).ok_or_else(|| no_handle(handle))?;
                let fd = self.devices.mount(&a.l, partition, fs, userns.as_fd())?;
                self.mounts += 1;
                Ok((Reply::Mounted {}, Some(fd)))
            }
            Request::Detach { handle } => {
                let a = self
                    .loops
                    .remove(&handle)
                    .ok_or_else(|| no_handle(handle))?;
                self.devices.detach(a.l)?;
                Ok((Reply::Detached {}, None))
            }
        }
    }

    /// The image must be a regular file of the peer's, on a filesystem
    /// whose reads cannot stall (`image.rs`), open for writing unless
    /// attached read-only: the helper then gives the loop device no more
    /// access to it than the client has.
    fn check_image(&self, fd: BorrowedFd<'_>, read_only: bool) -> Result<(), Fail> {
        // The file first: fstat of a file on a FUSE filesystem mounted in
        // another user namespace fails at once (the helper is not allowed
        // in), where fstatfs would wait on its server.
        // On the fd itself: a duplicate closed afterwards would ask a FUSE
        // server to flush.
        let st = rustix::fs::fstat(fd).map_err(|e| {
            let why = if e == rustix::io::Errno::ACCESS {
                " (a filesystem mounted in a user namespace, FUSE say, keeps dib-helper out): \
                 keep the image on a local disk filesystem or on tmpfs"
            } else {
                ""
            };
            (
                ErrorKind::BadFd,
                format!("examining the image fd: {}{why}", std::io::Error::from(e)),
            )
        })?;
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt != libc::S_IFREG {
            let what = match fmt {
                libc::S_IFDIR => "a directory",
                libc::S_IFBLK => "a block device",
                libc::S_IFCHR => "a character device",
                _ => "not a regular file",
            };
            return Err((
                ErrorKind::BadFd,
                format!("the image fd is {what}: send an image file you own"),
            ));
        }
        if st.st_uid != self.peer.uid {
            return Err((
                ErrorKind::BadFd,
                format!(
                    "the image file belongs to uid {}, not to you (uid {}): send an image \
                     file you own",
                    st.st_uid, self.peer.uid
                ),
            ));
        }
        let f_type = rustix::fs::fstatfs(fd)
            .map_err(|e| (ErrorKind::BadFd, format!("examining the image fd: {e}")))?
            .f_type;
        let (name, fstypes, backing) =
            image::classify(f_type as i64).map_err(|m| (ErrorKind::BadFd, m))?;
        if backing == image::Backing::Block {
            let devices = kernel::filesystem_devices(fd, fstypes)?;
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
                (
                    ErrorKind::Failed,
                    format!("reading dib-helper's mount table: {e}"),
                )
            })?;
            let mounts = image::parse_mountinfo(&mounts);
            if !image::mounted_here(&mounts, fstypes, &devices, kernel::block_device) {
                let (major, minor) = devices.first().copied().unwrap_or_default();
                return Err((
                    ErrorKind::BadFd,
                    format!(
                        "the image file's filesystem ({name}, device {major}:{minor}) is not \
                         mounted in dib-helper's own mount table: dib-helper \
                         attaches files on the host's disks, not on filesystems it mounted from \
                         loop devices for its clients: keep the image on the host's disk or on \
                         tmpfs"
                    ),
                ));
            }
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
        let loops = std::mem::take(&mut self.loops);
        if self.stuck {
            return; // dropped: their fds close, the kernel detaches them
        }
        for (_, a) in loops {
            // The kernel detaches the device when its mounts are gone
            // (autoclear); a failed flush is all that can go wrong here.
            if let Err((_, m)) = self.devices.detach(a.l) {
                eprintln!("dib-helper: cleaning up after pid {}: {m}", self.peer.pid);
            }
        }
    }
}

impl<D: Devices, L: Ledger> Drop for Session<D, L> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A request, named for the watchdog's message.
fn what(req: &Request) -> String {
    match req {
        Request::Hello { .. } => "Hello".into(),
        Request::AttachLoop { .. } => "attaching the image (AttachLoop)".into(),
        Request::WritePartitions { handle, .. } => {
            format!("writing the partition table of handle {handle} (WritePartitions)")
        }
        Request::Mkfs {
            handle, partition, ..
        } => format!("mkfs on partition {partition} of handle {handle} (Mkfs)"),
        Request::MountIdmapped {
            handle, partition, ..
        } => format!("mounting partition {partition} of handle {handle} (MountIdmapped)"),
        Request::Detach { handle } => format!("detaching handle {handle} (Detach)"),
        Request::Ping {} => "Ping".into(),
    }
}

/// The loop device of `handle`, if it may be written (partitioned,
/// formatted): not one attached read-only.
fn writable<T>(
    loops: &mut BTreeMap<Handle, Attached<T>>,
    handle: Handle,
) -> Result<&mut Attached<T>, Fail> {
    let a = loops.get_mut(&handle).ok_or_else(|| no_handle(handle))?;
    if a.read_only {
        return Err((
            ErrorKind::Invalid,
            format!(
                "handle {handle} was attached read-only: it can be mounted (read-only), not \
                 partitioned or formatted"
            ),
        ));
    }
    Ok(a)
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
