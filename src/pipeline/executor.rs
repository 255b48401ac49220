//! pid 1 runs a build: set up the build directory, then run the job's
//! [plan](super::plan) step by step, with the chroot's mounts in place for
//! the steps that need them. What a step does is in [`super::steps`].
//!
//! Layout of the build directory (as DIB's): `built/` holds the image tree
//! (`TARGET_ROOT` of root.d and cleanup.d; `image/root` once a backend
//! mounts the image's filesystems there), `mnt/` is the same tree through a
//! bind mount (`TMP_MOUNT_PATH`, where chroot phases run), `hooks/` is the
//! merged hook tree (`TMP_HOOKS_PATH`, with dib's shell library in `.dib/`),
//! and `bin/` holds the outside phases' `sudo`, `mknod` and `dib-run-parts`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use dib_sandbox::buildbox::{BuildBox, Start};
use dib_sandbox::mounts::{bind, mount_tmpfs};
use dib_sandbox::seccomp::Filter;

use super::chroot::InTarget;
use super::environment::{hook_env, Dirs, Image};
use super::job::BuildJob;
use super::log::Log;
use super::outputs::Finished;
use super::plan::plan;
use crate::phases::Phase;

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    /// A host tool killed for a stop signal ([`crate::tool::Stopped`],
    /// however deep in the error's chain) is the stop, not a failure.
    fn from(e: anyhow::Error) -> Self {
        match e
            .chain()
            .find_map(|c| c.downcast_ref::<crate::tool::Stopped>())
        {
            Some(s) => Stop::Interrupted(s.0),
            None => Stop::Failed(e),
        }
    }
}

/// A disk image being built.
#[derive(Debug)]
pub struct Disk {
    pub layout: crate::blockdev::Layout,
    pub backend: Box<dyn crate::blockdev::DiskBackend>,
    /// The image file's device and inode when made.
    pub identity: (u64, u64),
    pub file: PathBuf,
    /// Whether its filesystems are mounted (at the tree).
    pub mounted: bool,
    /// The raw output, when the filesystems were written straight into it
    /// (`file` is then its path).
    pub raw: Option<super::outputs::Unnamed>,
}

/// A build in progress, as the steps see it.
#[derive(Debug)]
pub struct Build<'a> {
    pub job: &'a BuildJob,
    pub log: &'a Arc<Log>,
    pub stopped: &'a AtomicI32,
    /// Where everything is. `dirs.tree` is `built/` until a backend that
    /// mounts the image's filesystems takes the tree into them.
    pub dirs: Dirs,
    /// The disk image, once laid out.
    pub disk: Option<Disk>,
    /// Outputs written so far, still unnamed.
    pub finished: Finished,
    chroot: Option<InTarget>,
    /// The hooks' boxes of the current phase, by (network, element whose
    /// cache directories it shows); made when first needed.
    boxes: std::cell::RefCell<BTreeMap<(bool, String), BuildBox>>,
    /// The seccomp filter every hook gets.
    filter: HookFilter,
    /// The hooks' environment with environment.d sourced, once known
    /// (after extra-data.d).
    pub sourced: std::cell::RefCell<Option<BTreeMap<String, String>>>,
}

/// The hooks' seccomp filter, built once.
struct HookFilter(Arc<Filter>);

impl std::fmt::Debug for HookFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookFilter")
    }
}

/// Run `job`. The caller is pid 1 and cleans up afterwards.
pub fn run(job: &BuildJob, stopped: &AtomicI32, log: &Arc<Log>) -> Result<(), Stop> {
    let mut build = Build::prepare(job, stopped, log)?;
    let steps = plan(job);
    let mut replay = super::layers::Replay::start(&mut build, &steps)?;
    for (i, step) in steps.iter().enumerate().skip(replay.resume) {
        build.check_stopped()?;
        build.set_chroot(step.in_chroot(), step.binds_caches())?;
        step.run(&mut build)?;
        if replay.keeps(i) {
            // The layer holds the tree as it is outside the chroot (the
            // image's own resolv.conf, no mount points of dib's).
            build.set_chroot(false, false)?;
            replay.after(&steps, i, &build)?;
        }
    }
    build.set_chroot(false, false)?;
    replay.finish(log);
    build.fresh_boxes();
    super::boxing::keep_hook_outputs(&job.boxing, &build.dirs.build, log)?;
    Ok(())
}

impl<'a> Build<'a> {
    /// The build directory's parts: the tree and its bind mount, the hook
    /// tree with the build's settings, the hooks' runtime.
    fn prepare(job: &'a BuildJob, stopped: &'a AtomicI32, log: &'a Arc<Log>) -> Result<Build<'a>> {
        let b = &job.build_dir;
        if job.tmpfs {
            mount_tmpfs(b, 0o755).context("putting the build directory in memory")?;
        }
        let dirs = Dirs {
            build: b.clone(),
            tree: b.join("built"),
            mnt: b.join("mnt"),
            hooks: b.join("hooks"),
            bin: b.join("bin"),
        };
        for d in [&dirs.tree, &dirs.mnt, &dirs.bin] {
            fs::create_dir(d).with_context(|| format!("creating {d:?}"))?;
        }
        super::boxing::prepare_build_dir(b)?;
        bind(&dirs.tree, &dirs.mnt, false).context("mounting the tree at TMP_MOUNT_PATH")?;
        job.hooks
            .materialize(&dirs.hooks)
            .context("writing the hook tree")?;
        write_build_settings(job, &dirs.hooks)?;
        if let Some(disk) = &job.disk {
            write_block_device_params(job, disk, b)?;
        }
        super::runtime::install(&dirs.hooks, &dirs.bin, &job.exe)
            .context("writing the hooks' runtime")?;
        if let Some(ca) = &job.host_ca {
            super::runtime::install_host_ca(ca, &dirs.hooks)?;
        }
        Ok(Build {
            job,
            log,
            stopped,
            dirs,
            disk: None,
            finished: Finished::default(),
            chroot: None,
            boxes: Default::default(),
            sourced: Default::default(),
            filter: HookFilter(Arc::new(Filter::for_hooks())),
        })
    }

    pub fn check_stopped(&self) -> Result<(), Stop> {
        match self.stopped.load(Ordering::SeqCst) {
            0 => Ok(()),
            sig => Err(Stop::Interrupted(sig)),
        }
    }

    /// Set up or undo the chroot's mounts (the image file among them once
    /// it exists).
    fn set_chroot(&mut self, wanted: bool, binds: bool) -> Result<()> {
        match (wanted, self.chroot.is_some()) {
            (true, false) => {
                let image = self.disk.as_ref().map(|d| d.file.as_path());
                let binds = if binds {
                    let sourced = self.sourced.borrow();
                    self.job
                        .boxing
                        .binds(sourced.as_ref().unwrap_or(&self.job.env))
                } else {
                    Vec::new()
                };
                self.chroot = Some(InTarget::enter(
                    &self.dirs,
                    image,
                    &binds,
                    &self.job.boxing.image_cache,
                )?);
            }
            (false, true) => {
                if let Some(t) = self.chroot.take() {
                    t.leave()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Log how long `what` took since `started`.
    pub fn took(&self, what: &str, started: std::time::Instant) {
        let secs = started.elapsed().as_secs_f64();
        self.log.line(&format!("{what} in {secs:.1}s"));
    }

    /// The environment of `phase`'s hooks.
    pub fn env(&self, phase: Phase) -> BTreeMap<String, String> {
        let image = self.disk.as_ref().map(|d| Image {
            layout: &d.layout,
            file: &d.file,
        });
        let mut env = hook_env(
            &self.job.env,
            &self.job.element_array,
            &self.dirs,
            phase,
            image,
        );
        if self.job.host_ca.is_some() {
            let hooks = env.get("TMP_HOOKS_PATH").cloned().unwrap_or_default();
            for (k, v) in super::runtime::host_ca_env(&hooks, phase.chroot()) {
                env.insert(k.to_string(), v);
            }
        }
        if self.job.disk.is_some() && !phase.chroot() {
            env.insert(
                "DIB_BLOCK_DEVICE_PARAMS_YAML".into(),
                self.dirs.build.join(PARAMS_YAML).display().to_string(),
            );
        }
        env
    }

    /// The shell that runs hooks: the tree's bash (or sh) in chroot phases,
    /// the host's bash outside.
    pub fn interpreter(&self, phase: Phase) -> &'static str {
        if !phase.chroot() || self.dirs.mnt.join("bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        }
    }

    /// Make `cmd` run in the hooks' box for `phase`: chrooted into the
    /// tree for chroot phases, else in the build directory. `element`'s
    /// cache directories are writable there.
    pub fn place(
        &self,
        cmd: &mut std::process::Command,
        phase: Phase,
        element: Option<&str>,
    ) -> Result<()> {
        let boxing = &self.job.boxing;
        let caches = element.map_or(&[][..], |e| boxing.caches_of(e));
        let network = boxing.network(phase);
        let key = (
            network,
            match (caches.is_empty(), element) {
                (false, Some(e)) => e.to_string(),
                _ => String::new(),
            },
        );
        let made = self.boxes.borrow().get(&key).cloned();
        let the_box = match made {
            Some(b) => b,
            None => {
                let cache = &boxing.image_cache;
                for (at, real) in caches {
                    super::boxing::cache_dir_in_place(cache, at)?;
                    super::boxing::cache_dir_in_place(cache, real)?;
                }
                let spec = boxing.spec(&self.dirs.build, caches, network);
                let started = std::time::Instant::now();
                let b = BuildBox::create(&spec).context("making the hooks' box")?;
                if self.job.trace > 0 {
                    self.log.line(&format!(
                        "{}: made the hooks' box ({}{}) in {:.2} ms",
                        phase.dir(),
                        if key.1.is_empty() { "plain" } else { &key.1 },
                        if network { "" } else { ", no network" },
                        started.elapsed().as_secs_f64() * 1000.0
                    ));
                }
                self.boxes.borrow_mut().insert(key, b.clone());
                b
            }
        };
        let start = if phase.chroot() {
            Start::Chroot(self.dirs.mnt.clone())
        } else {
            Start::Dir(self.dirs.build.clone())
        };
        // A 32-bit tree the kernel runs natively (i386 on amd64) sees the
        // 32-bit personality in the chroot, as on its own machine.
        let linux32 = phase.chroot()
            && self
                .job
                .env
                .get("ARCH")
                .and_then(|a| crate::config::Arch::parse(a))
                .is_some_and(|a| a.runs_as_linux32_on(crate::config::Arch::host()));
        the_box.enter(cmd, &start, self.filter.0.clone(), linux32)?;
        Ok(())
    }

    /// Forget the boxes made so far: the next hook gets one that shows the
    /// mounts as they are now.
    pub fn fresh_boxes(&self) {
        self.boxes.borrow_mut().clear();
    }
}

/// `DIB_BLOCK_DEVICE_PARAMS_YAML`, in the build directory.
const PARAMS_YAML: &str = "block-device/params.yaml";

/// The block-device parameters as DIB writes them for its hooks, with the
/// configuration beside them.
fn write_block_device_params(
    job: &BuildJob,
    disk: &crate::blockdev::DiskJob,
    build: &Path,
) -> Result<()> {
    let dir = build.join("block-device");
    fs::create_dir(&dir).with_context(|| format!("creating {dir:?}"))?;
    let config = dir.join("config.yaml");
    let text =
        serde_yaml_ng::to_string(&disk.config).context("writing the block-device configuration")?;
    fs::write(&config, text).with_context(|| format!("writing {config:?}"))?;
    // IMAGE_NAME is absolute in the job's environment.
    let image_dir = job
        .env
        .get("IMAGE_NAME")
        .and_then(|n| Path::new(n).parent())
        .unwrap_or(Path::new(""));
    let params = format!(
        "config: {}\nimage-dir: {}\nroot-fs-type: {}\nroot-label: {}\nmount-base: {}\nbuild-dir: {}\n",
        config.display(),
        image_dir.display(),
        disk.options.fs_type,
        disk.options.root_label,
        build.join("mnt").display(),
        build.display(),
    );
    let p = build.join(PARAMS_YAML);
    fs::write(&p, params).with_context(|| format!("writing {p:?}"))
}

/// `dib_environment` (the build's `DIB_*` variables as bash) and `dib_args`
/// (its command line) in the hook tree, where the base element picks them up
/// for `/etc/dib_environment` and `/etc/dib_arguments`, as in DIB.
fn write_build_settings(job: &BuildJob, hooks: &Path) -> Result<()> {
    let mut env = String::new();
    for (k, v) in job.env.iter().filter(|(k, _)| k.starts_with("DIB_")) {
        env.push_str(&format!(
            "export {k}={}\n",
            crate::element_info::single_quote(v)
        ));
    }
    for (name, text) in [
        ("dib_environment", env),
        ("dib_args", format!("{}\n", job.args)),
    ] {
        let p = hooks.join(name);
        fs::write(&p, text).with_context(|| format!("writing {p:?}"))?;
    }
    Ok(())
}
