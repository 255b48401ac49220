//! The helper protocol (docs/protocol.md): the only code that knows how dib
//! and dib-helper talk.
//!
//! Lockstep request and reply over a Unix `SOCK_SEQPACKET` socket: one JSON
//! document per packet, file descriptors beside it as `SCM_RIGHTS`, `Hello`
//! first in each direction. Requests name helper-issued handles and carry
//! fds, never paths. A packet over [`MAX_MESSAGE`] bytes, with more than
//! [`MAX_FDS`] fds, truncated, or not one of these messages is an error;
//! every fd received with it is closed.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, socket_with, socketpair, AddressFamily, RecvAncillaryBuffer,
    RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::mkfs::{FsType, MkfsSpec};
use crate::table::Table;

/// The protocol version; `Hello` carries it both ways and a mismatch ends
/// the connection.
pub const VERSION: u32 = crate::PROTOCOL_VERSION;
/// Largest packet either side accepts.
pub const MAX_MESSAGE: usize = 64 << 10;
/// Most fds one packet may carry.
pub const MAX_FDS: usize = 2;

/// A loop device the helper attached for this connection.
pub type Handle = u32;

/// dib to helper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", deny_unknown_fields)]
pub enum Request {
    /// First on every connection.
    Hello { version: u32 },
    /// With one fd: the image file, opened by dib, read-write unless
    /// `read_only`.
    AttachLoop { read_only: bool },
    /// Write `table` onto the loop device and make its partition devices.
    WritePartitions { handle: Handle, table: Table },
    /// Make a filesystem on a partition (0: the whole device).
    Mkfs {
        handle: Handle,
        partition: u32,
        spec: MkfsSpec,
    },
    /// With one fd: dib's user namespace. Mount the filesystem on the
    /// partition and reply with a detached mount idmapped into it.
    MountIdmapped {
        handle: Handle,
        partition: u32,
        fs: FsType,
    },
    /// Flush and detach the loop device and its partitions.
    Detach { handle: Handle },
    /// Nothing: for measuring a round trip. (A struct variant with no
    /// fields, so that fields beside its tag are refused as for every
    /// other message: serde lets them pass on a unit variant.)
    Ping {},
}

/// helper to dib. The variants without data are struct variants with no
/// fields, as [`Request::Ping`] is: the same JSON, and no field beside the
/// tag passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", deny_unknown_fields)]
pub enum Reply {
    Hello {
        version: u32,
    },
    LoopAttached {
        handle: Handle,
        /// The device's name (`/dev/loop3`), for messages only.
        device: String,
        size: u64,
    },
    PartitionsWritten {
        /// The partition devices' names, in table order.
        devices: Vec<String>,
    },
    Formatted {},
    /// With one fd: the detached mount.
    Mounted {},
    Detached {},
    Pong {},
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// What kind of error a request met, for the client to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The other side speaks another protocol version.
    Version,
    /// Not a message of this protocol (or oversize, truncated, too many fds).
    Malformed,
    /// The peer is not allowed to use the helper.
    NotAllowed,
    /// An fd is missing or not what the request needs.
    BadFd,
    /// A handle this connection does not hold, or a partition it did not make.
    NoSuchHandle,
    /// A per-connection limit is reached.
    Limit,
    /// The request's data is refused (a table, mkfs options...).
    Invalid,
    /// This machine cannot do it (a filesystem the kernel cannot mount,
    /// device-mapper missing).
    Unsupported,
    /// The operation was tried and failed.
    Failed,
}

/// Errors of sending and receiving.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the connection is closed")]
    Closed,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// A new socket of the protocol's type (`AF_UNIX`, `SOCK_SEQPACKET`,
/// close-on-exec), to bind or connect.
pub fn socket() -> rustix::io::Result<OwnedFd> {
    socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
}

/// Two connected sockets of the protocol's type (close-on-exec).
pub fn socket_pair() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
}

/// Parse one packet's bytes as a message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ProtoError::Malformed(format!(
            "{} bytes is over the {MAX_MESSAGE}-byte limit",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Send `msg` with `fds` as one packet.
pub fn send<T: Serialize>(
    sock: impl AsFd,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtoError> {
    let bytes = serde_json::to_vec(msg).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(ProtoError::Malformed(format!(
            "refusing to send {} bytes with {} fds (limits {MAX_MESSAGE}, {MAX_FDS})",
            bytes.len(),
            fds.len()
        )));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(ProtoError::Malformed("no room for the fds".into()));
    }
    let n = sendmsg(
        sock,
        &[std::io::IoSlice::new(&bytes)],
        &mut anc,
        SendFlags::NOSIGNAL,
    )
    .map_err(std::io::Error::from)?;
    if n != bytes.len() {
        return Err(ProtoError::Io(std::io::Error::other("short send")));
    }
    Ok(())
}

/// Receive one packet: its message and the fds it carried (closed when
/// dropped, so a refused request leaks none).
pub fn recv<T: DeserializeOwned>(sock: impl AsFd) -> Result<(T, Vec<OwnedFd>), ProtoError> {
    let (message, fds) = recv_keeping_fds(sock)?;
    Ok((message?, fds))
}

/// [`recv`], with the fds that came handed back whether the message was
/// well formed or not: closing an fd can wait on its filesystem (a FUSE
/// server asked to flush), so a receiver that must bound its work closes
/// them itself, under its own time limit.
pub fn recv_keeping_fds<T: DeserializeOwned>(
    sock: impl AsFd,
) -> Result<(Result<T, ProtoError>, Vec<OwnedFd>), ProtoError> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    // Room for one more fd than allowed, to tell "too many" from "ok".
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS + 1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = recvmsg(
        &sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if r.bytes == 0 && fds.is_empty() {
        return Err(ProtoError::Closed);
    }
    if r.flags.contains(ReturnFlags::TRUNC) || r.bytes > MAX_MESSAGE {
        let e = ProtoError::Malformed(format!("a packet over the {MAX_MESSAGE}-byte limit"));
        return Ok((Err(e), fds));
    }
    if r.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_FDS {
        let e = ProtoError::Malformed(format!("more than {MAX_FDS} fds in one packet"));
        return Ok((Err(e), fds));
    }
    Ok((decode(&buf[..r.bytes]), fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        socket_pair().unwrap()
    }

    #[test]
    fn messages_and_fds_cross_intact() {
        let (a, b) = pair();
        let f = tempfile::tempfile().unwrap();
        send(&a, &Request::AttachLoop { read_only: true }, &[f.as_fd()]).unwrap();
        let (req, fds): (Request, _) = recv(&b).unwrap();
        assert_eq!(req, Request::AttachLoop { read_only: true });
        assert_eq!(fds.len(), 1);
        send(
            &b,
            &Reply::Error {
                kind: ErrorKind::Limit,
                message: "four loop devices".into(),
            },
            &[],
        )
        .unwrap();
        let (rep, fds): (Reply, _) = recv(&a).unwrap();
        assert!(fds.is_empty());
        assert_eq!(
            rep,
            Reply::Error {
                kind: ErrorKind::Limit,
                message: "four loop devices".into()
            }
        );
        drop(a);
        assert!(matches!(recv::<Reply>(&b), Err(ProtoError::Closed)));
    }

    #[test]
    fn oversize_truncated_and_unknown_packets_are_malformed() {
        let (a, b) = pair();
        rustix::net::send(&a, &vec![b' '; MAX_MESSAGE + 10], SendFlags::empty()).unwrap();
        let e = recv::<Request>(&b).unwrap_err().to_string();
        assert!(e.contains("over the 65536-byte limit"), "{e}");
        for bad in [
            &b"{\"request\":\"Hello\""[..],
            b"{\"request\":\"Format\",\"disk\":\"/dev/sda\"}",
            b"{\"request\":\"Hello\",\"version\":1,\"path\":\"/etc\"}",
            b"{\"request\":\"Detach\",\"handle\":-1}",
            b"\xff\xfe",
        ] {
            rustix::net::send(&a, bad, SendFlags::empty()).unwrap();
            let e = recv::<Request>(&b).unwrap_err();
            assert!(matches!(e, ProtoError::Malformed(_)), "{bad:?}: {e}");
        }
        // Unknown fields, also on a request without data and inside a
        // table, a partition entry and an mkfs spec.
        for bad in [
            &b"{\"request\":\"Ping\",\"path\":\"/etc\"}"[..],
            b"{\"request\":\"WritePartitions\",\"handle\":1,\"table\":{\"label\":\"Mbr\",\"disk_id\":\"12345678\",\"entries\":[],\"device\":\"/dev/sda\"}}",
            b"{\"request\":\"WritePartitions\",\"handle\":1,\"table\":{\"label\":\"Mbr\",\"disk_id\":\"12345678\",\"entries\":[{\"number\":1,\"start\":1048576,\"size\":1048576,\"kind\":\"Linux\",\"bootable\":false,\"name\":\"\",\"guid\":\"\",\"path\":\"/dev/sda1\"}]}}",
            b"{\"request\":\"Mkfs\",\"handle\":1,\"partition\":0,\"spec\":{\"fs\":\"Ext4\",\"label\":null,\"uuid\":\"6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e\",\"size\":10485760,\"journal\":null,\"max_online_resize\":null,\"extended\":[],\"options\":[],\"root_dir\":\"/etc\"}}",
        ] {
            let e = decode::<Request>(bad).unwrap_err().to_string();
            assert!(e.contains("unknown field"), "{}: {e}", String::from_utf8_lossy(bad));
        }
        for bad in [
            &b"{\"reply\":\"Pong\",\"extra\":1}"[..],
            b"{\"reply\":\"Formatted\",\"extra\":1}",
            b"{\"reply\":\"Mounted\",\"extra\":1}",
            b"{\"reply\":\"Detached\",\"extra\":1}",
        ] {
            assert!(
                decode::<Reply>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // The messages without data are the bare tag on the wire.
        assert_eq!(
            serde_json::to_string(&Request::Ping {}).unwrap(),
            "{\"request\":\"Ping\"}"
        );
        assert_eq!(
            serde_json::to_string(&Reply::Pong {}).unwrap(),
            "{\"reply\":\"Pong\"}"
        );
        // Three fds where two are allowed: refused, and none kept.
        let f = tempfile::tempfile().unwrap();
        let fds = [f.as_fd(), f.as_fd(), f.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        assert!(anc.push(SendAncillaryMessage::ScmRights(&fds)));
        sendmsg(
            &a,
            &[std::io::IoSlice::new(b"{\"request\":\"Ping\"}")],
            &mut anc,
            SendFlags::empty(),
        )
        .unwrap();
        let e = recv::<Request>(&b).unwrap_err().to_string();
        assert!(e.contains("more than 2 fds"), "{e}");
    }
}
