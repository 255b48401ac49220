//! The key of each cacheable step: a hash of everything the step's result
//! depends on. A step's key is the previous step's key, the step itself
//! and, for a phase, the files of its directory in the hook tree; the
//! first key holds what every step sees: the environment hooks start
//! from, the element set, the command line, the package lists, the box,
//! dib's own runtime and every file of the hook tree outside the phase
//! directories (environment.d, static files, libraries).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::super::job::BuildJob;
use super::super::plan::Step;
use crate::phases::{Phase, PHASES};

/// Bumped when what a layer holds or how keys are made changes.
const FORMAT: &str = "dib-layers-3";

/// Variables of a login session that no element reads: left out of the
/// key so that the same build from another terminal finds its layers.
const SESSION_NOISE: &[&str] = &[
    "COLORTERM",
    "COLUMNS",
    "DBUS_SESSION_BUS_ADDRESS",
    "DISPLAY",
    "HISTFILE",
    "HISTSIZE",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "LINES",
    "LS_COLORS",
    "MAIL",
    "OLDPWD",
    "PWD",
    "SHLVL",
    "SSH_AGENT_PID",
    "SSH_AUTH_SOCK",
    "SSH_CLIENT",
    "SSH_CONNECTION",
    "SSH_TTY",
    "STY",
    "TERM",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "TMUX",
    "TMUX_PANE",
    "WINDOWID",
    "XAUTHORITY",
    "_",
];

/// Prefixes of session variables left out likewise.
const SESSION_PREFIXES: &[&str] = &["XDG_", "GPG_", "WAYLAND_", "KONSOLE_", "VTE_"];

/// Whether the key leaves out the variable `k`, a login session's.
pub fn is_session_noise(k: &str) -> bool {
    SESSION_NOISE.contains(&k) || SESSION_PREFIXES.iter().any(|p| k.starts_with(p))
}

/// Whether `k` is one of the layer cache's own settings, which hooks do
/// not see (so they are in no key).
pub fn is_cache_setting(k: &str) -> bool {
    k == "DIB_NO_CACHE" || k.starts_with("DIB_LAYER_CACHE_")
}

/// A cacheable step's key and what its layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepKey {
    /// Hex, 64 characters.
    pub key: String,
    /// Whether the step's hooks reach the network (its layer ages).
    pub network: bool,
    /// Whether the step leaves a layer (it changes the build directory).
    pub stores: bool,
}

/// The steps a layer cache covers: the first steps of the plan up to the
/// first one it cannot replay (a `break=` shell, the disk's layout, the
/// outputs). None for the others.
pub fn cacheable(steps: &[Step]) -> usize {
    steps
        .iter()
        .position(|s| {
            !matches!(
                s,
                Step::Hooks { .. } | Step::PackageLists | Step::ExtraPackages | Step::CheckTree
            )
        })
        .unwrap_or(steps.len())
}

/// The keys of `steps` (the cacheable ones; None after), with the hook
/// tree at `hooks` and the runtime at `bin` as pid 1 wrote them.
pub fn step_keys(
    job: &BuildJob,
    steps: &[Step],
    hooks: &Path,
    bin: &Path,
) -> Result<Vec<Option<StepKey>>> {
    let mut h = blake3::Hasher::new();
    field(&mut h, "format", FORMAT.as_bytes());
    field(&mut h, "dib", env!("CARGO_PKG_VERSION").as_bytes());
    let env: BTreeMap<&String, &String> = job
        .env
        .iter()
        .filter(|(k, _)| !is_session_noise(k))
        .collect();
    field(&mut h, "env", &serde_json::to_vec(&env)?);
    field(&mut h, "elements", job.element_array.as_bytes());
    field(&mut h, "args", job.args.as_bytes());
    field(&mut h, "packages", &serde_json::to_vec(&job.packages)?);
    field(&mut h, "lists", &serde_json::to_vec(&job.package_lists)?);
    // What the box decides about the hooks' work (not which host paths
    // happen to exist yet, as the image cache before a first build).
    let b = &job.boxing;
    field(
        &mut h,
        "box",
        &serde_json::to_vec(&(
            b.strict,
            b.offline,
            &b.cache_dirs,
            &b.writable,
            &b.image_binds,
        ))?,
    );
    field(&mut h, "ca", &[u8::from(job.host_ca.is_some())]);
    let phase_dirs: Vec<&str> = PHASES.iter().map(|p| p.dir()).collect();
    tree_hash(&mut h, hooks, &phase_dirs)?;
    tree_hash(&mut h, bin, &[])?;
    let mut prev = *h.finalize().as_bytes();

    let n = cacheable(steps);
    let mut keys = Vec::with_capacity(steps.len());
    for step in &steps[..n] {
        let mut h = blake3::Hasher::new();
        field(&mut h, "prev", &prev);
        field(&mut h, "step", format!("{step:?}").as_bytes());
        let phase = match step {
            Step::Hooks { phase, .. } => Some(*phase),
            Step::ExtraPackages => Some(Phase::Install),
            _ => None,
        };
        if let Step::Hooks { phase, .. } = step {
            let dir = hooks.join(phase.dir());
            if dir.exists() {
                tree_hash(&mut h, &dir, &[])?;
            }
        }
        prev = *h.finalize().as_bytes();
        keys.push(Some(StepKey {
            key: crate::oci::hex(&prev),
            network: phase.is_some_and(|p| job.boxing.network(p)),
            stores: !matches!(step, Step::CheckTree),
        }));
    }
    keys.resize(steps.len(), None);
    Ok(keys)
}

/// A named, length-prefixed field.
fn field(h: &mut blake3::Hasher, name: &str, value: &[u8]) {
    h.update(name.as_bytes());
    h.update(&(value.len() as u64).to_le_bytes());
    h.update(value);
}

/// Every path under `root` (but the top-level names in `skip`), sorted,
/// with its kind, mode, link target or contents.
fn tree_hash(h: &mut blake3::Hasher, root: &Path, skip: &[&str]) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {d:?}"))? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            if d == root && skip.iter().any(|s| rel == Path::new(s)) {
                continue;
            }
            if e.file_type()?.is_dir() {
                stack.push(p.clone());
            }
            files.push((rel, p));
        }
    }
    files.sort();
    for (rel, p) in files {
        let md = fs::symlink_metadata(&p).with_context(|| format!("reading {p:?}"))?;
        field(h, "path", rel.as_os_str().as_bytes());
        field(h, "mode", &md.mode().to_le_bytes());
        if md.file_type().is_symlink() {
            let t = fs::read_link(&p).with_context(|| format!("reading {p:?}"))?;
            field(h, "link", t.as_os_str().as_bytes());
        } else if md.is_file() {
            field(
                h,
                "data",
                &fs::read(&p).with_context(|| format!("reading {p:?}"))?,
            );
        }
    }
    Ok(())
}
