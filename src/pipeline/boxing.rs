//! The box the hooks run in, as dib plans it: what a hook may see and
//! write (docs/security.md). `dib_sandbox::buildbox` makes it.
//!
//! From any hook the host is read-only, but for the build's own directory,
//! the cache directories its element declared, and the output directory,
//! whose writes land in the build directory and are kept (names starting
//! with the image's name) only when the build succeeds. `/tmp`, `/var/tmp`,
//! `/dev/shm`, `TMP_DIR` and the user's runtime directory are hidden (other
//! builds live there); what the build's `DIB_*` variables name stays
//! readable. `--strict-box` also hides the home directory and cuts the
//! network after the package phases (in every phase with `--offline`).
//!
//! Cache directories: an element lists, one per line in its `cache-dirs`
//! file, the directories under `DIB_IMAGE_CACHE` it writes. A shipped
//! element writes them in place. Any other element writes a copy of its own,
//! kept under `DIB_IMAGE_CACHE/.elements/NAME-HASH/` (HASH of the element's
//! files) and shown at the usual path only in its own hooks' box, so an
//! element cannot change what another element, or a later build, reads.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use dib_sandbox::buildbox::{BoxSpec, Mask, Placement};
use dib_sandbox::mounts::ImageBind;
use serde::{Deserialize, Serialize};

use crate::config::BuildConfig;
use crate::elements::Resolution;
use crate::phases::Phase;

/// An element's list of the cache directories it writes.
pub const CACHE_DIRS_FILE: &str = "cache-dirs";
/// An element's cache directories shown in the image: `DIR PATH` lines.
pub const CACHE_BINDS_FILE: &str = "cache-binds";
/// Where elements not shipped with dib keep their cache directories.
const PRIVATE_CACHES: &str = ".elements";

/// The box's inputs, made on the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BoxJob {
    pub strict: bool,
    pub offline: bool,
    pub home: Option<PathBuf>,
    pub tmp_dir: PathBuf,
    /// The user's runtime directory (sockets of the user's session).
    pub runtime_dir: Option<PathBuf>,
    pub image_cache: PathBuf,
    /// The directory the outputs go to.
    pub output_dir: PathBuf,
    /// What the image's outputs are named after (IMAGE_NAME's last part).
    pub image_base: String,
    /// Per element: (the path hooks use, the directory behind it).
    pub cache_dirs: BTreeMap<String, Vec<(PathBuf, PathBuf)>>,
    /// Existing absolute paths the `DIB_*` variables name.
    pub named: Vec<PathBuf>,
    /// `DIB_BOX_WRITABLE`: host directories the user lets hooks write.
    pub writable: Vec<PathBuf>,
    /// The elements' `cache-binds`, for the package phases' chroot.
    pub image_binds: Vec<BindRule>,
}

/// A line of an element's `cache-binds`: `DIR` (under DIB_IMAGE_CACHE,
/// with `$VAR`, `${VAR}` and `${VAR:-default}` from the hooks' environment)
/// shown at `at` in the image, unless `VAR=VALUE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindRule {
    pub element: String,
    pub dir: String,
    pub at: String,
    pub unless: Option<(String, String)>,
}

/// `$VAR`, `${VAR}` and `${VAR:-default}` of `text`, from `env`.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, default, len) = if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}').unwrap_or(body.len());
            let inner = &body[..end];
            match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d), end + 2),
                None => (inner, None, end + 2),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], None, end)
        };
        let value = env.get(name).filter(|v| !v.is_empty() || default.is_none());
        out.push_str(value.map_or(default.unwrap_or(""), String::as_str));
        rest = &rest[len.min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// The existing absolute path a `DIB_*` value names: as it is, a
/// `file://` URL, or an image source (`oci:DIR[:NAME]`,
/// `oci-archive:FILE[:NAME]`, `docker-archive:FILE`).
fn named_path(v: &str) -> Option<PathBuf> {
    let v = ["file://", "oci:", "oci-archive:", "docker-archive:"]
        .iter()
        .find_map(|p| v.strip_prefix(p))
        .unwrap_or(v);
    let whole = std::iter::once(v);
    let before_name = v.rsplit_once(':').map(|(p, _)| p);
    whole
        .chain(before_name)
        .map(Path::new)
        .find_map(|p| (p.is_absolute() && p.exists()).then(|| p.to_path_buf()))
}

/// One line of a `cache-dirs` file: a relative path with no `..`.
fn cache_dir_line(file: &Path, n: usize, line: &str) -> Result<Option<PathBuf>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let p = PathBuf::from(line);
    let plain = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        bail!(
            "{}:{n}: '{line}' is not a directory under DIB_IMAGE_CACHE: give a relative \
             path without '..'",
            file.display()
        );
    }
    if p.components().find(|c| !matches!(c, Component::CurDir))
        == Some(Component::Normal(super::layers::LAYERS_DIR.as_ref()))
    {
        bail!(
            "{}:{n}: '{line}' is dib's layer cache, which only dib writes: name another \
             directory",
            file.display()
        );
    }
    Ok(Some(p))
}

/// `path`, a directory under the image cache that a box shows writable or
/// pid 1 binds into the image, made if missing, every component below the
/// cache a real directory: an element's hooks write there, and a symlink
/// they left would otherwise lead the next box, or pid 1, elsewhere.
pub fn cache_dir_in_place(image_cache: &Path, path: &Path) -> Result<PathBuf> {
    let rel = path
        .strip_prefix(image_cache)
        .with_context(|| format!("{path:?} is not under the image cache {image_cache:?}"))?;
    fs::create_dir_all(image_cache).with_context(|| format!("creating {image_cache:?}"))?;
    let mut dir = image_cache.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        // Another build of this user may make the same directory at the
        // same moment: EEXIST from create_dir is then as good as success,
        // once the thing that exists is a real directory.
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e).with_context(|| format!("creating {dir:?}"));
            }
        }
        let m = fs::symlink_metadata(&dir).with_context(|| format!("reading {dir:?}"))?;
        if !m.is_dir() {
            bail!(
                "the cache directory {dir:?} is a symlink or a file, which a hook left: \
                 remove it and build again"
            );
        }
    }
    Ok(dir)
}

/// A short hash of every file of an element (paths and contents).
fn element_hash(dir: &Path) -> Result<String> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {d:?}"))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        match fs::read_link(&f) {
            Ok(t) => h.update(t.as_os_str().as_encoded_bytes()),
            Err(_) => h.update(fs::read(&f).with_context(|| format!("reading {f:?}"))?),
        }
        h.update([0]);
    }
    Ok(h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl BoxJob {
    pub fn new(
        config: &BuildConfig,
        resolution: &Resolution,
        shipped: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<BoxJob> {
        let shipped = fs::canonicalize(shipped).unwrap_or_else(|_| shipped.to_path_buf());
        let image_cache =
            std::path::absolute(&config.image_cache).unwrap_or_else(|_| config.image_cache.clone());
        let mut cache_dirs = BTreeMap::new();
        for e in &resolution.elements {
            let file = e.path.join(CACHE_DIRS_FILE);
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            let own = e.path.starts_with(&shipped);
            let base = if own {
                image_cache.clone()
            } else {
                image_cache.join(PRIVATE_CACHES).join(format!(
                    "{}-{}",
                    e.name,
                    element_hash(&e.path)?
                ))
            };
            let mut dirs = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if let Some(rel) = cache_dir_line(&file, i + 1, line)? {
                    let clean = |p: PathBuf| p.components().collect::<PathBuf>();
                    dirs.push((clean(image_cache.join(&rel)), clean(base.join(&rel))));
                }
            }
            cache_dirs.insert(e.name.clone(), dirs);
        }
        let mut image_binds = Vec::new();
        for e in &resolution.elements {
            let file = e.path.join(CACHE_BINDS_FILE);
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let bad = |why: &str| {
                    anyhow::anyhow!(
                        "{}:{}: {why}: a line is CACHE_DIR IMAGE_PATH [unless VAR=VALUE], as \
                         in 'pip /tmp/pip'",
                        file.display(),
                        i + 1
                    )
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                let (dir, at, unless) = match words[..] {
                    [dir, at] => (dir, at, None),
                    [dir, at, "unless", cond] => {
                        let (k, v) = cond
                            .split_once('=')
                            .ok_or_else(|| bad("'unless' takes VAR=VALUE"))?;
                        (dir, at, Some((k.to_string(), v.to_string())))
                    }
                    _ => return Err(bad("not two words")),
                };
                cache_dir_line(&file, i + 1, dir)?;
                let at = at.trim_start_matches('/');
                if at.is_empty() || at.split('/').any(|c| c == "..") {
                    return Err(bad(&format!("'{at}' is not a path in the image")));
                }
                image_binds.push(BindRule {
                    element: e.name.clone(),
                    dir: dir.to_string(),
                    at: at.to_string(),
                    unless,
                });
            }
        }
        let image_name = PathBuf::from(env.get("IMAGE_NAME").cloned().unwrap_or_default());
        // What DIB's hooks read from the host: the elements' own
        // directories (IMAGE_ELEMENT_YAML names them) and what the DIB_*
        // variables name.
        let mut named: Vec<PathBuf> = resolution.elements.iter().map(|e| e.path.clone()).collect();
        named.extend(
            env.iter()
                .filter(|(k, _)| k.starts_with("DIB_"))
                .filter_map(|(_, v)| named_path(v)),
        );
        named.sort();
        named.dedup();
        let mut writable = Vec::new();
        for d in env
            .get("DIB_BOX_WRITABLE")
            .map(String::as_str)
            .unwrap_or("")
            .split(':')
            .filter(|d| !d.is_empty())
        {
            let p = PathBuf::from(d);
            if !p.is_absolute() || !p.is_dir() || p == Path::new("/") {
                bail!(
                    "DIB_BOX_WRITABLE: {d:?} is not an existing directory given by its absolute \
                     path (and not /): list the directories hooks may write, separated by ':'"
                );
            }
            writable.push(p);
        }
        let home = env.get("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let runtime_dir = env
            .get("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let p = PathBuf::from(format!("/run/user/{}", rustix::process::getuid().as_raw()));
                p.is_dir().then_some(p)
            })
            .filter(|p| p.is_absolute());
        Ok(BoxJob {
            strict: config.strict_box,
            offline: config.offline,
            home,
            tmp_dir: std::path::absolute(&config.tmp_dir)
                .unwrap_or_else(|_| config.tmp_dir.clone()),
            runtime_dir,
            image_cache,
            output_dir: image_name
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            image_base: image_name
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cache_dirs,
            named,
            writable,
            image_binds,
        })
    }

    /// Show `path` (an existing host path) to hooks, read-only, in every box.
    pub fn name(&mut self, path: &Path) {
        if path.is_absolute() && !self.named.iter().any(|p| p == path) {
            self.named.push(path.to_path_buf());
            self.named.sort();
        }
    }

    /// The `cache-binds` for the hooks' environment `env`: an element's own
    /// cache directory (or one under it) writable, anything else in the
    /// cache read-only.
    pub fn binds(&self, env: &BTreeMap<String, String>) -> Vec<ImageBind> {
        let mut out = Vec::new();
        for r in &self.image_binds {
            if let Some((k, v)) = &r.unless {
                if env.get(k).map(String::as_str).unwrap_or("") == v {
                    continue;
                }
            }
            let rel = expand(&r.dir, env);
            let rel = Path::new(&rel);
            let plain = rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !plain {
                continue;
            }
            let shown = self.image_cache.join(rel);
            let own = self
                .caches_of(&r.element)
                .iter()
                .find_map(|(hook_path, real)| {
                    shown
                        .strip_prefix(hook_path)
                        .ok()
                        .map(|sub| real.join(sub).components().collect::<PathBuf>())
                });
            out.push(ImageBind {
                writable: own.is_some(),
                from: own.unwrap_or(shown),
                at: r.at.clone(),
            });
        }
        out
    }

    /// Whether hooks of `phase` reach the network.
    pub fn network(&self, phase: Phase) -> bool {
        if !self.strict {
            return true;
        }
        !self.offline
            && matches!(
                phase,
                Phase::Root
                    | Phase::ExtraData
                    | Phase::PreInstall
                    | Phase::Install
                    | Phase::PostInstall
            )
    }

    /// The cache directories `element` writes (hook path, real path).
    pub fn caches_of(&self, element: &str) -> &[(PathBuf, PathBuf)] {
        self.cache_dirs.get(element).map_or(&[], Vec::as_slice)
    }

    /// The box for a hook of `phase` whose element writes `caches`, in the
    /// build directory `build`. Reads /tmp, /var/tmp and TMP_DIR for
    /// other builds' directories, which it hides.
    pub fn spec(&self, build: &Path, caches: &[(PathBuf, PathBuf)], network: bool) -> BoxSpec {
        let out = &self.output_dir;
        let mut masks = Vec::new();
        if Path::new("/dev/shm").is_dir() {
            masks.push(Mask::Tmpfs {
                at: "/dev/shm".into(),
                mode: 0o1777,
            });
        }
        let home = self.home.as_deref();
        let hides_home = |p: &Path| home.is_some_and(|h| h.starts_with(p));
        let t = &self.tmp_dir;
        if t != Path::new("/tmp") && t != Path::new("/var/tmp") && !hides_home(t) {
            masks.push(Mask::Tmpfs {
                at: t.clone(),
                mode: 0o1777,
            });
        }
        if let Some(r) = &self.runtime_dir {
            if r.is_dir() && !hides_home(r) {
                masks.push(Mask::Tmpfs {
                    at: r.clone(),
                    mode: 0o700,
                });
            }
        }
        if self.strict {
            if let Some(h) = home.filter(|h| *h != Path::new("/")) {
                masks.push(Mask::Tmpfs {
                    at: h.to_path_buf(),
                    mode: 0o755,
                });
            }
        }
        // Other builds' directories, as they are now (each phase gets a
        // new box).
        for dir in [Path::new("/tmp"), Path::new("/var/tmp"), t.as_path()] {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let theirs = (name.starts_with("dib_build.") || name.starts_with("dib_image."))
                    && e.path() != build
                    && e.file_type().is_ok_and(|t| t.is_dir());
                if theirs && !masks.iter().any(|m| e.path().starts_with(m.path())) {
                    masks.push(Mask::Tmpfs {
                        at: e.path(),
                        mode: 0o700,
                    });
                }
            }
        }
        // Under a mask, or under the /tmp overlays (where a write would
        // seem to work): shown read-only, as on the host.
        let masked = |p: &Path| {
            masks.iter().any(|m| p.starts_with(m.path()))
                || p.starts_with("/tmp")
                || p.starts_with("/var/tmp")
        };
        let mut placements = vec![Placement::Writable(build.to_path_buf())];
        // The host's /tmp and /var/tmp, read-only; what hooks write there
        // stays in the build.
        for (at, dir) in [("/tmp", SCRATCH), ("/var/tmp", VAR_SCRATCH)] {
            if Path::new(at) != out && Path::new(at).is_dir() {
                placements.push(Placement::Overlay {
                    at: at.into(),
                    upper: build.join(dir).join("upper"),
                    work: build.join(dir).join("work"),
                });
            }
        }
        // A home under /tmp (say) stays readable, as homes do, unless strict.
        if let Some(h) = home.filter(|h| !self.strict && masked(h) && h.is_dir()) {
            placements.push(Placement::Readable(h.to_path_buf()));
        }
        for p in std::iter::once(&self.image_cache).chain(&self.named) {
            if masked(p) && !p.starts_with(build) && p.exists() {
                placements.push(Placement::Readable(p.clone()));
            }
        }
        let upper = build.join(OUTPUT_UPPER);
        if out.is_dir() {
            placements.push(Placement::Overlay {
                at: out.clone(),
                upper,
                work: build.join(OUTPUT_WORK),
            });
        } else if !out.as_os_str().is_empty() {
            masks.push(Mask::Dir {
                at: out.clone(),
                from: upper,
            });
        }
        for w in &self.writable {
            placements.push(Placement::Writable(w.clone()));
        }
        for (at, from) in caches {
            placements.push(if at == from {
                Placement::Writable(at.clone())
            } else {
                Placement::WritableFrom {
                    at: at.clone(),
                    from: from.clone(),
                }
            });
        }
        masks.push(Mask::Tmpfs {
            at: build.join(PRIVATE),
            mode: 0o700,
        });
        BoxSpec {
            assembly: build.join(ASSEMBLY),
            masks,
            placements,
            network,
        }
    }
}

/// In the build directory, hidden from hooks (they could otherwise swap a
/// part for a symlink that the next box would follow): where a box is put
/// together, the hooks' `/tmp` and `/var/tmp`, and where their writes to
/// the output directory land.
pub const PRIVATE: &str = ".dib-private";
pub const ASSEMBLY: &str = ".dib-private/box";
pub const SCRATCH: &str = ".dib-private/tmp";
pub const VAR_SCRATCH: &str = ".dib-private/var-tmp";
pub const OUTPUT_UPPER: &str = ".dib-private/out/upper";
pub const OUTPUT_WORK: &str = ".dib-private/out/work";

/// Make the box's directories in the build directory.
pub fn prepare_build_dir(build: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for d in [ASSEMBLY, OUTPUT_UPPER, OUTPUT_WORK] {
        let p = build.join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {p:?}"))?;
    }
    for d in [SCRATCH, VAR_SCRATCH] {
        for sub in ["upper", "work"] {
            let p = build.join(d).join(sub);
            fs::create_dir_all(&p).with_context(|| format!("creating {p:?}"))?;
        }
        let upper = build.join(d).join("upper");
        fs::set_permissions(&upper, fs::Permissions::from_mode(0o1777))
            .with_context(|| format!("opening up {upper:?}"))?;
    }
    Ok(())
}

/// After a successful build: move what hooks wrote into the output
/// directory there, if it is named after the image (`IMAGE_NAME.d/`,
/// `IMAGE_NAME.vmlinuz`, ...); anything else is left out, with a warning.
pub fn keep_hook_outputs(job: &BoxJob, build: &Path, log: &super::log::Log) -> Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    let upper = build.join(OUTPUT_UPPER);
    if !fs::symlink_metadata(&upper).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let Ok(entries) = fs::read_dir(&upper) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let t = e.file_type()?;
        // A whiteout: a hook deleted a file of the output directory, which
        // the host keeps.
        if t.is_char_device() {
            continue;
        }
        let ours = !job.image_base.is_empty() && name.starts_with(&job.image_base);
        if !ours {
            log.line(&format!(
                "warning: a hook wrote {name:?} in the output directory; only names starting \
                 with {:?} are kept",
                job.image_base
            ));
            continue;
        }
        copy_out(&e.path(), &job.output_dir.join(&name))
            .with_context(|| format!("keeping {name:?}, which a hook wrote beside the image"))?;
    }
    Ok(())
}

/// Copy `from` (a file, directory or symlink a hook made) to `to`,
/// merging into a directory that is there. Owners are not kept: the files
/// belong to the user.
fn copy_out(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    let t = fs::symlink_metadata(from)?.file_type();
    if t.is_dir() {
        match fs::symlink_metadata(to) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(to)?;
                fs::create_dir(to)?;
            }
            Err(_) => fs::create_dir(to)?,
        }
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_out(&e.path(), &to.join(e.file_name()))?;
        }
    } else if t.is_symlink() {
        let _ = fs::remove_file(to);
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if t.is_file() {
        if fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
            bail!("{to:?} is a directory");
        }
        let _ = fs::remove_file(to);
        fs::copy(from, to)?;
    } else if !t.is_char_device() {
        // Fifos and sockets are not outputs.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(strict: bool) -> BoxJob {
        BoxJob {
            strict,
            offline: false,
            home: Some("/home/u".into()),
            tmp_dir: "/tmp".into(),
            runtime_dir: None,
            image_cache: "/home/u/.cache/image-create".into(),
            output_dir: "/home/u/out".into(),
            image_base: "vm".into(),
            cache_dirs: BTreeMap::new(),
            named: vec!["/tmp/x.yaml".into(), "/home/u/key".into()],
            writable: vec![],
            image_binds: vec![],
        }
    }

    #[test]
    fn strict_hides_home_and_cuts_the_network_late() {
        let normal = job(false);
        let strict = job(true);
        assert!(normal.network(Phase::Finalise));
        assert!(strict.network(Phase::Install) && !strict.network(Phase::Finalise));
        let offline = BoxJob {
            offline: true,
            ..job(true)
        };
        assert!(!offline.network(Phase::Root));
        let b = Path::new("/tmp/dib_build.1");
        let s = normal.spec(b, &[], true);
        assert!(!s.masks.iter().any(|m| m.path() == Path::new("/home/u")));
        // /tmp is an overlay: what is there stays readable.
        assert!(s
            .placements
            .iter()
            .any(|p| matches!(p, Placement::Overlay { at, .. } if at == Path::new("/tmp"))));
        // Outside a mask, a named path is already visible (read-only).
        assert!(!s
            .placements
            .contains(&Placement::Readable("/home/u/key".into())));
        let s = strict.spec(b, &[], false);
        assert!(s.masks.iter().any(|m| m.path() == Path::new("/home/u")));
        assert!(!s.network);
        // The image cache under a hidden home stays readable.
        let home = tempfile::tempdir().unwrap();
        let cache = home.path().join(".cache/image-create");
        fs::create_dir_all(&cache).unwrap();
        let strict = BoxJob {
            home: Some(home.path().to_path_buf()),
            image_cache: cache.clone(),
            ..job(true)
        };
        let s = strict.spec(b, &[], false);
        assert!(s.placements.contains(&Placement::Readable(cache)));
    }

    #[test]
    fn bind_rules_expand_and_pick_the_elements_own_cache() {
        let env: BTreeMap<String, String> = [
            ("DISTRO_NAME".to_string(), "debian".to_string()),
            ("ARCH".to_string(), "amd64".to_string()),
            ("OFF".to_string(), "0".to_string()),
        ]
        .into();
        assert_eq!(
            expand(
                "apt/${DISTRO_NAME:-x}-${DIB_RELEASE:-unknown}-$ARCH/lists",
                &env
            ),
            "apt/debian-unknown-amd64/lists"
        );
        let mut j = job(false);
        j.cache_dirs.insert(
            "dpkg".into(),
            vec![(
                "/home/u/.cache/image-create/apt".into(),
                "/home/u/.cache/image-create/apt".into(),
            )],
        );
        let rule = |element: &str, unless: Option<(&str, &str)>| BindRule {
            element: element.into(),
            dir: "apt/$ARCH".into(),
            at: "var/cache/apt".into(),
            unless: unless.map(|(k, v)| (k.into(), v.into())),
        };
        j.image_binds = vec![
            rule("dpkg", None),
            rule("other", None),
            rule("dpkg", Some(("OFF", "0"))),
        ];
        let b = j.binds(&env);
        assert_eq!(b.len(), 2);
        assert!(b[0].writable && b[0].from == Path::new("/home/u/.cache/image-create/apt/amd64"));
        assert!(!b[1].writable);
    }

    #[test]
    fn cache_dirs_made_at_once_by_many_builds_all_succeed() {
        let cache = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let want = cache.path().join(format!("r{round}/a/b/c"));
            let errors: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| cache_dir_in_place(cache.path(), &want)))
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap().err().map(|e| format!("{e:#}")))
                    .collect()
            });
            assert!(errors.is_empty(), "{errors:?}");
            assert!(want.is_dir());
        }
        // A symlink a hook left is still refused.
        std::os::unix::fs::symlink("/", cache.path().join("link")).unwrap();
        let e = cache_dir_in_place(cache.path(), &cache.path().join("link/x")).unwrap_err();
        assert!(e.to_string().contains("is a symlink or a file"), "{e}");
    }

    #[test]
    fn image_sources_name_their_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().display().to_string();
        for v in [
            p.clone(),
            format!("file://{p}"),
            format!("oci:{p}"),
            format!("oci:{p}:base"),
            format!("oci-archive:{p}"),
            format!("docker-archive:{p}"),
        ] {
            assert_eq!(named_path(&v).as_deref(), Some(d.path()), "{v}");
        }
        for v in ["registry.example/x:1", "oci:relative", "1"] {
            assert_eq!(named_path(v), None, "{v}");
        }
        let mut j = job(true);
        j.name(Path::new("/usr/bin/dib"));
        j.name(Path::new("/usr/bin/dib"));
        assert_eq!(
            j.named
                .iter()
                .filter(|p| *p == Path::new("/usr/bin/dib"))
                .count(),
            1
        );
    }

    #[test]
    fn cache_dir_lines_are_plain_relative_paths() {
        let f = Path::new("e/cache-dirs");
        assert_eq!(cache_dir_line(f, 1, " apt ").unwrap(), Some("apt".into()));
        assert_eq!(cache_dir_line(f, 2, "# c").unwrap(), None);
        for bad in ["/abs", "../up", "a/../../b"] {
            let e = cache_dir_line(f, 3, bad).unwrap_err().to_string();
            assert!(e.starts_with("e/cache-dirs:3: '"), "{e}");
        }
        // The layer cache is dib's alone.
        for reserved in ["dib-layers", "./dib-layers/keys"] {
            let e = cache_dir_line(f, 4, reserved).unwrap_err().to_string();
            assert!(
                e.contains("is dib's layer cache, which only dib writes"),
                "{e}"
            );
        }
        assert!(cache_dir_line(f, 5, "apt/dib-layers").unwrap().is_some());
    }
}
