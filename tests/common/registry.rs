//! A container registry on the loopback for the push trials: Debian's
//! `docker-registry` (the distribution registry) with its storage in a
//! temp directory, plain HTTP on a free port of 127.0.0.1, ready once
//! `GET /v2/` answers 200; killed and its storage removed on drop.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

const BINARY: &str = "/usr/bin/docker-registry";
/// How long a registry has to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports tried before giving up when another process takes the free one.
const ATTEMPTS: usize = 5;

/// A running registry.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Registry {
    /// Start one on a free loopback port and wait until it answers.
    pub fn start() -> Result<Registry, String> {
        if !std::path::Path::new(BINARY).is_file() {
            return Err(format!(
                "{BINARY} is not installed (Debian package docker-registry)"
            ));
        }
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("dib-registry-")
                .tempdir()
                .map_err(|e| format!("a directory for the registry: {e}"))?;
            let port = free_port()?;
            match Registry::start_on(dir, port) {
                Ok(r) => return Ok(r),
                // Someone took the port between its release and the bind.
                Err((e, true)) => last = e,
                Err((e, false)) => return Err(e),
            }
        }
        Err(format!(
            "the registry did not start in {ATTEMPTS} attempts: {last}"
        ))
    }

    /// Start on `port`; the error says whether another port may work.
    fn start_on(dir: TempDir, port: u16) -> Result<Registry, (String, bool)> {
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .map_err(|e| (format!("writing {config:?}: {e}"), false))?;
        let log = dir.path().join("registry.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| (format!("creating {log:?}: {e}"), false))?;
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(|e| (format!("{log:?}: {e}"), false))?,
            )
            .stderr(log_file)
            .spawn()
            .map_err(|e| (format!("running {BINARY}: {e}"), false))?;
        let mut r = Registry { child, port, dir };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                let text = r.log();
                let clash = text.contains("address already in use");
                return Err((
                    format!("{BINARY} exited ({status}) before it answered:\n{text}"),
                    clash,
                ));
            }
            if r.answers_200() {
                return Ok(r);
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err((
                    format!(
                        "{BINARY} did not answer GET /v2/ on 127.0.0.1:{port} within {} s:\n{}",
                        READY_TIMEOUT.as_secs(),
                        r.log()
                    ),
                    false,
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps what it is pushed.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// What the registry printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn answers_200(&self) -> bool {
        answers_200(self.port, "/v2/")
    }
}

/// Whether `GET PATH` on the loopback's PORT answers `200` (HTTP/1.1 by
/// hand; an HTTP/1.0 server's answer counts too).
pub fn answers_200(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200"
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now: bound on the loopback, then released.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("the bound port: {e}"))
}
