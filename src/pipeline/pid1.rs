//! The two hidden entry points of the re-executed dib inside the build's
//! namespaces: the supervisor ([`supervise_main`]) and pid 1
//! ([`init_main`]), which reads the job, runs it and cleans up.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::Context as _;
use dib_sandbox::init::kill_all_and_reap;

use super::executor::{self, Stop};
use super::job::{BuildJob, JOB_ENV};
use super::log::Log;

/// Hidden subcommand names of the re-executed dib.
pub const SUPERVISE_CMD: &str = "__sandbox-supervise";
pub const INIT_CMD: &str = "__sandbox-init";

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
    // The job file is on the host: gone once read, so no hook can change
    // what a later step of this build would read.
    if let Ok(f) = std::env::var(JOB_ENV) {
        let _ = std::fs::remove_file(f);
    }
    std::env::remove_var(JOB_ENV);
    use std::io::IsTerminal as _;
    let status_line = std::io::stderr().is_terminal() && !job.quiet;
    let log = match Log::new(job.logfile.as_deref(), status_line) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("dib: error: {e:#}");
            return 1;
        }
    };
    let result = executor::run(&job, &stopped, &log);
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
        Err(Stop::Interrupted(sig)) => {
            log.line(&format!(
                "build interrupted by signal {sig}; everything it started is stopped"
            ));
            128 + sig
        }
        Err(Stop::Failed(e)) => {
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
fn clear_dir(dir: &Path, log: &Log) {
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
