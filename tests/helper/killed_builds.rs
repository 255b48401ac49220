//! Builds through the helper killed at random points leave no loop device
//! attached and no mount behind.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::common::tier::{check, succeeded};
use crate::support::{attached_loops, dib, no_leaks_under, user_build, Helper};
use libtest_mimic::Failed;

pub fn killed_builds_leave_no_loop_device_or_mount() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let b = user_build()?;
    let runs: u32 = std::env::var("DIB_HELPER_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let out = b.f.path("images/img").display().to_string();
    let args = [
        "-t",
        "raw",
        "-o",
        out.as_str(),
        "tiny-os",
        "block-device-gpt",
    ];
    // One whole build first: the steps a build goes through (its log
    // lines), so each run can be killed at a step picked at random.
    let first = dib(&b, Some(&h), &args, &[]).output()?;
    succeeded(&first)?;
    let steps = String::from_utf8_lossy(&first.stderr).lines().count() as u64;
    fs::remove_file(b.f.path("images/img.raw"))?;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    eprintln!("  {runs} builds killed at one of {steps} steps (seed {seed})");
    let mut finished = 0;
    let mut holding = 0;
    let dir = b.f.dir.path().display().to_string();
    for i in 0..runs {
        // xorshift: a fresh step each time, and up to 30 ms into it.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let step = seed % steps;
        let delay = (seed >> 32) % 30;
        let mut child = dib(&b, Some(&h), &args, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
            child.stderr.take().ok_or("no stderr")?,
        ));
        let mut seen = 0;
        while seen < step && lines.next().is_some() {
            seen += 1;
        }
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait()?.is_some() {
            finished += 1;
        }
        if attached_loops().values().any(|f| f.starts_with(&dir)) {
            holding += 1;
        }
        let _ = child.kill();
        child.wait()?;
        drop(lines);
        let _ = fs::remove_file(b.f.path("images/img.raw"));
        no_leaks_under(b.f.dir.path())
            .map_err(|e| format!("after run {i} (step {step}, +{delay} ms): {e:?}"))?;
    }
    eprintln!(
        "  {finished} of {runs} builds finished before their kill, {holding} were killed \
         holding a loop device"
    );
    check(
        holding * 10 >= runs,
        format!("only {holding} of {runs} builds were killed while holding a loop device"),
    )?;
    check(
        finished < runs / 2,
        format!("{finished} of {runs} builds finished before the kill: too few were killed"),
    )?;
    no_leaks_under(b.f.dir.path())?;
    h.alive()
}
