//! Tier 1: the helper's request checks, over a real socket pair, with a
//! fake device layer standing in for the kernel (tier 3 runs the real one).
//! Every refusal the protocol promises is here, with the message the
//! client sees.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dib_helper::{Devices, Fail, Limits, LocalLedger, Loops, Peer, Session, LIMITS};
use dib_sandbox::client::{Client, ClientError};
use dib_sandbox::mkfs::{FsType, MkfsSpec};
use dib_sandbox::proto::{self, ErrorKind, Reply, Request};
use dib_sandbox::table::Table;

/// Records what the session asked of it; its mkfs waits while `hold` is
/// set (a device whose storage stalls).
#[derive(Debug, Clone, Default)]
struct Fake {
    log: Arc<Mutex<Vec<String>>>,
    hold: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Fake {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }

    fn stall(&self, on: bool) {
        *self.hold.0.lock().unwrap() = on;
        self.hold.1.notify_all();
    }
}

impl Devices for Fake {
    /// Its number and whether it was attached read-only.
    type Loop = (u32, bool);
    fn attach(&mut self, _image: OwnedFd, read_only: bool) -> Result<(u32, bool), Fail> {
        let n = self.log.lock().unwrap().len() as u32;
        self.note(format!("attach {n} ro={read_only}"));
        Ok((n, read_only))
    }
    fn size(&self, _l: &(u32, bool)) -> u64 {
        64 << 20
    }
    fn name(&self, l: &(u32, bool)) -> String {
        format!("/dev/fake{}", l.0)
    }
    fn write_table(&mut self, l: &mut (u32, bool), t: &Table) -> Result<Vec<String>, Fail> {
        t.check(64 << 20)
            .map_err(|e| (ErrorKind::Invalid, e.to_string()))?;
        self.note(format!("table {}", l.0));
        Ok(vec![format!("/dev/fake{}p1", l.0)])
    }
    fn mkfs(&mut self, l: &(u32, bool), partition: u32, spec: &MkfsSpec) -> Result<(), Fail> {
        let mut held = self.hold.0.lock().unwrap();
        while *held {
            held = self.hold.1.wait(held).unwrap();
        }
        drop(held);
        self.note(format!("mkfs {} {partition} {}", l.0, spec.fs.name()));
        Ok(())
    }
    fn mount(
        &mut self,
        l: &(u32, bool),
        partition: u32,
        _fs: FsType,
        _userns: BorrowedFd<'_>,
    ) -> Result<OwnedFd, Fail> {
        self.note(format!("mount {} {partition} ro={}", l.0, l.1));
        Ok(File::open("/").unwrap().into())
    }
    fn detach(&mut self, l: (u32, bool)) -> Result<(), Fail> {
        self.note(format!("detach {}", l.0));
        Ok(())
    }
}

fn never_bound(_: &str) -> bool {
    false
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A session for a peer with uid `uid`, served on a thread; the client end.
fn serve(uid: u32) -> (OwnedFd, Fake, std::thread::JoinHandle<()>) {
    let fake = Fake::default();
    let (sock, t) = serve_with(uid, fake.clone(), LIMITS, Arc::default());
    (sock, fake, t)
}

/// A session of `fake` within `limits`, counting loop devices in `loops`.
fn serve_with(
    uid: u32,
    fake: Fake,
    limits: Limits,
    loops: Arc<Mutex<Loops>>,
) -> (OwnedFd, std::thread::JoinHandle<()>) {
    let (a, b) = dib_sandbox::proto::socket_pair().unwrap();
    let peer = Peer {
        uid,
        gid: uid,
        pid: 1,
        groups: vec![],
    };
    let ledger = LocalLedger {
        loops,
        uid,
        limit: limits.loops_per_user,
        still_bound: never_bound,
    };
    let t = std::thread::spawn(move || Session::new(fake, ledger, peer, limits).serve(&b));
    (a, t)
}

fn greeted(uid: u32) -> (Client, Fake, std::thread::JoinHandle<()>) {
    let (sock, fake, t) = serve(uid);
    (Client::greet(sock).unwrap(), fake, t)
}

/// A temporary file on tmpfs (/dev/shm), which the helper accepts
/// wherever it is mounted; elsewhere where there is none.
/// `path`, open for reading and writing.
fn rw(path: &str) -> File {
    File::options().read(true).write(true).open(path).unwrap()
}

fn tmp_file() -> tempfile::NamedTempFile {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(f) = tempfile::NamedTempFile::new_in(shm) {
            return f;
        }
    }
    tempfile::NamedTempFile::new().unwrap()
}

fn image() -> File {
    tmp_file().into_file()
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> (ErrorKind, String) {
    match r {
        Err(ClientError::Refused { kind, message }) => (kind, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn spec() -> MkfsSpec {
    MkfsSpec {
        fs: FsType::Ext4,
        label: None,
        uuid: "6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e".into(),
        size: 10 << 20,
        journal: None,
        max_online_resize: None,
        extended: vec![],
        options: vec![],
    }
}

#[test]
fn hello_comes_first_and_versions_must_match() {
    let (sock, _, t) = serve(me());
    proto::send(&sock, &Request::Ping {}, &[]).unwrap();
    let (r, _) = proto::recv::<Reply>(&sock).unwrap();
    assert_eq!(
        r,
        Reply::Error {
            kind: ErrorKind::Version,
            message: "Hello must come first".into()
        }
    );
    t.join().unwrap();
    let (sock, _, t) = serve(me());
    proto::send(&sock, &Request::Hello { version: 999 }, &[]).unwrap();
    let (r, _) = proto::recv::<Reply>(&sock).unwrap();
    assert_eq!(
        r,
        Reply::Error {
            kind: ErrorKind::Version,
            message: "dib speaks helper protocol version 999, this dib-helper speaks version 1: \
                      install dib and dib-helper from the same release"
                .into()
        }
    );
    // The helper hangs up after a failed handshake.
    assert!(matches!(
        proto::recv::<Reply>(&sock),
        Err(proto::ProtoError::Closed)
    ));
    t.join().unwrap();
}

#[test]
fn image_fds_must_be_regular_files_of_the_peer_open_for_writing() {
    let (c, fake, t) = greeted(me());
    let null = rw("/dev/null");
    let dir = File::open("/").unwrap();
    let ro = File::open(tmp_file().path()).unwrap();
    let cases: [(BorrowedFd<'_>, &str); 3] = [
        (
            null.as_fd(),
            "the image fd is a character device: send an image file you own",
        ),
        (
            dir.as_fd(),
            "the image fd is a directory: send an image file you own",
        ),
        (
            ro.as_fd(),
            "the image fd is not open for reading and writing",
        ),
    ];
    for (fd, want) in cases {
        assert_eq!(
            refused(c.attach_loop(fd, false)),
            (ErrorKind::BadFd, want.to_string())
        );
    }
    // Read-only attachment of a read-only fd is fine.
    c.attach_loop(ro.as_fd(), true).unwrap();
    // No fd at all, or two.
    proto::send(c.socket(), &Request::AttachLoop { read_only: false }, &[]).unwrap();
    let (r, _) = proto::recv::<Reply>(c.socket()).unwrap();
    assert_eq!(
        r,
        Reply::Error {
            kind: ErrorKind::BadFd,
            message: "this request takes 1 fds, not 0".into()
        }
    );
    let img = image();
    proto::send(c.socket(), &Request::Ping {}, &[img.as_fd()]).unwrap();
    let (r, _) = proto::recv::<Reply>(c.socket()).unwrap();
    assert!(
        matches!(
            r,
            Reply::Error {
                kind: ErrorKind::BadFd,
                ..
            }
        ),
        "{r:?}"
    );
    drop(c);
    t.join().unwrap();
    assert_eq!(*fake.log.lock().unwrap(), ["attach 0 ro=true", "detach 0"]);
}

#[test]
fn a_file_of_another_user_is_refused() {
    let (c, _, t) = greeted(me() + 4242);
    let (kind, msg) = refused(c.attach_loop(image().as_fd(), false));
    assert_eq!(kind, ErrorKind::BadFd);
    assert_eq!(
        msg,
        format!(
            "the image file belongs to uid {}, not to you (uid {}): send an image file you own",
            me(),
            me() + 4242
        )
    );
    drop(c);
    t.join().unwrap();
}

#[test]
fn handles_of_other_connections_mean_nothing_here() {
    let (a, _, ta) = greeted(me());
    let (b, fake_b, tb) = greeted(me());
    let (h, device, size) = a.attach_loop(image().as_fd(), false).unwrap();
    assert_eq!((device.as_str(), size), ("/dev/fake0", 64 << 20));
    for r in [
        b.detach(h).map(|_| ()),
        b.mkfs(h, 0, &spec()),
        b.write_partitions(
            h,
            &Table {
                label: dib_sandbox::table::Label::Mbr,
                disk_id: "12345678".into(),
                entries: vec![],
            },
        )
        .map(|_| ()),
    ] {
        assert_eq!(
            refused(r),
            (
                ErrorKind::NoSuchHandle,
                format!("handle {h} is not a loop device this connection attached")
            )
        );
    }
    assert!(fake_b.log.lock().unwrap().is_empty());
    a.detach(h).unwrap();
    drop((a, b));
    ta.join().unwrap();
    tb.join().unwrap();
}

#[test]
fn loop_devices_are_limited_per_connection_and_released_on_hangup() {
    let (c, fake, t) = greeted(me());
    for _ in 0..LIMITS.loops {
        c.attach_loop(image().as_fd(), false).unwrap();
    }
    assert_eq!(
        refused(c.attach_loop(image().as_fd(), false)),
        (
            ErrorKind::Limit,
            "this connection already holds 4 loop devices, the limit".into()
        )
    );
    drop(c);
    t.join().unwrap();
    let log = fake.log.lock().unwrap();
    let detached = log.iter().filter(|l| l.starts_with("detach")).count();
    assert_eq!(detached, LIMITS.loops, "{log:?}");
}

#[test]
fn user_namespaces_must_be_the_peers() {
    // The initial user namespace belongs to root; a peer that is not root
    // may not idmap into it.
    let (c, fake, t) = greeted(me() + 4242);
    let sock = c.socket();
    let userns = File::open("/proc/self/ns/user").unwrap();
    let netns = File::open("/proc/self/ns/net").unwrap();
    let plain = image();
    let req = Request::MountIdmapped {
        handle: 1,
        partition: 0,
        fs: FsType::Ext4,
    };
    for (fd, want) in [
        (
            userns.as_fd(),
            "the user namespace sent for idmapping belongs to uid 0, not to you".to_string(),
        ),
        (
            netns.as_fd(),
            "the fd sent for idmapping is not a user namespace".to_string(),
        ),
        (
            plain.as_fd(),
            "the fd sent for idmapping is not a namespace".to_string(),
        ),
    ] {
        proto::send(sock, &req, &[fd]).unwrap();
        let (r, fds) = proto::recv::<Reply>(sock).unwrap();
        assert!(fds.is_empty());
        match r {
            Reply::Error { kind, message } => {
                assert_eq!(kind, ErrorKind::BadFd);
                assert!(message.starts_with(&want), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    drop(c);
    t.join().unwrap();
    assert!(fake.log.lock().unwrap().is_empty());
}

#[test]
fn bad_tables_and_mkfs_options_never_reach_the_devices() {
    let (c, fake, t) = greeted(me());
    let (h, _, _) = c.attach_loop(image().as_fd(), false).unwrap();
    let mut s = spec();
    s.options = vec!["-d".into(), "/etc".into()];
    let (kind, msg) = refused(c.mkfs(h, 0, &s));
    assert_eq!(kind, ErrorKind::Invalid);
    assert!(
        msg.starts_with("the mkfs option -d is not allowed through dib-helper"),
        "{msg}"
    );
    let bad = Table {
        label: dib_sandbox::table::Label::Mbr,
        disk_id: "12345678".into(),
        entries: vec![dib_sandbox::table::Entry {
            number: 1,
            start: 0,
            size: 1 << 20,
            kind: dib_sandbox::table::Kind::Linux,
            bootable: false,
            name: String::new(),
            guid: String::new(),
        }],
    };
    let (kind, msg) = refused(c.write_partitions(h, &bad));
    assert_eq!(kind, ErrorKind::Invalid);
    assert!(msg.contains("lies outside the usable sectors"), "{msg}");
    drop(c);
    t.join().unwrap();
    assert_eq!(*fake.log.lock().unwrap(), ["attach 0 ro=false", "detach 0"]);
}

#[test]
fn malformed_packets_get_an_error_and_the_session_goes_on() {
    let (c, _, t) = greeted(me());
    for bad in [
        &b"{\"request\":\"Ping\""[..],
        b"{\"request\":\"Mount\",\"path\":\"/dev/sda\"}",
        &vec![b'x'; proto::MAX_MESSAGE + 1],
        // Unknown fields: beside Ping's tag, in a table, in an mkfs spec.
        b"{\"request\":\"Ping\",\"path\":\"/etc\"}",
        b"{\"request\":\"WritePartitions\",\"handle\":1,\"table\":{\"label\":\"Mbr\",\"disk_id\":\"12345678\",\"entries\":[],\"device\":\"/dev/sda\"}}",
        b"{\"request\":\"Mkfs\",\"handle\":1,\"partition\":0,\"spec\":{\"fs\":\"Ext4\",\"label\":null,\"uuid\":\"6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e\",\"size\":10485760,\"journal\":null,\"max_online_resize\":null,\"extended\":[],\"options\":[],\"root_dir\":\"/etc\"}}",
    ] {
        rustix::net::send(c.socket(), bad, rustix::net::SendFlags::empty()).unwrap();
        let (r, _) = proto::recv::<Reply>(c.socket()).unwrap();
        match r {
            Reply::Error {
                kind: ErrorKind::Malformed,
                message,
            } => assert!(
                bad.len() > proto::MAX_MESSAGE
                    || !bad.ends_with(b"}")
                    || message.contains("unknown"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }
    c.ping().unwrap();
    drop(c);
    t.join().unwrap();
}

#[test]
fn read_only_attachments_mount_read_only_and_are_never_written() {
    let (c, fake, t) = greeted(me());
    let ro = File::open(tmp_file().path()).unwrap();
    let (h, _, _) = c.attach_loop(ro.as_fd(), true).unwrap();
    let table = Table {
        label: dib_sandbox::table::Label::Mbr,
        disk_id: "12345678".into(),
        entries: vec![],
    };
    let want = (
        ErrorKind::Invalid,
        format!(
            "handle {h} was attached read-only: it can be mounted (read-only), not partitioned \
             or formatted"
        ),
    );
    assert_eq!(refused(c.write_partitions(h, &table)), want);
    assert_eq!(refused(c.mkfs(h, 0, &spec())), want);
    // The session's own user namespace belongs to this uid.
    let userns = File::open("/proc/self/ns/user").unwrap();
    c.mount_idmapped(h, 0, FsType::Ext4, userns.as_fd())
        .unwrap();
    drop(c);
    t.join().unwrap();
    assert_eq!(
        *fake.log.lock().unwrap(),
        ["attach 0 ro=true", "mount 0 0 ro=true", "detach 0"]
    );
}

#[test]
fn images_on_filesystems_that_could_stall_or_are_no_disk_are_refused() {
    let (c, fake, t) = greeted(me());
    // A regular file of this user's, open for writing, on procfs.
    let proc_file = rw("/proc/self/oom_score_adj");
    assert_eq!(
        refused(c.attach_loop(proc_file.as_fd(), false)),
        (
            ErrorKind::BadFd,
            "the image file is on proc, which dib-helper does not attach from (reads there can \
             wait on a process or a server, and a loop device would wait with them): keep the \
             image on a local disk filesystem (ext2/3/4, xfs, btrfs, f2fs) or on tmpfs"
                .into()
        )
    );
    drop(c);
    t.join().unwrap();
    assert!(fake.log.lock().unwrap().is_empty());
}

#[test]
fn a_request_over_its_time_limit_is_answered_and_hung_up_on_while_others_are_served() {
    let limits = Limits {
        step: Duration::from_secs(1),
        mkfs: Duration::from_secs(1),
        ..LIMITS
    };
    let fake = Fake::default();
    fake.stall(true);
    let stuck = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a, b) = dib_sandbox::proto::socket_pair().unwrap();
    let peer = Peer {
        uid: me(),
        gid: me(),
        pid: 1,
        groups: vec![],
    };
    let ledger = LocalLedger {
        loops: Arc::default(),
        uid: me(),
        limit: 16,
        still_bound: never_bound,
    };
    let (f, s) = (fake.clone(), stuck.clone());
    let t = std::thread::spawn(move || {
        Session::new(f, ledger, peer, limits)
            .on_stuck(move || s.store(true, std::sync::atomic::Ordering::SeqCst))
            .serve(&b)
    });
    let c = Client::greet(a).unwrap();
    let (h, _, _) = c.attach_loop(image().as_fd(), false).unwrap();
    let started = Instant::now();
    let (other, _, other_t) = greeted(me());
    let waiting = std::thread::spawn(move || {
        let r = c.mkfs(h, 0, &spec());
        (r.map_err(|e| e.to_string()), c)
    });
    // Meanwhile another connection is served.
    std::thread::sleep(Duration::from_millis(300));
    other.ping().unwrap();
    let (r, c) = waiting.join().unwrap();
    let took = started.elapsed();
    assert_eq!(
        r.unwrap_err(),
        format!(
            "dib-helper refused: dib-helper gave up on mkfs on partition 0 of handle {h} (Mkfs) \
             after 2 s: the kernel did not finish it (is the storage below the image stalled?); \
             this connection is closed"
        )
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(stuck.load(std::sync::atomic::Ordering::SeqCst));
    // Hung up on.
    assert!(matches!(
        proto::recv::<Reply>(c.socket()),
        Err(proto::ProtoError::Closed)
    ));
    // The stalled step ends some day; the session says nothing more.
    fake.stall(false);
    t.join().unwrap();
    other.ping().unwrap();
    drop(other);
    other_t.join().unwrap();
    assert_eq!(
        *fake.log.lock().unwrap(),
        ["attach 0 ro=false", "mkfs 0 0 ext4"]
    );
}

#[test]
fn loop_devices_are_limited_per_user_across_connections() {
    let limits = Limits {
        loops_per_user: 5,
        ..LIMITS
    };
    let loops: Arc<Mutex<Loops>> = Arc::default();
    let session = |loops: &Arc<Mutex<Loops>>| {
        let (a, b) = dib_sandbox::proto::socket_pair().unwrap();
        let peer = Peer {
            uid: me(),
            gid: me(),
            pid: 1,
            groups: vec![],
        };
        // Every device stays attached (as when mounts keep them).
        let ledger = LocalLedger {
            loops: loops.clone(),
            uid: me(),
            limit: limits.loops_per_user,
            still_bound: |_| true,
        };
        let t = std::thread::spawn(move || {
            Session::new(Fake::default(), ledger, peer, limits).serve(&b)
        });
        (Client::greet(a).unwrap(), t)
    };
    let (a, ta) = session(&loops);
    let (b, tb) = session(&loops);
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(a.attach_loop(image().as_fd(), false).unwrap().0);
    }
    handles.push(b.attach_loop(image().as_fd(), false).unwrap().0);
    let want = (
        ErrorKind::Limit,
        "your connections hold 5 loop devices (some kept by mounts still alive), the limit".into(),
    );
    assert_eq!(refused(b.attach_loop(image().as_fd(), false)), want);
    // Handles are unique across connections.
    let unique: std::collections::BTreeSet<_> = handles.iter().collect();
    assert_eq!(unique.len(), handles.len());
    // Devices a closed connection left bound still count.
    drop(a);
    ta.join().unwrap();
    assert_eq!(refused(b.attach_loop(image().as_fd(), false)), want);
    drop(b);
    tb.join().unwrap();
}
