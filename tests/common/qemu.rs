//! Booting a built image in QEMU (TCG: nested KVM hangs on this machine
//! kind) and waiting for a line on its serial console.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

/// How a machine starts, and so which machine it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// A PC (qemu-system-x86_64) by BIOS.
    Bios,
    /// A PC under OVMF.
    Uefi,
    /// A 32-bit PC (qemu-system-i386) by BIOS.
    Bios32,
    /// An arm64 `virt` machine (qemu-system-aarch64, `-cpu max`) under AAVMF.
    Aavmf,
}

/// The OVMF firmware image, as on the host tool list.
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// AAVMF's code and its variable store (copied per machine: UEFI writes it).
const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// The QEMU command of a machine of `firmware`'s kind (TCG, 1 GiB, two
/// CPUs, no display), and the files it needs while it runs.
pub fn machine(firmware: Firmware) -> Result<(Command, Vec<tempfile::NamedTempFile>), Failed> {
    let binary = match firmware {
        Firmware::Bios | Firmware::Uefi => "qemu-system-x86_64",
        Firmware::Bios32 => "qemu-system-i386",
        Firmware::Aavmf => "qemu-system-aarch64",
    };
    let mut cmd = Command::new(binary);
    cmd.args(["-accel", "tcg", "-m", "1024", "-smp", "2"]);
    let mut keep = Vec::new();
    match firmware {
        Firmware::Bios => {}
        Firmware::Bios32 => {
            cmd.args(["-cpu", "max"]);
        }
        Firmware::Uefi => {
            if let [missing] = &dib_sandbox::host_tools::missing([OVMF])[..] {
                return Err(format!("{missing} is not installed").into());
            }
            cmd.arg("-bios").arg(OVMF);
        }
        Firmware::Aavmf => {
            if let [missing, ..] = &dib_sandbox::host_tools::missing([AAVMF_CODE, AAVMF_VARS])[..] {
                return Err(format!(
                    "{missing} is not installed (Debian package qemu-efi-aarch64)"
                )
                .into());
            }
            let vars = tempfile::NamedTempFile::new()?;
            std::fs::copy(AAVMF_VARS, vars.path())?;
            cmd.args(["-M", "virt", "-cpu", "max"])
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,readonly=on,file={AAVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,file={}",
                    vars.path().display()
                ));
            keep.push(vars);
        }
    }
    Ok((cmd, keep))
}

/// The machine a kernel of `arch` (dib's name) boots in directly.
pub fn direct_machine(arch: &str) -> Command {
    match arch {
        "arm64" => {
            let mut cmd = Command::new("qemu-system-aarch64");
            cmd.args([
                "-accel", "tcg", "-m", "1024", "-smp", "2", "-M", "virt", "-cpu", "max",
            ]);
            cmd
        }
        _ => {
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args(["-accel", "tcg", "-m", "1024", "-smp", "2"]);
            cmd
        }
    }
}

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
    let (mut cmd, _keep) = machine(firmware)?;
    cmd.args(["-nographic", "-no-reboot", "-nic", "none"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-drive")
        .arg(format!(
            "file={},format={format},if=virtio,snapshot=on",
            image.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
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
    /// The kernel's architecture (dib's name): amd64 boots in a PC, arm64
    /// in a `virt` machine.
    pub arch: &'a str,
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
    let mut cmd = direct_machine(m.arch);
    cmd.args(["-nographic", "-no-reboot", "-nic"])
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
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
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

/// A disk a [`Machine`] boots from or sees (virtio).
pub struct Drive<'a> {
    pub path: &'a Path,
    /// `qcow2` or `raw`.
    pub format: &'a str,
    /// Writes go to a temporary overlay, never to the file.
    pub snapshot: bool,
}

/// A machine booted from its disks that runs until it is dropped (then it
/// is killed), its serial console read as it comes: waited on for a
/// text, typed into, and kept for the failure messages.
pub struct Machine {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    rx: mpsc::Receiver<Vec<u8>>,
    reader: Option<std::thread::JoinHandle<()>>,
    console: Vec<u8>,
    /// How far [`Machine::wait_for`] has matched.
    mark: usize,
    started: Instant,
    /// Commands run by [`Machine::run`] so far, for their markers.
    commands: u32,
    /// Files QEMU uses while it runs (AAVMF's variable store).
    _files: Vec<tempfile::NamedTempFile>,
}

impl Machine {
    /// Start the machine of `firmware`'s kind on `drives` (the first one
    /// boots), with QEMU's `-nic` value `nic` (default: no network).
    pub fn boot(
        drives: &[Drive<'_>],
        firmware: Firmware,
        nic: Option<&str>,
    ) -> Result<Machine, Failed> {
        let (mut cmd, files) = machine(firmware)?;
        cmd.args(["-nographic", "-no-reboot", "-nic"])
            .arg(nic.unwrap_or("none"))
            .args(["-serial", "stdio", "-monitor", "none"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for d in drives {
            cmd.arg("-drive").arg(format!(
                "file={},format={},if=virtio,snapshot={}",
                d.path.display(),
                d.format,
                if d.snapshot { "on" } else { "off" }
            ));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
        let stdin = child.stdin.take();
        let (rx, reader) = console_reader(&mut child);
        Ok(Machine {
            child,
            stdin,
            rx,
            reader: Some(reader),
            console: Vec::new(),
            mark: 0,
            started: Instant::now(),
            commands: 0,
            _files: files,
        })
    }

    /// Seconds since the machine was started.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Take in what the console printed so far; false once QEMU is gone.
    fn pump(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(chunk) => {
                self.console.extend_from_slice(&chunk);
                while let Ok(more) = self.rx.try_recv() {
                    self.console.extend_from_slice(&more);
                }
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Err(mpsc::RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Everything the console printed so far.
    pub fn console(&mut self) -> String {
        self.pump(Duration::ZERO);
        String::from_utf8_lossy(&self.console).into_owned()
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An error saying `what`, with the whole console log.
    pub fn failure(&mut self, what: &str) -> Failed {
        let console = self.console();
        format!(
            "{what} (after {:.0}s)\n--- console ---\n{console}\n--- end ---",
            self.seconds()
        )
        .into()
    }

    /// Wait until the console prints `text` after what the previous wait
    /// matched, until `deadline`; returns what came in between.
    pub fn wait_for(&mut self, text: &str, deadline: Instant) -> Result<String, Failed> {
        let t = text.as_bytes();
        loop {
            // Bytes, not text: a console may print invalid UTF-8.
            if let Some(at) = self.console[self.mark..]
                .windows(t.len())
                .position(|w| w == t)
            {
                let between =
                    String::from_utf8_lossy(&self.console[self.mark..self.mark + at]).into_owned();
                self.mark += at + t.len();
                return Ok(between);
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!("no {text:?} on the console in time")));
            }
            if !self.pump(Duration::from_millis(200)) {
                return Err(self.failure(&format!("the machine stopped before {text:?}")));
            }
        }
    }

    /// Type `text` on the serial console, slowly: a console at 115200
    /// baud drops a burst.
    pub fn type_text(&mut self, text: &str) {
        use std::io::Write as _;
        if let Some(stdin) = self.stdin.as_mut() {
            for b in text.bytes() {
                let _ = stdin.write_all(&[b]);
                let _ = stdin.flush();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Log in on the serial console as `user` with `password`, and wait
    /// for the shell's prompt (ending in `$ `).
    pub fn login(&mut self, user: &str, password: &str, deadline: Instant) -> Result<(), Failed> {
        self.wait_for("login: ", deadline)?;
        self.type_text(&format!("{user}\n"));
        self.wait_for("Password: ", deadline)?;
        self.type_text(&format!("{password}\n"));
        self.wait_for("$ ", deadline)?;
        Ok(())
    }

    /// Run `command` in the shell logged in on the console and return
    /// what it printed (lines ending in `\n`). Its output is found
    /// between two markers the shell computes, so that the echo of the
    /// typed line never matches them.
    pub fn run(&mut self, command: &str, deadline: Instant) -> Result<String, Failed> {
        self.commands += 1;
        let n = 1000 + self.commands;
        self.type_text(&format!(
            "echo dib-out-$(({n})); {command}; echo dib-end-$(({n}))\n"
        ));
        self.wait_for(&format!("dib-out-{n}\r\n"), deadline)?;
        let out = self.wait_for(&format!("dib-end-{n}"), deadline)?;
        Ok(out.replace('\r', ""))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
