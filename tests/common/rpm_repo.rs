//! RPM repositories built from Debian's packages and served on the
//! loopback, laid out as Fedora's and openSUSE's mirrors, for the RPM
//! family's trials: this machine reaches no RPM distribution's mirror.
//!
//! `tests/fixtures/rpm-repo/make-rpm-repo` bootstraps a Debian tree with
//! mmdebstrap, turns each of its packages into a signed RPM (Requires from
//! Depends, the distribution's names), adds the release, key and probe
//! packages and writes repository metadata with createrepo_c; it keeps the
//! result under `~/.cache/dib-e2e/rpm-repo`, keyed by its own text and the
//! tree. `python3 -m http.server` serves it, ready once the first
//! repository's `repomd.xml` answers 200; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use super::registry::{answers_200, free_port};

/// How long the server has to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const ATTEMPTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Fedora,
    Opensuse,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Fedora => "fedora",
            Flavor::Opensuse => "opensuse",
        }
    }

    /// The release the repository carries.
    pub fn release(self) -> &'static str {
        match self {
            Flavor::Fedora => "42",
            Flavor::Opensuse => "15.6",
        }
    }

    /// The first repository, under the mirror's root.
    fn first_repo(self) -> String {
        match self {
            Flavor::Fedora => format!("releases/{}/Everything/x86_64/os", self.release()),
            Flavor::Opensuse => format!("distribution/leap/{}/repo/oss", self.release()),
        }
    }
}

/// A served repository.
pub struct RpmMirror {
    child: Child,
    port: u16,
    flavor: Flavor,
    root: PathBuf,
}

/// The tools the fixture runs, by command and Debian package.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("rpmbuild", "rpm"),
    ("rpmsign", "rpm"),
    ("createrepo_c", "createrepo-c"),
    ("gpg", "gpg"),
    ("python3", "python3"),
];

impl RpmMirror {
    /// Build (or find in the cache) the flavor's repository and serve it.
    pub fn serve(flavor: Flavor) -> Result<RpmMirror, Failed> {
        let missing: Vec<&str> = TOOLS
            .iter()
            .filter(|(cmd, _)| {
                !["/usr/bin", "/bin"]
                    .iter()
                    .any(|d| Path::new(d).join(cmd).exists())
            })
            .map(|(_, pkg)| *pkg)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the RPM test repository needs the Debian packages {}",
                missing.join(" ")
            )
            .into());
        }
        let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
        let cache = Path::new(&home).join(".cache/dib-e2e/rpm-repo");
        // Staged beside dib for the test user, or in the checkout.
        let staged = super::tier::dib_bin().with_file_name("make-rpm-repo");
        let script = if staged.is_file() {
            staged
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpm-repo/make-rpm-repo")
        };
        let o = Command::new(&script)
            .args(["--flavor", flavor.name(), "--cache"])
            .arg(&cache)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !o.status.success() {
            return Err(format!(
                "{} --flavor {} failed ({})",
                script.display(),
                flavor.name(),
                o.status
            )
            .into());
        }
        let root = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_port()?;
            match RpmMirror::start(flavor, &root, port) {
                Ok(m) => return Ok(m),
                Err(e) => last = e,
            }
        }
        Err(format!("the repository's server did not start in {ATTEMPTS} attempts: {last}").into())
    }

    fn start(flavor: Flavor, root: &Path, port: u16) -> Result<RpmMirror, String> {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(root)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("python3 -m http.server: {e}"))?;
        let mut m = RpmMirror {
            child,
            port,
            flavor,
            root: root.to_path_buf(),
        };
        let probe = format!("/{}/repodata/repomd.xml", flavor.first_repo());
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!("the server on port {port} exited ({status})"));
            }
            if answers_200(port, &probe) {
                return Ok(m);
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "GET {probe} on 127.0.0.1:{port} had no 200 within {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The mirror's root URL (DIB_DISTRIBUTION_MIRROR).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn release(&self) -> &'static str {
        self.flavor.release()
    }

    /// The public key the packages and metadata are signed with.
    pub fn key_path(&self) -> PathBuf {
        self.root.join("RPM-GPG-KEY-dib-test")
    }
}

impl Drop for RpmMirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
