//! The box every hook of a build runs in.
//!
//! pid 1 keeps its own view of the host (it writes outputs and caches). A
//! hook gets a second view, made once per [`BoxSpec`] by a short-lived child
//! of pid 1 (the *maker*):
//!
//! 1. a private mount namespace with a copy of pid 1's whole tree, every
//!    mount of it read-only;
//! 2. over that, the masks (a fresh tmpfs, or a directory of the build
//!    bound read-write) that hide other builds and the host's scratch space;
//! 3. then, by depth, what the build may see under a mask (read-only), the
//!    overlays whose writes land in the build directory, and what it may
//!    write (the build directory itself, declared cache directories);
//! 4. `pivot_root` into that tree, the old root detached, so no path leads
//!    back to pid 1's view;
//! 5. a new user namespace (the identity of pid 1's ids) with a new mount
//!    namespace (and a new network namespace with only loopback when the
//!    box has no network). Every mount copied into a namespace owned by a
//!    less privileged user namespace is locked: a hook, root in the box,
//!    can neither unmount nor remount what the box is made of, nor clear a
//!    read-only flag.
//!
//! pid 1 keeps the namespaces as descriptors and the maker exits. A hook
//! enters them between fork and exec ([`BuildBox::enter`]), which costs a
//! few system calls, then gets `no_new_privs` and the seccomp filter. pid 1
//! is not dumpable ([`crate::init::become_init`]), so a hook cannot reach
//! it through `/proc/1/root`, `/proc/1/fd` or ptrace: those need
//! `CAP_SYS_PTRACE` in pid 1's user namespace, which a hook never has.
#![allow(unsafe_code)] // fork, setns, pivot_root and the new mount API; each block says why

use std::ffi::CString;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::ns::SandboxError;
use crate::seccomp::Filter;

/// One path of the box and what goes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The host's directory or file, read-only (for what a mask hides).
    Readable(PathBuf),
    /// The host's directory, read-write, with what is mounted under it.
    Writable(PathBuf),
    /// The host's directory `from`, read-write, shown at `at`.
    WritableFrom { at: PathBuf, from: PathBuf },
    /// An overlay over the host's directory `at`: reads see it, writes and
    /// new files land in `upper` (with `work`, its overlayfs work
    /// directory, on the same file system).
    Overlay {
        at: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
}

impl Placement {
    pub fn path(&self) -> &Path {
        match self {
            Placement::Readable(p) | Placement::Writable(p) => p,
            Placement::Overlay { at, .. } | Placement::WritableFrom { at, .. } => at,
        }
    }
}

/// What hides a host directory in the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// An empty tmpfs (mode 1777 for `/tmp`-like directories, else 0755).
    Tmpfs { at: PathBuf, mode: u32 },
    /// A directory of the build, bound read-write at `at`.
    Dir { at: PathBuf, from: PathBuf },
}

impl Mask {
    pub fn path(&self) -> &Path {
        match self {
            Mask::Tmpfs { at, .. } | Mask::Dir { at, .. } => at,
        }
    }
}

/// The view a box gives. Paths are absolute and as pid 1 sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxSpec {
    /// An empty directory, on a mount of the build's own, where the box's
    /// tree is put together (pid 1 makes it).
    pub assembly: PathBuf,
    pub masks: Vec<Mask>,
    pub placements: Vec<Placement>,
    /// Whether the box shares the host's network. Without, it has a
    /// loopback interface of its own and nothing else.
    pub network: bool,
}

/// A box's namespaces, held by pid 1; hooks enter them.
#[derive(Debug, Clone)]
pub struct BuildBox {
    inner: Arc<Namespaces>,
}

#[derive(Debug)]
struct Namespaces {
    user: OwnedFd,
    mnt: OwnedFd,
    net: Option<OwnedFd>,
}

/// Where a command starts in the box.
#[derive(Debug, Clone)]
pub enum Start {
    /// In this directory.
    Dir(PathBuf),
    /// Chrooted into this directory, at its `/`.
    Chroot(PathBuf),
}

fn cstr(p: &Path) -> Result<CString, SandboxError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SandboxError::Io {
        what: format!("the path {} contains a NUL byte", p.display()),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// `assembly` + `p` (absolute).
fn under(assembly: &Path, p: &Path) -> PathBuf {
    assembly.join(p.strip_prefix("/").unwrap_or(p))
}

/// One step of the maker, with everything it needs allocated up front.
#[derive(Debug)]
enum Op {
    /// open_tree(OPEN_TREE_CLONE [| AT_RECURSIVE]) of `path` into `slot`.
    Clone {
        path: CString,
        slot: usize,
        recursive: bool,
    },
    /// move_mount of `slot` to `at`.
    Attach {
        slot: usize,
        at: CString,
    },
    /// mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE) at `at`.
    ReadOnly {
        at: CString,
    },
    Tmpfs {
        at: CString,
        data: CString,
    },
    Overlay {
        at: CString,
        data: CString,
    },
    /// A mount point: a directory (EEXIST is fine) or a file.
    Mkdir {
        path: CString,
    },
    Touch {
        path: CString,
    },
    /// chdir, pivot_root(".", "."), detach the old root, chdir("/").
    Pivot {
        root: CString,
    },
}

/// What the maker does, step by step, and a name for each step's error.
#[derive(Debug)]
struct Program {
    ops: Vec<Op>,
    what: Vec<String>,
    slots: usize,
    network: bool,
}

impl Program {
    fn push(&mut self, op: Op, what: String) {
        self.ops.push(op);
        self.what.push(what);
    }

    /// The mount points from `assembly` down to `path`, made if missing.
    fn mount_point(&mut self, assembly: &Path, path: &Path, dir: bool) -> Result<(), SandboxError> {
        let target = under(assembly, path);
        let mut ancestors: Vec<&Path> = target
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(assembly) && *a != assembly)
            .collect();
        ancestors.reverse();
        for a in ancestors {
            self.push(
                Op::Mkdir { path: cstr(a)? },
                format!("making {} in the box", a.display()),
            );
        }
        let c = cstr(&target)?;
        let what = format!("making {} in the box", target.display());
        if dir {
            self.push(Op::Mkdir { path: c }, what);
        } else {
            self.push(Op::Touch { path: c }, what);
        }
        Ok(())
    }

    fn new(spec: &BoxSpec) -> Result<Program, SandboxError> {
        let a = &spec.assembly;
        let mut p = Program {
            ops: Vec::new(),
            what: Vec::new(),
            slots: 0,
            network: spec.network,
        };
        // Every source is cloned before anything is mounted, so no clone
        // holds part of the box being assembled.
        let clone = |p: &mut Program, path: &Path, recursive: bool| {
            let slot = p.slots;
            p.slots += 1;
            let c = cstr(path)?;
            p.push(
                Op::Clone {
                    path: c,
                    slot,
                    recursive,
                },
                format!("taking {} into the box", path.display()),
            );
            Ok::<usize, SandboxError>(slot)
        };
        let root_slot = clone(&mut p, Path::new("/"), true)?;
        let mut mask_slots = Vec::new();
        for m in &spec.masks {
            mask_slots.push(match m {
                Mask::Dir { from, .. } => Some(clone(&mut p, from, false)?),
                Mask::Tmpfs { .. } => None,
            });
        }
        let mut placed: Vec<&Placement> = spec.placements.iter().collect();
        placed.sort_by_key(|pl| pl.path().components().count());
        let mut place_slots = Vec::new();
        for pl in &placed {
            place_slots.push(match pl {
                Placement::Readable(path)
                | Placement::Writable(path)
                | Placement::WritableFrom { from: path, .. } => Some(clone(&mut p, path, true)?),
                Placement::Overlay { .. } => None,
            });
        }
        let root = cstr(a)?;
        p.push(
            Op::Attach {
                slot: root_slot,
                at: root.clone(),
            },
            "mounting the host's tree in the box".into(),
        );
        p.push(
            Op::ReadOnly { at: root.clone() },
            "making the box's view of the host read-only".into(),
        );
        // Shallow before deep; at one depth, masks first.
        enum Item<'s> {
            Mask(&'s Mask, Option<usize>),
            Place(&'s Placement, Option<usize>),
        }
        let mut items: Vec<Item> = spec
            .masks
            .iter()
            .zip(mask_slots)
            .map(|(m, s)| Item::Mask(m, s))
            .chain(
                placed
                    .into_iter()
                    .zip(place_slots)
                    .map(|(pl, s)| Item::Place(pl, s)),
            )
            .collect();
        items.sort_by_key(|i| match i {
            Item::Mask(m, _) => m.path().components().count(),
            Item::Place(pl, _) => pl.path().components().count(),
        });
        for item in items {
            match item {
                Item::Mask(m, slot) => {
                    let at = under(a, m.path());
                    p.mount_point(a, m.path(), true)?;
                    let c = cstr(&at)?;
                    match (m, slot) {
                        (Mask::Tmpfs { mode, .. }, _) => p.push(
                            Op::Tmpfs {
                                at: c,
                                data: CString::new(format!("mode={mode:o},size=50%"))
                                    .unwrap_or_default(),
                            },
                            format!("hiding {} in the box", m.path().display()),
                        ),
                        (Mask::Dir { .. }, Some(slot)) => p.push(
                            Op::Attach { slot, at: c },
                            format!("hiding {} in the box", m.path().display()),
                        ),
                        (Mask::Dir { .. }, None) => {}
                    }
                }
                Item::Place(pl, slot) => {
                    let path = pl.path();
                    let at = under(a, path);
                    let is_dir = match pl {
                        Placement::Readable(p) => {
                            std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(true)
                        }
                        _ => true,
                    };
                    p.mount_point(a, path, is_dir)?;
                    let c = cstr(&at)?;
                    match (pl, slot) {
                        (Placement::Readable(_), Some(slot)) => {
                            p.push(
                                Op::Attach {
                                    slot,
                                    at: c.clone(),
                                },
                                format!("showing {} in the box", path.display()),
                            );
                            p.push(
                                Op::ReadOnly { at: c },
                                format!("making {} read-only in the box", path.display()),
                            );
                        }
                        (Placement::Writable(_) | Placement::WritableFrom { .. }, Some(slot)) => p
                            .push(
                                Op::Attach { slot, at: c },
                                format!("showing {} writable in the box", path.display()),
                            ),
                        (Placement::Overlay { at, upper, work }, _) => {
                            let esc = |p: &Path| {
                                p.display()
                                    .to_string()
                                    .replace('\\', "\\\\")
                                    .replace(',', "\\,")
                                    .replace(':', "\\:")
                            };
                            let data = format!(
                                "lowerdir={},upperdir={},workdir={},userxattr",
                                esc(at),
                                esc(upper),
                                esc(work)
                            );
                            p.push(
                                Op::Overlay {
                                    at: c,
                                    data: cstr(Path::new(&data))?,
                                },
                                format!(
                                    "putting an overlay on {} in the box (writes go to {})",
                                    at.display(),
                                    upper.display()
                                ),
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        p.push(Op::Pivot { root }, "entering the box's root".into());
        Ok(p)
    }
}

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// In the forked maker: run the program. Returns the failing step's index
/// and errno. Only system calls on data allocated before the fork.
fn run_ops(p: &Program, slots: &mut [RawFd]) -> Result<(), (usize, i32)> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: every call below is a plain system call on C strings and
    // descriptors made before the fork (or by this loop); nothing allocates
    // or takes a lock, so this is sound in the child of a threaded process.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err((usize::MAX, errno()));
        }
        for (i, op) in p.ops.iter().enumerate() {
            let r: libc::c_long = match op {
                Op::Clone {
                    path,
                    slot,
                    recursive,
                } => {
                    let flags = OPEN_TREE_CLONE
                        | libc::O_CLOEXEC as libc::c_uint
                        | if *recursive {
                            libc::AT_RECURSIVE as libc::c_uint
                        } else {
                            0
                        };
                    let fd =
                        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags);
                    if fd >= 0 {
                        slots[*slot] = fd as RawFd;
                    }
                    fd
                }
                Op::Attach { slot, at } => libc::syscall(
                    libc::SYS_move_mount,
                    slots[*slot],
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    at.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ),
                Op::ReadOnly { at } => {
                    let attr = MountAttr {
                        attr_set: MOUNT_ATTR_RDONLY,
                        attr_clr: 0,
                        propagation: 0,
                        userns_fd: 0,
                    };
                    libc::syscall(
                        libc::SYS_mount_setattr,
                        libc::AT_FDCWD,
                        at.as_ptr(),
                        libc::AT_RECURSIVE as libc::c_uint,
                        &attr as *const MountAttr,
                        std::mem::size_of::<MountAttr>(),
                    )
                }
                Op::Tmpfs { at, data } => libc::mount(
                    c"tmpfs".as_ptr(),
                    at.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                ) as libc::c_long,
                Op::Overlay { at, data } => libc::mount(
                    c"overlay".as_ptr(),
                    at.as_ptr(),
                    c"overlay".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                ) as libc::c_long,
                Op::Mkdir { path } => {
                    if libc::mkdir(path.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                        -1
                    } else {
                        0
                    }
                }
                Op::Touch { path }
                    if libc::faccessat(
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::F_OK,
                        libc::AT_SYMLINK_NOFOLLOW,
                    ) == 0 =>
                {
                    // Already there (a file, a socket, ...).
                    0
                }
                Op::Touch { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                        0
                    } else {
                        -1
                    }
                }
                Op::Pivot { root } => {
                    if libc::chdir(root.as_ptr()) != 0
                        || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
                        || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
                        || libc::chdir(c"/".as_ptr()) != 0
                    {
                        -1
                    } else {
                        0
                    }
                }
            };
            if r < 0 {
                return Err((i, errno()));
            }
        }
        for fd in slots.iter() {
            if *fd >= 0 {
                libc::close(*fd);
            }
        }
        let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS;
        if !p.network {
            flags |= libc::CLONE_NEWNET;
        }
        if libc::unshare(flags) != 0 {
            return Err((p.ops.len(), errno()));
        }
        if !p.network && loopback_up().is_err() {
            return Err((p.ops.len() + 1, errno()));
        }
    }
    Ok(())
}

/// Bring up `lo` in this (new) network namespace.
fn loopback_up() -> Result<(), ()> {
    // SAFETY: socket, ioctl on a stack `ifreq` and close; no allocation.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, b) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *b as libc::c_char;
        }
        let mut ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0;
        if ok {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == 0;
        }
        libc::close(s);
        if ok {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// How long pid 1 waits for a maker (a path on a stuck network file system
/// would otherwise stall the build).
const MAKER_TIMEOUT_MS: i32 = 30_000;

impl BuildBox {
    /// Make the box `spec` describes. The caller is pid 1 of a build (its
    /// user namespace's ids are mapped into the box one to one).
    pub fn create(spec: &BoxSpec) -> Result<BuildBox, SandboxError> {
        let program = Program::new(spec)?;
        let mut slots: Vec<RawFd> = vec![-1; program.slots];
        let uid_map = identity_map("/proc/self/uid_map")?;
        let gid_map = identity_map("/proc/self/gid_map")?;
        let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_error("creating the box's pipe", e.into()))?;
        let status_w_raw = status_w.as_raw_fd();
        // SAFETY: the child runs only `run_ops` (system calls on data made
        // above), write and _exit; it never returns into Rust code that
        // could take a lock another thread held at the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io_error(
                "starting the box's maker",
                io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            let msg: [i32; 2] = match run_ops(&program, &mut slots) {
                Ok(()) => [-1, 0],
                Err((i, e)) => [i as i32, e],
            };
            // SAFETY: write of a stack buffer, then pause until pid 1 has
            // taken the namespaces and kills this process.
            unsafe {
                libc::write(
                    status_w_raw,
                    msg.as_ptr().cast(),
                    std::mem::size_of_val(&msg),
                );
                loop {
                    libc::pause();
                }
            }
        }
        drop(status_w);
        let result = Self::adopt(pid, status_r, &program, &uid_map, &gid_map);
        // SAFETY: kill and waitpid of the child this function forked.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        result
    }

    /// In pid 1: wait for the maker, map its ids, take its namespaces.
    fn adopt(
        pid: libc::pid_t,
        status: OwnedFd,
        program: &Program,
        uid_map: &str,
        gid_map: &str,
    ) -> Result<BuildBox, SandboxError> {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&status),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::from(MAKER_TIMEOUT_MS as u16),
        )
        .map_err(|e| io_error("waiting for the box", e.into()))?;
        if ready == 0 {
            return Err(io_error(
                "making the build's box",
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer in 30 s (is a path of the box on a file system that does not answer?)",
                ),
            ));
        }
        let mut buf = [0u8; 8];
        let mut f = std::fs::File::from(status);
        f.read_exact(&mut buf)
            .map_err(|e| io_error("reading the box maker's status", e))?;
        let step = i32::from_ne_bytes(buf[0..4].try_into().unwrap_or_default());
        let errno = i32::from_ne_bytes(buf[4..8].try_into().unwrap_or_default());
        if step >= 0 {
            let what = match step as usize {
                i if i < program.what.len() => program.what[i].clone(),
                i if i == program.ops.len() => "making the box's user namespace".into(),
                _ => "bringing up the box's loopback interface".into(),
            };
            return Err(io_error(&what, io::Error::from_raw_os_error(errno)));
        } else if errno != 0 {
            return Err(io_error(
                "making the box's mount namespace",
                io::Error::from_raw_os_error(errno),
            ));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)
            .map_err(|e| io_error("writing the box's uid map", e))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)
            .map_err(|e| io_error("writing the box's gid map", e))?;
        let open = |ns: &str| {
            std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
                .map(OwnedFd::from)
                .map_err(|e| io_error(&format!("opening the box's {ns} namespace"), e))
        };
        Ok(BuildBox {
            inner: Arc::new(Namespaces {
                user: open("user")?,
                mnt: open("mnt")?,
                net: if program.network {
                    None
                } else {
                    Some(open("net")?)
                },
            }),
        })
    }

    /// Make `cmd` run in the box, starting at `start`, with no_new_privs
    /// and `filter`; with `linux32`, under the 32-bit personality (`uname
    /// -m` says i686, as on an i386 system, for an i386 tree on an amd64
    /// kernel). Replaces any working directory set on `cmd`.
    pub fn enter(
        &self,
        cmd: &mut Command,
        start: &Start,
        filter: Arc<Filter>,
        linux32: bool,
    ) -> Result<(), SandboxError> {
        let (dir, chroot) = match start {
            Start::Dir(d) => (cstr(d)?, false),
            Start::Chroot(d) => (cstr(d)?, true),
        };
        let ns = self.inner.clone();
        // SAFETY: between fork and exec: setns, chroot, chdir, personality,
        // prctl and seccomp on descriptors and strings made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if linux32 && libc::personality(PER_LINUX32) == -1 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setns(ns.user.as_raw_fd(), libc::CLONE_NEWUSER) != 0
                    || libc::setns(ns.mnt.as_raw_fd(), libc::CLONE_NEWNS) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if let Some(net) = &ns.net {
                    if libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if chroot {
                    if libc::chroot(dir.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::chdir(dir.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                filter.install()
            });
        }
        Ok(())
    }
}

/// `PER_LINUX32` (linux/personality.h), which libc does not have.
const PER_LINUX32: libc::c_ulong = 0x0008;

/// The lines of `/proc/self/[ug]id_map`, each range mapped to itself.
fn identity_map(file: &str) -> Result<String, SandboxError> {
    let text =
        std::fs::read_to_string(file).map_err(|e| io_error(&format!("reading {file}"), e))?;
    let mut out = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [inner, _outer, count] = f[..] {
            out.push_str(&format!("{inner} {inner} {count}\n"));
        }
    }
    Ok(out)
}

fn io_error(what: &str, source: io::Error) -> SandboxError {
    SandboxError::Io {
        what: what.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_clones_first_and_pivots_last() {
        let spec = BoxSpec {
            assembly: "/b/.box".into(),
            masks: vec![
                Mask::Dir {
                    at: "/tmp".into(),
                    from: "/b/.tmp".into(),
                },
                Mask::Tmpfs {
                    at: "/t/x".into(),
                    mode: 0o1777,
                },
            ],
            placements: vec![
                Placement::Writable("/tmp/dib_build.1/sub".into()),
                Placement::Writable("/tmp/dib_build.1".into()),
                Placement::Readable("/tmp/named".into()),
            ],
            network: true,
        };
        let p = Program::new(&spec).unwrap();
        let kinds: Vec<String> = p
            .ops
            .iter()
            .map(|o| {
                format!("{o:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let first_non_clone = kinds.iter().position(|k| k != "Clone").unwrap();
        assert!(kinds[first_non_clone..].iter().all(|k| k != "Clone"));
        assert_eq!(kinds.last().unwrap(), "Pivot");
        assert_eq!(p.slots, 5);
        // Shallow placements come before deep ones.
        let attaches: Vec<String> = p
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Attach { at, .. } => Some(at.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(
            attaches,
            [
                "/b/.box",
                "/b/.box/tmp",
                "/b/.box/tmp/dib_build.1",
                "/b/.box/tmp/named",
                "/b/.box/tmp/dib_build.1/sub"
            ]
        );
    }

    #[test]
    fn identity_maps_keep_the_inner_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("map");
        std::fs::write(
            &f,
            "         0       1000          1\n         1     100000      65536\n",
        )
        .unwrap();
        assert_eq!(
            identity_map(f.to_str().unwrap()).unwrap(),
            "0 0 1\n1 1 65536\n"
        );
    }
}
