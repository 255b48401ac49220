//! Running a phase's hooks and logging what they print.
//!
//! Every script runs through a tiny wrapper that sources `environment.d` in
//! run-parts order and then execs the script, so its exports reach every
//! script of the phase. Output is read line by line, logged with a timestamp
//! and the last lines kept for the failure message. At the end of each phase
//! every process left over (a daemon a hook started) is killed.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dib_sandbox::init::{exit_code, kill_all_and_reap, reap_zombies};
use dib_sandbox::mounts::IN_TARGET;

use super::executor::{Build, Stop};
use crate::phases::Phase;
use crate::runparts::{plan_dir, plan_environment, read_entries};

/// Lines of a failed script's output repeated in the error.
const TAIL_LINES: usize = 20;
/// How long to keep reading a finished script's output: a daemon it left
/// behind may hold the pipe open until the phase ends.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Sources environment.d files (`$2...`) then execs the script (`$1`).
const WRAPPER: &str = "set -eu\nscript=$1\nshift\nfor __dib_env in \"$@\"; do\n    . \"$__dib_env\"\ndone\nexec \"$script\"\n";

impl Build<'_> {
    /// Paths of `environment.d` files, as `phase`'s scripts see them.
    pub fn env_files(&self, phase: Phase) -> anyhow::Result<Vec<String>> {
        let dir = self.dirs.hooks.join("environment.d");
        let names =
            plan_environment(read_entries(&dir).with_context(|| format!("reading {dir:?}"))?);
        let base = if phase.chroot() {
            PathBuf::from("/").join(IN_TARGET).join("environment.d")
        } else {
            dir
        };
        Ok(names
            .iter()
            .map(|n| base.join(n).display().to_string())
            .collect())
    }

    /// Run every script of `phase`'s directory in the hook tree, in
    /// run-parts order, and log how long each took.
    pub fn run_hooks(&self, phase: Phase) -> Result<(), Stop> {
        let dir = self.dirs.hooks.join(phase.dir());
        let plan = plan_dir(&dir).with_context(|| format!("reading {dir:?}"))?;
        if self.job.trace > 0 {
            for (path, why) in &plan.skipped {
                self.log.line(&format!(
                    "{}: skipping {}: {why}",
                    phase.dir(),
                    file_name(path)
                ));
            }
        }
        if plan.run.is_empty() {
            return Ok(());
        }
        self.log.line(&format!(
            "running {} ({} scripts)",
            phase.dir(),
            plan.run.len()
        ));
        let env = self.env(phase);
        let env_files = self.env_files(phase)?;
        self.fresh_boxes();
        let mut timings = Vec::new();
        for script in &plan.run {
            let name = file_name(script);
            let rel = format!("{}/{name}", phase.dir());
            // An install type's script is a link into its directory.
            let entries = &self.job.hooks.entries;
            let element = entries
                .get(Path::new(&rel))
                .or_else(|| {
                    let target = std::fs::read_link(script).ok()?;
                    entries.get(&Path::new(phase.dir()).join(target))
                })
                .map(|s| s.element().to_string())
                .unwrap_or_default();
            let path = if phase.chroot() {
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
            self.place(&mut cmd, phase, Some(&element))?;
            self.log
                .status(format!("{}: {name} ({element})", phase.dir()));
            // A hook that writes cache directories runs alone: what earlier
            // hooks left running ends first, and what it leaves ends with it.
            let writes_caches = !self.job.boxing.caches_of(&element).is_empty();
            if writes_caches {
                kill_all_and_reap();
            }
            let started = Instant::now();
            self.run_logged(cmd, &format!("{rel} of element '{element}'"))?;
            if writes_caches {
                kill_all_and_reap();
            }
            timings.push((name.to_string(), element, started.elapsed()));
        }
        // Whatever a hook left running (a daemon) ends with its phase.
        kill_all_and_reap();
        self.fresh_boxes();
        self.log_timings(phase, &timings);
        Ok(())
    }

    /// Spawn `cmd` with stdout and stderr into one pipe and log each line;
    /// then reap orphans and stop on a stop signal. A non-zero exit is a
    /// failure naming `what`, with the last lines it printed, and takes
    /// down whatever it left running.
    pub fn run_logged(&self, mut cmd: Command, what: &str) -> Result<(), Stop> {
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
            return Err(failed(what, status, tail));
        }
        Ok(())
    }

    fn log_timings(&self, phase: Phase, timings: &[(String, String, Duration)]) {
        let total: Duration = timings.iter().map(|t| t.2).sum();
        self.log.line(&format!(
            "{} done in {:.3}s:",
            phase.dir(),
            total.as_secs_f64()
        ));
        for (name, element, d) in timings {
            self.log
                .line(&format!("  {:>9.3}s  {name} ({element})", d.as_secs_f64()));
        }
    }
}

/// "WHAT failed with exit status N; its last lines: ..." as a build stop.
fn failed(what: &str, status: std::process::ExitStatus, tail: Vec<String>) -> Stop {
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
