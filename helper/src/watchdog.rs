//! A time limit on each request a session serves: the kernel work behind
//! a request (an fd's filesystem asked for its type, a loop device
//! attached, a table flushed, mkfs, a mount) can wait forever on storage
//! that never answers. When a request runs over its limit, the watchdog
//! answers the client itself (`Failed`, saying which request), hangs up
//! on it, and calls the session's `on_stuck` (the session process exits
//! there, leaving the stuck thread to the kernel).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dib_sandbox::proto::{self, ErrorKind, Reply};

/// What `on_stuck` is: called once, on the watchdog's thread.
pub type OnStuck = Arc<dyn Fn() + Send + Sync>;

#[derive(Debug)]
enum State {
    Idle,
    Armed {
        until: Instant,
        what: String,
        limit: Duration,
    },
    Fired,
    Closed,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The watchdog of one session: a thread that sleeps until the armed
/// request's time is up.
#[derive(Debug)]
pub struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Watch the session on `sock` (a duplicate of its socket).
    pub fn start(sock: OwnedFd, on_stuck: OnStuck) -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Idle),
            wake: Condvar::new(),
        });
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || watch(&theirs, &sock, &on_stuck))?;
        Ok(Watchdog { shared })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start the clock on `what`, which may take `limit`.
    pub fn arm(&self, what: String, limit: Duration) {
        let mut s = self.state();
        if matches!(*s, State::Idle) {
            *s = State::Armed {
                until: Instant::now() + limit,
                what,
                limit,
            };
            self.shared.wake.notify_all();
        }
    }

    /// Stop the clock: `false` when it ran out first (the client has its
    /// answer and is hung up on; the session must say nothing more).
    pub fn disarm(&self) -> bool {
        let mut s = self.state();
        match *s {
            State::Fired => false,
            State::Closed => true,
            _ => {
                *s = State::Idle;
                true
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *self.state() = State::Closed;
        self.shared.wake.notify_all();
    }
}

fn watch(shared: &Shared, sock: &OwnedFd, on_stuck: &OnStuck) {
    let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let (what, limit) = match &*s {
            State::Closed => return,
            State::Idle | State::Fired => {
                s = shared.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            State::Armed { until, what, limit } => {
                let now = Instant::now();
                if now < *until {
                    let left = *until - now;
                    s = shared
                        .wake
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    continue;
                }
                (what.clone(), *limit)
            }
        };
        *s = State::Fired;
        drop(s);
        // The session's thread is inside the kernel, not on the socket;
        // a client that reads nothing must not hold this thread either.
        let _ = rustix::fs::fcntl_setfl(sock, rustix::fs::OFlags::NONBLOCK);
        let message = format!(
            "dib-helper gave up on {what} after {} s: the kernel did not finish it (is the \
             storage below the image stalled?); this connection is closed",
            limit.as_secs()
        );
        let _ = proto::send(
            sock,
            &Reply::Error {
                kind: ErrorKind::Failed,
                message,
            },
            &[],
        );
        let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Both);
        on_stuck();
        s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    }
}
