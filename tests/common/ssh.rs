//! Reaching a booted machine over ssh through QEMU's user-network port
//! forward: a key pair made for the test, a free port on the host
//! loopback, and commands run as a user of the machine.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use super::qemu::Machine;

/// A key pair made with `ssh-keygen` in `dir`: the private key's path and
/// the public key's line.
pub fn keygen(dir: &Path) -> Result<(PathBuf, String), Failed> {
    fs::create_dir_all(dir)?;
    let key = dir.join("id_ed25519");
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "dib-e2e", "-f"])
        .arg(&key)
        .output()
        .map_err(|e| format!("running ssh-keygen (openssh-client): {e}"))?;
    if !o.status.success() {
        return Err(format!("ssh-keygen: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    let public = fs::read_to_string(key.with_extension("pub"))?;
    Ok((key, public.trim_end().to_string()))
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> Result<u16, Failed> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// ssh to `user` on 127.0.0.1:`port` with `key`, no password ever asked,
/// the host key taken on first contact and kept in `known_hosts`.
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

impl Ssh {
    pub fn command(&self, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(&self.key)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(remote);
        cmd
    }

    /// Run `remote` and return its stdout; an error with both outputs
    /// when it fails.
    pub fn run(&self, remote: &str) -> Result<String, Failed> {
        let o = self
            .command(remote)
            .output()
            .map_err(|e| format!("running ssh (openssh-client): {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "ssh {remote:?} failed ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Wait until `ssh ... true` succeeds: sshd answers through the
    /// forward and takes the key. Tries every few seconds until
    /// `deadline`; fails at once, with the console log, if the machine
    /// stops. Returns the seconds since the machine started.
    pub fn wait_ready(&self, machine: &mut Machine, deadline: Instant) -> Result<f64, Failed> {
        loop {
            let last = match self.command("true").output() {
                Ok(o) if o.status.success() => return Ok(machine.seconds()),
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => return Err(format!("running ssh (openssh-client): {e}").into()),
            };
            if !machine.running() {
                return Err(machine.failure("the machine stopped before sshd answered"));
            }
            if Instant::now() > deadline {
                return Err(machine.failure(&format!(
                    "sshd did not let {} in through port {} in time (last: {last})",
                    self.user, self.port
                )));
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}
