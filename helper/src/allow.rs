//! Who may connect ([`Allow`]), decided from the peer's credentials alone
//! with no lookup on the accept path, and the rate limit on the lines a
//! flood of refused peers would otherwise add to the log ([`LogLimit`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::Peer;

/// Who may use the helper: root, the listed users, and members of the
/// listed groups. Names were resolved to ids once, at start.
#[derive(Debug, Clone, Default)]
pub struct Allow {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Allow {
    /// Root and the listed users.
    pub fn lists(&self, uid: u32) -> bool {
        uid == 0 || self.uids.contains(&uid)
    }

    /// Whether `peer` may connect: root, a listed user, a process whose
    /// gid or supplementary groups (SO_PEERCRED, SO_PEERGROUPS: what the
    /// kernel says of the connecting process) include a listed group, or a
    /// user the group database lists as a member of one (`members`, read
    /// off the accept path: dib's pid 1 connects from a build that dropped
    /// its supplementary groups). No lookup happens here; the refusal says
    /// why.
    pub fn check(&self, peer: &Peer, members: &BTreeSet<u32>) -> Result<(), String> {
        let in_group = std::iter::once(&peer.gid)
            .chain(&peer.groups)
            .any(|g| self.gids.contains(g));
        if self.lists(peer.uid) || in_group || members.contains(&peer.uid) {
            return Ok(());
        }
        Err(format!(
            "uid {} is not allowed to use this dib-helper: ask its administrator to add \
             --allow-user with your user name, or to add you to a group it allows \
             (--allow-group)",
            peer.uid
        ))
    }
}

/// At most `per_window` lines in each window of time; the lines over that
/// are counted, and one summary line says how many went unlogged.
#[derive(Debug)]
pub struct LogLimit {
    per_window: u32,
    window: Duration,
    started: Option<Instant>,
    shown: u32,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(per_window: u32, window: Duration) -> LogLimit {
        LogLimit {
            per_window,
            window,
            started: None,
            shown: 0,
            suppressed: 0,
        }
    }

    /// The lines to log for one more event at `now`: the summary of the
    /// last window, if it suppressed any, then `line` unless this window
    /// is full.
    pub fn lines(&mut self, now: Instant, line: impl FnOnce() -> String) -> Vec<String> {
        let mut out: Vec<String> = self.flush(now).into_iter().collect();
        if self.started.is_none() {
            self.started = Some(now);
        }
        if self.shown < self.per_window {
            self.shown += 1;
            out.push(line());
        } else {
            self.suppressed += 1;
        }
        out
    }

    /// The summary line, once the window that suppressed lines is over.
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        let start = self.started?;
        if now.duration_since(start) < self.window {
            return None;
        }
        self.started = None;
        self.shown = 0;
        let n = std::mem::take(&mut self.suppressed);
        (n > 0).then(|| {
            format!(
                "dib-helper: {n} more refusals not logged (at most {} every {} s)",
                self.per_window,
                self.window.as_secs()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: 1,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn users_groups_and_members_are_allowed_and_no_one_else() {
        let allow = Allow {
            uids: vec![1000],
            gids: vec![50],
        };
        let members: BTreeSet<u32> = [2000].into();
        for (p, ok) in [
            (peer(0, 0, &[]), true),
            (peer(1000, 1000, &[]), true),
            (peer(3000, 50, &[]), true),
            (peer(3000, 3000, &[7, 50]), true),
            (peer(2000, 2000, &[]), true),
            (peer(3000, 3000, &[7, 8]), false),
        ] {
            assert_eq!(allow.check(&p, &members).is_ok(), ok, "{p:?}");
        }
        assert_eq!(
            allow.check(&peer(3000, 3000, &[]), &members).unwrap_err(),
            "uid 3000 is not allowed to use this dib-helper: ask its administrator to add \
             --allow-user with your user name, or to add you to a group it allows \
             (--allow-group)"
        );
    }

    #[test]
    fn a_flood_is_logged_as_a_few_lines_and_a_count() {
        let mut limit = LogLimit::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let mut logged = Vec::new();
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            logged.extend(limit.lines(now, || format!("refused {i}")));
        }
        assert_eq!(logged, ["refused 0", "refused 1", "refused 2"]);
        // The next window starts with the count of the last one.
        let next = limit.lines(t0 + Duration::from_millis(1500), || "refused again".into());
        assert_eq!(
            next,
            [
                "dib-helper: 997 more refusals not logged (at most 3 every 1 s)",
                "refused again"
            ]
        );
        // Quiet windows say nothing; the count comes by itself once the
        // window is over.
        assert_eq!(limit.flush(t0 + Duration::from_millis(1600)), None);
        assert_eq!(limit.flush(t0 + Duration::from_secs(9)), None);
        for i in 0..5 {
            limit.lines(t0 + Duration::from_secs(10), || format!("{i}"));
        }
        assert_eq!(
            limit.flush(t0 + Duration::from_secs(11)).as_deref(),
            Some("dib-helper: 2 more refusals not logged (at most 3 every 1 s)")
        );
    }
}
