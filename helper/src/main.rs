//! dib-helper: the small privileged helper for loop devices, partitions,
//! mkfs and mounts (docs/security.md). It listens on a Unix socket, checks
//! each peer (SO_PEERCRED) against `--allow-user` and `--allow-group`, and
//! serves each connection on its own thread; the policy lives in
//! `dib_helper`, the kernel work in `dib_helper::kernel`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use dib_helper::{kernel, Allow, Peer, Session, LIMITS};
use dib_sandbox::proto::{self, ErrorKind, Reply};
use rustix::net::{accept_with, bind, listen, sockopt, SocketAddrUnix, SocketFlags};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            socket,
            allow_user,
            allow_group,
            systemd,
        } => match serve(&socket, &allow_user, &allow_group, systemd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dib-helper: error: {e}");
                ExitCode::FAILURE
            }
        },
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

/// How long a refused peer has to send its Hello.
const REFUSE_WAIT: Duration = Duration::from_secs(2);

/// Answer the peer's first packet (its Hello) with the refusal, then hang
/// up: replying before reading would reset the connection under the
/// client's Hello, and the client would never see why.
fn refuse(conn: &OwnedFd, kind: ErrorKind, message: String) {
    let _ =
        sockopt::set_socket_timeout(conn, rustix::net::sockopt::Timeout::Recv, Some(REFUSE_WAIT));
    let _ = proto::recv::<proto::Request>(conn);
    let _ = proto::send(conn, &Reply::Error { kind, message }, &[]);
}

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

fn serve(socket: &Path, users: &[String], groups: &[String], systemd: bool) -> Result<(), String> {
    let allow = allow_list(users, groups)?;
    if !rustix::process::geteuid().is_root() {
        return Err("dib-helper must run as root (it attaches loop devices and mounts)".into());
    }
    let listener = if systemd {
        kernel::systemd_listener()?
    } else {
        listen_on(socket)?
    };
    kernel::confine()?;
    eprintln!(
        "dib-helper: serving protocol version {} on {}",
        proto::VERSION,
        socket.display()
    );
    let allow = std::sync::Arc::new(allow);
    loop {
        let conn = match accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(e) => {
                // Out of fds, say: do not spin.
                eprintln!("dib-helper: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = match sockopt::socket_peercred(&conn) {
            Ok(c) => Peer {
                uid: c.uid.as_raw(),
                gid: c.gid.as_raw(),
                pid: c.pid.as_raw_nonzero().get(),
            },
            Err(e) => {
                eprintln!("dib-helper: reading a peer's credentials: {e}");
                continue;
            }
        };
        if allow_fast(&allow, &peer) {
            start_session(conn, peer);
            continue;
        }
        // Group membership needs user and group lookups (NSS: maybe LDAP),
        // which must not hold up the accept loop: a thread from a small
        // pool of its own, so peers who are refused never take the slots
        // of those who are served.
        let Some(slot) = Slot::take(&CHECKING, MAX_CHECKING) else {
            continue; // a flood: no thread, no answer
        };
        let allow = allow.clone();
        spawn(move || {
            let _slot = slot;
            match allow.check(&peer) {
                Ok(()) => {
                    ALLOWED_BY_GROUP
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(peer.uid, Instant::now());
                    start_session(conn, peer);
                }
                Err(message) => {
                    eprintln!(
                        "dib-helper: refused pid {} (uid {}): {message}",
                        peer.pid, peer.uid
                    );
                    refuse(&conn, ErrorKind::NotAllowed, message);
                }
            }
        });
    }
}

/// Connections being served, and refusals being answered: separate
/// budgets, so refused peers cannot crowd out allowed ones.
static SERVING: AtomicUsize = AtomicUsize::new(0);
static CHECKING: AtomicUsize = AtomicUsize::new(0);
const MAX_SERVING: usize = 64;
const MAX_CHECKING: usize = 16;
/// Connections one user may have served at once.
const MAX_PER_USER: usize = 16;
static PER_USER: Mutex<BTreeMap<u32, usize>> = Mutex::new(BTreeMap::new());
/// Users a group let in lately, so their next connections skip the lookup.
static ALLOWED_BY_GROUP: Mutex<BTreeMap<u32, Instant>> = Mutex::new(BTreeMap::new());
const GROUP_CACHE: Duration = Duration::from_secs(60);

/// Root, a listed user, or one a group let in within the last minute.
fn allow_fast(allow: &Allow, peer: &Peer) -> bool {
    allow.lists(peer.uid)
        || ALLOWED_BY_GROUP
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer.uid)
            .is_some_and(|t| t.elapsed() < GROUP_CACHE)
}

/// A place in a budget, given back when dropped (a panicking session too).
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

/// Serve an allowed peer on a thread of its own, within the budgets, or
/// tell it the helper is full.
fn start_session(conn: OwnedFd, peer: Peer) {
    let slots = Slot::take(&SERVING, MAX_SERVING).map(|s| (s, UserSlot::take(peer.uid)));
    match slots {
        Some((serving, Some(user))) => spawn(move || {
            let _slots = (serving, user);
            Session::new(kernel::Kernel, peer, LIMITS).serve(&conn);
        }),
        full => {
            let message = if full.is_some() {
                format!("you have {MAX_PER_USER} connections to dib-helper open, the limit")
            } else {
                format!(
                    "dib-helper is serving {MAX_SERVING} connections, its limit: try again later"
                )
            };
            drop(full);
            if let Some(slot) = Slot::take(&CHECKING, MAX_CHECKING) {
                spawn(move || {
                    let _slot = slot;
                    refuse(&conn, ErrorKind::Limit, message);
                });
            }
        }
    }
}

/// Run `f` on a new thread; if none can be made, `f` is dropped (with the
/// connection and slots it holds) and the helper goes on.
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
    let ready = listen(&sock, 64)
        .map_err(|e| err("listening on", &e))
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
