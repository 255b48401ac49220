//! The host side of a build: check the host, pick the disk backend, make
//! an empty build directory and the [`BuildJob`], and re-execute dib
//! inside new user, mount and pid namespaces (`dib-sandbox`) to run it,
//! forwarding stop signals. Everything a build mounts or starts lives in
//! those namespaces, so it all ends when pid 1 does: success, failure,
//! Ctrl-C, SIGTERM, or `kill -9` of dib itself (the parent-death signal).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result};
use dib_sandbox::init::exit_code;
use dib_sandbox::ns;

use super::job::{BuildJob, Host, Products, JOB_ENV, JOB_FILE};
use super::outputs::Output;
use super::package_lists::PackageLists;
use super::pid1::SUPERVISE_CMD;
use crate::blockdev::{Backend, DiskJob};
use crate::config::{BuildConfig, Tmpfs};
use crate::elements::Resolution;
use crate::hooks::HookTree;

/// Process environment kept for the sandbox's own processes (hooks get the
/// job's environment instead).
const SANDBOX_ENV: &[&str] = &["PATH", "HOME", "TERM", "DIB_LOG"];
/// Derive the image's identifiers from this string (reproducible images).
const UUID_SEED_ENV: &str = "DIB_IMAGE_UUID_SEED";

/// A failure already reported in full (by pid 1): main prints nothing more.
#[derive(Debug, thiserror::Error)]
#[error("the build failed (see above)")]
pub struct Reported(pub i32);

/// Whether the build's directory goes in a tmpfs: MemTotal (from
/// /proc/meminfo's text) at least twice the threshold.
pub fn use_tmpfs(policy: Tmpfs, meminfo: &str) -> bool {
    let Tmpfs::WhenMemoryAtLeastTwice(gb) = policy else {
        return false;
    };
    let kib: Option<f64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.is_some_and(|kib| kib * 1024.0 >= 2.0 * gb * 1024.0 * 1024.0 * 1024.0)
}

/// Run a validated build.
pub fn run(
    config: &BuildConfig,
    resolution: &Resolution,
    hooks: HookTree,
    package_lists: PackageLists,
    products: Products,
) -> Result<()> {
    let mapping = ns::preflight()?;
    // The block-device configuration is read and checked here, before
    // anything runs, when an output needs a disk image.
    let disk = if products.needs_disk() {
        Some(disk_job(config, resolution)?)
    } else {
        None
    };
    let mut needed = needed_tools(&products.outputs, disk.as_ref());
    if products.ramdisk.is_some() {
        needed.push("depmod");
    }
    let missing = dib_sandbox::host_tools::missing(needed);
    anyhow::ensure!(
        missing.is_empty(),
        "this build needs host tools that are not installed: {}",
        missing.join(", ")
    );
    for out in &products.outputs {
        check_writable(out)?;
    }
    // Caught from before anything exists on disk, so a SIGTERM at any point
    // stops the build through pid 1 and still lets this function clean up.
    let caught = dib_sandbox::init::catch_stop_signals()?;
    std::fs::create_dir_all(&config.tmp_dir)
        .with_context(|| format!("creating TMP_DIR {:?}", config.tmp_dir))?;
    let build_dir = tempfile::Builder::new()
        .prefix("dib_build.")
        .tempdir_in(&config.tmp_dir)
        .with_context(|| format!("creating a build directory in {:?}", config.tmp_dir))?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let exe = std::env::current_exe().context("finding the dib binary")?;
    let host = Host {
        // Real path: mounts are listed (and must be found) under it.
        build_dir: std::fs::canonicalize(build_dir.path())
            .with_context(|| format!("resolving {:?}", build_dir.path()))?,
        tmpfs: use_tmpfs(config.tmpfs, &meminfo),
        disk,
        exe: exe.clone(),
    };
    let job = BuildJob::new(config, resolution, hooks, package_lists, products, host)?;

    let mut cmd = Command::new(&exe);
    cmd.arg(SUPERVISE_CMD).env_clear();
    for k in SANDBOX_ENV {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    let job_file = build_dir.path().join(JOB_FILE);
    std::fs::write(
        &job_file,
        serde_json::to_vec(&job).context("encoding the build job")?,
    )
    .with_context(|| format!("writing {job_file:?}"))?;
    cmd.env(JOB_ENV, &job_file);

    let mut child = ns::spawn(cmd, &mapping)?;
    let forwarder = caught.forward_to(child.id());
    let status = child.wait().context("waiting for the build")?;
    forwarder.close();
    // pid 1 removed what the build wrote; the directory itself is ours.
    if let Err(e) = build_dir.close() {
        tracing::warn!("removing the build directory: {e}");
    }
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(sig) = status.signal() {
        anyhow::bail!("the build was killed by signal {sig} before it could report");
    }
    match exit_code(status) {
        0 => Ok(()),
        code => Err(Reported(code).into()),
    }
}

/// Fail now, not after the whole build, when an output's directory cannot
/// take it.
fn check_writable(out: &Output) -> Result<()> {
    let Some(dir) = out.path.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the output directory {dir:?}"))?;
    tempfile::tempfile_in(dir).with_context(|| {
        format!(
            "cannot write the output {:?}: its directory {dir:?} is not writable \
             (choose another -o, or fix the directory's permissions)",
            out.path
        )
    })?;
    Ok(())
}

/// The disk image's configuration, layout settings and backend.
fn disk_job(config: &BuildConfig, resolution: &Resolution) -> Result<DiskJob> {
    let elements: Vec<(String, PathBuf)> = resolution
        .elements
        .iter()
        .map(|e| (e.name.clone(), e.path.clone()))
        .collect();
    let (block_config, origin) = crate::blockdev::select(
        config.block_device_config.as_deref(),
        &elements,
        config.arch.as_str(),
    )?;
    let backend = pick_backend(config.block_backend)?;
    let mut options = disk_options(config);
    options.helper = backend.mounts_filesystems();
    Ok(DiskJob {
        config: block_config,
        origin,
        options,
        backend,
        uuid_seed: config
            .env
            .get(UUID_SEED_ENV)
            .filter(|s| !s.is_empty())
            .cloned(),
    })
}

/// The host tools that writing `outputs` and the filesystems of `disk`
/// takes, each once, in a stable order.
fn needed_tools(outputs: &[Output], disk: Option<&DiskJob>) -> Vec<&'static str> {
    use crate::blockdev::config::FsType;
    let mut tools = Vec::new();
    if let Some(d) = disk {
        for fs in &d.config.filesystems {
            let kind = fs.kind.unwrap_or(d.options.fs_type);
            tools.extend(match kind {
                FsType::Ext2 => vec!["mkfs.ext2"],
                FsType::Ext3 => vec!["mkfs.ext3"],
                FsType::Ext4 => vec!["mkfs.ext4"],
                FsType::Vfat => vec!["mkfs.fat", "mcopy"],
                FsType::Swap => vec!["mkswap"],
                // dib-helper runs mkfs.xfs (the offline backend refuses
                // xfs with its own message when the layout is planned).
                FsType::Xfs | FsType::Btrfs => vec![],
            });
        }
    }
    tools.extend(outputs.iter().filter_map(|out| out.kind.tool()));
    let mut seen = std::collections::BTreeSet::new();
    tools.retain(|t| seen.insert(*t));
    tools
}

/// The helper backend when dib-helper builds the image: always with
/// `--block-backend helper` (an error when it does not answer), with
/// `auto` when it answers.
fn pick_backend(backend: crate::cli::BlockBackend) -> Result<Backend> {
    use crate::cli::BlockBackend;
    use dib_sandbox::client::{socket_path, Client, ClientError};
    if backend == BlockBackend::Offline {
        return Ok(Backend::Offline);
    }
    let path = socket_path();
    match (backend, Client::connect(&path)) {
        (_, Ok(_)) => {
            tracing::info!("block devices: dib-helper at {}", path.display());
            Ok(Backend::Helper { socket: path })
        }
        // Running, but not for this user (or another version): say so, even
        // under `auto`, which then builds offline.
        (BlockBackend::Helper, Err(ClientError::Refused { message, .. })) => {
            anyhow::bail!(
                "the dib-helper at {} refused this build: {message} (or use \
                 --block-backend offline)",
                path.display()
            )
        }
        (_, Err(ClientError::Refused { message, .. })) => {
            tracing::info!(
                "block devices: offline (the dib-helper at {} refused: {message})",
                path.display()
            );
            Ok(Backend::Offline)
        }
        (BlockBackend::Helper, Err(e)) => Err(e).context(
            "--block-backend helper needs a running dib-helper: start one with \
             `sudo scripts/start-helper` (docs/security.md), point DIB_HELPER_SOCKET \
             at its socket, or use --block-backend offline",
        ),
        (_, Err(e)) => {
            tracing::debug!("block devices: offline ({e})");
            Ok(Backend::Offline)
        }
    }
}

/// The layout settings from the command line and environment.
fn disk_options(config: &BuildConfig) -> crate::blockdev::Options {
    crate::blockdev::Options {
        image_size: config
            .image_size_gb
            .map(|gb| (gb * (1u64 << 30) as f64).ceil() as u64),
        extra_size: config.image_extra_size_mb.unwrap_or(0) << 20,
        fs_type: config.fs_type,
        root_label: config.root_label.clone(),
        journal: config.mkfs_journal_size_mb.map(|mb| mb << 20),
        mkfs_options: config
            .mkfs_options
            .as_deref()
            .map(|o| o.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        max_online_resize: config.max_online_resize.map(|blocks| blocks * 4096),
        helper: false,
    }
}

#[cfg(test)]
mod tests;
