//! Round trip of a helper request: `cargo bench -p dib-helper --bench
//! roundtrip`. Prints the time of a `Ping` through the protocol code alone
//! (a session over a socket pair, in this process) and, when
//! `DIB_HELPER_SOCKET` names a running dib-helper, through the real helper,
//! plus an attach + detach of a loop device there (needs an allowed peer).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dib_helper::{Devices, Fail, LocalLedger, Peer, Session, LIMITS};
use dib_sandbox::client::Client;
use dib_sandbox::mkfs::{FsType, MkfsSpec};
use dib_sandbox::table::Table;

/// A device layer that does nothing: the protocol's cost alone.
#[derive(Debug)]
struct Nothing;

impl Devices for Nothing {
    type Loop = ();
    fn attach(&mut self, _: OwnedFd, _: bool) -> Result<(), Fail> {
        Ok(())
    }
    fn size(&self, _: &()) -> u64 {
        0
    }
    fn name(&self, _: &()) -> String {
        String::new()
    }
    fn write_table(&mut self, _: &mut (), _: &Table) -> Result<Vec<String>, Fail> {
        Ok(vec![])
    }
    fn mkfs(&mut self, _: &(), _: u32, _: &MkfsSpec) -> Result<(), Fail> {
        Ok(())
    }
    fn mount(&mut self, _: &(), _: u32, _: FsType, _: BorrowedFd<'_>) -> Result<OwnedFd, Fail> {
        Err((dib_sandbox::proto::ErrorKind::Unsupported, String::new()))
    }
    fn detach(&mut self, _: ()) -> Result<(), Fail> {
        Ok(())
    }
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let n = times.len();
    let mean = times.iter().sum::<Duration>() / n as u32;
    let pct = |p: usize| times[(n * p / 100).min(n - 1)];
    println!(
        "{what}: n={n} mean {:.1} us, median {:.1} us, p99 {:.1} us",
        mean.as_secs_f64() * 1e6,
        pct(50).as_secs_f64() * 1e6,
        pct(99).as_secs_f64() * 1e6
    );
}

fn time(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..n / 10 {
        f(); // warm up
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn main() {
    let (a, b) = dib_sandbox::proto::socket_pair().expect("socketpair");
    let uid = rustix::process::geteuid().as_raw();
    let peer = Peer {
        uid,
        gid: 0,
        pid: 1,
        groups: vec![],
    };
    let ledger = LocalLedger {
        loops: Default::default(),
        uid,
        limit: LIMITS.loops_per_user,
        still_bound: |_| false,
    };
    std::thread::spawn(move || Session::new(Nothing, ledger, peer, LIMITS).serve(&b));
    let c = Client::greet(a).expect("hello");
    report(
        "Ping, protocol only (socket pair, no-op devices)",
        time(20000, || c.ping().unwrap()),
    );
    let Some(socket) = std::env::var_os("DIB_HELPER_SOCKET").map(PathBuf::from) else {
        println!("(set DIB_HELPER_SOCKET to a running dib-helper for its figures)");
        return;
    };
    let t = Instant::now();
    let c = Client::connect(&socket).expect("connecting to the helper");
    println!(
        "connect + Hello to dib-helper: {:.1} us",
        t.elapsed().as_secs_f64() * 1e6
    );
    report("Ping, dib-helper", time(20000, || c.ping().unwrap()));
    let img = tempfile::tempfile().expect("temp file");
    img.set_len(64 << 20).unwrap();
    report(
        "AttachLoop + Detach of a 64 MiB file, dib-helper",
        time(200, || {
            let (h, _, _) = c.attach_loop(img.as_fd(), false).unwrap();
            c.detach(h).unwrap();
        }),
    );
}
