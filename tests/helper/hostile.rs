//! Hostile clients: a client that tries to hold the helper in the kernel
//! through its own FUSE server, a user the allow-list leaves out flooding
//! the socket, and a read-only attachment that must stay read-only. Each
//! trial runs the real helper as root and the probe client (this binary)
//! as the test user, or as `nobody` for the user who is not allowed.

use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tier::{check, eq};
use crate::fuse;
use crate::mounts::{attach_at, own_namespaces};
use crate::support::{as_user, no_leaks_under, probe, refusal, user, user_dir, Helper, PROBE_ENV};
use dib_sandbox::client::Client;
use dib_sandbox::mkfs::FsType;
use libtest_mimic::Failed;

/// Longest any one answer of the helper may take in these trials: past it
/// the probe's connection gives up and the trial fails (a hang becomes an
/// error, it is not waited out).
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// A probe that talks to the harness while it runs: its stdout read line
/// by line, its stdin written.
struct Live {
    child: Child,
    out: BufReader<ChildStdout>,
    case: String,
}

impl Live {
    fn start(case: &str, socket: &Path, scratch: &Path, cmd: Command) -> Result<Live, Failed> {
        let mut cmd = cmd;
        cmd.env_clear()
            .env(PROBE_ENV, case)
            .env("DIB_HELPER_SOCKET", socket)
            .env("DIB_PROBE_DIR", scratch)
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Live {
            child,
            out,
            case: case.into(),
        })
    }

    /// The probe's next line (it says what it did, or that it is ready).
    fn line(&mut self) -> Result<String, Failed> {
        let mut l = String::new();
        self.out.read_line(&mut l)?;
        check(
            !l.is_empty(),
            format!(
                "the probe '{}' ended early: {:?}",
                self.case,
                self.child.try_wait()
            ),
        )?;
        Ok(l.trim_end().to_string())
    }

    fn tell(&mut self, what: &str) -> Result<(), Failed> {
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{what}")?;
        Ok(())
    }

    /// Close its stdin (the sign to finish) and collect the rest.
    fn finish(mut self) -> Result<String, Failed> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest)?;
        let st = self.child.wait()?;
        check(st.success(), format!("the probe '{}': {st}", self.case))?;
        Ok(rest)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn probe_cmd() -> Result<Command, Failed> {
    Ok(Command::new(std::env::current_exe()?))
}

/// FUSE connections that were not there before, ended when dropped
/// (fusectl, as root), so that a failed trial leaves no process the kernel
/// holds for ever.
struct FuseConnections {
    before: Vec<std::ffi::OsString>,
}

const FUSECTL: &str = "/sys/fs/fuse/connections";

impl FuseConnections {
    fn list() -> Vec<std::ffi::OsString> {
        fs::read_dir(FUSECTL)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect()
    }

    fn new() -> FuseConnections {
        if fs::read_dir(FUSECTL).map_or(true, |mut d| d.next().is_none()) {
            let _ = nix::mount::mount(
                Some("fusectl"),
                FUSECTL,
                Some("fusectl"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
        }
        FuseConnections {
            before: Self::list(),
        }
    }
}

impl Drop for FuseConnections {
    fn drop(&mut self) {
        for c in Self::list() {
            if !self.before.contains(&c) {
                let _ = fs::write(Path::new(FUSECTL).join(c).join("abort"), "1");
            }
        }
    }
}

/// The session processes of the helper's main process `main`: its
/// children.
fn sessions_of(main: u32) -> Vec<u32> {
    let ppid = format!("PPid:\t{main}\n");
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let status = fs::read_to_string(e.path().join("status")).ok()?;
            status.contains(&ppid).then_some(pid)
        })
        .collect()
}

/// Of `pids`, those still alive: with a thread not yet exited (a zombie
/// whose threads are all gone counts as gone; one whose thread the kernel
/// holds does not).
fn alive(pids: &[u32]) -> Vec<u32> {
    let running = |stat: String| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z') && !r.starts_with('X'))
    };
    pids.iter()
        .copied()
        .filter(|p| {
            fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|t| fs::read_to_string(t.path().join("stat")).is_ok_and(running))
        })
        .collect()
}

/// Where the threads of `pids` are in the kernel, for a failure message.
fn stacks(pids: &[u32]) -> String {
    let mut out = String::new();
    for p in pids {
        for t in fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let stack = fs::read_to_string(t.path().join("stack")).unwrap_or_default();
            let top: Vec<&str> = stack.lines().take(4).collect();
            out.push_str(&format!("\n  {p}/{:?}: {}", t.file_name(), top.join(" < ")));
        }
    }
    out
}

/// Wait until at most `left` of `pids` are alive.
fn wait_gone(pids: &[u32], left: usize, what: &str) -> Result<(), Failed> {
    let started = Instant::now();
    while alive(pids).len() > left {
        check(
            started.elapsed() < Duration::from_secs(10),
            format!(
                "{what}: {:?} of {pids:?}{}",
                alive(pids),
                stacks(&alive(pids))
            ),
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// An image on an overlay whose lower layer is the client's own FUSE
/// filesystem: refused at once, before the helper reads anything through
/// the FUSE server, even once that server has stopped answering; and while
/// the client holds a stalled server, connections and the helper's own
/// processes, the helper serves others, root's `losetup` answers, and
/// SIGTERM ends the helper and every one of its sessions at once.
pub fn an_overlay_over_a_stalled_fuse_holds_nothing_but_its_own_connection() -> Result<(), Failed> {
    check(
        fs::metadata("/dev/fuse").is_ok(),
        "no /dev/fuse (scripts/prepare-host makes it usable, as on any Debian host)",
    )?;
    let mut h = Helper::start(&["--allow-user", &user().name, "--step-timeout", "3"])?;
    let scratch = user_dir()?;
    let mut cmd = probe_cmd()?;
    as_user(&mut cmd);
    let mut p = Live::start("fuse-overlay", &h.socket, scratch.path(), cmd)?;
    // Dropped before the probe is: on a failure, its FUSE connection is
    // ended first, so that the probe can be killed.
    let _fuse = FuseConnections::new();
    let overlay = "BadFd: the image file is on overlayfs, which dib-helper does not attach from \
                   (reads there can wait on a process or a server, and a loop device would wait \
                   with them): keep the image on a local disk filesystem (ext2/3/4, xfs, btrfs, \
                   f2fs) or on tmpfs";
    let fuse = "BadFd: examining the image fd: Permission denied (os error 13) (a filesystem \
                mounted in a user namespace, FUSE say, keeps dib-helper out): keep the image on a \
                local disk filesystem or on tmpfs";
    eq(
        &p.line()?,
        &format!("overlay: {overlay}"),
        "the overlay's image",
    )?;
    eq(&p.line()?, &format!("fuse: {fuse}"), "the FUSE file itself")?;
    eq(&p.line()?, "stalled", "the probe's stall")?;
    eq(
        &p.line()?,
        "overlay, stalled: Failed: dib-helper gave up on attaching the image (AttachLoop) after \
         3 s: the kernel did not finish it (is the storage below the image stalled?); this \
         connection is closed",
        "the overlay's image with its server stalled",
    )?;
    let held = p.line()?;
    check(
        held.starts_with("held: ") && held.len() > "held: ".len(),
        format!("the FUSE server holds none of the helper's requests: {held}"),
    )?;
    eq(
        &p.line()?,
        &format!("fuse, stalled: {fuse}"),
        &format!("the FUSE file with its server stalled ({held})"),
    )?;
    eq(&p.line()?, "holding 5 connections", "the probe's hold")?;
    // Others are served meanwhile.
    let other = user_dir()?;
    eq(
        &probe("hello", &h.socket, other.path())?,
        "hello: accepted\n",
        "another client while the stall lasts",
    )?;
    h.alive()?;
    let losetup = Command::new("timeout")
        .args(["20", "losetup", "-a"])
        .output()?;
    check(
        losetup.status.success(),
        format!(
            "root's losetup -a while the stall lasts: {}",
            losetup.status
        ),
    )?;
    // SIGTERM: the helper is gone at once, its socket answers no one (a
    // refused connection, not a hang), its idle sessions end with it; the
    // ones the kernel holds end when the FUSE server's owner lets go.
    let main = h.pid();
    let sessions = sessions_of(main);
    check(
        sessions.len() >= 5,
        format!("the probe's connections have sessions: {sessions:?}"),
    )?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(main as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = h.wait_exit(Duration::from_secs(10))?;
    check(
        status.is_some(),
        "dib-helper did not exit within 10 s of SIGTERM while a client held a stalled FUSE server",
    )?;
    match Client::connect_within(&h.socket, Some(ANSWER_WITHIN)) {
        Err(dib_sandbox::client::ClientError::Connect { source, .. })
            if source.raw_os_error() == Some(nix::libc::ECONNREFUSED) => {}
        other => return Err(format!("after SIGTERM, connecting gave {other:?}").into()),
    }
    wait_gone(&sessions, 3, "idle sessions outlived the helper")?;
    p.tell("done")?;
    let rest = p.finish()?;
    eq(&rest, "done\n", "the probe's end")?;
    wait_gone(
        &sessions,
        0,
        "sessions outlived the FUSE server that held them",
    )?;
    no_leaks_under(scratch.path())
}

/// A user the allow-list leaves out (`nobody`) holds 40 silent connections
/// and reconnects as fast as it can; a user allowed through a group that
/// only its process holds (SO_PEERGROUPS: the group database does not list
/// it) connects 100 times meanwhile, each answered; the log says a few
/// lines a second and a count, not a line per refusal.
pub fn refused_peers_cannot_starve_allowed_ones() -> Result<(), Failed> {
    let group = nix::unistd::Group::from_name("users")?
        .ok_or("no group 'users' on this host (Debian's base-passwd makes it)")?;
    check(
        !group.mem.contains(&user().name),
        "the test user must not be listed in group 'users' for this trial",
    )?;
    let h = Helper::start(&["--allow-group", "users"])?;
    let scratch = user_dir()?;
    let nobody = nix::unistd::User::from_name("nobody")?.ok_or("no user 'nobody'")?;
    let mut flood_cmd = probe_cmd()?;
    {
        use std::os::unix::process::CommandExt as _;
        flood_cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    let mut flood = Live::start("flood", &h.socket, scratch.path(), flood_cmd)?;
    let first = flood.line()?;
    check(
        first.starts_with("flooding: 40 silent connections held, refused with: NotAllowed: uid "),
        format!("the flood's start: {first}"),
    )?;
    // The allowed user, by a group only its process has.
    let o = Command::new("setpriv")
        .arg(format!("--reuid={}", user().uid))
        .arg(format!("--regid={}", user().gid))
        .arg(format!("--groups={}", group.gid))
        .arg("--")
        .arg(std::env::current_exe()?)
        .env_clear()
        .env(PROBE_ENV, "hello-many")
        .env("DIB_HELPER_SOCKET", &h.socket)
        .env("DIB_PROBE_DIR", scratch.path())
        .env("HOME", user().home)
        .output()?;
    let allowed = String::from_utf8_lossy(&o.stdout).into_owned();
    eq(
        &allowed,
        "accepted 100 of 100\n",
        "the allowed user's connections",
    )?;
    let rest = flood.finish()?;
    let refused: u64 = rest
        .strip_prefix("refused ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or(format!("the flood's count: {rest:?}"))?;
    let secs: u64 = rest
        .split(" in ")
        .nth(1)
        .and_then(|r| r.strip_suffix(" ms\n"))
        .and_then(|n| n.parse::<u64>().ok())
        .map(|ms| ms.div_ceil(1000))
        .ok_or(format!("the flood's time: {rest:?}"))?;
    check(refused >= 300, format!("the flood was no flood: {rest}"))?;
    // At most 10 lines in each second, the summaries besides.
    let log = h.log_text();
    let lines = log.lines().filter(|l| l.contains(" refused pid ")).count() as u64;
    check(
        lines <= 10 * (secs + 2) && lines < refused,
        format!("{lines} refusal lines in the log for {refused} refusals in {secs} s"),
    )?;
    let started = Instant::now();
    while !h
        .log_text()
        .contains("more refusals not logged (at most 10 every 1 s)")
    {
        check(
            started.elapsed() < Duration::from_secs(5),
            format!("no count of the refusals not logged: {}", h.log_text()),
        )?;
        std::thread::sleep(Duration::from_millis(50));
    }
    h.alive()
}

/// A read-only attachment: partitioning and mkfs refused, the mount made
/// read-only (the superblock and the mount), the image's bytes unchanged.
pub fn a_read_only_attachment_mounts_read_only() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let scratch = user_dir()?;
    let out = probe("read-only", &h.socket, scratch.path())?;
    let want = "partition: Invalid: handle H was attached read-only: it can be mounted \
                (read-only), not partitioned or formatted\n\
                mkfs: Invalid: handle H was attached read-only: it can be mounted (read-only), \
                not partitioned or formatted\n\
                mounted: ro\n\
                read: from the image\n\
                write: Read-only file system (os error 30)\n\
                detached\n";
    eq(&out, want, "the probe's read-only attachment")?;
    eq(
        &fs::read_to_string(scratch.path().join("sums"))?,
        "same\n",
        "the image's bytes before and after",
    )?;
    no_leaks_under(scratch.path())?;
    h.alive()
}

// ---------------------------------------------------------------------------
// The probe's side (this binary as the test user, or as nobody).

fn connect(socket: &Path) -> Client {
    Client::connect_within(socket, Some(ANSWER_WITHIN)).unwrap()
}

fn say(out: &mut impl std::io::Write, line: &str) {
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

pub fn probe_fuse_overlay(socket: &Path, dir: &Path, out: &mut impl std::io::Write) {
    own_namespaces();
    let at = |p: &str| -> PathBuf {
        let d = dir.join(p);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let (fuse_dir, empty, ovl) = (at("fuse"), at("empty"), at("ovl"));
    let mut server = fuse::Server::mount(&fuse_dir).unwrap();
    // Two lower layers and no upper: a read-only overlay whose image file
    // lives on the FUSE layer (no copy-up: reads go to the FUSE server).
    let opts = format!(
        "lowerdir={}:{},userxattr",
        fuse_dir.display(),
        empty.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &ovl,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    let on_overlay = File::open(ovl.join("image")).unwrap();
    let on_fuse = File::open(fuse_dir.join("image")).unwrap();
    let c = connect(socket);
    let attach = |c: &Client, f: &File| refusal(c.attach_loop(f.as_fd(), true));
    say(out, &format!("overlay: {}", attach(&c, &on_overlay)));
    say(out, &format!("fuse: {}", attach(&c, &on_fuse)));
    // Answered, so the session has closed the fds it was sent (it does
    // that after each answer) before the server stalls.
    c.ping().unwrap();
    server.stall();
    say(out, "stalled");
    // A new connection, the same fds: the overlay's image holds the
    // helper in the kernel (it asks the FUSE server through the overlay,
    // with the credentials of the overlay's owner) until its time limit;
    // the FUSE file itself is refused at once (the helper is not allowed
    // into a FUSE mount of another user namespace).
    let c = connect(socket);
    say(
        out,
        &format!("overlay, stalled: {}", attach(&c, &on_overlay)),
    );
    let held: Vec<String> = server.held().iter().map(|o| fuse::name(*o)).collect();
    say(out, &format!("held: {}", held.join(" ")));
    let c2 = connect(socket);
    say(out, &format!("fuse, stalled: {}", attach(&c2, &on_fuse)));
    // One more stalled request under way, and two idle connections.
    let c3 = connect(socket);
    let busy = on_overlay.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = c3.attach_loop(busy.as_fd(), true);
    });
    let idle: Vec<Client> = (0..2).map(|_| connect(socket)).collect();
    say(out, &format!("holding {} connections", 3 + idle.len()));
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    // Ending the FUSE connection ends the requests it holds.
    server.end();
    say(out, line.trim_end());
    std::process::exit(0)
}

/// As a user the helper does not allow: 40 silent connections, then
/// reconnecting until stdin closes; the count of answered refusals.
pub fn probe_flood(socket: &Path, out: &mut impl std::io::Write) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let addr = rustix::net::SocketAddrUnix::new(socket).unwrap();
    let raw = || {
        let s = dib_sandbox::proto::socket().unwrap();
        rustix::net::connect(&s, &addr).map(|()| s)
    };
    let silent: Vec<_> = (0..40).map(|_| raw().unwrap()).collect();
    let answer =
        |s: &std::os::fd::OwnedFd| match dib_sandbox::proto::recv::<dib_sandbox::proto::Reply>(s) {
            Ok((dib_sandbox::proto::Reply::Error { kind, message }, _)) => {
                Some(format!("{kind:?}: {message}"))
            }
            _ => None,
        };
    let first = answer(&raw().unwrap()).unwrap_or_else(|| "no answer".into());
    // A flood under way before the allowed user comes: 300 refusals.
    let mut refused = 1u64;
    let started = Instant::now();
    while refused < 300 {
        if raw().ok().and_then(|s| answer(&s)).is_some() {
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    say(
        out,
        &format!(
            "flooding: {} silent connections held, refused with: {first}",
            silent.len()
        ),
    );
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let theirs = stop.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
        theirs.store(true, Ordering::SeqCst);
    });
    while !stop.load(Ordering::SeqCst) {
        if raw().ok().and_then(|s| answer(&s)).is_some() {
            refused += 1;
        }
        // About 100 a second, as the attack did.
        std::thread::sleep(Duration::from_millis(10));
    }
    say(
        out,
        &format!("refused {refused} in {} ms", started.elapsed().as_millis()),
    );
    drop(silent);
}

/// As the allowed user: 100 connections in a row, each greeted and pinged.
pub fn probe_hello_many(socket: &Path, out: &mut impl std::io::Write) {
    let mut ok = 0;
    let mut errors = std::collections::BTreeSet::new();
    for _ in 0..100 {
        match Client::connect_within(socket, Some(ANSWER_WITHIN)).and_then(|c| c.ping()) {
            Ok(()) => ok += 1,
            Err(e) => {
                errors.insert(e.to_string());
            }
        }
    }
    say(out, &format!("accepted {ok} of 100"));
    for e in errors {
        say(out, &format!("error: {e}"));
    }
}

pub fn probe_read_only(socket: &Path, dir: &Path, out: &mut impl std::io::Write) {
    let content = dir.join("content");
    fs::create_dir_all(&content).unwrap();
    fs::write(content.join("hello"), "from the image\n").unwrap();
    let img = dir.join("ro.img");
    let mk = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            "-d",
        ])
        .arg(&content)
        .arg(&img)
        .arg("16M")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(mk.success(), "mkfs.ext4: {mk}");
    let sum = || fs::read(&img).unwrap();
    let before = sum();
    let f = File::open(&img).unwrap();
    own_namespaces();
    let c = connect(socket);
    let (h, _, _) = c.attach_loop(f.as_fd(), true).unwrap();
    let table = dib_sandbox::table::Table {
        label: dib_sandbox::table::Label::Mbr,
        disk_id: "12345678".into(),
        entries: vec![],
    };
    let hide = |s: String| s.replace(&format!("handle {h} "), "handle H ");
    say(
        out,
        &hide(format!(
            "partition: {}",
            refusal(c.write_partitions(h, &table))
        )),
    );
    let spec = dib_sandbox::mkfs::MkfsSpec {
        fs: FsType::Ext4,
        label: None,
        uuid: "6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e".into(),
        size: 16 << 20,
        journal: None,
        max_online_resize: None,
        extended: vec![],
        options: vec![],
    };
    say(
        out,
        &hide(format!("mkfs: {}", refusal(c.mkfs(h, 0, &spec)))),
    );
    let userns = File::open("/proc/self/ns/user").unwrap();
    let mnt = c
        .mount_idmapped(h, 0, FsType::Ext4, userns.as_fd())
        .unwrap();
    let at = dir.join("mnt");
    let opts = attach_at(&mnt, &at);
    let ro = opts.split(',').any(|o| o == "ro");
    say(out, &format!("mounted: {}", if ro { "ro" } else { &opts }));
    say(
        out,
        &format!(
            "read: {}",
            fs::read_to_string(at.join("hello")).unwrap().trim_end()
        ),
    );
    let w = fs::write(at.join("hello"), "changed\n")
        .map(|()| "WRITTEN".to_string())
        .unwrap_or_else(|e| e.to_string());
    say(out, &format!("write: {w}"));
    drop(mnt);
    dib_sandbox::mounts::unmount(&at).unwrap();
    c.detach(h).unwrap();
    say(out, "detached");
    let same = if sum() == before { "same" } else { "CHANGED" };
    fs::write(dir.join("sums"), format!("{same}\n")).unwrap();
}
