//! `--push REF`: a build's container image copied to a registry with
//! skopeo, once the build has succeeded and its outputs are named.
//!
//! Everything a push needs is checked before the build starts
//! ([`check`]): the reference (parsed with the configuration, into a
//! [`PushTarget`]), the one output skopeo can push, skopeo itself, the
//! auth file and the registry answering a TCP connect. The push itself
//! ([`Push::run`]) runs on the host, in the dib process, after the sandbox
//! returned success: skopeo's progress goes to the user's stderr, between
//! a `pushing` and a `pushed REF@DIGEST` line. A failed push leaves the
//! outputs in place and says how to push them by hand.

use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};

use super::reference::Reference;
use crate::config::{BuildConfig, Env, Mode, OutputType};
use crate::pipeline::outputs::Output;

/// The flag and the variables of a push.
const FLAG: &str = "--push";
const VAR: &str = "DIB_PUSH";
/// An auth file for skopeo other than its default.
const AUTH_FILE_VAR: &str = "REGISTRY_AUTH_FILE";
/// The containers tools' trust policy, which skopeo refuses to run without.
const SYSTEM_POLICY: &str = "/etc/containers/policy.json";
/// The policy dib hands skopeo when the host has none: dib pushes what it
/// built, so there is no signature to require.
const ACCEPT_ANYTHING: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;
/// How long the registry has to accept a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where `--push` (or `DIB_PUSH`) sends the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub reference: Reference,
    /// `--push-insecure` / `DIB_PUSH_INSECURE=1`: plain HTTP or unverified
    /// TLS also for a registry that is not on the loopback.
    pub insecure: bool,
    /// Where the reference came from: `--push` or `DIB_PUSH`.
    pub given_by: &'static str,
}

impl PushTarget {
    /// The target of `--push VALUE` (`from_env`: of `DIB_PUSH=VALUE`).
    pub fn parse(value: &str, from_env: bool, insecure: bool) -> Result<PushTarget> {
        let given_by = if from_env { VAR } else { FLAG };
        let invalid = || {
            if from_env {
                format!("{VAR}={value:?} is not valid")
            } else {
                format!("invalid value {value:?} for '{FLAG} <REF>'")
            }
        };
        let reference = Reference::parse(value).with_context(invalid)?;
        if reference.digest.is_some() {
            return Err(anyhow::anyhow!(
                "a push names a tag, not a digest (the registry gives the pushed image its digest): \
                 use HOST[:PORT]/REPOSITORY[:TAG]"
            ))
            .with_context(invalid);
        }
        Ok(PushTarget {
            reference,
            insecure,
            given_by,
        })
    }

    /// `--push REF` or `DIB_PUSH=REF`, as messages name it.
    pub fn named(&self) -> String {
        match self.given_by {
            VAR => format!("{VAR}={}", self.reference),
            _ => format!("{FLAG} {}", self.reference),
        }
    }

    /// Whether skopeo must use TLS and verify the registry's certificate:
    /// yes, unless `--push-insecure` or the registry is on the loopback.
    pub fn tls_verify(&self) -> bool {
        !(self.insecure || self.reference.is_loopback())
    }

    /// The ports the registry is tried on: the one given; else 443, and 80
    /// too when plain HTTP is allowed (skopeo falls back to it then).
    pub fn ports(&self) -> Vec<u16> {
        match (self.reference.port(), self.tls_verify()) {
            (Some(p), _) => vec![p],
            (None, true) => vec![443],
            (None, false) => vec![443, 80],
        }
    }
}

/// skopeo's name for an output it can push, by transport:
///
/// - `-t oci`: `oci:PATH` (the layout directory `NAME.oci/`)
/// - `-t oci-archive`: `oci-archive:PATH` (`NAME.oci.tar`)
/// - `-t docker`: `docker-archive:PATH` (`NAME.docker.tar`)
/// - `-t containerdisk`: `oci:PATH` (the layout directory `NAME.containerdisk/`)
///
/// `None` for every output that is not a container image.
pub fn source(out: &Output) -> Option<String> {
    let path = out.path.display();
    match out.kind {
        OutputType::Oci | OutputType::ContainerDisk => Some(format!("oci:{path}")),
        OutputType::OciArchive => Some(format!("oci-archive:{path}")),
        OutputType::Docker => Some(format!("docker-archive:{path}")),
        _ => None,
    }
}

/// The one output of `outputs` that `target` pushes. oci, oci-archive
/// and docker outputs are one image: the first of them in that order is
/// pushed.
pub fn choose<'a>(target: &PushTarget, outputs: &'a [Output]) -> Result<&'a Output> {
    let mut pushable: Vec<&Output> = outputs.iter().filter(|o| source(o).is_some()).collect();
    let rank = |o: &Output| match o.kind {
        OutputType::Oci => 0,
        OutputType::OciArchive => 1,
        OutputType::Docker => 2,
        _ => 3,
    };
    pushable.sort_by_key(|o| rank(o));
    pushable.dedup_by(|b, a| rank(a) < 3 && rank(b) < 3);
    match pushable.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "{} needs an OCI output: add -t oci (a container image) or -t containerdisk \
             (a VM disk for KubeVirt)",
            target.given_by
        ),
        many => {
            let listed: Vec<String> = many
                .iter()
                .map(|o| format!("{} (-t {})", o.path.display(), o.kind))
                .collect();
            bail!(
                "{} pushes one image, and this build writes {} that could be pushed: {}; \
                 keep only the one to push in -t (build the others without {})",
                target.given_by,
                many.len(),
                listed.join(", "),
                target.given_by
            )
        }
    }
}

/// The proxy skopeo would reach `target`'s registry through, if any, from
/// the environment as Go's HTTP client reads it: `HTTPS_PROXY` (or
/// `https_proxy`; `HTTP_PROXY` too when plain HTTP is allowed), never for
/// a loopback registry, and not for a host `NO_PROXY` (or `no_proxy`)
/// matches: `*`, the host itself, or a domain it is in (`example` and
/// `.example` both match `registry.example`).
pub fn proxy_for(target: &PushTarget, env: &Env) -> Option<String> {
    if target.reference.is_loopback() {
        return None;
    }
    let get = |names: [&str; 2]| {
        names
            .into_iter()
            .find_map(|n| env.get(n).filter(|v| !v.trim().is_empty()).cloned())
    };
    let proxy = get(["HTTPS_PROXY", "https_proxy"]).or_else(|| {
        (!target.tls_verify())
            .then(|| get(["HTTP_PROXY", "http_proxy"]))
            .flatten()
    })?;
    let host = target.reference.host().to_ascii_lowercase();
    let no_proxy = get(["NO_PROXY", "no_proxy"]).unwrap_or_default();
    let skipped = no_proxy.split(',').any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry == "*" {
            return true;
        }
        // A port in the entry is not compared (roughly as curl does).
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h.to_string(),
            _ => entry,
        };
        let domain = entry.trim_start_matches("*.").trim_start_matches('.');
        !domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}")))
    });
    (!skipped).then_some(proxy)
}

/// A push, checked: what to push where, and how.
#[derive(Debug, Clone)]
pub struct Push {
    pub target: PushTarget,
    /// The output pushed.
    pub output: Output,
    /// skopeo's source for it (`oci:PATH`, ...).
    pub source: String,
    pub skopeo: PathBuf,
    /// `REGISTRY_AUTH_FILE`, passed as `--authfile`.
    pub authfile: Option<PathBuf>,
    /// Whether the host has a trust policy; without one dib passes its own.
    pub has_policy: bool,
}

/// Check everything `target` needs before the build starts: one output to
/// push, skopeo installed, a readable `REGISTRY_AUTH_FILE` if one is set,
/// and the registry accepting a TCP connection (unless a proxy stands
/// between, which only the push itself can go through).
pub fn check(
    target: &PushTarget,
    config: &BuildConfig,
    final_image: bool,
    env: &Env,
) -> Result<Push> {
    let given_by = target.given_by;
    ensure!(
        config.mode != Mode::Ramdisk,
        "{given_by} is for dib create: a ramdisk build writes a kernel and an initramfs, \
         no image skopeo can push"
    );
    ensure!(
        final_image,
        "{given_by} has nothing to push: the elements include no-final-image, so the build \
         writes no image"
    );
    let outputs = config
        .output_types
        .iter()
        .map(|&t| Output::new(t, &config.image_name))
        .collect::<Result<Vec<_>>>()?;
    let output = choose(target, &outputs)?.clone();
    if output.path.as_os_str().as_encoded_bytes().contains(&b':') {
        bail!(
            "{given_by} cannot push {}: skopeo reads a ':' in a path as the end of it; \
             write the output where its path has no ':' (-o)",
            output.path.display()
        );
    }
    let source = source(&output).context("a pushed output has a source (internal error)")?;
    let path = env.get("PATH").map(String::as_str);
    let Some(skopeo) = dib_sandbox::host_tools::find("skopeo", path) else {
        bail!(
            "{given_by} pushes with {}, which is not installed: install it, or build \
             without {given_by}",
            dib_sandbox::host_tools::describe("skopeo")
        );
    };
    let authfile = match env.get(AUTH_FILE_VAR).filter(|v| !v.is_empty()) {
        None => None,
        Some(f) => {
            std::fs::File::open(f).with_context(|| {
                format!("{AUTH_FILE_VAR}={f:?} is not a readable file (skopeo's credentials for {given_by})")
            })?;
            Some(PathBuf::from(f))
        }
    };
    let user_policy = env
        .get("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(h).join(".config/containers/policy.json"));
    let has_policy = Path::new(SYSTEM_POLICY).is_file() || user_policy.is_some_and(|p| p.is_file());
    match proxy_for(target, env) {
        Some(proxy) => tracing::debug!(
            "{}: not checking the registry {}: it is reached through the proxy {proxy}",
            target.named(),
            target.reference.registry
        ),
        None => reach(target)?,
    }
    Ok(Push {
        target: target.clone(),
        output,
        source,
        skopeo,
        authfile,
        has_policy,
    })
}

/// The registry accepts a TCP connection on one of its ports.
fn reach(target: &PushTarget) -> Result<()> {
    let host = target.reference.host();
    let ports = target.ports();
    let shown = match (target.reference.port(), ports.as_slice()) {
        (Some(_), _) | (None, [_]) => {
            let port = ports[0];
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        (None, _) => format!(
            "{host} (port {})",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    };
    let mut why = String::from("no address");
    for port in ports {
        let addrs = match (host, port).to_socket_addrs() {
            Ok(a) => a,
            Err(e) => bail!(
                "cannot reach the registry {shown} of {}: {host} does not resolve ({}); \
                 check the reference",
                target.named(),
                io_reason(&e)
            ),
        };
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(_) => return Ok(()),
                Err(e) => why = io_reason(&e),
            }
        }
    }
    bail!(
        "cannot reach the registry {shown} of {}: {why}; start it, or check the reference",
        target.named()
    )
}

/// An I/O error in a few lower-case words ("connection refused").
fn io_reason(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return format!("no answer within {} s", CONNECT_TIMEOUT.as_secs());
    }
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

impl Push {
    /// skopeo's arguments: `[--policy P] copy [--quiet] [--dest-tls-verify=false]
    /// [--authfile F] [--digestfile D] SOURCE docker://REF`.
    pub fn args(
        &self,
        policy: Option<&Path>,
        digestfile: Option<&Path>,
        quiet: bool,
    ) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(p) = policy {
            a.extend(["--policy".to_string(), p.display().to_string()]);
        }
        a.push("copy".into());
        if quiet {
            a.push("--quiet".into());
        }
        // The registry holds the manifest dib wrote, not one skopeo made
        // by compressing a layer again.
        a.push("--preserve-digests".into());
        if !self.target.tls_verify() {
            a.push("--dest-tls-verify=false".into());
        }
        if let Some(f) = &self.authfile {
            a.extend(["--authfile".to_string(), f.display().to_string()]);
        }
        if let Some(d) = digestfile {
            a.extend(["--digestfile".to_string(), d.display().to_string()]);
        }
        a.push(self.source.clone());
        a.push(self.target.reference.transport());
        a
    }

    /// The command that pushes the output again by hand, for a shell.
    pub fn by_hand(&self) -> String {
        let mut words = vec!["skopeo".to_string()];
        if !self.has_policy {
            words.push("--insecure-policy".into());
        }
        words.extend(self.args(None, None, false));
        words
            .iter()
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Push the output (named by now): skopeo's progress on stderr, a line
    /// before and after. Returns the pushed manifest's digest.
    pub fn run(&self, tmp_dir: &Path, quiet: bool) -> Result<String> {
        let reference = &self.target.reference;
        tracing::info!("pushing {} to {reference}", self.output.path.display());
        let scratch = tempfile::Builder::new()
            .prefix("dib_push.")
            .tempdir_in(tmp_dir)
            .with_context(|| format!("creating a directory for the push in {tmp_dir:?}"))?;
        let policy = if self.has_policy {
            None
        } else {
            let p = scratch.path().join("policy.json");
            std::fs::write(&p, ACCEPT_ANYTHING).with_context(|| format!("writing {p:?}"))?;
            Some(p)
        };
        let digestfile = scratch.path().join("digest");
        let mut cmd = Command::new(&self.skopeo);
        cmd.args(self.args(policy.as_deref(), Some(&digestfile), quiet))
            .stdin(Stdio::null())
            // skopeo's progress lines are on its stdout: they go where
            // dib's own lines go.
            .stdout(stderr_for_child()?)
            .stderr(Stdio::inherit());
        let caught = dib_sandbox::init::catch_stop_signals()?;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {} to push", self.skopeo.display()))?;
        let forwarder = caught.forward_to(child.id());
        let status = child.wait().context("waiting for skopeo");
        forwarder.close();
        let status = status?;
        if !status.success() {
            bail!(
                "skopeo could not push {} to {reference} ({status}); the outputs are kept: \
                 push again with `{}`",
                self.output.path.display(),
                self.by_hand()
            );
        }
        let digest = std::fs::read_to_string(&digestfile)
            .with_context(|| format!("reading the digest skopeo wrote to {digestfile:?}"))?;
        let digest = digest.trim().to_string();
        ensure!(
            digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            "skopeo pushed {reference} but wrote no sha256 digest ({digest:?})"
        );
        tracing::info!("pushed {reference}@{digest}");
        Ok(digest)
    }
}

/// A copy of dib's stderr for a child's stdout.
fn stderr_for_child() -> Result<Stdio> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for skopeo")?;
    Ok(Stdio::from(fd))
}

/// `w` as one shell word: as it is when it is plain, else single-quoted.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
