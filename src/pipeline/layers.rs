//! The layer cache: after each step of a build's first part (root.d to
//! block-device.d for a disk image, every phase otherwise), what the step
//! changed in the build directory (the tree, the hook tree, what hooks
//! left in the build and output directories) is kept as a layer keyed by
//! everything the step depended on ([`keys`]). A build whose first steps'
//! keys are all cached unpacks their layers and runs from the first step
//! whose key changed.
//!
//! On disk, under `$DIB_IMAGE_CACHE/dib-layers`: `keys/KEY.json` says which
//! blob is a key's layer, its size, its BLAKE3 hash and when it was made;
//! `blobs/HASH.tar` is the layer (a tar stream with whiteouts, as an OCI
//! layer); `tmp/` holds layers being written. A layer is written under
//! `tmp/`, locked, and renamed into `blobs/` when complete; its key file
//! is written the same way afterwards, so a build killed at any moment
//! leaves either nothing a later build reads or a whole layer. Every blob
//! is checked against its size and hash before it is unpacked; a damaged
//! one is dropped and the build runs that step again. Builds of one user
//! share the cache: two that make the same key both write a whole layer
//! and the last rename wins. After each build the least recently used
//! layers go until the cache is within its size (`DIB_LAYER_CACHE_SIZE`).

pub mod keys;
pub mod manifest;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

pub use keys::StepKey;
pub use manifest::{Diff, Manifest};

/// The cache's directory under `DIB_IMAGE_CACHE`; no element may declare
/// it a cache directory of its own.
pub const LAYERS_DIR: &str = "dib-layers";
/// `DIB_LAYER_CACHE_SIZE`'s default: 10 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
/// `DIB_LAYER_CACHE_MAX_AGE`'s default, in seconds: a day.
pub const DEFAULT_MAX_AGE: u64 = 24 * 3600;
/// How old an unreferenced blob must be before clean-up takes it (a
/// concurrent build may have renamed it into place and not yet written its
/// key).
const ORPHAN_GRACE: Duration = Duration::from_secs(600);
/// A key file is a few hundred bytes; anything this large is not one.
const MAX_KEY_FILE: u64 = 1 << 20;

/// The cache as the job carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheJob {
    pub dir: PathBuf,
    /// The most the cache may hold, in bytes.
    pub max_bytes: u64,
    /// How long a layer of a step with network access is reused, in
    /// seconds (`None`: always, as offline).
    pub max_age: Option<u64>,
}

/// A key's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyFile {
    pub key: String,
    /// The blob's BLAKE3 hash (its name) and size.
    pub blob: String,
    pub size: u64,
    /// When the layer was made (seconds since 1970).
    pub created: u64,
    /// Whether the step reached the network.
    pub network: bool,
    /// The hooks' environment after environment.d, when known by then.
    pub sourced: Option<BTreeMap<String, String>>,
}

/// A layer found for a key.
#[derive(Debug)]
pub struct Found {
    pub file: KeyFile,
    pub blob: File,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl CacheJob {
    fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn key_path(&self, key: &str) -> PathBuf {
        self.keys().join(format!("{key}.json"))
    }

    fn blob_path(&self, blob: &str) -> PathBuf {
        self.blobs().join(format!("{blob}.tar"))
    }

    /// The layer of `k`, if one is cached, whole and young enough.
    pub fn find(&self, k: &StepKey) -> Option<Found> {
        let path = self.key_path(&k.key);
        let mut text = Vec::new();
        File::open(&path)
            .ok()?
            .take(MAX_KEY_FILE)
            .read_to_end(&mut text)
            .ok()?;
        let file: KeyFile = serde_json::from_slice(&text).ok()?;
        if file.key != k.key || !is_hex(&file.blob) {
            return None;
        }
        if k.network {
            if let Some(max) = self.max_age {
                if max == 0 || now().saturating_sub(file.created) > max {
                    return None;
                }
            }
        }
        let blob = File::open(self.blob_path(&file.blob)).ok()?;
        let size = blob.metadata().ok()?.len();
        (size == file.size).then_some(Found { file, blob })
    }

    /// Check a found layer's bytes against its hash; a damaged one's key
    /// is removed.
    pub fn verify(&self, f: &mut Found) -> Result<bool> {
        let mut h = blake3::Hasher::new();
        let mut r = BufReader::with_capacity(1 << 20, &f.blob);
        let mut sink = Counting {
            inner: io::sink(),
            hash: &mut h,
            len: 0,
        };
        io::copy(&mut r, &mut sink).context("reading a cached layer")?;
        let ok = crate::oci::hex(h.finalize().as_bytes()) == f.file.blob;
        if !ok {
            let _ = fs::remove_file(self.key_path(&f.file.key));
        }
        use std::io::Seek as _;
        f.blob.rewind().context("reading a cached layer")?;
        Ok(ok)
    }

    /// Mark a key used now (clean-up keeps the most recently used).
    pub fn touch(&self, key: &str) {
        let p = self.key_path(key);
        if let Ok(f) = File::options().append(true).open(&p) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Write the layer of `k`: `diff` of the build directory `build`.
    pub fn store(
        &self,
        k: &StepKey,
        build: &Path,
        diff: &Diff,
        sourced: Option<&BTreeMap<String, String>>,
    ) -> Result<u64> {
        for d in [self.keys(), self.blobs(), self.tmp()] {
            fs::create_dir_all(&d).with_context(|| format!("creating {d:?}"))?;
        }
        let partial = Partial::create(&self.tmp(), &k.key, "tar")?;
        let mut hasher = blake3::Hasher::new();
        let size = {
            let out = Counting {
                inner: BufWriter::with_capacity(1 << 20, &partial.file),
                hash: &mut hasher,
                len: 0,
            };
            let mut w = crate::oci::layer::LayerWriter::new(out, None);
            // Whiteouts first: a path replaced by another kind of file is
            // removed, then made again.
            for g in &diff.gone {
                w.whiteout(g)?;
            }
            w.paths(build, &diff.changed)?;
            let (mut out, _) = w.finish()?;
            out.inner.flush().context("writing the layer")?;
            out.len
        };
        let blob = crate::oci::hex(hasher.finalize().as_bytes());
        partial.commit(&self.blob_path(&blob))?;
        let file = KeyFile {
            key: k.key.clone(),
            blob,
            size,
            created: now(),
            network: k.network,
            sourced: sourced.cloned(),
        };
        let partial = Partial::create(&self.tmp(), &k.key, "json")?;
        serde_json::to_writer(&partial.file, &file).context("writing a layer's key")?;
        partial.commit(&self.key_path(&k.key))?;
        Ok(size)
    }

    /// Bring the cache within its size: stale partial files, keys whose
    /// blob is gone and blobs no key names go, then the least recently
    /// used keys until the rest fits. Another build's clean-up running
    /// already is enough.
    pub fn clean(&self) -> Result<Cleaned> {
        let mut done = Cleaned::default();
        if !self.dir.is_dir() {
            return Ok(done);
        }
        let lock = File::create(self.dir.join("clean.lock")).context("locking the layer cache")?;
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(done);
        }
        // A partial file whose writer is alive is locked by it.
        for e in read_dir_or_empty(&self.tmp()) {
            let p = e.path();
            if let Ok(f) = File::open(&p) {
                if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok() {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        let mut keys = Vec::new();
        for e in read_dir_or_empty(&self.keys()) {
            let p = e.path();
            let parsed = fs::read(&p)
                .ok()
                .and_then(|t| serde_json::from_slice::<KeyFile>(&t).ok());
            let used = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            match parsed {
                Some(k) if self.blob_path(&k.blob).is_file() => keys.push((used, p, k)),
                _ => {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        let named: HashSet<&str> = keys.iter().map(|(_, _, k)| k.blob.as_str()).collect();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for e in read_dir_or_empty(&self.blobs()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(blob) = name.strip_suffix(".tar") else {
                continue;
            };
            let Ok(md) = e.metadata() else { continue };
            if named.contains(blob) {
                sizes.insert(blob.to_string(), md.len());
            } else if md.modified().is_ok_and(|m| {
                SystemTime::now()
                    .duration_since(m)
                    .is_ok_and(|a| a > ORPHAN_GRACE)
            }) {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut total: u64 = sizes.values().sum();
        keys.sort_by_key(|(used, _, _)| *used);
        let mut refs: HashMap<String, usize> = HashMap::new();
        for (_, _, k) in &keys {
            *refs.entry(k.blob.clone()).or_default() += 1;
        }
        for (_, path, k) in &keys {
            if total <= self.max_bytes {
                break;
            }
            let _ = fs::remove_file(path);
            done.keys += 1;
            let left = refs.get_mut(&k.blob).expect("counted");
            *left -= 1;
            if *left == 0 {
                let _ = fs::remove_file(self.blob_path(&k.blob));
                total = total.saturating_sub(sizes.get(&k.blob).copied().unwrap_or(0));
                done.bytes += sizes.get(&k.blob).copied().unwrap_or(0);
            }
        }
        done.total = total;
        Ok(done)
    }
}

/// What [`CacheJob::clean`] removed and left.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    pub keys: usize,
    pub bytes: u64,
    pub total: u64,
}

fn read_dir_or_empty(d: &Path) -> impl Iterator<Item = fs::DirEntry> {
    fs::read_dir(d).into_iter().flatten().flatten()
}

fn is_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A file being written under `tmp/`, locked while its writer lives (so
/// clean-up leaves it), renamed into place when complete.
struct Partial {
    file: File,
    path: PathBuf,
}

impl Partial {
    fn create(tmp: &Path, key: &str, ext: &str) -> Result<Partial> {
        let path = tmp.join(format!(
            "{key}.{}.{}.{ext}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {path:?}"))?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .with_context(|| format!("locking {path:?}"))?;
        Ok(Partial { file, path })
    }

    fn commit(self, to: &Path) -> Result<()> {
        fs::rename(&self.path, to).with_context(|| format!("renaming {:?} to {to:?}", self.path))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Gone once committed; else it is an abandoned partial file.
        let _ = fs::remove_file(&self.path);
    }
}

/// A writer that hashes and counts what passes.
struct Counting<'a, W: Write> {
    inner: W,
    hash: &'a mut blake3::Hasher,
    len: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Unpack `f`'s layer into the build directory `build`.
pub fn unpack(f: &Found, build: &Path) -> Result<u64> {
    let r = BufReader::with_capacity(1 << 20, &f.blob);
    crate::oci::unpack::apply_tar(build, r, &format!("the cached layer {}", f.file.key))
}

/// Parse `DIB_LAYER_CACHE_SIZE`: bytes, or a number with K, M, G or T
/// (binary multiples).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&v[..i], 1 << 20),
        (i, 'G' | 'g') => (&v[..i], 1 << 30),
        (i, 'T' | 't') => (&v[..i], 1 << 40),
        _ => (v, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

/// Fail unless `dir` may hold the cache: used by the host before a build.
pub fn check_dir(dir: &Path) -> Result<()> {
    if let Ok(m) = fs::symlink_metadata(dir) {
        if !m.is_dir() {
            bail!(
                "the layer cache {dir:?} is not a directory: remove it, or build with --no-cache"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// What pid 1 must not snapshot in the build directory: the tree's bind
/// mount, the runtime it wrote itself, the job, the boxes' assembly and
/// overlay work directories, the outside hooks' /tmp and /var/tmp (each
/// box's own scratch, as the host's /tmp would be under DIB), the
/// environment dump.
const NOT_IN_LAYERS: &[&str] = &[
    "mnt",
    "bin",
    super::job::JOB_FILE,
    ".dib-environment",
    ".dib-private/box",
    ".dib-private/out/work",
    ".dib-private/tmp",
    ".dib-private/var-tmp",
];

/// A build's use of the cache: the keys of its steps, where it resumes,
/// and the build directory as the last step left it.
#[derive(Debug, Default)]
pub struct Replay {
    cache: Option<CacheJob>,
    keys: Vec<Option<StepKey>>,
    /// The first step to run.
    pub resume: usize,
    last: Manifest,
    /// Layers written, for the log at the end.
    stored: (usize, u64),
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

impl Replay {
    /// Find the cached layers of the first steps of `steps` and unpack
    /// them into the build directory; `sourced` gets the environment the
    /// last of them recorded. Without a cache, nothing.
    pub fn start(
        build: &mut super::executor::Build<'_>,
        steps: &[super::plan::Step],
    ) -> Result<Replay> {
        let Some(cache) = build.job.layer_cache.clone() else {
            return Ok(Replay::default());
        };
        let started = std::time::Instant::now();
        let keys = keys::step_keys(build.job, steps, &build.dirs.hooks, &build.dirs.bin)?;
        let mut found: Vec<(usize, Found)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let Some(k) = k else { break };
            if !k.stores {
                continue;
            }
            match cache.find(k) {
                Some(f) => found.push((i, f)),
                None => break,
            }
        }
        for n in 0..found.len() {
            if !cache.verify(&mut found[n].1)? {
                build.log.line(&format!(
                    "warning: the cached layer of {} was damaged and is removed; the step runs \
                     again",
                    super::plan::describe(&steps[found[n].0])
                ));
                found.truncate(n);
                break;
            }
        }
        let resume = found.last().map_or(0, |(i, _)| i + 1);
        let mut bytes = 0;
        for (_, f) in &found {
            if let Err(e) = unpack(f, &build.dirs.build) {
                // Never again: this key and the ones after it go.
                for (_, later) in found.iter().skip_while(|(_, g)| g.file.key != f.file.key) {
                    let _ = fs::remove_file(cache.key_path(&later.file.key));
                }
                bail!(
                    "{e:#}\nThe cached layer could not be unpacked and is removed from {}: \
                     build again (it runs the step again), or build with --no-cache",
                    cache.dir.display()
                );
            }
            cache.touch(&f.file.key);
            bytes += f.file.size;
        }
        if let Some(env) = found.iter().rev().find_map(|(_, f)| f.file.sourced.clone()) {
            *build.sourced.borrow_mut() = Some(env);
        }
        if let Some((last, _)) = found.last() {
            build.log.line(&format!(
                "reused the cached layers of {} to {} ({}) in {:.1}s",
                super::plan::describe(&steps[0]),
                super::plan::describe(&steps[*last]),
                mib(bytes),
                started.elapsed().as_secs_f64()
            ));
        }
        let last = Manifest::scan(&build.dirs.build, NOT_IN_LAYERS)?;
        Ok(Replay {
            cache: Some(cache),
            keys,
            resume,
            last,
            stored: (0, 0),
        })
    }

    /// Whether step `i` leaves a layer.
    pub fn keeps(&self, i: usize) -> bool {
        self.cache.is_some() && matches!(self.keys.get(i), Some(Some(k)) if k.stores)
    }

    /// After step `i` ran: keep what it changed as its layer. A layer that
    /// cannot be written (a full disk) ends caching for this build, with a
    /// warning; the build goes on.
    pub fn after(
        &mut self,
        steps: &[super::plan::Step],
        i: usize,
        build: &super::executor::Build<'_>,
    ) -> Result<()> {
        let (Some(cache), Some(Some(k))) = (&self.cache, self.keys.get(i)) else {
            return Ok(());
        };
        if !k.stores {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // A phase with no script to run changed nothing: no scan needed.
        let idle = match steps[i] {
            super::plan::Step::Hooks { phase, .. } => {
                match crate::runparts::plan_dir(&build.dirs.hooks.join(phase.dir())) {
                    Ok(p) => p.run.is_empty(),
                    Err(e) => e.kind() == io::ErrorKind::NotFound,
                }
            }
            _ => false,
        };
        let (diff, now) = if idle {
            (Diff::default(), None)
        } else {
            let now = Manifest::scan(&build.dirs.build, NOT_IN_LAYERS)?;
            (self.last.diff(&now), Some(now))
        };
        let sourced = build.sourced.borrow();
        match cache.store(k, &build.dirs.build, &diff, sourced.as_ref()) {
            Ok(size) => {
                self.stored.0 += 1;
                self.stored.1 += size;
            }
            Err(e) => {
                build.log.line(&format!(
                    "warning: could not keep a layer in {}: {e:#}; this build keeps no more",
                    cache.dir.display()
                ));
                self.cache = None;
            }
        }
        if build.job.trace > 0 {
            build.log.line(&format!(
                "{}: kept its layer ({} changed, {} gone) in {:.3}s",
                super::plan::describe(&steps[i]),
                diff.changed.len(),
                diff.gone.len(),
                started.elapsed().as_secs_f64()
            ));
        }
        if let Some(now) = now {
            self.last = now;
        }
        Ok(())
    }

    /// At the build's end: say what was kept and clean the cache up.
    pub fn finish(&self, log: &super::log::Log) {
        let Some(cache) = &self.cache else { return };
        if self.stored.0 > 0 {
            log.line(&format!(
                "kept {} step{} as layers ({}) in {}",
                self.stored.0,
                if self.stored.0 == 1 { "" } else { "s" },
                mib(self.stored.1),
                cache.dir.display()
            ));
        }
        match cache.clean() {
            Ok(c) if c.keys > 0 => log.line(&format!(
                "layer cache: removed the {} least recently used ({}) to stay within {}",
                c.keys,
                mib(c.bytes),
                mib(cache.max_bytes)
            )),
            Ok(_) => {}
            Err(e) => log.line(&format!("warning: cleaning the layer cache up: {e:#}")),
        }
    }
}
