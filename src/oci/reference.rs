//! Image references of a registry: `[docker://]HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]`.
//!
//! dib takes only references that name their registry (the first component
//! has a `.` or a `:`, or is `localhost`): a short name would mean whatever
//! registry the host's container tools default to, which a build should not
//! depend on.

use std::fmt;
use std::net::IpAddr;

use anyhow::{bail, Result};

/// A parsed reference to an image in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST` or `HOST:PORT` (an IPv6 address in brackets).
    pub registry: String,
    /// The repository path, lower case, `/`-separated.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

const FORM: &str = "HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]";

impl Reference {
    /// Parse `s` (with or without `docker://`).
    pub fn parse(s: &str) -> Result<Reference> {
        let given = s;
        let s = s.strip_prefix("docker://").unwrap_or(s);
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("the image reference {given:?} is not valid: use {FORM}");
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    bail!(
                        "the image reference {given:?} has a bad digest {d:?}: a digest is sha256: and 64 lower-case hex digits"
                    );
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        let Some((registry, rest)) = name.split_once('/') else {
            bail!("the image reference {given:?} names no registry: use {FORM}");
        };
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            bail!(
                "the image reference {given:?} names no registry ({registry:?} is a repository name, not a host): use {FORM}"
            );
        }
        check_registry(given, registry)?;
        // A tag is after the last ':' of the path's last component.
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                bail!(
                    "the image reference {given:?} has a bad tag {t:?}: a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
                );
            }
        }
        for part in repository.split('/') {
            if !valid_path_component(part) {
                bail!(
                    "the image reference {given:?} has a bad repository {repository:?}: each '/'-separated part is lower-case letters and digits, joined by '.', '_', '__' or '-'"
                );
            }
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The registry's host, without port or brackets.
    pub fn host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(inner) = r.strip_prefix('[') {
            return inner.split(']').next().unwrap_or(inner);
        }
        r.rsplit_once(':').map_or(r, |(h, _)| h)
    }

    /// The registry's port, when given.
    pub fn port(&self) -> Option<u16> {
        let r = self.registry.as_str();
        let after = match r.strip_prefix('[') {
            Some(inner) => inner.split_once("]:").map(|(_, p)| p),
            None => r.rsplit_once(':').map(|(_, p)| p),
        };
        after.and_then(|p| p.parse().ok())
    }

    /// Whether the registry is on this machine's loopback (where plain
    /// HTTP is allowed without asking).
    pub fn is_loopback(&self) -> bool {
        let h = self.host();
        h == "localhost" || h.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
    }

    /// The reference for skopeo and the other containers tools: `docker://...`.
    pub fn transport(&self) -> String {
        format!("docker://{self}")
    }
}

fn check_registry(given: &str, registry: &str) -> Result<()> {
    let (host, port) = if let Some(inner) = registry.strip_prefix('[') {
        let Some((addr, rest)) = inner.split_once(']') else {
            bail!("the image reference {given:?} has a bad registry {registry:?}");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            bail!("the image reference {given:?} has a bad registry {registry:?}: {addr:?} is not an IPv6 address");
        }
        match rest {
            "" => ("", None),
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => bail!("the image reference {given:?} has a bad registry {registry:?}"),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            bail!(
                "the image reference {given:?} has a bad registry port {p:?}: a port is 1 to 65535"
            );
        }
    }
    let host_ok = host.is_empty()
        || host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !host_ok {
        bail!("the image reference {given:?} has a bad registry host {host:?}");
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_into_their_parts() {
        let d = format!("sha256:{}", "a".repeat(64));
        // (given, registry, repository, tag, digest, loopback)
        type Case<'a> = (
            String,
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "localhost:5000/dib/img:1".into(),
                "localhost:5000",
                "dib/img",
                Some("1"),
                None,
                true,
            ),
            (
                "docker://127.0.0.1:5000/img".into(),
                "127.0.0.1:5000",
                "img",
                None,
                None,
                true,
            ),
            (
                "[::1]:5000/a/b:v1.2".into(),
                "[::1]:5000",
                "a/b",
                Some("v1.2"),
                None,
                true,
            ),
            (
                "registry.example.org/team/vm".into(),
                "registry.example.org",
                "team/vm",
                None,
                None,
                false,
            ),
            (
                format!("reg.example:443/x@{d}"),
                "reg.example:443",
                "x",
                None,
                Some(d.as_str()),
                false,
            ),
            (
                format!("localhost/x:t@{d}"),
                "localhost",
                "x",
                Some("t"),
                Some(d.as_str()),
                true,
            ),
        ];
        for (given, reg, repo, tag, digest, lo) in cases {
            let r = Reference::parse(&given).unwrap();
            assert_eq!(r.registry, reg, "{given}");
            assert_eq!(r.repository, repo, "{given}");
            assert_eq!(r.tag.as_deref(), tag, "{given}");
            assert_eq!(r.digest.as_deref(), digest, "{given}");
            assert_eq!(r.is_loopback(), lo, "{given}");
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{given}");
        }
        let r = Reference::parse("[::1]:5000/a").unwrap();
        assert_eq!((r.host(), r.port()), ("::1", Some(5000)));
        let r = Reference::parse("localhost:5000/a").unwrap();
        assert_eq!((r.host(), r.port()), ("localhost", Some(5000)));
        assert_eq!(r.transport(), "docker://localhost:5000/a");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let cases = [
            ("", "is not valid"),
            ("img:latest", "names no registry"),
            (
                "library/img",
                "names no registry (\"library\" is a repository name",
            ),
            ("localhost:0/x", "bad registry port \"0\""),
            ("localhost:99999/x", "bad registry port"),
            ("reg.example/Upper", "bad repository \"Upper\""),
            ("reg.example/a//b", "bad repository"),
            ("reg.example/a:-t", "bad tag \"-t\""),
            ("reg.example/a@sha256:abc", "bad digest"),
            ("reg.example/a b", "is not valid"),
            ("bad_host.example/a", "bad registry host"),
        ];
        for (given, want) in cases {
            let e = Reference::parse(given).unwrap_err().to_string();
            assert!(e.contains(want), "{given:?}: {e}");
        }
    }
}
