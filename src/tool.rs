//! Running a host tool (mkfs, qemu-img, tar, ...) from pid 1: its output
//! kept for the error, the Debian package named when it is missing, and
//! stopped at once when the build is asked to stop.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// A `Command` for the host tool `name`, found on `PATH` or in the system
/// directories (`/usr/sbin`, `/sbin`, ...) that a plain user's `PATH` often
/// lacks: mkfs, depmod and debugfs live there.
pub fn command(name: &str) -> Command {
    let path = std::env::var("PATH").ok();
    match dib_sandbox::host_tools::find(name, path.as_deref()) {
        Some(p) => Command::new(p),
        None => Command::new(name),
    }
}

/// Why a tool did not finish: the build was told to stop.
#[derive(Debug, thiserror::Error)]
#[error("stopped by signal {0}")]
pub struct Stopped(pub i32);

/// Run `cmd` to its end (`what` says what for, in errors; a tool that is
/// not installed is named with its Debian package). When `stop` becomes
/// non-zero the tool is killed and the error is [`Stopped`].
pub fn run(mut cmd: Command, what: &str, stop: &AtomicI32) -> Result<()> {
    let prog = std::path::Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "running {} for {what} (is it installed?)",
            dib_sandbox::host_tools::describe(&prog)
        )
    })?;
    // Both pipes drained while waiting, so a chatty tool never blocks.
    let drain = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a tool")? {
            break status;
        }
        let sig = stop.load(Ordering::SeqCst);
        if sig != 0 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Stopped(sig).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    // pid 1 may kill the tool for the stop before this loop saw the flag.
    let sig = stop.load(Ordering::SeqCst);
    if !status.success() && sig != 0 {
        return Err(Stopped(sig).into());
    }
    if !status.success() {
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&err).trim(),
            String::from_utf8_lossy(&out).trim()
        );
        bail!("{prog} failed {what} ({status}): {}", text.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_what_and_show_the_output() {
        let stop = AtomicI32::new(0);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let e = run(cmd, "testing", &stop).unwrap_err().to_string();
        assert_eq!(e, "sh failed testing (exit status: 3): err\nout");
        let e = run(Command::new("/nonexistent/mkfs.fat"), "x", &stop)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("running mkfs.fat (Debian package dosfstools) for x"),
            "{e}"
        );
    }

    #[test]
    fn a_tool_killed_for_a_stop_is_the_stop_not_a_failure() {
        // pid 1 kills the namespace's processes on a stop signal: the tool
        // may die before run() sees the flag.
        let stop = AtomicI32::new(15);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -9 $$"]);
        let e = run(cmd, "dying", &stop).unwrap_err();
        assert_eq!(e.downcast_ref::<Stopped>().map(|s| s.0), Some(15));
    }

    #[test]
    fn a_stop_kills_the_tool_at_once() {
        let stop = AtomicI32::new(15);
        let started = std::time::Instant::now();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let e = run(cmd, "waiting", &stop).unwrap_err();
        assert!(e.downcast_ref::<Stopped>().is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
