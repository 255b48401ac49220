//! What the root tier's subject modules share: the test user, starting a
//! dib-helper and pinging it, running dib and the probe client as the test
//! user, and the leak checks on loop devices and mounts.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tier::{check, Build};
use dib_sandbox::client::{Client, ClientError};
use libtest_mimic::Failed;

// The probe cases' own requests live with their trials.
use crate::{hostile, mounts, refusals};

/// The environment variable that turns this binary into the probe client.
pub const PROBE_ENV: &str = "DIB_HELPER_PROBE";

/// The test user: name, uid, gid, home.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub fn test_user() -> Option<User> {
    let name = std::env::var("DIB_TEST_USER").unwrap_or_else(|_| "dibtest".into());
    let u = nix::unistd::User::from_name(&name).ok().flatten()?;
    Some(User {
        name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    })
}

pub fn user() -> User {
    test_user().expect("the test user (checked before the trials)")
}

pub fn helper_bin() -> PathBuf {
    std::env::var_os("DIB_HELPER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/dib-helper"))
}

/// `dib-helper serve` on `socket`, allowing `allow`, its stderr to `stderr`.
pub fn serve(socket: &Path, allow: &[&str], stderr: Stdio) -> std::io::Result<Child> {
    Command::new(helper_bin())
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(allow)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
}

/// `dib-helper ping` of `socket`, trying for `timeout` seconds.
pub fn ping_helper(socket: &Path, timeout: u32) -> std::io::Result<std::process::Output> {
    Command::new(helper_bin())
        .args(["ping", "--timeout", &timeout.to_string(), "--socket"])
        .arg(socket)
        .output()
}

/// A dib-helper serving on a socket in a directory of its own.
pub struct Helper {
    child: Child,
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Helper {
    pub fn start(allow: &[&str]) -> Result<Helper, Failed> {
        let dir = tempfile::Builder::new().prefix("dib-helper-").tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let socket = dir.path().join("helper.sock");
        let log = dir.path().join("helper.log");
        let child = serve(&socket, allow, File::create(&log)?.into())?;
        let mut h = Helper {
            child,
            _dir: dir,
            socket,
            log,
        };
        h.wait_ready()?;
        Ok(h)
    }

    pub fn for_test_user() -> Result<Helper, Failed> {
        Helper::start(&["--allow-user", &user().name])
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the helper answers a Hello (as root, always allowed):
    /// ready is when it answers, not when its socket path appears.
    fn wait_ready(&mut self) -> Result<(), Failed> {
        let started = Instant::now();
        loop {
            match Client::connect(&self.socket) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let exited = self.child.try_wait()?;
                    check(
                        exited.is_none() && started.elapsed() < Duration::from_secs(10),
                        format!(
                            "dib-helper did not answer ({e}; exit: {exited:?}): {}",
                            self.log_text()
                        ),
                    )?;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The main process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `within` for the helper to exit: its status, or `None`
    /// if it is still running.
    pub fn wait_exit(
        &mut self,
        within: Duration,
    ) -> Result<Option<std::process::ExitStatus>, Failed> {
        let started = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(Some(st));
            }
            if started.elapsed() > within {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The helper still answers (as root, always allowed).
    pub fn alive(&self) -> Result<(), Failed> {
        let c = Client::connect(&self.socket).map_err(|e| format!("{e}: {}", self.log_text()))?;
        c.ping()?;
        Ok(())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `cmd` as the test user (no supplementary groups, its HOME).
pub fn as_user(cmd: &mut Command) -> &mut Command {
    let u = user();
    cmd.uid(u.uid).gid(u.gid).env("HOME", &u.home)
}

/// A build's scratch space, owned by the test user.
pub fn user_build() -> Result<Build, Failed> {
    let b = Build::new();
    fs::create_dir_all(b.f.path("home"))?;
    chown_tree(b.f.dir.path(), user().uid, user().gid)?;
    Ok(b)
}

pub fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<(), Failed> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    if fs::symlink_metadata(p)?.is_dir() {
        for e in fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `dib create -n ARGS...` as the test user through `helper` (`None`: the
/// offline backend).
pub fn dib(b: &Build, helper: Option<&Helper>, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut all = vec!["create", "-n"];
    match helper {
        Some(_) => all.extend(["--block-backend", "helper"]),
        None => all.extend(["--block-backend", "offline"]),
    }
    all.extend_from_slice(args);
    let mut cmd = b.dib(&all, env);
    if let Some(h) = helper {
        cmd.env("DIB_HELPER_SOCKET", &h.socket);
    }
    as_user(&mut cmd);
    cmd
}

/// Loop devices now attached, with their backing files.
pub fn attached_loops() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
            out.insert(name, b.trim().to_string());
        }
    }
    out
}

/// Mounts of loop devices in the host's mount table.
fn loop_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/dev/loop"))
        .map(String::from)
        .collect()
}

/// Wait until no loop device is backed by a file under `dir` and no loop
/// device is mounted (the kernel detaches autoclear devices when their
/// last user goes, which can trail the client's death a little).
pub fn no_leaks_under(dir: &Path) -> Result<(), Failed> {
    let dir = dir.display().to_string();
    let started = Instant::now();
    loop {
        let ours: Vec<_> = attached_loops()
            .into_iter()
            .filter(|(_, f)| f.starts_with(&dir))
            .collect();
        let mounts = loop_mounts();
        if ours.is_empty() && mounts.is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(format!("leaked loop devices {ours:?}, mounts {mounts:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run this binary as the test user in probe mode.
pub fn probe(case: &str, socket: &Path, scratch: &Path) -> Result<String, Failed> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env_clear()
        .env(PROBE_ENV, case)
        .env("DIB_HELPER_SOCKET", socket)
        .env("DIB_PROBE_DIR", scratch)
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
    as_user(&mut cmd);
    let o = cmd.output()?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    check(
        o.status.success(),
        format!(
            "the probe '{case}' failed ({}):\n{out}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
    )?;
    Ok(out)
}

/// A scratch directory the test user owns.
pub fn user_dir() -> Result<tempfile::TempDir, Failed> {
    let d = tempfile::Builder::new().prefix("dib-probe-").tempdir()?;
    std::os::unix::fs::chown(d.path(), Some(user().uid), Some(user().gid))?;
    Ok(d)
}

// ---------------------------------------------------------------------------
// The probe client (this binary as the test user): what its cases share,
// and its dispatch to them.

pub fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Refused { kind, message }) => format!("{kind:?}: {message}"),
        other => format!("NOT REFUSED: {other:?}"),
    }
}

pub fn probe_image(dir: &Path, name: &str) -> File {
    let p = dir.join(name);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("creating the probe's image");
    f.set_len(64 << 20).unwrap();
    f
}

pub fn probe_main(case: &str) -> i32 {
    let socket = PathBuf::from(std::env::var_os("DIB_HELPER_SOCKET").unwrap());
    let dir = PathBuf::from(std::env::var_os("DIB_PROBE_DIR").unwrap());
    let mut out = std::io::stdout();
    match case {
        "hello" => match Client::connect(&socket) {
            Ok(_) => writeln!(out, "hello: accepted").unwrap(),
            Err(e) => writeln!(out, "hello: {}", refusal::<()>(Err(e))).unwrap(),
        },
        "refusals" => refusals::probe_refusals(&socket, &dir, &mut out),
        "idmap" => mounts::probe_idmap(&socket, &dir, &mut out),
        "fuse-overlay" => hostile::probe_fuse_overlay(&socket, &dir, &mut out),
        "flood" => hostile::probe_flood(&socket, &mut out),
        "hello-many" => hostile::probe_hello_many(&socket, &mut out),
        "read-only" => hostile::probe_read_only(&socket, &dir, &mut out),
        other => {
            eprintln!("unknown probe {other}");
            return 2;
        }
    }
    0
}
