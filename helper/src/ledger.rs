//! The helper's count of each user's loop devices, across connections, and
//! the handles it gives out ([`Loops`]). Each connection is served by a
//! process of its own, so the main process keeps the count and a session
//! asks it over a socket ([`ControlLedger`], answered by [`answer`]);
//! tier 1 uses the same count in one process ([`LocalLedger`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use dib_sandbox::proto::{self, ErrorKind, Handle};
use serde::{Deserialize, Serialize};

use crate::Fail;

/// What a session needs of the count: a handle for one more loop device
/// (or why not), and what became of it.
pub trait Ledger {
    /// A handle for one more loop device of the peer's, within its user's
    /// limit.
    fn reserve(&mut self) -> Result<Handle, Fail>;
    /// The reserved handle's loop device is attached as `device`.
    fn bound(&mut self, handle: Handle, device: &str);
    /// The reserved handle was not used.
    fn cancel(&mut self, handle: Handle);
}

/// Loop devices each user's connections attached, counting those a closed
/// connection left bound to mounts still alive, and the handles reserved
/// and not yet attached.
#[derive(Debug, Default)]
pub struct Loops {
    users: BTreeMap<u32, UserLoops>,
    last: Handle,
}

#[derive(Debug, Default)]
struct UserLoops {
    bound: Vec<String>,
    pending: BTreeSet<Handle>,
}

impl Loops {
    /// A handle unique across the helper's connections for one more loop
    /// device of `uid`'s, unless it already has `limit` (those no longer
    /// attached, by `still_bound`, do not count).
    pub fn reserve(
        &mut self,
        uid: u32,
        limit: usize,
        still_bound: impl Fn(&str) -> bool,
    ) -> Result<Handle, Fail> {
        let mine = self.users.entry(uid).or_default();
        mine.bound.retain(|n| still_bound(n));
        let held = mine.bound.len() + mine.pending.len();
        if held >= limit {
            return Err((
                ErrorKind::Limit,
                format!(
                    "your connections hold {held} loop devices (some kept by mounts still \
                     alive), the limit"
                ),
            ));
        }
        self.last = self.last.checked_add(1).unwrap_or(1);
        mine.pending.insert(self.last);
        Ok(self.last)
    }

    pub fn bound(&mut self, uid: u32, handle: Handle, device: &str) {
        let mine = self.users.entry(uid).or_default();
        if mine.pending.remove(&handle) {
            mine.bound.push(device.to_string());
        }
    }

    pub fn cancel(&mut self, uid: u32, handle: Handle) {
        if let Some(mine) = self.users.get_mut(&uid) {
            mine.pending.remove(&handle);
        }
    }
}

/// A [`Ledger`] over a [`Loops`] of this process, for one user.
#[derive(Debug, Clone)]
pub struct LocalLedger {
    pub loops: Arc<Mutex<Loops>>,
    pub uid: u32,
    pub limit: usize,
    pub still_bound: fn(&str) -> bool,
}

impl LocalLedger {
    fn loops(&self) -> std::sync::MutexGuard<'_, Loops> {
        self.loops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Ledger for LocalLedger {
    fn reserve(&mut self) -> Result<Handle, Fail> {
        let (uid, limit, still_bound) = (self.uid, self.limit, self.still_bound);
        self.loops().reserve(uid, limit, still_bound)
    }

    fn bound(&mut self, handle: Handle, device: &str) {
        let uid = self.uid;
        self.loops().bound(uid, handle, device);
    }

    fn cancel(&mut self, handle: Handle) {
        let uid = self.uid;
        self.loops().cancel(uid, handle);
    }
}

/// A session process's questions to the main process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ask", deny_unknown_fields)]
enum Ask {
    Reserve {},
    Bound {
        handle: Handle,
        device: String,
    },
    Cancel {
        handle: Handle,
    },
    /// A request ran over its time limit: the session process is ending,
    /// though a thread the kernel holds may keep it alive a while yet.
    Stuck {},
}

/// The main process's answer to [`Ask::Reserve`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", deny_unknown_fields)]
enum Answer {
    Granted { handle: Handle },
    Refused { message: String },
}

/// The session process's [`Ledger`]: the main process's count, over the
/// socket it was started with.
#[derive(Debug)]
pub struct ControlLedger {
    sock: OwnedFd,
}

impl ControlLedger {
    pub fn new(sock: OwnedFd) -> ControlLedger {
        ControlLedger { sock }
    }
}

fn gone(e: proto::ProtoError) -> Fail {
    (
        ErrorKind::Failed,
        format!("dib-helper's main process does not answer: {e}"),
    )
}

impl Ledger for ControlLedger {
    fn reserve(&mut self) -> Result<Handle, Fail> {
        proto::send(&self.sock, &Ask::Reserve {}, &[]).map_err(gone)?;
        match proto::recv::<Answer>(&self.sock).map_err(gone)?.0 {
            Answer::Granted { handle } => Ok(handle),
            Answer::Refused { message } => Err((ErrorKind::Limit, message)),
        }
    }

    fn bound(&mut self, handle: Handle, device: &str) {
        let ask = Ask::Bound {
            handle,
            device: device.to_string(),
        };
        let _ = proto::send(&self.sock, &ask, &[]);
    }

    fn cancel(&mut self, handle: Handle) {
        let _ = proto::send(&self.sock, &Ask::Cancel { handle }, &[]);
    }
}

/// Tell the main process, over the session's socket to it, that a request
/// ran over its limit (from the watchdog's thread: the session's own
/// thread is in the kernel, not in a conversation with the main process).
pub fn report_stuck(sock: impl AsFd) {
    let _ = proto::send(&sock, &Ask::Stuck {}, &[]);
}

/// The main process's side: answer one session process's questions with
/// `ledger` until it hangs up (or sends what no session sends), then give
/// back the handles it reserved and never used. `on_stuck` is called when
/// the session reports a request over its limit: the process may linger
/// (a thread of it held by the kernel, its socket with it, so no hang-up
/// comes), and the caller gives back what it need not hold meanwhile.
pub fn answer(sock: impl AsFd, ledger: &mut LocalLedger, mut on_stuck: impl FnMut()) {
    let mut pending = BTreeSet::new();
    loop {
        let Ok((ask, _)) = proto::recv::<Ask>(&sock) else {
            break;
        };
        match ask {
            Ask::Reserve {} => {
                let answer = match ledger.reserve() {
                    Ok(handle) => {
                        pending.insert(handle);
                        Answer::Granted { handle }
                    }
                    Err((_, message)) => Answer::Refused { message },
                };
                if proto::send(&sock, &answer, &[]).is_err() {
                    break;
                }
            }
            Ask::Bound { handle, device } => {
                if pending.remove(&handle) {
                    ledger.bound(handle, &device);
                }
            }
            Ask::Cancel { handle } => {
                if pending.remove(&handle) {
                    ledger.cancel(handle);
                }
            }
            Ask::Stuck {} => on_stuck(),
        }
    }
    for handle in pending {
        ledger.cancel(handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &str) -> bool {
        false
    }

    fn always(_: &str) -> bool {
        true
    }

    #[test]
    fn each_user_has_its_own_count_and_handles_are_unique() {
        let mut loops = Loops::default();
        let a: Vec<Handle> = (0..3)
            .map(|_| loops.reserve(1000, 3, always).unwrap())
            .collect();
        assert_eq!(a, [1, 2, 3]);
        let (kind, msg) = loops.reserve(1000, 3, always).unwrap_err();
        assert_eq!(kind, ErrorKind::Limit);
        assert_eq!(
            msg,
            "your connections hold 3 loop devices (some kept by mounts still alive), the limit"
        );
        assert_eq!(loops.reserve(2000, 3, always).unwrap(), 4);
        loops.bound(1000, 1, "/dev/loop1");
        loops.cancel(1000, 2);
        loops.cancel(1000, 3);
        // One bound (and still attached) and two free again.
        assert!(loops.reserve(1000, 3, always).is_ok());
        assert!(loops.reserve(1000, 3, always).is_ok());
        assert!(loops.reserve(1000, 3, always).is_err());
        // Detached devices stop counting.
        loops.bound(1000, 5, "/dev/loop5");
        loops.bound(1000, 6, "/dev/loop6");
        assert!(loops.reserve(1000, 3, never).is_ok());
    }

    #[test]
    fn a_session_process_asks_and_its_unused_handles_come_back() {
        let (ours, theirs) = proto::socket_pair().unwrap();
        let loops = Arc::new(Mutex::new(Loops::default()));
        let mut main_side = LocalLedger {
            loops: loops.clone(),
            uid: 1000,
            limit: 2,
            still_bound: always,
        };
        let t = std::thread::spawn(move || answer(theirs, &mut main_side, || {}));
        let mut session = ControlLedger::new(ours);
        let h1 = session.reserve().unwrap();
        session.bound(h1, "/dev/loop1");
        let _h2 = session.reserve().unwrap();
        let (kind, _) = session.reserve().unwrap_err();
        assert_eq!(kind, ErrorKind::Limit);
        drop(session);
        t.join().unwrap();
        // The bound one stays counted, the reserved one is free again.
        let mut l = loops.lock().unwrap();
        assert!(l.reserve(1000, 2, always).is_ok());
        assert!(l.reserve(1000, 2, always).is_err());
    }
}
