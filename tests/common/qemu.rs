//! Booting a built image in QEMU (TCG: nested KVM hangs on this machine
//! kind) and waiting for a line on its serial console.

use std::io::Read as _;
use std::path::Path;
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

/// The OVMF firmware image, as on the host tool list.
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The machine's serial console (its stdout), chunk by chunk, from a
/// thread that ends with it.
fn console_reader(
    child: &mut std::process::Child,
) -> (mpsc::Receiver<Vec<u8>>, std::thread::JoinHandle<()>) {
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
    (rx, reader)
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
        if let [missing] = &dib_sandbox::host_tools::missing([OVMF])[..] {
            return Err(format!("{missing} is not installed").into());
        }
        cmd.arg("-bios").arg(OVMF);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting qemu-system-x86_64: {e}"))?;
    let (rx, reader) = console_reader(&mut child);
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

/// A machine booted straight into a kernel and initramfs.
pub struct DirectBoot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: &'a str,
    /// A raw disk image to attach (virtio), if any.
    pub disk: Option<&'a Path>,
    /// QEMU's `-nic` value (default: no network).
    pub nic: Option<String>,
}

/// Boot `m` and hold a conversation on its serial console: for each
/// (expect, send) step, wait for `expect` to appear after what was seen
/// so far, then type `send`. Returns the whole console log; a step that
/// does not come within `timeout` (all steps together) is an error with
/// the log.
pub fn converse(
    m: &DirectBoot<'_>,
    script: &[(&str, &str)],
    timeout: Duration,
) -> Result<String, Failed> {
    use std::io::Write as _;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic"])
        .arg(m.nic.as_deref().unwrap_or("none"))
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(m.kernel)
        .arg("-initrd")
        .arg(m.initrd)
        .arg("-append")
        .arg(m.append)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = m.disk {
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            d.display()
        ));
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting qemu-system-x86_64: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let (rx, reader) = console_reader(&mut child);
    let mut console = Vec::new();
    let mut from = 0;
    let mut failure = None;
    'steps: for (expect, send) in script {
        loop {
            // Bytes, not text: a console may print invalid UTF-8.
            let e = expect.as_bytes();
            if let Some(at) = console[from..].windows(e.len()).position(|w| w == e) {
                from += at + e.len();
                break;
            }
            if started.elapsed() > timeout {
                failure = Some(format!(
                    "no {expect:?} on the console within {}s",
                    timeout.as_secs()
                ));
                break 'steps;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(chunk) => console.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    failure = Some(format!("the machine stopped before {expect:?}"));
                    break 'steps;
                }
            }
        }
        if !send.is_empty() {
            // Slowly: a serial console at 115200 baud drops a burst.
            for b in send.bytes() {
                let _ = stdin.write_all(&[b]);
                let _ = stdin.flush();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    // Whatever follows (a poweroff), briefly.
    let grace = Instant::now();
    while failure.is_none() && grace.elapsed() < Duration::from_secs(5) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(chunk) => console.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let _ = reader.join();
    let console = String::from_utf8_lossy(&console).into_owned();
    match failure {
        None => Ok(console),
        Some(f) => Err(format!("{f}\n--- console ---\n{console}\n--- end ---").into()),
    }
}
