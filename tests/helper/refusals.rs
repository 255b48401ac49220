//! Refusals of a hostile probe client: what dib never sends (a wrong
//! version, no Hello first, image fds that are no image file of the peer's,
//! namespaces not the peer's, handles of other connections, the loop limits,
//! malformed, truncated, oversize packets, too many fds), each refused while
//! the helper keeps serving. The trial (as root) and the probe's side (as
//! the test user).

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::common::tier::eq;
use crate::support::{no_leaks_under, probe, probe_image, refusal, user, user_dir, Helper};
use dib_sandbox::client::{Client, ClientError};
use dib_sandbox::mkfs::FsType;
use dib_sandbox::proto::{self, Reply, Request};
use libtest_mimic::Failed;

pub fn bad_requests_are_refused_and_the_helper_keeps_serving() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let scratch = user_dir()?;
    // A file the test user may write but does not own.
    let foreign = scratch.path().join("roots.img");
    File::create(&foreign)?.set_len(64 << 20)?;
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o666))?;
    let out = probe("refusals", &h.socket, scratch.path())?;
    let u = user();
    let want = format!(
        "version: Version: dib speaks helper protocol version 2, this dib-helper speaks version 1: install dib and dib-helper from the same release
first: Version: Hello must come first
chardev: BadFd: the image fd is a character device: send an image file you own
directory: BadFd: the image fd is a directory: send an image file you own
foreign: BadFd: the image file belongs to uid 0, not to you (uid {uid}): send an image file you own
read-only: BadFd: the image fd is not open for reading and writing
procfs: BadFd: the image file is on proc, which dib-helper does not attach from (reads there can wait on a process or a server, and a loop device would wait with them): keep the image on a local disk filesystem (ext2/3/4, xfs, btrfs, f2fs) or on tmpfs
userns-not-owned: BadFd: the user namespace sent for idmapping belongs to uid 0, not to you (uid {uid})
not-a-namespace: BadFd: the fd sent for idmapping is not a namespace
other-connection: NoSuchHandle: handle H is not a loop device this connection attached
limit: Limit: this connection already holds 4 loop devices, the limit
truncated: Malformed
oversize: Malformed
unknown: Malformed
too-many-fds: Malformed
after-all-that: Pong
per-user: Limit: your connections hold 16 loop devices (some kept by mounts still alive), the limit
",
        uid = u.uid
    );
    eq(&out, &want, "the probe's refusals")?;
    // The block device case needs a block device the peer can open: as
    // root (always allowed), the fd check still refuses it.
    let blk = File::open("/dev/loop-control").ok();
    let c = Client::connect(&h.socket)?;
    if let Some(dev) = fs::read_dir("/dev")?.flatten().find(|e| {
        e.file_name().to_string_lossy().starts_with("loop")
            && e.path() != Path::new("/dev/loop-control")
    }) {
        let f = File::open(dev.path())?;
        match c.attach_loop(f.as_fd(), true) {
            Err(ClientError::Refused { message, .. }) => eq(
                &message,
                "the image fd is a block device: send an image file you own",
                "a block device",
            )?,
            other => return Err(format!("a block device was accepted: {other:?}").into()),
        }
    }
    drop(blk);
    no_leaks_under(scratch.path())?;
    h.alive()
}

// ---------------------------------------------------------------------------
// The probe's side (this binary as the test user).

fn raw(sock: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> String {
    if let Err(e) = rustix::net::send(sock, bytes, rustix::net::SendFlags::empty()) {
        return format!("send: {e}");
    }
    match proto::recv::<Reply>(sock) {
        Ok((Reply::Error { kind, .. }, _)) => format!("{kind:?}"),
        other => format!("{other:?}"),
    }
}

fn connect_raw(socket: &Path) -> std::os::fd::OwnedFd {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let s = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    connect(&s, &SocketAddrUnix::new(socket).unwrap()).unwrap();
    s
}

pub fn probe_refusals(socket: &Path, dir: &Path, out: &mut impl std::io::Write) {
    // Handshake errors, on connections of their own.
    for (name, first) in [
        ("version", Request::Hello { version: 2 }),
        ("first", Request::Ping {}),
    ] {
        let s = connect_raw(socket);
        proto::send(&s, &first, &[]).unwrap();
        let r = match proto::recv::<Reply>(&s) {
            Ok((Reply::Error { kind, message }, _)) => format!("{kind:?}: {message}"),
            other => format!("{other:?}"),
        };
        writeln!(out, "{name}: {r}").unwrap();
    }

    let c = Client::connect(socket).unwrap();
    let rw = |p: &Path| File::options().read(true).write(true).open(p).unwrap();
    let mine = probe_image(dir, "mine.img");
    // Image fds the helper must refuse to attach read-write.
    let refused_images = [
        ("chardev", rw(Path::new("/dev/null"))),
        ("directory", File::open("/").unwrap()),
        ("foreign", rw(&dir.join("roots.img"))),
        ("read-only", File::open(dir.join("mine.img")).unwrap()),
        // A regular file of the peer's, writable, on procfs.
        ("procfs", rw(Path::new("/proc/self/oom_score_adj"))),
    ];
    for (name, f) in &refused_images {
        writeln!(out, "{name}: {}", refusal(c.attach_loop(f.as_fd(), false))).unwrap();
    }
    let (h, _, _) = c.attach_loop(mine.as_fd(), false).unwrap();
    // The initial user namespace (root's), and a file that is no namespace.
    let userns = File::open("/proc/self/ns/user").unwrap();
    writeln!(
        out,
        "userns-not-owned: {}",
        refusal(c.mount_idmapped(h, 0, FsType::Ext4, userns.as_fd()))
    )
    .unwrap();
    writeln!(
        out,
        "not-a-namespace: {}",
        refusal(c.mount_idmapped(h, 0, FsType::Ext4, mine.as_fd()))
    )
    .unwrap();
    let other = Client::connect(socket).unwrap();
    let r = refusal(other.detach(h)).replace(&h.to_string(), "H");
    writeln!(out, "other-connection: {r}").unwrap();
    for i in 1..4 {
        let f = probe_image(dir, &format!("more{i}.img"));
        c.attach_loop(f.as_fd(), false).unwrap();
    }
    let f = probe_image(dir, "one-too-many.img");
    writeln!(out, "limit: {}", refusal(c.attach_loop(f.as_fd(), false))).unwrap();
    let sock = c.socket();
    writeln!(
        out,
        "truncated: {}",
        raw(sock, b"{\"request\":\"Hello\",\"vers")
    )
    .unwrap();
    writeln!(
        out,
        "oversize: {}",
        raw(sock, &vec![b' '; proto::MAX_MESSAGE + 1])
    )
    .unwrap();
    writeln!(
        out,
        "unknown: {}",
        raw(sock, b"{\"request\":\"Format\",\"device\":\"/dev/sda\"}")
    )
    .unwrap();
    {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let fds = [mine.as_fd(), mine.as_fd(), mine.as_fd()];
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        anc.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(
            sock,
            &[std::io::IoSlice::new(b"{\"request\":\"Ping\"}")],
            &mut anc,
            SendFlags::empty(),
        )
        .unwrap();
        let r = match proto::recv::<Reply>(sock) {
            Ok((Reply::Error { kind, .. }, _)) => format!("{kind:?}"),
            other => format!("{other:?}"),
        };
        writeln!(out, "too-many-fds: {r}").unwrap();
    }
    let r = c
        .ping()
        .map(|()| "Pong".to_string())
        .unwrap_or_else(|e| e.to_string());
    writeln!(out, "after-all-that: {r}").unwrap();
    // Across connections: 16 loop devices per user (4 here, 12 more).
    let more: Vec<Client> = (0..3).map(|_| Client::connect(socket).unwrap()).collect();
    let mut files = Vec::new();
    for (i, m) in more.iter().enumerate() {
        for j in 0..4 {
            let f = probe_image(dir, &format!("user{i}-{j}.img"));
            m.attach_loop(f.as_fd(), false).unwrap();
            files.push(f);
        }
    }
    let last = Client::connect(socket).unwrap();
    let f = probe_image(dir, "seventeenth.img");
    writeln!(
        out,
        "per-user: {}",
        refusal(last.attach_loop(f.as_fd(), false))
    )
    .unwrap();
    // Hanging up with every loop device attached: the helper detaches them.
}
