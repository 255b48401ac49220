//! Inside the namespaces: the supervisor and pid 1.
//!
//! The supervisor is the process [`crate::ns::spawn`] started: it is in the
//! new user and mount namespaces, but the pid namespace it created applies to
//! its children, so its first child is pid 1 there. It forwards SIGINT,
//! SIGTERM and SIGHUP to pid 1 and exits with its status.
//!
//! pid 1 runs the build. As init it must reap orphans (a hook's daemon is
//! re-parented to it), and since the kernel only delivers signals to an init
//! that handles them, it handles SIGINT/SIGTERM/SIGHUP by killing everything
//! else in the namespace. When pid 1 exits, the kernel kills whatever is
//! left (pid_namespaces(7)).
#![allow(unsafe_code)] // pre_exec; each use says why it is sound

use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use crate::ns::{wait_for_maps, SandboxError};

/// The environment variable naming pid 1's end of the lifeline pipe.
const LIFELINE_ENV: &str = "DIB_SANDBOX_LIFELINE_FD";

/// Signals forwarded to, and handled by, the build.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

fn nix_err(what: &str) -> impl FnOnce(Errno) -> SandboxError + '_ {
    move |e| SandboxError::Io {
        what: what.to_string(),
        source: e.into(),
    }
}

/// Ask for SIGKILL when the parent dies, so no part of a build outlives dib,
/// and start pid 1 with the stop signals blocked: init ignores signals it has
/// no handler for, so one arriving before [`become_init`] installs its
/// handlers would be lost. Blocked, it stays pending until then.
fn start_as_init(cmd: &mut Command, lifeline: RawFd) {
    // SAFETY: prctl, sigemptyset, sigaddset, sigprocmask and fcntl are
    // async-signal-safe; the closure captures one integer and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(lifeline, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in STOP_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Unblock the stop signals (after their handlers exist).
fn unblock_stop_signals() -> Result<(), SandboxError> {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in STOP_SIGNALS {
        if let Ok(sig) = Signal::try_from(sig) {
            set.add(sig);
        }
    }
    set.thread_unblock()
        .map_err(nix_err("unblocking stop signals"))
}

/// Run in the supervisor: wait for the id maps, then run `cmd` as pid 1 of
/// the build's pid namespace and return its exit code (128 + signal if it
/// was killed).
pub fn supervise(mut cmd: Command) -> Result<i32, SandboxError> {
    // This process exec'd before its ids were mapped, so it holds no
    // capabilities in the namespace; pid 1 is exec'd as uid 0 and gets them.
    // Having unshared a pid namespace, this process cannot start threads
    // (clone(2): EINVAL), so signals are handled in this thread: stop
    // signals are forwarded, SIGCHLD means pid 1 may have exited. They are
    // registered first, so neither a stop signal from dib nor a SIGCHLD is
    // missed.
    let mut signals = signal_hook::iterator::Signals::new(STOP_SIGNALS.iter().chain([&SIGCHLD]))
        .map_err(|source| SandboxError::Io {
            what: "installing signal handlers".into(),
            source,
        })?;
    wait_for_maps()?;
    // The lifeline: pid 1 holds the read end, this process the write end
    // (never written). If this process dies before pid 1 has re-armed its
    // parent-death signal (exec cleared it when pid 1 gained capabilities),
    // pid 1 sees the hang-up and exits.
    let (life_r, life_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(nix_err("creating the lifeline pipe"))?;
    start_as_init(&mut cmd, life_r.as_raw_fd());
    cmd.env(LIFELINE_ENV, life_r.as_raw_fd().to_string());
    let mut child = cmd.spawn().map_err(|source| SandboxError::Io {
        what: "starting the build's pid 1".into(),
        source,
    })?;
    drop(life_r);
    let _lifeline = life_w;
    let pid = Pid::from_raw(child.id() as i32);
    let waiting = |e| SandboxError::Io {
        what: "waiting for the build".into(),
        source: e,
    };
    loop {
        if let Some(status) = child.try_wait().map_err(waiting)? {
            return Ok(exit_code(status));
        }
        for sig in signals.wait() {
            if sig != SIGCHLD {
                if let Ok(sig) = Signal::try_from(sig) {
                    let _ = kill(pid, sig);
                }
            }
        }
    }
}

/// Forwards SIGINT, SIGTERM and SIGHUP to one process until closed.
#[derive(Debug)]
pub struct Forwarder {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    pub fn close(mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stop signals caught from now on, to be forwarded once there is a process
/// to forward them to (a signal that arrives in between is kept).
#[derive(Debug)]
pub struct Caught(signal_hook::iterator::Signals);

/// Start catching SIGINT, SIGTERM and SIGHUP.
pub fn catch_stop_signals() -> Result<Caught, SandboxError> {
    signal_hook::iterator::Signals::new(STOP_SIGNALS)
        .map(Caught)
        .map_err(|source| SandboxError::Io {
            what: "installing signal handlers".into(),
            source,
        })
}

impl Caught {
    /// Forward what was caught, and what comes, to `pid` until closed.
    pub fn forward_to(self, pid: u32) -> Forwarder {
        let mut signals = self.0;
        let pid = Pid::from_raw(pid as i32);
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            for sig in signals.forever() {
                if let Ok(sig) = Signal::try_from(sig) {
                    // The process may already be gone; nothing to do then.
                    let _ = kill(pid, sig);
                }
            }
        });
        Forwarder {
            handle,
            thread: Some(thread),
        }
    }
}

/// The shell convention: the exit code, or 128 + the signal that killed it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Run in pid 1, first thing: keep mounts private to the build, give it its
/// own /proc, die with the supervisor, and watch for stop signals. The
/// returned value becomes non-zero (the signal number) once a stop signal
/// arrived; by then every other process of the build has been killed.
pub fn become_init() -> Result<Arc<AtomicI32>, SandboxError> {
    if std::process::id() != 1 {
        return Err(SandboxError::Io {
            what: "this command runs only as pid 1 of a build".into(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    // SAFETY: prctl with these arguments only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(SandboxError::Io {
            what: "setting the parent-death signal".into(),
            source: io::Error::last_os_error(),
        });
    }
    check_lifeline()?;
    // Not dumpable: reaching this process through /proc/1/root, /proc/1/fd
    // or ptrace then takes CAP_SYS_PTRACE in this user namespace, which no
    // hook has (hooks run in the box's own user namespace, crate::buildbox).
    // SAFETY: prctl with these arguments only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(SandboxError::Io {
            what: "making the build's pid 1 undumpable".into(),
            source: io::Error::last_os_error(),
        });
    }
    close_inherited_fds();
    // Supplementary groups of the host user are unmapped here; drop them.
    nix::unistd::setgroups(&[]).map_err(nix_err("dropping supplementary groups in the build"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err("making the build's mounts private"))?;
    mount_proc(Path::new("/proc"), false)?;
    let stopped = Arc::new(AtomicI32::new(0));
    let flag = stopped.clone();
    let mut signals =
        signal_hook::iterator::Signals::new(STOP_SIGNALS).map_err(|source| SandboxError::Io {
            what: "installing signal handlers".into(),
            source,
        })?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            flag.store(sig, Ordering::SeqCst);
            kill_all();
        }
    });
    // Handlers exist: a signal that arrived since exec is delivered now.
    unblock_stop_signals()?;
    Ok(stopped)
}

/// In pid 1, right after re-arming the parent-death signal: if the
/// supervisor already died (closing its end of the lifeline), stop now.
fn check_lifeline() -> Result<(), SandboxError> {
    let Some(fd) = std::env::var(LIFELINE_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return Ok(());
    };
    std::env::remove_var(LIFELINE_ENV);
    // SAFETY: the supervisor left exactly this descriptor open across exec
    // and named it in the environment; nothing else here owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::empty(),
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)
        .map_err(nix_err("checking the lifeline"))?;
    let hung_up = ready > 0
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
    if hung_up {
        return Err(SandboxError::Io {
            what: "the build's supervisor is gone".into(),
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        });
    }
    Ok(())
}

/// Mark every descriptor above stderr close-on-exec, so descriptors that
/// whoever started dib left open never reach the hooks. On kernels without
/// close_range(2) (before 5.11) they stay open, which is harmless to dib.
fn close_inherited_fds() {
    /// `CLOSE_RANGE_CLOEXEC` (linux/close_range.h).
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on this
    // process's descriptors; none is closed under anyone's feet.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
}

/// Mount a proc instance for this pid namespace at `at`.
pub fn mount_proc(at: &Path, read_only: bool) -> Result<(), SandboxError> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(Some("proc"), at, Some("proc"), flags, None::<&str>).map_err(|e| SandboxError::Io {
        what: format!("mounting proc on {}", at.display()),
        source: e.into(),
    })
}

/// From pid 1: SIGKILL every other process in the namespace.
pub fn kill_all() {
    // kill(-1) from init reaches every process in its pid namespace but
    // itself. ESRCH just means there was nobody left.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
}

/// From pid 1: kill every other process and reap them all.
pub fn kill_all_and_reap() {
    kill_all();
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: all gone
        }
    }
}

/// From pid 1, when no child it waits for is running: reap exited orphans.
pub fn reap_zombies() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
