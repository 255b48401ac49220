//! Subordinate id ranges (`/etc/subuid`, `/etc/subgid`, see subuid(5)).
//!
//! The build's user namespace maps 0 to the invoking user and 1..=N to the
//! user's subordinate range, so files in an image can belong to root, to
//! `_apt`, to the `shadow` group and so on. A user without a range can only
//! own files as one id; we stop with the `usermod` line that fixes it.

use std::fmt;
use std::path::Path;

/// Which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uid,
    Gid,
}

impl Kind {
    pub fn file(self) -> &'static str {
        match self {
            Kind::Uid => "/etc/subuid",
            Kind::Gid => "/etc/subgid",
        }
    }

    fn usermod_flag(self) -> &'static str {
        match self {
            Kind::Uid => "--add-subuids",
            Kind::Gid => "--add-subgids",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Uid => "subuid",
            Kind::Gid => "subgid",
        })
    }
}

/// A contiguous range of subordinate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub count: u32,
}

/// Smallest range a build can work with: Debian's system users and groups
/// (`_apt` is 42, `shadow` 42, `nogroup` 65534) must all be representable.
pub const MIN_COUNT: u32 = 65536;

#[derive(Debug, thiserror::Error)]
pub enum SubIdError {
    #[error(
        "user '{user}' has no {kind} range in {file}, so the build cannot own files as other users; \
         fix it as root with: usermod {flag} 100000-165535 {user} (pick a range no other user has)",
        file = kind.file(),
        flag = kind.usermod_flag()
    )]
    Missing { user: String, kind: Kind },
    #[error(
        "user '{user}' has only {count} ids in {file}; a build needs {MIN_COUNT} (Debian's system \
         users go up to 65534): add a larger range with usermod {flag} START-END {user}",
        file = kind.file(),
        flag = kind.usermod_flag()
    )]
    TooSmall {
        user: String,
        kind: Kind,
        count: u32,
    },
    #[error("reading {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// Ranges of `user` (by name or numeric id) in a subuid/subgid table's text,
/// in file order. Malformed lines are skipped, as shadow's tools do.
pub fn parse(text: &str, user: &str, id: u32) -> Vec<Range> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let (owner, start, count) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || (owner != user && owner != id) {
                return None;
            }
            let range = Range {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            };
            (range.count > 0).then_some(range)
        })
        .collect()
}

/// The first range of `user` that is large enough for a build.
pub fn find(kind: Kind, table: &Path, user: &str, id: u32) -> Result<Range, SubIdError> {
    let text = match std::fs::read_to_string(table) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(SubIdError::Read {
                file: table.display().to_string(),
                source,
            })
        }
    };
    let ranges = parse(&text, user, id);
    if let Some(r) = ranges.iter().find(|r| r.count >= MIN_COUNT) {
        return Ok(*r);
    }
    match ranges.iter().map(|r| r.count).max() {
        Some(count) => Err(SubIdError::TooSmall {
            user: user.to_string(),
            kind,
            count,
        }),
        None => Err(SubIdError::Missing {
            user: user.to_string(),
            kind,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_by_name_or_id() {
        let text = "alice:100000:65536\n1001:200000:65536\nbob:300000:65536\nbad line\nalice:x:1\nalice:5:0\n";
        assert_eq!(
            parse(text, "alice", 1001),
            vec![
                Range {
                    start: 100000,
                    count: 65536
                },
                Range {
                    start: 200000,
                    count: 65536
                }
            ]
        );
        assert_eq!(parse(text, "carol", 1002), vec![]);
    }

    #[test]
    fn errors_say_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("subuid");
        std::fs::write(&table, "alice:100000:1000\n").unwrap();
        let err = find(Kind::Uid, &table, "bob", 1002)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "user 'bob' has no subuid range in /etc/subuid, so the build cannot own files as other \
             users; fix it as root with: usermod --add-subuids 100000-165535 bob (pick a range no \
             other user has)"
        );
        let err = find(Kind::Gid, &table, "alice", 1001)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("user 'alice' has only 1000 ids in /etc/subgid; a build needs 65536"),
            "{err}"
        );
        let missing = find(Kind::Uid, &dir.path().join("nope"), "bob", 1002).unwrap_err();
        assert!(matches!(missing, SubIdError::Missing { .. }));
    }
}
