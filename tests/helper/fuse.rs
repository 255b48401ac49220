//! A FUSE filesystem served by the probe client from its own user
//! namespace, as any user can where /dev/fuse is usable (Debian's udev
//! rule gives it mode 0666): a root directory holding one file, `image`,
//! whose attributes are never cached, so every stat of it asks the server.
//! [`Server::stall`] makes the server stop answering, as a hostile client
//! would to hold whoever reads the file in the kernel. Nothing in the
//! probe touches the filesystem once it is stalled: a thread of its own
//! would wait there too, and the process could never exit to end the
//! connection.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// The image file's size.
pub const IMAGE_SIZE: u64 = 64 << 20;

const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const GETXATTR: u32 = 22;
const LISTXATTR: u32 = 23;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const ACCESS: u32 = 34;
const INTERRUPT: u32 = 36;
const BATCH_FORGET: u32 = 42;

use nix::libc::{EINTR, ENODATA, ENOENT, ENOSYS};

/// The root directory's and the image's node ids.
const ROOT: u64 = 1;
const IMAGE: u64 = 2;

/// A running server: its thread answers until told to stall, and ends
/// the connection when told to end.
#[derive(Debug)]
pub struct Server {
    stalled: Arc<AtomicBool>,
    swallowed: mpsc::Receiver<u32>,
    quit: Option<std::os::fd::OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Mount a FUSE filesystem at `at` (in the caller's mount namespace,
    /// which its user namespace must own) and serve it from a thread.
    pub fn mount(at: &Path) -> std::io::Result<Server> {
        let dev = File::options().read(true).write(true).open("/dev/fuse")?;
        let data = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        nix::mount::mount(
            Some("dib-probe"),
            at,
            Some("fuse"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(data.as_str()),
        )?;
        let stalled = Arc::new(AtomicBool::new(false));
        let (tx, swallowed) = mpsc::channel();
        let (quit_rx, quit) = nix::unistd::pipe()?;
        let theirs = stalled.clone();
        let thread = std::thread::spawn(move || serve(dev, &quit_rx, &theirs, &tx));
        Ok(Server {
            stalled,
            swallowed,
            quit: Some(quit),
            thread: Some(thread),
        })
    }

    /// End the connection: the server closes /dev/fuse, and every request
    /// still waiting on it fails (the helper's too). A process must do this
    /// before it exits: its exit closes its files one by one, and closing
    /// one on the stalled filesystem would wait on the server for ever,
    /// /dev/fuse still open further down the list.
    pub fn end(&mut self) {
        drop(self.quit.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stop answering: every request from now on is read and left
    /// unanswered, as a hostile server would (a request read is one the
    /// kernel no longer lets a fatal signal end: its caller waits until the
    /// server answers or the connection ends with this process).
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// The opcodes of the requests left unanswered so far.
    pub fn held(&self) -> Vec<u32> {
        self.swallowed.try_iter().collect()
    }
}

fn serve(
    mut dev: File,
    quit: &std::os::fd::OwnedFd,
    stalled: &AtomicBool,
    swallowed: &mpsc::Sender<u32>,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd as _;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let mut ready = [
            PollFd::new(dev.as_fd(), PollFlags::POLLIN),
            PollFd::new(quit.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut ready, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if ready[1].any().unwrap_or(true) {
            return; // told to end: dropping `dev` ends the connection
        }
        let n = match dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(EINTR) => continue,
            Err(_) => return, // unmounted
        };
        let req = &buf[..n];
        let opcode = u32_at(req, 4);
        let unique = u64_at(req, 8);
        let node = u64_at(req, 16);
        let arg = &req[40..];
        if stalled.load(Ordering::SeqCst) {
            let _ = swallowed.send(opcode);
            continue;
        }
        let reply: Result<Vec<u8>, i32> = match opcode {
            FORGET | BATCH_FORGET | INTERRUPT => continue,
            INIT => Ok(init_out(u32_at(arg, 8))),
            LOOKUP => {
                let name = arg.split(|b| *b == 0).next().unwrap_or_default();
                if node == ROOT && name == b"image" {
                    Ok(entry_out(IMAGE))
                } else {
                    Err(ENOENT)
                }
            }
            GETATTR => match node {
                ROOT | IMAGE => Ok(attr_out(node)),
                _ => Err(ENOENT),
            },
            OPEN | OPENDIR => Ok(open_out()),
            READ => Ok(vec![0; (u32_at(arg, 16) as usize).min(128 << 10)]),
            READDIR => Ok(Vec::new()),
            RELEASE | RELEASEDIR | FLUSH | ACCESS => Ok(Vec::new()),
            STATFS => Ok(statfs_out()),
            GETXATTR | LISTXATTR => Err(ENODATA),
            _ => Err(ENOSYS),
        };
        let (error, body) = match reply {
            Ok(b) => (0, b),
            Err(e) => (-e, Vec::new()),
        };
        let mut out = Vec::with_capacity(16 + body.len());
        out.extend(((16 + body.len()) as u32).to_le_bytes());
        out.extend(error.to_le_bytes());
        out.extend(unique.to_le_bytes());
        out.extend(body);
        let _ = dev.write_all(&out);
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// `struct fuse_init_out`, protocol 7.31, no optional features.
fn init_out(max_readahead: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(7u32.to_le_bytes()); // major
    b.extend(31u32.to_le_bytes()); // minor
    b.extend(max_readahead.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // flags
    b.extend(16u16.to_le_bytes()); // max_background
    b.extend(12u16.to_le_bytes()); // congestion_threshold
    b.extend(4096u32.to_le_bytes()); // max_write
    b.extend(1u32.to_le_bytes()); // time_gran
    b.resize(64, 0); // max_pages, map_alignment, flags2, unused
    b
}

/// `struct fuse_attr` of a node: the root directory or the image, both
/// owned by the namespace's root (the probe's own uid outside it).
fn attr(node: u64) -> Vec<u8> {
    let (size, mode, nlink) = if node == ROOT {
        (0, 0o040755u32, 2u32)
    } else {
        (IMAGE_SIZE, 0o100644, 1)
    };
    let mut b = Vec::new();
    b.extend(node.to_le_bytes()); // ino
    b.extend(size.to_le_bytes());
    b.extend(size.div_ceil(512).to_le_bytes()); // blocks
    b.extend([0u8; 24]); // atime, mtime, ctime
    b.extend([0u8; 12]); // their nanoseconds
    b.extend(mode.to_le_bytes());
    b.extend(nlink.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // uid
    b.extend(0u32.to_le_bytes()); // gid
    b.extend(0u32.to_le_bytes()); // rdev
    b.extend(4096u32.to_le_bytes()); // blksize
    b.extend(0u32.to_le_bytes()); // flags
    b
}

/// `struct fuse_entry_out`: valid for no time at all, so every look at the
/// node asks again.
fn entry_out(node: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(node.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // generation
    b.extend([0u8; 24]); // entry_valid, attr_valid, their nanoseconds
    b.extend(attr(node));
    b
}

/// `struct fuse_attr_out`, valid for no time at all.
fn attr_out(node: u64) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b.extend(attr(node));
    b
}

/// `struct fuse_open_out`.
fn open_out() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(1u64.to_le_bytes()); // fh
    b.extend([0u8; 8]); // open_flags, backing_id
    b
}

/// `struct fuse_statfs_out`.
fn statfs_out() -> Vec<u8> {
    let mut b = Vec::new();
    for v in [IMAGE_SIZE / 4096, 0, 0, 2, 0] {
        b.extend(v.to_le_bytes()); // blocks, bfree, bavail, files, ffree
    }
    for v in [4096u32, 255, 4096] {
        b.extend(v.to_le_bytes()); // bsize, namelen, frsize
    }
    b.resize(80, 0); // padding, spare
    b
}

/// A request's name, by its opcode.
pub fn name(opcode: u32) -> String {
    match opcode {
        LOOKUP => "LOOKUP".into(),
        GETATTR => "GETATTR".into(),
        OPEN => "OPEN".into(),
        READ => "READ".into(),
        STATFS => "STATFS".into(),
        GETXATTR => "GETXATTR".into(),
        other => format!("opcode {other}"),
    }
}
