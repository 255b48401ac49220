//! The break shell: after an error, and on a terminal.

use std::fs;
use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, Build};

pub fn after_error_opens_a_shell_then_fails() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/20-fail", "#!/bin/sh\nexit 4\n", 0o755);
    let mut cmd = b.command(&["tiny-os", "probe"], &[("break", "after-error")]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"echo in-shell-$((40+2)) $(id -u)\nexit 0\n")?;
    let o = child.wait_with_output()?;
    eq(&format!("{:?}", o.status.code()), "Some(1)", "exit code")?;
    let out = String::from_utf8_lossy(&o.stdout);
    check(
        out.contains("in-shell-42 0"),
        format!("the shell did not answer; stdout:\n{out}"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains("break=after-error: starting a shell in the chroot")
            && err.ends_with(
                "dib: error: install.d/20-fail of element 'probe' failed with exit status 4\n",
            ),
        format!("stderr:\n{err}"),
    )?;
    b.assert_clean()
}

pub fn break_shell_answers_on_a_terminal() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/10-nop", "#!/bin/sh\ntrue\n", 0o755);
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)?;
    let slave = fs::File::from(pty.slave);
    let mut cmd = b.command(&["tiny-os", "probe"], &[("break", "after-install")]);
    cmd.stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave);
    let mut child = cmd.spawn()?;
    drop(cmd);
    let mut master = fs::File::from(pty.master);
    let mut reader = master.try_clone()?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |what: &str| -> Result<(), Failed> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => seen.push_str(&s),
                Err(_) => {
                    return Err(
                        format!("{what:?} did not appear; the terminal showed:\n{seen}").into(),
                    )
                }
            }
        }
        Ok(())
    };
    wait_for("break=after-install: starting a shell in the chroot")?;
    master.write_all(b"echo marker-$((6*7)) $(id -u); exit\n")?;
    wait_for("marker-42 0")?;
    wait_for("build finished")?;
    let status = child.wait()?;
    check(status.success(), format!("dib exited with {status}"))?;
    b.assert_clean()
}
