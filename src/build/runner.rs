//! pid 1 of a build: the phases (docs/elements.md), run inside the sandbox.
//!
//! Layout of the build directory (as DIB's): `built/` holds the image tree
//! (`TARGET_ROOT` of root.d and cleanup.d), `mnt/` is the same tree through a
//! bind mount (`TMP_MOUNT_PATH`, where chroot phases run), `hooks/` is the
//! merged hook tree (`TMP_HOOKS_PATH`), and `bin/` holds the `sudo` shim for
//! outside phases.
//!
//! Every script runs through a tiny wrapper that sources `environment.d` in
//! run-parts order and then execs the script, so its exports reach every
//! script of the phase. Output is read line by line, logged with a timestamp
//! and the last lines kept for the failure message. At the end of each phase
//! every process left over (a daemon a hook started) is killed.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use dib_sandbox::init::{chrooted, exit_code, kill_all_and_reap, reap_zombies};
use dib_sandbox::mounts::{bind, mount_tmpfs, ChrootMounts, IMAGE_FILE_IN_TARGET, IN_TARGET};

use super::job::{BreakAt, BuildJob};
use super::log::Log;
use crate::phases::{Phase, PHASES};
use crate::runparts::{plan_dir, plan_environment, read_entries};

/// `PATH` inside the chroot.
const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Lines of a failed script's output repeated in the error.
const TAIL_LINES: usize = 20;
/// How long to keep reading a finished script's output: a daemon it left
/// behind may hold the pipe open until the phase ends.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Sources environment.d files (`$2...`) then execs the script (`$1`).
const WRAPPER: &str = "set -eu\nscript=$1\nshift\nfor __dib_env in \"$@\"; do\n    . \"$__dib_env\"\ndone\nexec \"$script\"\n";

/// `sudo` for outside phases: the build is already uid 0 in its namespace,
/// so DIB-style `sudo cmd` just runs cmd (options are dropped).
const SUDO_SHIM: &str = "#!/bin/sh\n\
# dib: already uid 0 in the build's user namespace; run the command as is.\n\
while [ $# -gt 0 ]; do\n\
    case \"$1\" in\n\
        --) shift; break ;;\n\
        -u|-g|-C|-D|-h|-p|-r|-t|-U) shift 2 ;;\n\
        -*) shift ;;\n\
        *) break ;;\n\
    esac\n\
done\n\
exec \"$@\"\n";

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

/// Run every phase of `job`. The caller is pid 1 and cleans up afterwards.
pub fn run(job: &BuildJob, stopped: &AtomicI32, log: &Arc<Log>) -> Result<(), Stop> {
    let b = &job.build_dir;
    if job.tmpfs {
        mount_tmpfs(b, 0o755).context("putting the build directory in memory")?;
    }
    let built = b.join("built");
    let mnt = b.join("mnt");
    let hooks = b.join("hooks");
    let bin = b.join("bin");
    for d in [&built, &mnt, &bin] {
        fs::create_dir(d).with_context(|| format!("creating {d:?}"))?;
    }
    bind(&built, &mnt, false).context("mounting the tree at TMP_MOUNT_PATH")?;
    job.hooks
        .materialize(&hooks)
        .context("writing the hook tree")?;
    write_build_settings(job, &hooks)?;
    let sudo = bin.join("sudo");
    fs::write(&sudo, SUDO_SHIM).with_context(|| format!("writing {sudo:?}"))?;
    fs::set_permissions(&sudo, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {sudo:?}"))?;

    let mut ctx = Ctx {
        job,
        log,
        stopped,
        built,
        mnt,
        hooks,
        bin,
        disk: None,
    };
    let mut chroot: Option<InTarget> = None;
    for phase in PHASES {
        ctx.check_stopped()?;
        if phase.name == "pre-install" {
            // As DIB's squash in extra-data.d: the tree exists by now, so
            // environment.d files that look at it see it.
            ctx.write_package_lists()?;
        }
        if phase.chroot && chroot.is_none() {
            chroot = Some(InTarget::enter(&ctx)?);
        } else if !phase.chroot {
            if let Some(t) = chroot.take() {
                t.leave()?;
            }
        }
        ctx.break_at(&BreakAt::Before(phase.name.to_string()), phase)?;
        if let Err(e) = ctx.run_phase(phase) {
            if matches!(e, Stop::Failed(_)) && job.breakpoints.contains(&BreakAt::AfterError) {
                ctx.shell(phase, "after-error")?;
            }
            return Err(e);
        }
        if phase.name == "install" && !job.packages.is_empty() {
            ctx.install_packages(phase)?;
        }
        ctx.break_at(&BreakAt::After(phase.name.to_string()), phase)?;
        if phase.name == "block-device" && job.final_image {
            if let Some(disk) = &job.disk {
                ctx.disk = Some(ctx.prepare_disk(disk)?);
            }
        }
        // The helper backend: finalise.d and cleanup.d run on the image's
        // filesystems (pre-finalise.d still saw the tree: the dpkg
        // element's bind mounts are gone by then).
        let socket = job.disk.as_ref().and_then(|d| d.helper.as_ref());
        if let (true, Some(socket)) = (phase.name == "pre-finalise", socket) {
            if let Some(mut disk) = ctx.disk.take() {
                let attached = ctx.attach_image(socket, &disk.layout, &disk.file);
                disk.attached = Some(attached?);
                ctx.disk = Some(disk);
            }
        }
        if phase.name == "root" && dir_is_empty(&ctx.built)? {
            return Err(Stop::Failed(anyhow::anyhow!(
                "Failed to deploy the root element: root.d left TARGET_ROOT empty; \
                 an operating-system element's root.d must create the tree there"
            )));
        }
    }
    if let Some(t) = chroot.take() {
        t.leave()?;
    }
    ctx.check_stopped()?;
    if job.final_image {
        ctx.write_outputs()?;
    } else {
        log.line("no-final-image: the build ends here, without an image");
    }
    Ok(())
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
    let args = job.env.get("DIB_ARGS").cloned().unwrap_or_default();
    for (name, text) in [("dib_environment", env), ("dib_args", format!("{args}\n"))] {
        let p = hooks.join(name);
        fs::write(&p, text).with_context(|| format!("writing {p:?}"))?;
    }
    Ok(())
}

/// `path` with the system directories appended that it lacks: hooks run
/// as root of the build (DIB's run under sudo, whose PATH has them), and
/// call chroot, mkfs, depmod, ... by name, which a plain user's PATH may
/// not find.
fn with_sbin(path: &str) -> String {
    let mut out = path.to_string();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !path.split(':').any(|p| p == d) {
            out.push(':');
            out.push_str(d);
        }
    }
    out
}

fn dir_is_empty(d: &Path) -> Result<bool> {
    Ok(fs::read_dir(d)
        .with_context(|| format!("reading {d:?}"))?
        .next()
        .is_none())
}

struct Ctx<'a> {
    job: &'a BuildJob,
    log: &'a Arc<Log>,
    stopped: &'a AtomicI32,
    built: PathBuf,
    mnt: PathBuf,
    hooks: PathBuf,
    bin: PathBuf,
    /// The disk image, once the block-device step has laid it out.
    disk: Option<Disk>,
}

/// A disk image being built: its layout and its file.
struct Disk {
    layout: crate::blockdev::Layout,
    /// With the helper backend: the attached image, its filesystems
    /// mounted at `built` (the tree was copied in).
    attached: Option<crate::blockdev::helper::Attached>,
    /// The image file's device and inode when made.
    identity: (u64, u64),
    file: PathBuf,
}

/// Derive the image's identifiers from this string (reproducible images).
const UUID_SEED_ENV: &str = "DIB_IMAGE_UUID_SEED";

/// The image file's name in its directory.
const IMAGE_FILE: &str = "disk.raw";

/// The chroot's mounts plus the resolv.conf swap, for a run of chroot phases.
struct InTarget {
    mounts: ChrootMounts,
    resolv: ResolvConf,
}

impl InTarget {
    fn enter(ctx: &Ctx<'_>) -> Result<InTarget> {
        let image = ctx.disk.as_ref().map(|d| d.file.as_path());
        let mounts =
            ChrootMounts::setup(&ctx.mnt, &ctx.hooks, image).context("preparing the chroot")?;
        let resolv = ResolvConf::install(&ctx.mnt)?;
        Ok(InTarget { mounts, resolv })
    }

    fn leave(self) -> Result<()> {
        self.resolv.restore()?;
        self.mounts.close().context("undoing the chroot's mounts")?;
        Ok(())
    }
}

/// The host's resolv.conf in the tree for the build, the image's own put
/// back afterwards.
struct ResolvConf {
    path: PathBuf,
    saved: Option<PathBuf>,
    active: bool,
}

impl ResolvConf {
    fn install(root: &Path) -> Result<ResolvConf> {
        // A symlinked /etc would send these writes outside the tree.
        let etc = dib_sandbox::mounts::inside(root, "etc")
            .context("installing the host's resolv.conf")?;
        let path = etc.join("resolv.conf");
        if !etc.is_dir() {
            return Ok(ResolvConf {
                path,
                saved: None,
                active: false,
            });
        }
        let saved = etc.join(".resolv.conf.dib-saved");
        let had = fs::symlink_metadata(&path).is_ok();
        if had {
            fs::rename(&path, &saved).with_context(|| format!("saving {path:?}"))?;
        }
        let host = fs::read("/etc/resolv.conf").unwrap_or_default();
        fs::write(&path, host).with_context(|| format!("writing {path:?}"))?;
        Ok(ResolvConf {
            path,
            saved: had.then_some(saved),
            active: true,
        })
    }

    /// Put the image's own resolv.conf back. If a hook replaced the
    /// build's copy with a symlink (a systemd-resolved stub, say), that is
    /// the image's intent and is kept, as DIB does; if a hook removed it,
    /// the original comes back; a regular file is the build's and goes.
    fn restore(mut self) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        // The tree may have changed since install: never follow a new
        // symlinked /etc out of it.
        let root = self
            .path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        dib_sandbox::mounts::inside(&root, "etc").context("restoring the image's resolv.conf")?;
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Some(saved) = &self.saved {
                    fs::remove_file(saved).with_context(|| format!("removing {saved:?}"))?;
                }
                return Ok(());
            }
            Ok(_) => {
                if self.saved.is_none() {
                    fs::remove_file(&self.path)
                        .with_context(|| format!("removing the build's {:?}", self.path))?;
                }
            }
            Err(_) => {}
        }
        if let Some(saved) = &self.saved {
            fs::rename(saved, &self.path).with_context(|| format!("restoring {:?}", self.path))?;
        }
        Ok(())
    }
}

impl Ctx<'_> {
    fn check_stopped(&self) -> Result<(), Stop> {
        match self.stopped.load(Ordering::SeqCst) {
            0 => Ok(()),
            sig => Err(Stop::Interrupted(sig)),
        }
    }

    /// The environment of a phase's hooks.
    fn env(&self, phase: Phase) -> BTreeMap<String, String> {
        let mut env = self.job.env.clone();
        let b = &self.job.build_dir;
        let set = |env: &mut BTreeMap<String, String>, k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set(&mut env, "TMP_BUILD_DIR", b.display().to_string());
        set(&mut env, "TMP_MOUNT_PATH", self.mnt.display().to_string());
        set(&mut env, "LC_ALL", "C".into());
        set(
            &mut env,
            "BASH_FUNC_get_image_element_array%%",
            format!("() {{  echo {}\n}}", self.job.element_array),
        );
        if phase.chroot {
            set(&mut env, "TMP_HOOKS_PATH", format!("/{IN_TARGET}"));
            set(&mut env, "HOME", "/root".into());
            set(&mut env, "PATH", CHROOT_PATH.into());
            env.remove("TMPDIR");
        } else {
            set(&mut env, "TMP_HOOKS_PATH", self.hooks.display().to_string());
            let host_path = env
                .get("PATH")
                .cloned()
                .unwrap_or_else(|| CHROOT_PATH.to_string());
            set(
                &mut env,
                "PATH",
                format!("{}:{}", self.bin.display(), with_sbin(&host_path)),
            );
        }
        if let Some(disk) = &self.disk {
            let file = if phase.chroot {
                Path::new("/").join(IMAGE_FILE_IN_TARGET)
            } else {
                disk.file.clone()
            };
            env.extend(crate::blockdev::hook_env(&disk.layout, &file));
        }
        if phase.target_root {
            set(&mut env, "TARGET_ROOT", self.built.display().to_string());
        } else {
            env.remove("TARGET_ROOT");
        }
        env
    }

    /// The shell that runs hooks: the tree's bash (or sh) in chroot phases,
    /// the host's bash outside.
    fn interpreter(&self, phase: Phase) -> &'static str {
        if !phase.chroot || self.mnt.join("bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        }
    }

    /// Paths of `environment.d` files, as the phase's scripts see them.
    fn env_files(&self, phase: Phase) -> Result<Vec<String>> {
        let dir = self.hooks.join("environment.d");
        let names =
            plan_environment(read_entries(&dir).with_context(|| format!("reading {dir:?}"))?);
        let base = if phase.chroot {
            PathBuf::from("/").join(IN_TARGET).join("environment.d")
        } else {
            dir
        };
        Ok(names
            .iter()
            .map(|n| base.join(n).display().to_string())
            .collect())
    }

    fn run_phase(&self, phase: Phase) -> Result<(), Stop> {
        let dir = self.hooks.join(format!("{}.d", phase.name));
        let plan = plan_dir(&dir).with_context(|| format!("reading {dir:?}"))?;
        if self.job.trace > 0 {
            for (path, why) in &plan.skipped {
                self.log.line(&format!(
                    "{}.d: skipping {}: {why}",
                    phase.name,
                    file_name(path)
                ));
            }
        }
        if plan.run.is_empty() {
            return Ok(());
        }
        self.log.line(&format!(
            "running {}.d ({} scripts)",
            phase.name,
            plan.run.len()
        ));
        let env = self.env(phase);
        let env_files = self.env_files(phase)?;
        let mut timings = Vec::new();
        for script in &plan.run {
            let name = file_name(script);
            let rel = format!("{}.d/{name}", phase.name);
            let element = self
                .job
                .hooks
                .entries
                .get(Path::new(&rel))
                .map(|s| s.element().to_string())
                .unwrap_or_default();
            let path = if phase.chroot {
                format!("/{IN_TARGET}/{rel}")
            } else {
                script.display().to_string()
            };
            let mut cmd = Command::new(self.interpreter(phase));
            cmd.args(["-c", WRAPPER, "dib-run-parts", &path])
                .args(&env_files)
                .env_clear()
                .envs(&env)
                .stdin(Stdio::null());
            if phase.chroot {
                chrooted(&mut cmd, &self.mnt).map_err(anyhow::Error::from)?;
            } else {
                cmd.current_dir(&self.job.build_dir);
            }
            self.log
                .status(format!("{}.d: {name} ({element})", phase.name));
            let started = Instant::now();
            self.run_logged(cmd, &format!("{rel} of element '{element}'"))?;
            timings.push((name.to_string(), element.clone(), started.elapsed()));
        }
        // Whatever a hook left running (a daemon) ends with its phase.
        kill_all_and_reap();
        self.log_timings(phase, &timings);
        Ok(())
    }

    /// Spawn `cmd` with stdout and stderr into one pipe and log each line;
    /// then reap orphans and stop on a stop signal. A non-zero exit is a
    /// failure naming `what`, with the last lines it printed, and takes
    /// down whatever it left running.
    fn run_logged(&self, mut cmd: Command, what: &str) -> Result<(), Stop> {
        let (reader, writer) = std::io::pipe().context("creating an output pipe")?;
        let writer2 = writer.try_clone().context("creating an output pipe")?;
        cmd.stdout(writer).stderr(writer2);
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        // A stop signal between the last check and this spawn found nothing
        // to kill; the new script must not run on.
        if self.stopped.load(Ordering::SeqCst) != 0 {
            let _ = child.kill();
        }
        drop(cmd); // closes our copies of the write end
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let (log, tail2) = (self.log.clone(), tail.clone());
        let thread = std::thread::spawn(move || {
            // Bytes, not UTF-8 lines: hooks print whatever their tools do,
            // and a reader that stopped early would kill them with SIGPIPE.
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
                let text = String::from_utf8_lossy(&buf);
                let line = text.trim_end_matches(['\n', '\r']).to_string();
                log.line(&line);
                if let Ok(mut t) = tail2.lock() {
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        let status = child
            .wait()
            .with_context(|| format!("waiting for {what}"))?;
        let deadline = Instant::now() + OUTPUT_GRACE;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let tail = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        reap_zombies();
        self.check_stopped()?;
        if !status.success() {
            kill_all_and_reap();
            return Err(failed(what.to_string(), status, tail));
        }
        Ok(())
    }

    /// The environment hooks see once `environment.d` is sourced (outside
    /// phases' view), as DIB's package-installs-squash sees it.
    fn sourced_env(&self) -> Result<BTreeMap<String, String>> {
        let phase = PHASES[1];
        // The environment goes to a file, not stdout, which environment.d
        // files may write to.
        let dump = self.job.build_dir.join(".dib-environment");
        let out = Command::new("/bin/bash")
            .args([
                "-c",
                "set -eu\nfor __f; do . \"$__f\"; done\nenv -0 > \"$DIB_ENV_DUMP\"",
                "dib-environment",
            ])
            .args(self.env_files(phase)?)
            .env_clear()
            .envs(self.env(phase))
            .env("DIB_ENV_DUMP", &dump)
            .stdin(Stdio::null())
            .output()
            .context("sourcing environment.d")?;
        if !out.status.success() {
            anyhow::bail!(
                "sourcing environment.d failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let bytes = fs::read(&dump).with_context(|| format!("reading {dump:?}"))?;
        let _ = fs::remove_file(&dump);
        Ok(bytes
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                (k != "DIB_ENV_DUMP").then(|| (k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// Squash every element's `package-installs.yaml` (through its
    /// `pkg-map`) into per-phase lists in the hook tree, for the
    /// package-installs element's hooks.
    fn write_package_lists(&self) -> Result<()> {
        use crate::packages::{parse, plan, Context, PkgMap};
        let mut entries = Vec::new();
        let mut maps = BTreeMap::new();
        for (name, dir) in &self.job.elements {
            // DIB also reads the JSON form; YAML parses both.
            let text = ["package-installs.yaml", "package-installs.json"]
                .iter()
                .find_map(|f| fs::read_to_string(dir.join(f)).ok());
            if let Some(text) = text {
                let (found, warnings) = parse(name, &text)?;
                for w in warnings {
                    self.log.line(&format!("warning: {w}"));
                }
                entries.extend(found);
            }
            if let Ok(text) = fs::read_to_string(dir.join("pkg-map")) {
                maps.insert(name.clone(), PkgMap::parse(name, &text)?);
            }
        }
        if entries.is_empty() && maps.is_empty() {
            return Ok(());
        }
        let env = self.sourced_env()?;
        self.write_pkg_map_tables(&maps, &env)?;
        let installtypes = crate::hooks::InstallTypes::from_env(
            env.get("DIB_DEFAULT_INSTALLTYPE")
                .map(String::as_str)
                .unwrap_or("source"),
            &env,
        );
        let ctx = Context {
            arch: env.get("ARCH").map(String::as_str).unwrap_or(""),
            env: &env,
            installtypes: &installtypes,
        };
        let p = plan(&entries, &maps, &ctx)?;
        let dir = self.hooks.join("dib-package-installs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
        let write = |name: String, items: &[(String, String)]| -> Result<()> {
            let text: String = items.iter().map(|(p, e)| format!("{p} {e}\n")).collect();
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {path:?}"))
        };
        for (phase, items) in &p.install {
            write(format!("{phase}.install"), items)?;
        }
        for (phase, items) in &p.uninstall {
            write(format!("{phase}.uninstall"), items)?;
        }
        write("build-only".to_string(), &p.build_only)?;
        Ok(())
    }

    /// Every element's pkg-map resolved for this build's distribution, as
    /// `generic<TAB>name` lines in `dib-pkg-map/<element>` of the hook tree, for
    /// the pkg-map element's tool.
    fn write_pkg_map_tables(
        &self,
        maps: &BTreeMap<String, crate::packages::PkgMap>,
        env: &BTreeMap<String, String>,
    ) -> Result<()> {
        if maps.is_empty() {
            return Ok(());
        }
        let distro = crate::packages::Distro::from_env(env);
        let dir = self.hooks.join("dib-pkg-map");
        fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
        for (element, m) in maps {
            let mut text = String::new();
            for generic in m.generic_names() {
                let mapped = m.map(&generic, &distro).unwrap_or_default();
                text.push_str(&format!("{generic}\t{mapped}\n"));
            }
            let path = dir.join(element);
            fs::write(&path, text).with_context(|| format!("writing {path:?}"))?;
        }
        Ok(())
    }

    /// `-p`: the image's install-packages, after install.d, as DIB's -p.
    fn install_packages(&self, phase: Phase) -> Result<(), Stop> {
        const TOOL: &str = "usr/local/sbin/install-packages";
        let present = dib_sandbox::mounts::inside(&self.mnt, "usr/local/sbin")
            .map(|d| d.join("install-packages").is_file())
            .unwrap_or(false);
        if !present {
            return Err(Stop::Failed(anyhow::anyhow!(
                "-p {}: the image has no /{TOOL}; include an element that provides it \
                 (dpkg, which debian-minimal pulls in)",
                self.job.packages.join(",")
            )));
        }
        self.log.line(&format!(
            "installing -p packages: {}",
            self.job.packages.join(" ")
        ));
        self.log
            .status(format!("install.d: -p {}", self.job.packages.join(" ")));
        let mut cmd = Command::new(format!("/{TOOL}"));
        cmd.args(&self.job.packages)
            .env_clear()
            .envs(self.env(phase))
            .stdin(Stdio::null());
        chrooted(&mut cmd, &self.mnt).map_err(anyhow::Error::from)?;
        self.run_logged(cmd, "installing the -p packages")?;
        kill_all_and_reap();
        Ok(())
    }

    /// Lay out the disk image from the tree as it is now, create the image
    /// file with its partition table, and write `/etc/fstab` (and the mount
    /// points) into the tree, for finalise.d to see.
    fn prepare_disk(&mut self, disk: &crate::blockdev::DiskJob) -> Result<Disk, Stop> {
        use crate::blockdev::{layout, offline};
        let started = Instant::now();
        let points: Vec<String> = disk
            .config
            .filesystems
            .iter()
            .filter_map(|f| f.mount_point.clone())
            .collect();
        let usage = offline::measure(&self.built, &points).context("measuring the tree")?;
        let mut ids: Box<dyn layout::Ids> = match self.job.env.get(UUID_SEED_ENV) {
            Some(seed) if !seed.is_empty() => Box::new(layout::SeededIds::new(seed)),
            _ => Box::new(layout::RandomIds),
        };
        let layout = layout::plan(&disk.config, &disk.options, &usage, ids.as_mut())
            .with_context(|| format!("laying out the image ({})", disk.origin))?;
        let dir = self.job.build_dir.join("image");
        fs::create_dir(&dir).with_context(|| format!("creating {dir:?}"))?;
        let file = dir.join(IMAGE_FILE);
        if disk.helper.is_some() {
            // The helper writes the partition table onto the loop device.
            offline::create_file(&file, &layout)?;
        } else {
            offline::create(&file, &layout)?;
        }
        let identity = offline::identity(&file)?;
        let etc = dib_sandbox::mounts::inside(&self.built, "etc").context("writing /etc/fstab")?;
        fs::create_dir_all(&etc).with_context(|| format!("creating {etc:?}"))?;
        let fstab = etc.join("fstab");
        // Replaced, not written through: a symlinked fstab must not lead out.
        let _ = fs::remove_file(&fstab);
        fs::write(&fstab, layout.fstab()).with_context(|| format!("writing {fstab:?}"))?;
        fs::set_permissions(&fstab, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod {fstab:?}"))?;
        for p in layout
            .filesystems
            .iter()
            .filter_map(|f| f.mount_point.as_deref())
        {
            let d = dib_sandbox::mounts::inside(&self.built, p.trim_start_matches('/'))
                .with_context(|| format!("creating the mount point {p}"))?;
            fs::create_dir_all(&d).with_context(|| format!("creating {d:?}"))?;
        }
        let mut summary = format!(
            "block device ({}): {} image, {}",
            disk.origin,
            crate::blockdev::layout::human(layout.size),
            layout.label.map_or("no partition table", |l| l.as_str())
        );
        for f in &layout.filesystems {
            summary.push_str(&format!(
                "; {} {} {} UUID {}",
                f.mount_point.as_deref().unwrap_or("-"),
                f.kind,
                crate::blockdev::layout::human(f.size),
                f.uuid
            ));
        }
        self.log.line(&summary);
        self.log.line(&format!(
            "laid out the image in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(Disk {
            layout,
            attached: None,
            identity,
            file,
        })
    }

    /// The helper backend's step after pre-finalise.d: attach, partition
    /// and format through dib-helper, mount the filesystems at `image/root`
    /// and copy the tree in; from here on the build's tree (`TARGET_ROOT`,
    /// `TMP_MOUNT_PATH`) is the mounted image, as in DIB.
    fn attach_image(
        &mut self,
        socket: &Path,
        layout: &crate::blockdev::Layout,
        file: &Path,
    ) -> Result<crate::blockdev::helper::Attached, Stop> {
        let started = Instant::now();
        let image = fs::File::options()
            .read(true)
            .write(true)
            .open(file)
            .with_context(|| format!("opening {file:?}"))?;
        let mut attached = crate::blockdev::helper::attach(socket, &image, layout)?;
        self.check_stopped()?;
        let root = self.job.build_dir.join("image/root");
        fs::create_dir(&root).with_context(|| format!("creating {root:?}"))?;
        attached.mount_all(layout, &root)?;
        self.log
            .status("copying the tree into the image".to_string());
        // Whatever a hook left mounted in the tree stays out of the image.
        dib_sandbox::mounts::unmount_all_under(&self.mnt)
            .context("unmounting what hooks left mounted under TMP_MOUNT_PATH")?;
        let mut cp = crate::tool::command("cp");
        cp.args(["-a", "--one-file-system"])
            .arg(self.built.join("."))
            .arg(&root);
        crate::tool::run(cp, "copying the tree into the image", self.stopped)?;
        dib_sandbox::mounts::unmount(&self.mnt).context("moving TMP_MOUNT_PATH to the image")?;
        bind(&root, &self.mnt, true).context("moving TMP_MOUNT_PATH to the image")?;
        self.built = root;
        self.log.line(&format!(
            "dib-helper: {} partitioned, formatted and filled in {:.1}s",
            attached.device,
            started.elapsed().as_secs_f64()
        ));
        Ok(attached)
    }

    /// Every output: tree outputs from the final tree, then the filesystems
    /// built into the image file and the disk outputs converted from it.
    fn write_outputs(&mut self) -> Result<(), Stop> {
        let job = self.job;
        if let Some(r) = &job.ramdisk {
            let started = Instant::now();
            self.log.status("assembling the ramdisk".to_string());
            let staging = job.build_dir.join("ramdisk");
            let done = crate::ramdisk::write(r, &self.built, &self.hooks, &staging)
                .context("building the ramdisk")?;
            self.log.line(&format!(
                "assembled the ramdisk in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            self.check_stopped()?;
            done.persist(job.output_settings.overwrite, self.log)?;
            return Ok(());
        }
        let (from_disk, from_tree): (Vec<_>, Vec<_>) =
            job.outputs.iter().partition(|o| o.kind.from_disk());
        let s = &job.output_settings;
        // Every output under a temporary name first: a failure at any point
        // leaves none of them, not some.
        let mut done = super::outputs::write_all(&from_tree, &self.built, None, s, self.stopped)?;
        self.check_stopped()?;
        if from_disk.is_empty() {
            done.persist(s.overwrite, self.log)?;
            return Ok(());
        }
        // The helper backend's attached image, to be finished below.
        let attached = self.disk.as_mut().and_then(|d| d.attached.take());
        let disk = self
            .disk
            .as_ref()
            .context("no disk image was laid out (internal error)")?;
        let started = Instant::now();
        self.log.status("writing the filesystems".to_string());
        if crate::blockdev::offline::identity(&disk.file)? != disk.identity {
            return Err(Stop::Failed(anyhow::anyhow!(
                "the disk image {:?} was replaced during the build (by a hook?)",
                disk.file
            )));
        }
        match attached {
            Some(attached) => {
                // The recursive bind at TMP_MOUNT_PATH holds the mounts too.
                dib_sandbox::mounts::unmount_all_under(&self.mnt)
                    .and_then(|()| dib_sandbox::mounts::unmount(&self.mnt))
                    .context("unmounting TMP_MOUNT_PATH")?;
                attached.finish(&disk.file, self.stopped)?
            }
            None => {
                let scratch = job.build_dir.join("fs-aside");
                fs::create_dir(&scratch).with_context(|| format!("creating {scratch:?}"))?;
                crate::blockdev::offline::fill(
                    &disk.file,
                    &disk.layout,
                    &self.built,
                    &scratch,
                    self.stopped,
                )?
            }
        }
        self.log.line(&format!(
            "wrote the filesystems in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        self.check_stopped()?;
        let started = Instant::now();
        self.log.status("converting the image".to_string());
        let images =
            super::outputs::write_all(&from_disk, &self.built, Some(&disk.file), s, self.stopped)?;
        self.log.line(&format!(
            "converted the disk image in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        self.check_stopped()?;
        done.extend(images);
        done.persist(s.overwrite, self.log)?;
        Ok(())
    }

    fn log_timings(&self, phase: Phase, timings: &[(String, String, Duration)]) {
        let total: Duration = timings.iter().map(|t| t.2).sum();
        self.log.line(&format!(
            "{}.d done in {:.3}s:",
            phase.name,
            total.as_secs_f64()
        ));
        for (name, element, d) in timings {
            self.log
                .line(&format!("  {:>9.3}s  {name} ({element})", d.as_secs_f64()));
        }
    }

    fn break_at(&self, at: &BreakAt, phase: Phase) -> Result<(), Stop> {
        if self.job.breakpoints.contains(at) {
            let label = match at {
                BreakAt::Before(p) => format!("before-{p}"),
                BreakAt::After(p) => format!("after-{p}"),
                BreakAt::AfterError => "after-error".to_string(),
            };
            self.shell(phase, &label)?;
        }
        Ok(())
    }

    /// An interactive shell at a break point, in the chroot for chroot phases.
    fn shell(&self, phase: Phase, label: &str) -> Result<(), Stop> {
        self.log.line(&format!(
            "break={label}: starting a shell{}; exit it to go on",
            if phase.chroot {
                " in the chroot"
            } else {
                " in the build directory"
            }
        ));
        let mut env = self.env(phase);
        env.insert("PS1".into(), format!("dib ({label}) # "));
        let mut cmd = Command::new(self.interpreter(phase));
        cmd.arg("-i").env_clear().envs(&env);
        if phase.chroot {
            chrooted(&mut cmd, &self.mnt).map_err(anyhow::Error::from)?;
        } else {
            cmd.current_dir(&self.job.build_dir);
        }
        let status = self
            .log
            .suspend(|| cmd.status())
            .context("starting the break shell")?;
        reap_zombies();
        self.check_stopped()?;
        if !status.success() {
            return Err(Stop::Failed(anyhow::anyhow!(
                "the break shell exited with status {}: stopping the build",
                exit_code(status)
            )));
        }
        Ok(())
    }
}

/// "WHAT failed with exit status N; its last lines: ..." as a build stop.
fn failed(what: String, status: std::process::ExitStatus, tail: Vec<String>) -> Stop {
    let mut msg = format!("{what} failed with exit status {}", exit_code(status));
    if !tail.is_empty() {
        msg.push_str("; its last lines:");
        for l in tail {
            msg.push_str("\n    ");
            msg.push_str(&l);
        }
    }
    Stop::Failed(anyhow::anyhow!(msg))
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    #[test]
    fn outside_hooks_find_system_tools() {
        assert_eq!(
            super::with_sbin("/usr/bin:/bin"),
            "/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        );
        assert_eq!(
            super::with_sbin("/sbin:/usr/sbin:/usr/local/sbin"),
            "/sbin:/usr/sbin:/usr/local/sbin"
        );
    }
}
