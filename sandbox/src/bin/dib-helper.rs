//! dib-helper: the small privileged helper for loop devices, partitions,
//! mkfs and mounts (docs/security.md). It listens on a Unix socket, checks
//! each peer (SO_PEERCRED) against `--allow-user` and `--allow-group`, and
//! serves each connection on its own thread; the policy lives in
//! `dib_sandbox::helper`, the kernel work in `dib_sandbox::helper::kernel`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use dib_sandbox::helper::{kernel, Allow, Peer, Session, LIMITS};
use dib_sandbox::proto::{self, ErrorKind, Reply};
use rustix::net::{
    accept_with, bind, listen, socket_with, sockopt, AddressFamily, SocketAddrUnix, SocketFlags,
    SocketType,
};

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
    }
}

/// Connections served at once, and refused ones being answered.
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
const MAX_CONNECTIONS: usize = 64;
const MAX_REFUSING: usize = 16;
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
    loop {
        let conn = match accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("dib-helper: accept: {e}");
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
        let refusal = match allow.check(&peer) {
            Err(message) => {
                eprintln!(
                    "dib-helper: refused pid {} (uid {}): {message}",
                    peer.pid, peer.uid
                );
                Some((ErrorKind::NotAllowed, message))
            }
            Ok(()) if CONNECTIONS.load(Ordering::SeqCst) >= MAX_CONNECTIONS => Some((
                ErrorKind::Limit,
                format!("dib-helper is serving {MAX_CONNECTIONS} connections, its limit: try again later"),
            )),
            Ok(()) => None,
        };
        if CONNECTIONS.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS + MAX_REFUSING {
            // A flood: no thread, no answer.
            CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        if let Some((kind, message)) = refusal {
            std::thread::spawn(move || {
                refuse(&conn, kind, message);
                CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
            });
            continue;
        }
        std::thread::spawn(move || {
            Session::new(kernel::Kernel, peer, LIMITS).serve(&conn);
            CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A fresh socket at `path`, connectable by anyone: the peer check
/// decides who is served.
fn listen_on(path: &Path) -> Result<OwnedFd, String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket_like() => {
            std::fs::remove_file(path).map_err(|e| err("removing the old socket", &e))?
        }
        Ok(_) => return Err(format!("{} exists and is not a socket", path.display())),
        Err(_) => {}
    }
    let sock = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| err("creating a socket for", &e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| err("socket path", &e))?;
    bind(&sock, &addr).map_err(|e| err("binding", &e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| err("chmod", &e))?;
    listen(&sock, 64).map_err(|e| err("listening on", &e))?;
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
