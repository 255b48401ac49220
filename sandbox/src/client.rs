//! dib's end of the helper protocol: one typed method per request, an
//! unexpected reply an error naming what was expected.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{connect, sockopt, SocketAddrUnix};

use crate::mkfs::{FsType, MkfsSpec};
use crate::proto::{self, ErrorKind, Handle, ProtoError, Reply, Request};
use crate::table::Table;

/// Where dib looks for the helper when `DIB_HELPER_SOCKET` is not set.
pub const DEFAULT_SOCKET: &str = "/run/dib-helper.sock";
/// The environment variable naming the helper's socket.
pub const SOCKET_ENV: &str = "DIB_HELPER_SOCKET";

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to dib-helper at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dib-helper refused: {message}")]
    Refused { kind: ErrorKind, message: String },
    #[error("dib-helper answered {got} where {expected} was expected")]
    Unexpected { expected: &'static str, got: String },
    #[error("talking to dib-helper: {0}")]
    Proto(#[from] ProtoError),
}

impl ClientError {
    /// The helper's error kind, when it refused.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Refused { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// The socket path: `DIB_HELPER_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// A connection to dib-helper, greeted. Dropping it hangs up, and the
/// helper then detaches whatever this connection attached.
#[derive(Debug)]
pub struct Client {
    sock: OwnedFd,
}

impl Client {
    /// Connect to the helper at `path` and exchange `Hello`s.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        Self::connect_within(path, None)
    }

    /// [`Client::connect`], each send and receive of the connection given
    /// up after `timeout` (`None`: waiting as long as it takes), so a
    /// helper that never accepts or never answers is an error, not a hang.
    pub fn connect_within(path: &Path, timeout: Option<Duration>) -> Result<Client, ClientError> {
        let err = |source: std::io::Error| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let sock = proto::socket().map_err(|e| err(e.into()))?;
        if let Some(t) = timeout {
            for which in [sockopt::Timeout::Recv, sockopt::Timeout::Send] {
                sockopt::set_socket_timeout(&sock, which, Some(t)).map_err(|e| err(e.into()))?;
            }
        }
        let addr = SocketAddrUnix::new(path).map_err(|e| err(e.into()))?;
        connect(&sock, &addr).map_err(|e| err(e.into()))?;
        Self::greet(sock)
    }

    /// Speak the protocol over an already connected socket.
    pub fn greet(sock: OwnedFd) -> Result<Client, ClientError> {
        let c = Client { sock };
        match c.call(
            &Request::Hello {
                version: proto::VERSION,
            },
            &[],
        )? {
            (Reply::Hello { version }, _) if version == proto::VERSION => Ok(c),
            (other, _) => Err(unexpected("Hello", other)),
        }
    }

    fn call(
        &self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
        if let Err(e) = proto::send(&self.sock, req, fds) {
            // A helper that refused the connection said why, then hung up.
            return match proto::recv::<Reply>(&self.sock) {
                Ok((Reply::Error { kind, message }, _)) => {
                    Err(ClientError::Refused { kind, message })
                }
                _ => Err(e.into()),
            };
        }
        let (reply, fds) = proto::recv::<Reply>(&self.sock)?;
        if let Reply::Error { kind, message } = reply {
            return Err(ClientError::Refused { kind, message });
        }
        Ok((reply, fds))
    }

    /// Attach `image` (a file dib opened) to a loop device: its handle,
    /// device name and size.
    pub fn attach_loop(
        &self,
        image: BorrowedFd<'_>,
        read_only: bool,
    ) -> Result<(Handle, String, u64), ClientError> {
        match self.call(&Request::AttachLoop { read_only }, &[image])? {
            (
                Reply::LoopAttached {
                    handle,
                    device,
                    size,
                },
                _,
            ) => Ok((handle, device, size)),
            (other, _) => Err(unexpected("LoopAttached", other)),
        }
    }

    /// Write `table` and make its partition devices: their names.
    pub fn write_partitions(
        &self,
        handle: Handle,
        table: &Table,
    ) -> Result<Vec<String>, ClientError> {
        let req = Request::WritePartitions {
            handle,
            table: table.clone(),
        };
        match self.call(&req, &[])? {
            (Reply::PartitionsWritten { devices }, _) => Ok(devices),
            (other, _) => Err(unexpected("PartitionsWritten", other)),
        }
    }

    pub fn mkfs(&self, handle: Handle, partition: u32, spec: &MkfsSpec) -> Result<(), ClientError> {
        let req = Request::Mkfs {
            handle,
            partition,
            spec: spec.clone(),
        };
        match self.call(&req, &[])? {
            (Reply::Formatted {}, _) => Ok(()),
            (other, _) => Err(unexpected("Formatted", other)),
        }
    }

    /// The filesystem on `partition` as a detached mount idmapped into
    /// `userns` (this process's user namespace, as an fd).
    pub fn mount_idmapped(
        &self,
        handle: Handle,
        partition: u32,
        fs: FsType,
        userns: BorrowedFd<'_>,
    ) -> Result<OwnedFd, ClientError> {
        let req = Request::MountIdmapped {
            handle,
            partition,
            fs,
        };
        match self.call(&req, &[userns])? {
            (Reply::Mounted {}, mut fds) if fds.len() == 1 => Ok(fds.remove(0)),
            (other, _) => Err(unexpected("Mounted with a mount fd", other)),
        }
    }

    pub fn detach(&self, handle: Handle) -> Result<(), ClientError> {
        match self.call(&Request::Detach { handle }, &[])? {
            (Reply::Detached {}, _) => Ok(()),
            (other, _) => Err(unexpected("Detached", other)),
        }
    }

    pub fn ping(&self) -> Result<(), ClientError> {
        match self.call(&Request::Ping {}, &[])? {
            (Reply::Pong {}, _) => Ok(()),
            (other, _) => Err(unexpected("Pong", other)),
        }
    }

    /// The socket, for sending raw packets in tests of the helper.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn unexpected(expected: &'static str, got: Reply) -> ClientError {
    ClientError::Unexpected {
        expected,
        got: format!("{got:?}"),
    }
}
