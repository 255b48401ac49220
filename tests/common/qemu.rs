//! Booting a built image in QEMU (TCG: nested KVM hangs on this machine
//! kind) and waiting for a line on its serial console.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

/// How a machine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// The OVMF firmware image (Debian package ovmf).
pub fn ovmf() -> Option<PathBuf> {
    ["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// What a boot printed, and when the line was seen.
pub struct Boot {
    pub console: String,
    pub seconds: f64,
}

/// Boot `image` (qcow2 or raw, never written: snapshot mode) and wait up to
/// `timeout` for a console line containing `marker`. On timeout the error
/// carries the whole console log.
pub fn boot_until(
    image: &Path,
    format: &str,
    firmware: Firmware,
    marker: &str,
    timeout: Duration,
) -> Result<Boot, Failed> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-drive")
        .arg(format!(
            "file={},format={format},if=virtio,snapshot=on",
            image.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if firmware == Firmware::Uefi {
        let fw = ovmf().ok_or("OVMF is not installed (Debian package ovmf)")?;
        cmd.arg("-bios").arg(fw);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting qemu-system-x86_64: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let mut seen = None;
    while started.elapsed() < timeout {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(chunk) => {
                console.extend_from_slice(&chunk);
                if String::from_utf8_lossy(&console).contains(marker) && seen.is_none() {
                    seen = Some(started.elapsed().as_secs_f64());
                    // Let the line (and the poweroff) finish.
                    let grace = Instant::now();
                    while grace.elapsed() < Duration::from_secs(20) {
                        match rx.recv_timeout(Duration::from_millis(200)) {
                            Ok(more) => console.extend_from_slice(&more),
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                        }
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let status = child.wait();
    let _ = reader.join();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let console = String::from_utf8_lossy(&console).into_owned();
    match seen {
        Some(seconds) => Ok(Boot { console, seconds }),
        None => Err(format!(
            "no {marker:?} on the console within {}s (qemu: {status:?} {err})\n--- console ---\n{console}\n--- end ---",
            timeout.as_secs()
        )
        .into()),
    }
}
