//! Stopping a build: SIGTERM, SIGINT and kill -9 of dib, early and while
//! outputs are written, leave no process, mount or output behind.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, Build};
use crate::support::{images_left, processes_with};

pub fn early_stop_signals_never_let_a_build_succeed() -> Result<(), Failed> {
    use nix::sys::signal::{kill, Signal};
    for i in 0..20u64 {
        let b = Build::new();
        b.f.file("e/probe/install.d/10-nop", "#!/bin/sh\ntrue\n", 0o755);
        let mut child = b
            .command(&["tiny-os", "probe"], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(i * 3 / 2));
        kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGTERM,
        )?;
        let status = child.wait()?;
        check(
            !status.success(),
            format!("SIGTERM after {} ms: the build succeeded", i * 3 / 2),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

/// Start a build whose extra-data.d waits forever; return once it started.
fn start_waiting_build(b: &Build, marker: &str) -> Result<Child, Failed> {
    b.f.file(
        "e/probe/extra-data.d/10-wait",
        &format!("#!/bin/bash\nsleep {marker}\n"),
        0o755,
    );
    b.f.file("e/probe/install.d/10-daemon", "#!/bin/sh\nsleep 1\n", 0o755);
    let child = b
        .command(&["tiny-os", "probe"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Ready when the hook's process runs (not when it was about to).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !processes_with(&format!("sleep {marker}"))
        .iter()
        .any(|p| p.ends_with(&format!("sleep {marker} ")))
    {
        check(
            Instant::now() < deadline,
            "the build's extra-data.d hook did not run in 60 s",
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn wait_until_gone(marker: &str) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return Ok(());
        }
        check(
            Instant::now() < deadline,
            format!("still running 10 s later: {left:?}"),
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stop_signals_leave_no_process_or_mount() -> Result<(), Failed> {
    use nix::sys::signal::{kill, Signal};
    // (signal, marker, exit code): SIGINT is what Ctrl-C sends.
    for (sig, marker, code) in [
        (Signal::SIGTERM, "876542", 143),
        (Signal::SIGINT, "876544", 130),
    ] {
        let b = Build::new();
        let mut child = start_waiting_build(&b, marker)?;
        kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)?;
        let status = child.wait()?;
        eq(
            &format!("{:?}", status.code()),
            &format!("Some({code})"),
            &format!("exit code after {sig}"),
        )?;
        wait_until_gone(marker)?;
        b.assert_clean()?;
    }
    Ok(())
}

pub fn kill_9_of_dib_takes_the_build_down() -> Result<(), Failed> {
    let b = Build::new();
    let mut child = start_waiting_build(&b, "876543")?;
    child.kill()?;
    child.wait()?;
    wait_until_gone("876543")?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    check(
        !mounts.contains(&b.tmp.display().to_string()),
        "a build mount is visible on the host",
    )
}

/// Start a build whose squashfs output takes a while (200 MB of random
/// data through xz) and return it once mksquashfs runs.
fn start_slow_output(b: &Build) -> Result<Child, Failed> {
    b.f.file(
        "e/probe/root.d/50-bulk",
        "#!/bin/bash\nset -eu\nhead -c 200M /dev/urandom > \"$TARGET_ROOT/bulk\"\n",
        0o755,
    );
    let out = b.f.path("images/img").display().to_string();
    let mut child = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "raw,squashfs",
                "-o",
                &out,
                "tiny-os",
                "probe",
            ],
            &[],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let marker = b.tmp.display().to_string();
    // As /proc shows it: with no symlink on the way (TMPDIR may have one).
    let images = fs::canonicalize(b.f.dir.path())?.join("images");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Ready when mksquashfs has written into its output (a file with no
    // name in images/), as its open files say.
    while !processes_with(&marker)
        .iter()
        .filter(|p| p.contains("mksquashfs"))
        .filter_map(|p| p.split(':').next())
        .any(|pid| writes_under(pid, &images))
    {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            return Err("mksquashfs never wrote its output".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// Whether process `pid` has a file under `dir` open that is not empty.
fn writes_under(pid: &str, dir: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir))
            && fs::metadata(fd.path()).is_ok_and(|m| m.len() > 0)
    })
}

pub fn stopping_while_writing_outputs_leaves_no_file() -> Result<(), Failed> {
    // SIGTERM: the running tool is killed at once, the build reports the
    // signal, and nothing is left.
    let b = Build::new();
    let child = start_slow_output(&b)?;
    let asked = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let o = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        asked.elapsed() < Duration::from_secs(5),
        format!("the build took {:?} to stop", asked.elapsed()),
    )?;
    check(
        o.status.code() == Some(128 + 15) && err.contains("build interrupted by signal 15"),
        format!("status {:?}, stderr:\n{err}", o.status),
    )?;
    let left = images_left(&b)?;
    check(
        left.is_empty(),
        format!("SIGTERM while writing outputs left: {left:?}"),
    )?;
    wait_until_gone(&b.tmp.display().to_string())?;
    b.assert_clean()?;

    // kill -9 of dib: the unnamed outputs go with the processes.
    let b = Build::new();
    let mut child = start_slow_output(&b)?;
    child.kill()?;
    child.wait()?;
    wait_until_gone(&b.tmp.display().to_string())?;
    let left = images_left(&b)?;
    check(
        left.is_empty(),
        format!("kill -9 while writing outputs left: {left:?}"),
    )
}
