//! Shared by the tier harnesses (tests/userns.rs, tests/e2e.rs): running
//! `dib create` as the test user in a scratch directory, and the checks.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libtest_mimic::Failed;

use super::Fixture;

/// The dib binary (scripts/test points this at a copy the test user can read).
pub fn dib_bin() -> PathBuf {
    std::env::var_os("DIB_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dib")))
}

pub fn fixtures() -> PathBuf {
    std::env::var_os("DIB_TEST_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/elements"))
}

/// Why this tier cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    if std::env::var("DIB_SKIP_TIER2").as_deref() == Ok("1") {
        return Some("scripts/test runs this tier on its own, after tier 1".into());
    }
    if nix::unistd::geteuid().is_root() {
        return Some(
            "runs as a non-root user with a subuid range (scripts/test runs it as the test user)"
                .into(),
        );
    }
    match dib_sandbox::ns::preflight() {
        Ok(_) => None,
        Err(e) => Some(format!("this user cannot build rootless here: {e}")),
    }
}

/// One build's scratch space.
pub struct Build {
    pub f: Fixture,
    pub tmp: PathBuf,
    pub out: PathBuf,
}

impl Build {
    pub fn new() -> Build {
        let f = Fixture::new();
        let tmp = f.path("tmp");
        let out = f.path("out");
        fs::create_dir_all(&tmp).unwrap();
        fs::create_dir_all(&out).unwrap();
        fs::create_dir_all(f.path("e")).unwrap();
        Build { f, tmp, out }
    }

    /// `dib ARGS...` with this build's environment (PATH, HOME, the
    /// fixtures and `e/` on ELEMENTS_PATH, TMP_DIR, DIB_TEST_OUT) plus `env`.
    pub fn dib(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(dib_bin());
        cmd.args(args)
            .env_clear()
            // A plain user's PATH, without the sbin directories: dib must
            // find mkfs, depmod, ... there itself.
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.f.path("home"))
            .env(
                "ELEMENTS_PATH",
                format!("{}:{}", fixtures().display(), self.f.path("e").display()),
            )
            .env("TMP_DIR", &self.tmp)
            .env("DIB_TEST_OUT", &self.out)
            // Hooks report into DIB_TEST_OUT; the box lets them write it.
            .env("DIB_BOX_WRITABLE", &self.out)
            // `--block-backend auto` must not find a helper running on the
            // machine; the root tier names its own.
            .env("DIB_HELPER_SOCKET", self.f.path("no-helper.sock"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `dib get-kernel -d DIR ARGS...` into the new directory `dir` of
    /// this build's scratch space: the directory and dib's output.
    pub fn get_kernel(&self, dir: &str, args: &[&str]) -> std::io::Result<(PathBuf, Output)> {
        let d = self.f.path(dir);
        fs::create_dir_all(&d)?;
        let d_s = d.display().to_string();
        let mut all = vec!["get-kernel", "-d", d_s.as_str()];
        all.extend_from_slice(args);
        let o = self.dib(&all, &[]).output()?;
        Ok((d, o))
    }

    /// `dib create -n ELEMENTS... no-final-image` (the tier-2 build).
    pub fn command(&self, elements: &[&str], env: &[(&str, &str)]) -> Command {
        let mut args = vec!["create", "-n"];
        args.extend_from_slice(elements);
        args.push("no-final-image");
        self.dib(&args, env)
    }

    pub fn run(&self, elements: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(elements, env).output().expect("running dib")
    }

    pub fn out(&self, name: &str) -> String {
        fs::read_to_string(self.out.join(name))
            .unwrap_or_else(|e| panic!("reading {name} from the build's output: {e}"))
            .trim_end()
            .to_string()
    }

    /// Nothing of the build is left in TMP_DIR.
    pub fn assert_clean(&self) -> Result<(), Failed> {
        let left: Vec<_> = fs::read_dir(&self.tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        check(left.is_empty(), format!("left behind in TMP_DIR: {left:?}"))?;
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        check(
            !mounts.contains(&self.tmp.display().to_string()),
            format!("a mount under {:?} is visible on the host", self.tmp),
        )
    }
}

/// The fields of `user`'s line in the text of an `/etc/passwd`.
pub fn passwd_entry<'a>(passwd: &'a str, user: &str) -> Result<Vec<&'a str>, Failed> {
    let prefix = format!("{user}:");
    Ok(passwd
        .lines()
        .find(|l| l.starts_with(&prefix))
        .ok_or_else(|| format!("no {user} in /etc/passwd:\n{passwd}"))?
        .split(':')
        .collect())
}

pub fn check(ok: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if ok {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

pub fn eq(got: &str, want: &str, what: &str) -> Result<(), Failed> {
    check(got == want, format!("{what}: got {got:?}, want {want:?}"))
}

/// Run a tool that must succeed: its standard output (the error has the
/// command and all it printed).
pub fn run(cmd: &mut Command) -> Result<String, Failed> {
    let o = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub fn succeeded(o: &Output) -> Result<(), Failed> {
    check(
        o.status.success(),
        format!(
            "dib failed ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Trials for `tests`: as themselves when they can run here; else each
/// ignored with `skip`'s reason, or failing with it in CI (`in_ci`).
pub fn trials(
    tests: Vec<(String, Test)>,
    skip: &Option<String>,
    in_ci: bool,
) -> Vec<libtest_mimic::Trial> {
    tests
        .into_iter()
        .map(|(name, f)| match (skip, in_ci) {
            (None, _) => libtest_mimic::Trial::test(name, f),
            (Some(reason), true) => {
                let reason = reason.clone();
                libtest_mimic::Trial::test(name, move || {
                    Err(format!("CI=true, but this tier cannot run: {reason}").into())
                })
            }
            (Some(_), false) => libtest_mimic::Trial::test(name, f).with_ignored_flag(true),
        })
        .collect()
}

/// Run a tier's trials: as themselves when the tier can run here; else each
/// reported ignored with `skip`'s reason, or failing with it when this is CI
/// running the tier on purpose (`in_ci`).
/// `extra` trials are added as they are.
pub fn run_trials(
    name: &str,
    tests: Vec<(String, Test)>,
    skip: Option<String>,
    in_ci: bool,
    extra: Vec<libtest_mimic::Trial>,
) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    if let Some(reason) = &skip {
        eprintln!("{name} skipped: {reason}");
    }
    let trials = trials(tests, &skip, in_ci)
        .into_iter()
        .chain(extra)
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// A trial's body.
pub type Test = fn() -> Result<(), Failed>;

/// The named trial bodies `(name, fn)` for these functions, each named as
/// written (`trials![a, m::b]` names them `a` and `m::b`),
/// so a trial's name cannot drift from its function.
#[macro_export]
macro_rules! trials {
    ($($f:path),* $(,)?) => {
        vec![$((stringify!($f).replace(' ', ""), $f as $crate::common::tier::Test)),*]
    };
}
