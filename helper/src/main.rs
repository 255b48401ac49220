//! dib-helper: the small privileged helper for loop devices, partitions,
//! mkfs and mounts (docs/security.md). The main process listens on a Unix
//! socket and decides each peer from its credentials alone (SO_PEERCRED,
//! SO_PEERGROUPS, the allow-list): a refusal is answered at once on the
//! accept loop, without blocking, and never takes a place an allowed peer
//! could have. Each allowed connection is served by a process of its own
//! (`dib-helper __session`, the policy in `dib_helper`, the kernel work in
//! `dib_helper::kernel`), so a connection whose kernel work never ends
//! holds only itself: the main process goes on accepting, and exits at
//! once when told to.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use dib_helper::{kernel, Allow, ControlLedger, Limits, LocalLedger, LogLimit, Loops, Peer};
use dib_helper::{Session, LIMITS};
use dib_sandbox::proto::{self, ErrorKind, Reply};
use rustix::net::{accept_with, bind, listen, SocketAddrUnix, SocketFlags};

/// dib-helper: privileged block-device helper for dib (loop, partitions, mkfs, mounts).
#[derive(Debug, Parser)]
#[command(name = "dib-helper", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve dib clients on a Unix socket (as root).
    Serve {
        /// Socket path to listen on (dib's default: /run/dib-helper.sock).
        #[arg(long, value_name = "PATH", default_value = dib_sandbox::client::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Allow this user to connect (repeatable).
        #[arg(long, value_name = "NAME")]
        allow_user: Vec<String>,
        /// Allow members of this group to connect (repeatable).
        #[arg(long, value_name = "NAME")]
        allow_group: Vec<String>,
        /// Use the listening socket passed by systemd (fd 3) instead of
        /// creating one.
        #[arg(long)]
        systemd: bool,
        /// Seconds a request other than Mkfs may take before the helper
        /// gives up on it and closes its connection.
        #[arg(long, value_name = "SECONDS", default_value_t = LIMITS.step.as_secs(),
              value_parser = clap::value_parser!(u64).range(1..))]
        step_timeout: u64,
        /// Seconds mkfs may run before it is killed.
        #[arg(long, value_name = "SECONDS", default_value_t = LIMITS.mkfs.as_secs(),
              value_parser = clap::value_parser!(u64).range(1..))]
        mkfs_timeout: u64,
    },
    /// Wait until the helper at the socket answers a Hello (exit 0), or
    /// say why it did not within the timeout (exit 1).
    Ping {
        /// The helper's socket.
        #[arg(long, value_name = "PATH", default_value = dib_sandbox::client::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Seconds to keep trying.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        timeout: u64,
    },
    /// One connection's session (started by `serve`, the connection on
    /// stdin, the main process's count of loop devices on stdout).
    #[command(name = "__session", hide = true)]
    Session {
        #[arg(long)]
        parent: u32,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        gid: u32,
        #[arg(long)]
        pid: i32,
        #[arg(long)]
        step_timeout: u64,
        #[arg(long)]
        mkfs_timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            socket,
            allow_user,
            allow_group,
            systemd,
            step_timeout,
            mkfs_timeout,
        } => {
            let limits = limits(step_timeout, mkfs_timeout);
            match serve(&socket, &allow_user, &allow_group, systemd, limits) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dib-helper: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ping { socket, timeout } => {
            match wait_ready(&socket, Duration::from_secs(timeout)) {
                Ok(answer) => {
                    println!("dib-helper at {}: {answer}", socket.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dib-helper: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Session {
            parent,
            uid,
            gid,
            pid,
            step_timeout,
            mkfs_timeout,
        } => {
            let limits = limits(step_timeout, mkfs_timeout);
            let peer = Peer {
                uid,
                gid,
                pid,
                groups: Vec::new(),
            };
            match session(parent, peer, limits) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dib-helper: session of pid {pid} (uid {uid}): {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The limits, with the time limits given in seconds.
fn limits(step: u64, mkfs: u64) -> Limits {
    Limits {
        step: Duration::from_secs(step),
        mkfs: Duration::from_secs(mkfs),
        ..LIMITS
    }
}

/// Connect to `socket` until the helper answers: its Hello, or a refusal
/// of this caller (an answer too: the helper is up, only not for a caller
/// its allow-list leaves out). A helper of another protocol version is not
/// the one wanted: an error at once.
fn wait_ready(socket: &Path, timeout: Duration) -> Result<String, String> {
    use dib_sandbox::client::{Client, ClientError};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = Client::connect_within(socket, Some(left.max(Duration::from_millis(10))));
        match attempt {
            Ok(_) => return Ok(format!("serving protocol version {}", proto::VERSION)),
            Err(ClientError::Refused {
                kind: ErrorKind::Version,
                message,
            }) => {
                return Err(format!(
                    "the helper at {} refused: {message}",
                    socket.display()
                ))
            }
            Err(ClientError::Refused { message, .. }) => {
                return Ok(format!("up, refused: {message}"))
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no answer within {} s: {e}", timeout.as_secs()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Refuse a connection without waiting for anything: the refusal goes out
/// at once (the socket is non-blocking), the connection is shut down (so
/// nothing more can arrive), what the peer already sent is read and
/// dropped (without taking any fds it carried: no receive buffer for
/// them), and it is closed. Reading the queue empty first keeps the close
/// from resetting the connection, which would lose the refusal for a peer
/// whose Hello was already waiting.
fn refuse(conn: OwnedFd, kind: ErrorKind, message: String) {
    let _ = proto::send(&conn, &Reply::Error { kind, message }, &[]);
    let _ = rustix::net::shutdown(&conn, rustix::net::Shutdown::Both);
    let mut buf = [0u8; 512];
    for _ in 0..64 {
        match rustix::net::recv(&conn, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) if n > 0 => continue,
            _ => break,
        }
    }
}

/// The allow-list, its names resolved once, at start.
fn allow_list(users: &[String], groups: &[String]) -> Result<Allow, String> {
    let mut allow = Allow::default();
    for u in users {
        let user = nix::unistd::User::from_name(u)
            .map_err(|e| format!("looking up user {u}: {e}"))?
            .ok_or_else(|| format!("--allow-user {u}: no such user"))?;
        allow.uids.push(user.uid.as_raw());
    }
    for g in groups {
        let group = nix::unistd::Group::from_name(g)
            .map_err(|e| format!("looking up group {g}: {e}"))?
            .ok_or_else(|| format!("--allow-group {g}: no such group"))?;
        allow.gids.push(group.gid.as_raw());
    }
    Ok(allow)
}

/// The users the group database lists as members of the allowed groups.
fn group_members(gids: &[u32]) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for gid in gids {
        let Ok(Some(group)) = nix::unistd::Group::from_gid((*gid).into()) else {
            continue;
        };
        for name in &group.mem {
            if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
                out.insert(u.uid.as_raw());
            }
        }
    }
    out
}

/// How often the group members are read again.
const MEMBERS_REFRESH: Duration = Duration::from_secs(60);
/// Refusals logged per second, at most; the rest are counted.
const REFUSALS_LOGGED: u32 = 10;
/// Connections waiting to be accepted.
const BACKLOG: i32 = 256;

fn serve(
    socket: &Path,
    users: &[String],
    groups: &[String],
    systemd: bool,
    limits: Limits,
) -> Result<(), String> {
    let allow = allow_list(users, groups)?;
    if !rustix::process::geteuid().is_root() {
        return Err("dib-helper must run as root (it attaches loop devices and mounts)".into());
    }
    let listener = if systemd {
        kernel::systemd_listener()?
    } else {
        listen_on(socket)?
    };
    // No fds reach the main process: a connection may pass them only once
    // its session process allows it.
    let refused_fds = kernel::allow_fd_passing(&listener, false)
        .map_err(|e| format!("refusing fds on the socket: {e}"))?;
    kernel::confine()?;
    eprintln!(
        "dib-helper: serving protocol version {} on {}{}",
        proto::VERSION,
        socket.display(),
        if refused_fds {
            ""
        } else {
            " (this kernel cannot refuse fds before a peer is accepted)"
        }
    );
    let members = Arc::new(RwLock::new(group_members(&allow.gids)));
    if !allow.gids.is_empty() {
        let (gids, members) = (allow.gids.clone(), members.clone());
        spawn(move || loop {
            std::thread::sleep(MEMBERS_REFRESH);
            let now = group_members(&gids);
            *members.write().unwrap_or_else(|p| p.into_inner()) = now;
        });
    }
    let loops = Arc::new(Mutex::new(Loops::default()));
    let mut refusals = Refusals(LogLimit::new(REFUSALS_LOGGED, Duration::from_secs(1)));
    loop {
        let mut ready = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let polled = nix::poll::poll(&mut ready, nix::poll::PollTimeout::from(1000u16));
        // The count of a flood that ended.
        if let Some(line) = refusals.0.flush(Instant::now()) {
            eprintln!("{line}");
        }
        if !matches!(polled, Ok(n) if n > 0) {
            continue;
        }
        let conn = match accept_with(&listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(c) => c,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                // Out of fds, say: do not spin.
                eprintln!("dib-helper: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = match kernel::peer_credentials(&conn) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("dib-helper: reading a peer's credentials: {e}");
                continue;
            }
        };
        let allowed = {
            let members = members.read().unwrap_or_else(|p| p.into_inner());
            allow.check(&peer, &members)
        };
        if let Err(message) = allowed {
            refusals.refuse(&peer, conn, ErrorKind::NotAllowed, message);
            continue;
        }
        let serving = Slot::take(&SERVING, MAX_SERVING);
        let user = UserSlot::take(peer.uid);
        let (Some(serving), Some(user)) = (serving, user) else {
            let message = if SERVING.load(Ordering::SeqCst) < MAX_SERVING {
                format!("you have {MAX_PER_USER} connections to dib-helper open, the limit")
            } else {
                format!(
                    "dib-helper is serving {MAX_SERVING} connections, its limit: try again later"
                )
            };
            refusals.refuse(&peer, conn, ErrorKind::Limit, message);
            continue;
        };
        if let Err(message) = start_session(conn, &peer, limits, &loops, (serving, user)) {
            eprintln!(
                "dib-helper: serving pid {} (uid {}): {message}",
                peer.pid, peer.uid
            );
        }
    }
}

/// Refusals, answered at once and logged within a rate limit.
#[derive(Debug)]
struct Refusals(LogLimit);

impl Refusals {
    fn refuse(&mut self, peer: &Peer, conn: OwnedFd, kind: ErrorKind, message: String) {
        for line in self.0.lines(Instant::now(), || {
            format!(
                "dib-helper: refused pid {} (uid {}): {message}",
                peer.pid, peer.uid
            )
        }) {
            eprintln!("{line}");
        }
        refuse(conn, kind, message);
    }
}

/// Start the process that serves `conn`, and a thread that answers its
/// questions about loop devices and, once it is gone, gives back its
/// places.
fn start_session(
    conn: OwnedFd,
    peer: &Peer,
    limits: Limits,
    loops: &Arc<Mutex<Loops>>,
    slots: (Slot, UserSlot),
) -> Result<(), String> {
    rustix::fs::fcntl_setfl(&conn, rustix::fs::OFlags::empty())
        .map_err(|e| format!("making the connection blocking: {e}"))?;
    let (ours, theirs) =
        proto::socket_pair().map_err(|e| format!("a socket for the session: {e}"))?;
    let spare = conn.try_clone().ok();
    let child = Process::new("/proc/self/exe")
        .arg("__session")
        .args(["--parent", &std::process::id().to_string()])
        .args(["--uid", &peer.uid.to_string()])
        .args(["--gid", &peer.gid.to_string()])
        .args(["--pid", &peer.pid.to_string()])
        .args(["--step-timeout", &limits.step.as_secs().to_string()])
        .args(["--mkfs-timeout", &limits.mkfs.as_secs().to_string()])
        .env_clear()
        .env("PATH", dib_sandbox::host_tools::system_path())
        .stdin(Stdio::from(conn))
        .stdout(Stdio::from(theirs))
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let message = format!("dib-helper cannot start a session: {e}");
            if let Some(c) = spare {
                let _ = rustix::fs::fcntl_setfl(&c, rustix::fs::OFlags::NONBLOCK);
                refuse(c, ErrorKind::Failed, message.clone());
            }
            return Err(message);
        }
    };
    drop(spare);
    let mut ledger = LocalLedger {
        loops: loops.clone(),
        uid: peer.uid,
        limit: limits.loops_per_user,
        still_bound: kernel::loop_still_attached,
    };
    let started = std::thread::Builder::new().spawn(move || {
        let (serving, _user) = slots;
        let mut serving = Some(serving);
        // A session stuck in the kernel lingers until the kernel lets it
        // go: meanwhile it takes a place of its user's, not of the
        // helper's, so a user's stalls hold back no one else.
        dib_helper::answer(&ours, &mut ledger, || drop(serving.take()));
        let _ = child.wait();
    });
    started
        .map(|_| ())
        .map_err(|e| format!("starting a thread: {e}"))
}

/// A session process: serve the connection on stdin, asking the main
/// process (on stdout) for loop devices, until the client hangs up or a
/// request runs over its limit; then exit, without waiting for a thread
/// the kernel may hold.
fn session(parent: u32, peer: Peer, limits: Limits) -> Result<(), String> {
    kernel::die_with_parent(parent)?;
    let conn = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("the connection: {e}"))?;
    let control = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("the main process's socket: {e}"))?;
    kernel::allow_fd_passing(&conn, true).map_err(|e| format!("allowing fds: {e}"))?;
    let devices = kernel::Kernel {
        mkfs_timeout: limits.mkfs,
    };
    let report = control
        .try_clone()
        .map_err(|e| format!("the main process's socket: {e}"))?;
    Session::new(devices, ControlLedger::new(control), peer, limits)
        .on_stuck(move || {
            dib_helper::report_stuck(&report);
            std::process::exit(3)
        })
        .serve(&conn);
    std::process::exit(0)
}

/// Connections being served: a budget of the helper's and one per user,
/// so no user fills the helper alone. Refused peers take neither.
static SERVING: AtomicUsize = AtomicUsize::new(0);
const MAX_SERVING: usize = 64;
/// Connections one user may have served at once.
const MAX_PER_USER: usize = 16;
static PER_USER: Mutex<BTreeMap<u32, usize>> = Mutex::new(BTreeMap::new());

/// A place in a budget, given back when dropped (a panicking thread too).
#[derive(Debug)]
struct Slot(&'static AtomicUsize);

impl Slot {
    fn take(budget: &'static AtomicUsize, max: usize) -> Option<Slot> {
        if budget.fetch_add(1, Ordering::SeqCst) >= max {
            budget.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(budget))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A user's place among its connections.
#[derive(Debug)]
struct UserSlot(u32);

impl UserSlot {
    fn take(uid: u32) -> Option<UserSlot> {
        let mut m = PER_USER.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_default();
        if *n >= MAX_PER_USER {
            return None;
        }
        *n += 1;
        Some(UserSlot(uid))
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut m = PER_USER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.0);
            }
        }
    }
}

/// Run `f` on a new thread; if none can be made, the helper goes on.
fn spawn(f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().spawn(f) {
        eprintln!("dib-helper: starting a thread: {e}");
    }
}

/// Room a socket path has (`sun_path`, with its terminating NUL).
const SUN_PATH_MAX: usize = 108;

/// A fresh socket at `path`, connectable by anyone: the peer check
/// decides who is served. The path appears only once the socket accepts:
/// it is bound and listening under a temporary name in the same directory
/// first, then renamed into place (which also replaces an old socket
/// there), so a client that sees a new helper's path is answered. The
/// directory must not let others replace what is in it (writable by others
/// only with the sticky bit, as /tmp), or a client could be answered by
/// another user's socket.
fn listen_on(path: &Path) -> Result<OwnedFd, String> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let err = |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(md) if !md.file_type().is_socket_like() => {
            return Err(format!("{} exists and is not a socket", path.display()))
        }
        _ => {}
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{} is not a socket path", path.display()));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let md = std::fs::metadata(dir)
        .map_err(|e| format!("the socket's directory {}: {e}", dir.display()))?;
    let mode = md.permissions().mode();
    if md.uid() != 0 || (mode & 0o022 != 0 && mode & 0o1000 == 0) {
        return Err(format!(
            "{}: other users can replace files in {} (owner uid {}, mode {:o}): \
             put the socket in a root-owned directory that only root can write, such as /run",
            path.display(),
            dir.display(),
            md.uid(),
            mode & 0o7777
        ));
    }
    // A name no one can guess in advance (a sticky /tmp lets anyone take
    // a predictable one first).
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.new", uuid::Uuid::new_v4().simple()));
    let tmp = dir.join(tmp_name);
    if tmp.as_os_str().as_bytes().len() >= SUN_PATH_MAX {
        return Err(format!(
            "the socket path {} is too long: dib-helper needs {} bytes more than it for a \
             temporary name, and a socket path has at most {} (choose a shorter --socket)",
            path.display(),
            tmp.as_os_str().len() - path.as_os_str().len(),
            SUN_PATH_MAX - 1
        ));
    }
    let sock = proto::socket().map_err(|e| err("creating a socket for", &e))?;
    let addr = SocketAddrUnix::new(&tmp).map_err(|e| err("socket path", &e))?;
    // Connectable by anyone (mode 0666) from the start: no chmod by path
    // afterwards, which a symlink swapped in could redirect.
    let old = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o111));
    let bound = bind(&sock, &addr);
    rustix::process::umask(old);
    bound.map_err(|e| err("binding", &e))?;
    // Refusing fds from the start: before any peer can connect.
    let ready = kernel::allow_fd_passing(&sock, false)
        .map_err(|e| err("refusing fds on", &e))
        .and_then(|_| listen(&sock, BACKLOG).map_err(|e| err("listening on", &e)))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| err("moving the socket to", &e)));
    if let Err(e) = ready {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(sock)
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt as _;
        self.is_socket()
    }
}
