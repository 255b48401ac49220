//! Running a build.
//!
//! The host side ([`run`]) checks the host, makes an empty build directory,
//! and re-executes dib inside new user, mount and pid namespaces
//! (`dib-sandbox`), handing it the [`job::BuildJob`]. Inside, the supervisor
//! ([`supervise_main`]) starts pid 1 ([`init_main`]), which runs the phases
//! ([`runner`]). Everything a build mounts or starts lives in those
//! namespaces, so it all ends when pid 1 does: success, failure, Ctrl-C,
//! SIGTERM, or `kill -9` of dib itself (the parent-death signal).

pub mod job;
pub mod log;
pub mod outputs;
pub mod runner;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use dib_sandbox::init::{exit_code, kill_all_and_reap};
use dib_sandbox::ns;

use crate::config::{BuildConfig, Tmpfs};
use crate::element_info::env_script_parts;
use crate::elements::Resolution;
use crate::hooks::HookTree;
use job::{BreakAt, BuildJob, JOB_ENV, JOB_FILE};

/// The marker element that ends a build after cleanup.d, without an image.
pub const NO_FINAL_IMAGE: &str = "no-final-image";
/// Hidden subcommand names of the re-executed dib.
pub const SUPERVISE_CMD: &str = "__sandbox-supervise";
pub const INIT_CMD: &str = "__sandbox-init";
/// Process environment kept for the sandbox's own processes (hooks get the
/// job's environment instead).
const SANDBOX_ENV: &[&str] = &["PATH", "HOME", "TERM", "DIB_LOG"];

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

/// Host side: run the phases of a validated build.
pub fn run(config: &BuildConfig, resolution: &Resolution, hooks: HookTree) -> Result<()> {
    let mapping = ns::preflight()?;
    let final_image = !resolution.contains(NO_FINAL_IMAGE);
    // Absolute: hooks run in the build directory, not where dib was started.
    let image_name = std::path::absolute(&config.image_name)
        .with_context(|| format!("resolving the output name {:?}", config.image_name))?;
    // A ramdisk build writes NAME.kernel and NAME.initramfs, no disk image.
    let ramdisk = if config.mode == crate::config::Mode::Ramdisk && final_image {
        let with = |ext: &str| std::path::PathBuf::from(format!("{}.{ext}", image_name.display()));
        Some(crate::ramdisk::RamdiskJob {
            kernel: with("kernel"),
            initramfs: with("initramfs"),
        })
    } else {
        None
    };
    let outputs = if final_image && ramdisk.is_none() {
        config
            .output_types
            .iter()
            .map(|&t| {
                anyhow::ensure!(
                    t.is_written(),
                    "output type '{t}' is not written by this version of dib"
                );
                outputs::Output::new(t, &config.image_name)
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    // The block-device configuration is read and checked here, before
    // anything runs, when an output needs a disk image.
    let disk = if outputs.iter().any(|o| o.kind.from_disk()) {
        let elements: Vec<(String, std::path::PathBuf)> = resolution
            .elements
            .iter()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect();
        let (block_config, origin) = crate::blockdev::select(
            config.block_device_config.as_deref(),
            &elements,
            config.arch.as_str(),
        )?;
        let helper = pick_backend(config.block_backend)?;
        let mut options = disk_options(config);
        options.helper = helper.is_some();
        Some(crate::blockdev::DiskJob {
            config: block_config,
            origin,
            options,
            helper,
        })
    } else {
        None
    };
    let mut needed = needed_tools(&outputs, disk.as_ref());
    if ramdisk.is_some() {
        needed.push("depmod");
    }
    let missing = dib_sandbox::host_tools::missing(needed);
    anyhow::ensure!(
        missing.is_empty(),
        "this build needs host tools that are not installed: {}",
        missing.join(", ")
    );
    for out in &outputs {
        if let Some(dir) = out.path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the output directory {dir:?}"))?;
            // Found now, not after the whole build.
            tempfile::tempfile_in(dir).with_context(|| {
                format!(
                    "cannot write the output {:?}: its directory {dir:?} is not writable \
                     (choose another -o, or fix the directory's permissions)",
                    out.path
                )
            })?;
        }
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
    let (image_element, image_element_yaml, element_array) = env_script_parts(resolution);

    let mut env = config.env.clone();
    env.retain(|k, _| k != JOB_ENV && !k.starts_with("BASH_FUNC_"));
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("ARCH", config.arch.to_string());
    set("IMAGE_NAME", image_name.display().to_string());
    set("IMAGE_ELEMENT", image_element);
    set("IMAGE_ELEMENT_YAML", image_element_yaml);
    set("DIB_OFFLINE", if config.offline { "1" } else { "0" }.into());
    set("DIB_IMAGE_CACHE", config.image_cache.display().to_string());
    set("DIB_DEBUG_TRACE", config.trace.to_string());
    set("DIB_ROOT_LABEL", config.root_label.clone());
    set(
        "DIB_DEFAULT_INSTALLTYPE",
        config.install_type.as_str().to_string(),
    );
    set(
        "DIB_ARGS",
        config
            .args
            .iter()
            .skip(1)
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
    );
    set("FS_TYPE", config.fs_type.to_string());

    let job = BuildJob {
        // Real path: mounts are listed (and must be found) under it.
        build_dir: std::fs::canonicalize(build_dir.path())
            .with_context(|| format!("resolving {:?}", build_dir.path()))?,
        tmpfs: use_tmpfs(config.tmpfs, &meminfo),
        hooks,
        env,
        element_array,
        breakpoints: config.breakpoints.iter().map(BreakAt::from).collect(),
        trace: config.trace,
        logfile: config
            .logfile
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        final_image,
        quiet: config.quiet,
        outputs,
        output_settings: outputs::Settings {
            overwrite: config.overwrite_old_image,
            compress: config.compress,
            qemu_img_options: config
                .qemu_img_options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            checksum: config.checksum,
        },
        disk,
        ramdisk,
        packages: config.packages.clone(),
        elements: resolution
            .elements
            .iter()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect(),
    };
    let exe = std::env::current_exe().context("finding the dib binary")?;
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

/// The host tools that writing `outputs` and the filesystems of `disk`
/// takes, each once, in a stable order.
fn needed_tools(
    outputs: &[outputs::Output],
    disk: Option<&crate::blockdev::DiskJob>,
) -> Vec<&'static str> {
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

/// The layout settings from the command line and environment.
/// The helper's socket when the helper backend builds the image: always
/// with `--block-backend helper` (an error when it does not answer), with
/// `auto` when it answers.
fn pick_backend(backend: crate::cli::BlockBackend) -> Result<Option<std::path::PathBuf>> {
    use crate::cli::BlockBackend;
    use dib_sandbox::client::{socket_path, Client};
    if backend == BlockBackend::Offline {
        return Ok(None);
    }
    use dib_sandbox::client::ClientError;
    let path = socket_path();
    match (backend, Client::connect(&path)) {
        (_, Ok(_)) => {
            tracing::info!("block devices: dib-helper at {}", path.display());
            Ok(Some(path))
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
            Ok(None)
        }
        (BlockBackend::Helper, Err(e)) => Err(e).context(
            "--block-backend helper needs a running dib-helper: start one with \
             `sudo scripts/start-helper` (docs/security.md), point DIB_HELPER_SOCKET \
             at its socket, or use --block-backend offline",
        ),
        (_, Err(e)) => {
            tracing::debug!("block devices: offline ({e})");
            Ok(None)
        }
    }
}

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

/// `dib __sandbox-supervise`: the supervisor inside the new namespaces.
pub fn supervise_main() -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("dib: error: finding the dib binary: {e}");
            return 1;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg(INIT_CMD);
    match dib_sandbox::init::supervise(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dib: error: {:#}", anyhow::Error::from(e));
            1
        }
    }
}

/// `dib __sandbox-init`: pid 1 of the build.
pub fn init_main() -> i32 {
    let stopped = match dib_sandbox::init::become_init() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dib: error: {:#}", anyhow::Error::from(e));
            return 1;
        }
    };
    let job: BuildJob = match std::env::var(JOB_ENV)
        .context("the build job is missing")
        .and_then(|f| std::fs::read(&f).with_context(|| format!("reading the build job {f:?}")))
        .and_then(|j| serde_json::from_slice(&j).context("decoding the build job"))
    {
        Ok(j) => j,
        Err(e) => {
            eprintln!("dib: error: {e:#}");
            return 1;
        }
    };
    std::env::remove_var(JOB_ENV);
    use std::io::IsTerminal as _;
    let status_line = std::io::stderr().is_terminal() && !job.quiet;
    let log = match log::Log::new(job.logfile.as_deref(), status_line) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("dib: error: {e:#}");
            return 1;
        }
    };
    let result = runner::run(&job, &stopped, &log);
    log.finish();
    kill_all_and_reap();
    // Whatever is still mounted in the build directory (hooks' bind mounts,
    // the tree's own bind) goes first, so deleting cannot reach through it.
    if let Err(e) = dib_sandbox::mounts::unmount_all_under(&job.build_dir) {
        log.line(&format!("warning: {:#}", anyhow::Error::from(e)));
    }
    if !job.tmpfs {
        clear_dir(&job.build_dir, &log);
    }
    match result {
        Ok(()) => {
            log.line("build finished");
            0
        }
        Err(runner::Stop::Interrupted(sig)) => {
            log.line(&format!(
                "build interrupted by signal {sig}; everything it started is stopped"
            ));
            128 + sig
        }
        Err(runner::Stop::Failed(e)) => {
            log.to_file(&format!("error: {e:#}"));
            eprintln!("dib: error: {e:#}");
            1
        }
    }
}

/// Remove everything in `dir` (not `dir` itself), staying on its file system
/// (like `rm --one-file-system`): a mount that could not be undone is left
/// alone rather than emptied. Inside the namespace we own every id the build
/// used, so this succeeds where the host user could not remove files the
/// build chowned.
fn clear_dir(dir: &Path, log: &log::Log) {
    use std::os::unix::fs::MetadataExt as _;
    // A bind mount from the same file system has the same st_dev, so the
    // file-system check below cannot see it: refuse outright while anything
    // is still mounted under the build directory.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let still: Vec<_> = dib_sandbox::mounts::mounts_under(dir, &info)
        .into_iter()
        .filter(|m| m != dir)
        .collect();
    if !still.is_empty() {
        log.line(&format!(
            "warning: not deleting the build directory {}: still mounted there: {still:?}",
            dir.display()
        ));
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        if let Err(e) = remove_same_fs(&entry.path(), meta.dev()) {
            log.line(&format!(
                "warning: removing {}: {e}",
                entry.path().display()
            ));
        }
    }
}

fn remove_same_fs(p: &Path, dev: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(p)?;
    if !meta.is_dir() {
        return std::fs::remove_file(p);
    }
    if meta.dev() != dev {
        return Err(std::io::Error::other(
            "another file system is mounted here; left alone",
        ));
    }
    // A directory the build made unwritable (chmod 0500) must be opened up
    // to empty it.
    if meta.mode() & 0o700 != 0o700 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
    }
    for entry in std::fs::read_dir(p)? {
        remove_same_fs(&entry?.path(), dev)?;
    }
    std::fs::remove_dir(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tools_a_build_needs_follow_its_outputs_and_filesystems() {
        let outs: Vec<outputs::Output> = ["qcow2", "vhd", "tar", "squashfs"]
            .iter()
            .map(|t| {
                outputs::Output::new(crate::config::OutputType::parse(t).unwrap(), "/o/x").unwrap()
            })
            .collect();
        let (config, _) = crate::blockdev::select(
            None,
            &[(
                "block-device-efi".to_string(),
                std::path::PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/elements/block-device-efi"
                )),
            )],
            "amd64",
        )
        .unwrap();
        let disk = crate::blockdev::DiskJob {
            config,
            origin: "t".into(),
            helper: None,
            options: crate::blockdev::Options {
                image_size: None,
                extra_size: 0,
                fs_type: crate::blockdev::config::FsType::Ext4,
                root_label: "r".into(),
                journal: None,
                mkfs_options: vec![],
                max_online_resize: None,
                helper: false,
            },
        };
        let names = needed_tools(&outs, Some(&disk));
        assert_eq!(
            names,
            [
                "mkfs.fat",
                "mcopy",
                "mkfs.ext4",
                "qemu-img",
                "tar",
                "mksquashfs"
            ]
        );
        assert!(needed_tools(&[], None).is_empty());
    }

    #[test]
    fn every_tool_dib_runs_is_on_the_host_tool_list() {
        // What scripts/prepare-host installs and checks, and what dib's
        // errors name: the same list.
        for tool in [
            "mkfs.ext2",
            "mkfs.ext3",
            "mkfs.ext4",
            "mkfs.fat",
            "mkfs.xfs",
            "mkswap",
            "mcopy",
            "tar",
            "mksquashfs",
            "cp",
            "qemu-img",
            "depmod",
            "debugfs",
            "newuidmap",
            "newgidmap",
            "mmdebstrap",
            "curl",
        ] {
            assert!(
                dib_sandbox::host_tools::package(tool).is_some(),
                "{tool} is not in sandbox/host-tools.txt"
            );
        }
    }

    #[test]
    fn tmpfs_when_memory_allows() {
        let meminfo =
            |gib: u64| format!("MemTotal:       {} kB\nMemFree: 1 kB\n", gib * 1024 * 1024);
        // (policy, MemTotal in GiB, expected)
        let cases = [
            (Tmpfs::WhenMemoryAtLeastTwice(2.0), 4, true),
            (Tmpfs::WhenMemoryAtLeastTwice(2.0), 3, false),
            (Tmpfs::WhenMemoryAtLeastTwice(1.5), 3, true),
            (Tmpfs::WhenMemoryAtLeastTwice(8.0), 24, true),
            (Tmpfs::Never, 24, false),
        ];
        for (policy, gib, want) in cases {
            assert_eq!(
                use_tmpfs(policy, &meminfo(gib)),
                want,
                "{policy:?} with {gib} GiB"
            );
        }
        assert!(!use_tmpfs(Tmpfs::WhenMemoryAtLeastTwice(2.0), "garbage"));
    }
}
