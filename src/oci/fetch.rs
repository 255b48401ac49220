//! `DIB_OCI_BASE`'s sources, each made an OCI image layout directory to
//! unpack: a local layout as it is; an OCI or docker archive converted by
//! skopeo into a temporary directory; a registry's image fetched by skopeo
//! into `$DIB_IMAGE_CACHE/oci-base/`, kept by digest, with a record of
//! which digest each reference named so that `DIB_OFFLINE=1` builds from
//! the cache alone.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _, Result};
use oci_spec::image::ImageIndex;

use super::reference::Reference;
use crate::config::Arch;

/// The cache's directory under `DIB_IMAGE_CACHE`.
pub const CACHE: &str = "oci-base";
/// The name of the image in every layout this module writes.
const NAME: &str = "base";
/// Transports of the containers tools that dib does not take.
const OTHER_TRANSPORTS: [&str; 6] = [
    "containers-storage",
    "dir",
    "docker-daemon",
    "ostree",
    "sif",
    "tarball",
];
const FORMS: &str = "oci:DIR[:NAME], oci-archive:FILE[:NAME], docker-archive:FILE, \
                     docker://HOST[:PORT]/REPO[:TAG|@DIGEST], or a directory, archive or \
                     reference as it is";

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI image layout directory, and the image's name in it.
    Layout { dir: PathBuf, name: Option<String> },
    /// `oci-archive` or `docker-archive`: a tar file skopeo reads.
    Archive {
        transport: &'static str,
        file: PathBuf,
        name: Option<String>,
    },
    /// An image in a registry.
    Registry(Reference),
}

/// `PATH[:NAME]`: the whole when it exists, else split at the last `:`.
fn path_and_name(rest: &str) -> (PathBuf, Option<String>) {
    if Path::new(rest).exists() {
        return (rest.into(), None);
    }
    match rest.rsplit_once(':') {
        Some((p, n)) if !p.is_empty() && !n.is_empty() && !n.contains('/') => {
            (p.into(), Some(n.to_string()))
        }
        _ => (rest.into(), None),
    }
}

impl Source {
    /// `DIB_OCI_BASE`'s value; paths are looked at (does it exist, is it a
    /// directory, what archive is it).
    pub fn parse(s: &str) -> Result<Source> {
        if s.is_empty() {
            bail!("DIB_OCI_BASE is empty: set it to the image to start from: {FORMS}");
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, name) = path_and_name(rest);
            if !dir.is_dir() {
                bail!(
                    "the OCI image layout {} does not exist{}: DIB_OCI_BASE=oci:DIR[:NAME] names \
                     a directory holding one (oci-layout, index.json, blobs/), as skopeo copy \
                     ... oci:DIR writes",
                    dir.display(),
                    if dir.exists() {
                        " (it is not a directory)"
                    } else {
                        ""
                    }
                );
            }
            return Ok(Source::Layout { dir, name });
        }
        for transport in ["oci-archive", "docker-archive"] {
            if let Some(rest) = s.strip_prefix(transport).and_then(|r| r.strip_prefix(':')) {
                let (file, name) = path_and_name(rest);
                if !file.is_file() {
                    bail!(
                        "the archive {} does not exist (DIB_OCI_BASE={transport}:FILE names an \
                         image archive, as skopeo copy ... {transport}:FILE or docker save \
                         writes)",
                        file.display()
                    );
                }
                return Ok(Source::Archive {
                    transport,
                    file,
                    name,
                });
            }
        }
        if s.starts_with("docker://") {
            return Ok(Source::Registry(Reference::parse(s)?));
        }
        if let Some((t, _)) = s.split_once(':') {
            if OTHER_TRANSPORTS.contains(&t) {
                bail!(
                    "DIB_OCI_BASE={s}: dib does not take images from {t}: (copy the image out \
                     with skopeo copy {t}:... oci:DIR, then use oci:DIR); it takes {FORMS}"
                );
            }
        }
        let p = Path::new(s);
        if p.is_dir() {
            return Ok(Source::Layout {
                dir: p.into(),
                name: None,
            });
        }
        if p.is_file() {
            let transport = sniff(p)?;
            return Ok(Source::Archive {
                transport,
                file: p.into(),
                name: None,
            });
        }
        if s.starts_with(['/', '.', '~']) {
            bail!("DIB_OCI_BASE={s}: no such file or directory (it takes {FORMS})");
        }
        Reference::parse(s).map(Source::Registry).map_err(|e| {
            anyhow!("{e}; DIB_OCI_BASE={s} is not an existing file or directory either")
        })
    }
}

/// Which archive `file` is: a tar holding `oci-layout` (oci-archive) or
/// `manifest.json` (docker-archive).
fn sniff(file: &Path) -> Result<&'static str> {
    let f = File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let not = || {
        anyhow!(
            "{} is not an image archive: a tar holding oci-layout (an OCI archive) or \
             manifest.json (a docker archive) is; name a layout directory or archive, or a \
             registry's image",
            file.display()
        )
    };
    let mut a = tar::Archive::new(f);
    let entries = a.entries().map_err(|_| not())?;
    for e in entries.take(100_000) {
        let Ok(e) = e else { return Err(not()) };
        let Ok(p) = e.path() else { continue };
        let p = p.to_string_lossy();
        match p.trim_start_matches("./") {
            "oci-layout" => return Ok("oci-archive"),
            "manifest.json" => return Ok("docker-archive"),
            _ => {}
        }
    }
    Err(not())
}

/// What the fetch reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub arch: Arch,
    /// `DIB_IMAGE_CACHE`.
    pub image_cache: Option<PathBuf>,
    /// `DIB_OFFLINE=1`: only the cache.
    pub offline: bool,
    /// `DIB_OCI_BASE_INSECURE=1`: plain HTTP to any registry.
    pub insecure: bool,
    /// `REGISTRY_AUTH_FILE`.
    pub authfile: Option<PathBuf>,
    /// `TMPDIR`: where archives are converted.
    pub tmp: PathBuf,
    pub home: Option<PathBuf>,
}

impl Settings {
    /// From the variables `get` returns (a hook's environment).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let arch = get("ARCH").ok_or_else(|| {
            anyhow!("ARCH is not set: dib-oci-unpack runs in dib's hooks, which have it")
        })?;
        let arch = Arch::parse(&arch)
            .ok_or_else(|| anyhow!("ARCH={arch:?} is not an architecture dib builds for"))?;
        let flag = |k: &str| -> Result<bool> {
            match get(k).as_deref() {
                None | Some("0") => Ok(false),
                Some("1") => Ok(true),
                Some(v) => bail!("{k}={v:?} is not valid: use 1 (or 0, or leave it unset)"),
            }
        };
        Ok(Settings {
            arch,
            image_cache: get("DIB_IMAGE_CACHE").map(PathBuf::from),
            offline: flag("DIB_OFFLINE")?,
            insecure: flag("DIB_OCI_BASE_INSECURE")?,
            authfile: get("REGISTRY_AUTH_FILE")
                .map(PathBuf::from)
                .or_else(|| get("HOME").and_then(|h| user_auth_file(Path::new(&h)))),
            tmp: get("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
            home: get("HOME").map(PathBuf::from),
        })
    }
}

/// The auth file the user's container tools keep under `home`, when there
/// is one: the containers tools' own, else docker's. (skopeo, as root of
/// the build's namespace, would look for root's.)
fn user_auth_file(home: &Path) -> Option<PathBuf> {
    [".config/containers/auth.json", ".docker/config.json"]
        .into_iter()
        .map(|f| home.join(f))
        .find(|p| p.is_file())
}

/// A layout to unpack; a temporary one is removed when this is dropped.
#[derive(Debug)]
pub struct Fetched {
    pub layout: PathBuf,
    pub name: Option<String>,
    /// The image as errors name it.
    pub what: String,
    _tmp: Option<tempfile::TempDir>,
}

/// Make `source` a layout.
pub fn fetch(source: &Source, s: &Settings) -> Result<Fetched> {
    match source {
        Source::Layout { dir, name } => Ok(Fetched {
            layout: dir.clone(),
            name: name.clone(),
            what: match name {
                Some(n) => format!("oci:{}:{n}", dir.display()),
                None => format!("oci:{}", dir.display()),
            },
            _tmp: None,
        }),
        Source::Archive {
            transport,
            file,
            name,
        } => archive(transport, file, name.as_deref(), s),
        Source::Registry(r) => registry(r, s),
    }
}

fn archive(transport: &str, file: &Path, name: Option<&str>, s: &Settings) -> Result<Fetched> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    if file.as_os_str().as_encoded_bytes().contains(&b':') {
        bail!(
            "the archive {} cannot be read: skopeo reads a ':' in a path as the end of it; \
             move or link it where its path has no ':'",
            file.display()
        );
    }
    let src = match name {
        Some(n) => format!("{transport}:{}:{n}", file.display()),
        None => format!("{transport}:{}", file.display()),
    };
    let tmp = tempdir(s)?;
    let layout = tmp.path().join("layout");
    let skopeo = Skopeo::new(s)?;
    let mut args = skopeo.copy();
    args.push(src.clone().into());
    args.push(format!("oci:{}:{NAME}", layout.display()).into());
    skopeo.run(args, &format!("convert {src}"), None)?;
    Ok(Fetched {
        layout,
        name: Some(NAME.into()),
        what: src,
        _tmp: Some(tmp),
    })
}

fn tempdir(s: &Settings) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("dib-oci-base.")
        .tempdir_in(&s.tmp)
        .with_context(|| format!("creating a temporary directory in {}", s.tmp.display()))
}

/// The registry's image, from the cache or fetched into it.
fn registry(r: &Reference, s: &Settings) -> Result<Fetched> {
    let Some(image_cache) = &s.image_cache else {
        bail!("DIB_IMAGE_CACHE is not set: dib-oci-unpack runs in dib's hooks, which have it");
    };
    let cache = image_cache.join(CACHE);
    let shown = r.to_string();
    let arch = s.arch.as_str();
    let record = cache.join("refs").join(record_name(&shown, s.arch));
    let digest = if s.offline {
        read_record(&record).ok_or_else(|| {
            anyhow!(
                "offline (DIB_OFFLINE=1), and the cache has no record of {shown} for {arch} \
                 (expected {}): build once online first",
                record.display()
            )
        })?
    } else {
        let skopeo = Skopeo::new(s)?;
        let mut args: Vec<OsString> = vec!["inspect".into(), "--raw".into()];
        args.extend(skopeo.access(r, "--tls-verify=false"));
        args.push(r.transport().into());
        let raw = skopeo.run(args, &format!("read {shown}"), Some(r))?;
        if let Some(d) = &r.digest {
            let got = super::digest_of(&raw);
            if got != *d {
                bail!(
                    "the registry {} answered {shown} with a manifest whose digest is {got}: \
                     check the reference's digest",
                    r.registry
                );
            }
        }
        image_digest(&raw, &shown, s.arch)?
    };
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow!("the image digest {digest:?} of {shown} is not a sha256 digest"))?
        .to_string();
    let dir = cache.join(&hex);
    let fetched = |dir: PathBuf| Fetched {
        layout: dir,
        name: Some(NAME.into()),
        what: format!("{shown} ({digest})"),
        _tmp: None,
    };
    if complete(&dir) {
        if !s.offline {
            write_record(&record, &digest, &shown, s.arch)?;
        }
        return Ok(fetched(dir));
    }
    if s.offline {
        bail!(
            "offline (DIB_OFFLINE=1), and the image {shown} ({digest}) is not in the cache {}: \
             build once online first",
            cache.display()
        );
    }
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    // One build fetches an image; the others wait for it and share it.
    let lock_path = cache.join(format!("{hex}.lock"));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if !complete(&dir) {
        let partial = cache.join(format!("{hex}.partial"));
        remove_if_there(&partial)?;
        let skopeo = Skopeo::new(s)?;
        let mut args = skopeo.copy();
        args.extend(skopeo.access(r, "--src-tls-verify=false"));
        let by_digest = Reference {
            tag: None,
            digest: Some(digest.clone()),
            ..r.clone()
        };
        args.push(by_digest.transport().into());
        args.push(format!("oci:{}:{NAME}", partial.display()).into());
        let copied = skopeo
            .run(args, &format!("fetch {shown}"), Some(r))
            .and_then(|_| {
                fs::rename(&partial, &dir)
                    .with_context(|| format!("moving {} to {}", partial.display(), dir.display()))
            });
        if let Err(e) = copied {
            let _ = remove_if_there(&partial);
            return Err(e);
        }
    }
    drop(lock);
    write_record(&record, &digest, &shown, s.arch)?;
    Ok(fetched(dir))
}

fn remove_if_there(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// The digest of the image manifest for `arch` that `raw` (a manifest or
/// an index) gives.
fn image_digest(raw: &[u8], shown: &str, arch: Arch) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(raw)
        .with_context(|| format!("the registry's manifest of {shown} is not JSON"))?;
    if v.get("manifests").is_none() {
        return Ok(super::digest_of(raw));
    }
    let index: ImageIndex = serde_json::from_slice(raw)
        .with_context(|| format!("the registry's image index of {shown} does not parse"))?;
    let d = super::unpack::choose_platform(shown, index.manifests(), arch)?;
    Ok(d.digest().to_string())
}

/// A layout skopeo finished (the rename made it appear whole).
fn complete(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
}

/// The record's file name for `shown` and `arch`.
fn record_name(shown: &str, arch: Arch) -> String {
    let d = super::digest_of(format!("{shown}\n{}", arch.as_str()).as_bytes());
    d["sha256:".len()..][..32].to_string()
}

fn read_record(record: &Path) -> Option<String> {
    let text = fs::read_to_string(record).ok()?;
    text.lines().next().map(str::to_string)
}

fn write_record(record: &Path, digest: &str, shown: &str, arch: Arch) -> Result<()> {
    let dir = record.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.{}", std::process::id(), record_file(record)));
    fs::write(&tmp, format!("{digest}\n{shown} {}\n", arch.as_str()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, record).with_context(|| format!("writing {}", record.display()))
}

fn record_file(record: &Path) -> String {
    record
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// skopeo, with a policy of its own when the host has none.
struct Skopeo<'a> {
    s: &'a Settings,
    policy: Option<(tempfile::TempDir, PathBuf)>,
}

impl<'a> Skopeo<'a> {
    fn new(s: &'a Settings) -> Result<Skopeo<'a>> {
        let user = s
            .home
            .as_ref()
            .map(|h| h.join(".config/containers/policy.json"));
        let has =
            Path::new("/etc/containers/policy.json").is_file() || user.is_some_and(|p| p.is_file());
        let policy = if has {
            None
        } else {
            let dir = tempdir(s)?;
            let p = dir.path().join("policy.json");
            fs::write(&p, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)
                .with_context(|| format!("writing {}", p.display()))?;
            Some((dir, p))
        };
        Ok(Skopeo { s, policy })
    }

    /// The global options choosing the build's platform from a list.
    /// `copy` of the build's platform. Signatures are not kept in the
    /// layout (and a host's lookaside store may not be readable here).
    fn copy(&self) -> Vec<OsString> {
        let (arch, variant) = super::platform(self.s.arch);
        let mut v: Vec<OsString> = vec![
            "--override-os".into(),
            "linux".into(),
            "--override-arch".into(),
            arch.into(),
        ];
        if let Some(var) = variant {
            v.extend(["--override-variant".into(), var.into()]);
        }
        v.extend([
            "copy".into(),
            "--quiet".into(),
            "--remove-signatures".into(),
        ]);
        v
    }

    /// How to reach `r`'s registry: `no_tls` (the command's spelling of
    /// it) where plain HTTP is allowed, the auth file when there is one.
    fn access(&self, r: &Reference, no_tls: &str) -> Vec<OsString> {
        let mut v = Vec::new();
        if self.s.insecure || r.is_loopback() {
            v.push(no_tls.into());
        }
        if let Some(a) = &self.s.authfile {
            v.extend(["--authfile".into(), a.into()]);
        }
        v
    }

    /// Run skopeo with `args`, to `what`: its standard output.
    fn run(&self, args: Vec<OsString>, what: &str, r: Option<&Reference>) -> Result<Vec<u8>> {
        let mut cmd: Command = crate::tool::command("skopeo");
        if let Some((_, p)) = &self.policy {
            cmd.arg("--policy").arg(p);
        }
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "skopeo is not installed: install the Debian package skopeo (the oci-base \
                 element fetches and converts container images with it)"
            ),
            Err(e) => return Err(e).context("running skopeo"),
        };
        let mut err_pipe = child.stderr.take();
        let err_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_end(&mut v);
            }
            v
        });
        let mut out = Vec::new();
        if let Some(mut p) = child.stdout.take() {
            p.read_to_end(&mut out).context("reading skopeo's output")?;
        }
        let status = child.wait().context("waiting for skopeo")?;
        let err = err_thread.join().unwrap_or_default();
        if !status.success() {
            return Err(explain(&String::from_utf8_lossy(&err), what, r));
        }
        Ok(out)
    }
}

/// One line saying what went wrong, from skopeo's standard error.
fn explain(stderr: &str, what: &str, r: Option<&Reference>) -> anyhow::Error {
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message");
    // `time="..." level=fatal msg="..."`: the message.
    let detail = last
        .split_once("msg=\"")
        .map_or(last, |(_, m)| m.strip_suffix('"').unwrap_or(m))
        .replace("\\\"", "\"");
    let low = detail.to_lowercase();
    let Some(r) = r else {
        return anyhow!("skopeo could not {what}: {detail}");
    };
    let reg = &r.registry;
    let has = |words: &[&str]| words.iter().any(|w| low.contains(w));
    if has(&["server gave http response to https client"]) {
        anyhow!(
            "the registry {reg} speaks plain HTTP, not HTTPS: set DIB_OCI_BASE_INSECURE=1 to \
             fetch {r} over HTTP if you trust the network to it"
        )
    } else if has(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "no route to host",
        "dial tcp",
        "connection reset",
    ]) {
        anyhow!(
            "cannot reach the registry {reg} to {what} ({detail}): check that it runs and its \
             host and port; DIB_OFFLINE=1 builds from the images fetched before"
        )
    } else if has(&[
        "unauthorized",
        "authentication required",
        "access to the resource is denied",
        "denied: ",
    ]) {
        anyhow!(
            "the registry {reg} refused access to {r} ({detail}): log in with skopeo login, or \
             set REGISTRY_AUTH_FILE to an auth file"
        )
    } else if has(&["manifest unknown", "name unknown", "not found", "404"]) {
        anyhow!("the registry {reg} has no image {r} ({detail}): check the repository and the tag")
    } else if has(&["x509", "certificate"]) {
        anyhow!(
            "the registry {reg}'s TLS certificate is not trusted ({detail}): add its CA to the \
             host's, or set DIB_OCI_BASE_INSECURE=1 if you trust the network to it"
        )
    } else {
        anyhow!("skopeo could not {what}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let layout = d.path().join("layout");
        fs::create_dir(&layout).unwrap();
        let l = layout.display().to_string();
        assert_eq!(
            Source::parse(&format!("oci:{l}")).unwrap(),
            Source::Layout {
                dir: layout.clone(),
                name: None
            }
        );
        assert_eq!(
            Source::parse(&format!("oci:{l}:base")).unwrap(),
            Source::Layout {
                dir: layout.clone(),
                name: Some("base".into())
            }
        );
        assert_eq!(
            Source::parse(&l).unwrap(),
            Source::Layout {
                dir: layout.clone(),
                name: None
            }
        );
        // Archives, by their contents.
        for (member, transport) in [
            ("oci-layout", "oci-archive"),
            ("manifest.json", "docker-archive"),
        ] {
            let file = d.path().join(format!("{transport}.tar"));
            let mut b = tar::Builder::new(File::create(&file).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("./{member}"), &b"{}"[..])
                .unwrap();
            b.finish().unwrap();
            let f = file.display().to_string();
            assert_eq!(
                Source::parse(&f).unwrap(),
                Source::Archive {
                    transport,
                    file: file.clone(),
                    name: None
                }
            );
            assert_eq!(
                Source::parse(&format!("{transport}:{f}")).unwrap(),
                Source::Archive {
                    transport,
                    file: file.clone(),
                    name: None
                }
            );
        }
        let not = d.path().join("not.tar");
        fs::write(&not, "plain text").unwrap();
        let e = Source::parse(&not.display().to_string()).unwrap_err();
        assert!(e.to_string().contains("is not an image archive"), "{e}");
        let r = Source::parse("localhost:5000/dib/base:1").unwrap();
        assert!(matches!(r, Source::Registry(ref r) if r.repository == "dib/base"));
        let r = Source::parse(
            "docker://registry.example/base@sha256:"
                .to_string()
                .as_str(),
        );
        assert!(r.unwrap_err().to_string().contains("bad digest"));
    }

    #[test]
    fn bad_sources_say_what_to_do() {
        for (given, want) in [
            ("", "DIB_OCI_BASE is empty"),
            (
                "oci:/no/such/layout",
                "the OCI image layout /no/such/layout does not exist",
            ),
            (
                "oci-archive:/no/such.tar",
                "the archive /no/such.tar does not exist",
            ),
            (
                "/no/such",
                "DIB_OCI_BASE=/no/such: no such file or directory",
            ),
            (
                "containers-storage:x",
                "dib does not take images from containers-storage:",
            ),
            ("base:latest", "names no registry"),
            (
                "docker://Bad_Host/x",
                "the image reference \"docker://Bad_Host/x\"",
            ),
        ] {
            let e = Source::parse(given).unwrap_err().to_string();
            assert!(e.contains(want), "{given:?}: {e}");
        }
    }

    #[test]
    fn skopeos_failures_become_one_line_with_the_fix() {
        let r = Reference::parse("registry.example/dib/base:1").unwrap();
        for (stderr, want) in [
            (
                "time=\"2024\" level=fatal msg=\"pinging container registry registry.example: Get \\\"https://registry.example/v2/\\\": dial tcp 127.0.0.1:1: connect: connection refused\"",
                "cannot reach the registry registry.example to read it (pinging",
            ),
            (
                "FATA[0000] Error reading manifest 1 in registry.example/dib/base: manifest unknown",
                "the registry registry.example has no image registry.example/dib/base:1",
            ),
            (
                "msg=\"reading manifest: unauthorized: authentication required\"",
                "log in with skopeo login, or set REGISTRY_AUTH_FILE",
            ),
            (
                "http: server gave HTTP response to HTTPS client",
                "set DIB_OCI_BASE_INSECURE=1",
            ),
        ] {
            let e = explain(stderr, "read it", Some(&r)).to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn offline_builds_need_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let s = Settings {
            arch: Arch::Amd64,
            image_cache: Some(cache.path().into()),
            offline: true,
            insecure: false,
            authfile: None,
            tmp: cache.path().into(),
            home: None,
        };
        let r = Reference::parse("registry.example/dib/base:1").unwrap();
        let e = registry(&r, &s).unwrap_err().to_string();
        assert!(
            e.contains("offline (DIB_OFFLINE=1), and the cache has no record of registry.example/dib/base:1 for amd64"),
            "{e}"
        );
        // A record, but no layout; then the layout.
        let digest = format!("sha256:{}", "b".repeat(64));
        let record = cache
            .path()
            .join(CACHE)
            .join("refs")
            .join(record_name(&r.to_string(), Arch::Amd64));
        write_record(&record, &digest, &r.to_string(), Arch::Amd64).unwrap();
        let e = registry(&r, &s).unwrap_err().to_string();
        assert!(
            e.contains(&format!("({digest}) is not in the cache")),
            "{e}"
        );
        let dir = cache.path().join(CACHE).join("b".repeat(64));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("oci-layout"), "{}").unwrap();
        fs::write(dir.join("index.json"), "{}").unwrap();
        let f = registry(&r, &s).unwrap();
        assert_eq!(f.layout, dir);
        assert_eq!(f.name.as_deref(), Some("base"));
    }

    #[test]
    fn an_index_gives_the_builds_manifest() {
        let amd = format!("sha256:{}", "a".repeat(64));
        let arm = format!("sha256:{}", "c".repeat(64));
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm,
                 "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd,
                 "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        })
        .to_string();
        assert_eq!(
            image_digest(index.as_bytes(), "x", Arch::Amd64).unwrap(),
            amd
        );
        assert_eq!(
            image_digest(index.as_bytes(), "x", Arch::Arm64).unwrap(),
            arm
        );
        let m = br#"{"schemaVersion":2,"layers":[]}"#;
        assert_eq!(
            image_digest(m, "x", Arch::Amd64).unwrap(),
            super::super::digest_of(m)
        );
    }
}
