//! The mounts a chroot phase sees: /proc and /sys read-only, a minimal /dev
//! (bind-mounted host nodes, since mknod is not allowed in a user namespace,
//! a fresh devpts and a /dev/shm tmpfs), and the hook tree read-only at
//! /tmp/in_target.d. Also the tmpfs the build directory may live in.
//!
//! [`ChrootMounts`] undoes what it did in reverse order on `close()` (or, as a
//! fallback, on drop), so the tree is plain files again for the outputs.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::init::mount_proc;
use crate::ns::SandboxError;

/// Host device nodes a build may use, bind-mounted into the chroot's /dev.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Where the hook tree appears inside the chroot (DIB's path).
pub const IN_TARGET: &str = "tmp/in_target.d";

fn err(what: String) -> impl FnOnce(nix::errno::Errno) -> SandboxError {
    move |e| SandboxError::Io {
        what,
        source: e.into(),
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { what, source }
}

/// Mount a tmpfs at `at` (for the build directory).
pub fn mount_tmpfs(at: &Path, mode: u32) -> Result<(), SandboxError> {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode={mode:o}").as_str()),
    )
    .map_err(err(format!("mounting a tmpfs on {}", at.display())))
}

/// Bind `from` onto `to`.
pub fn bind(from: &Path, to: &Path, recursive: bool) -> Result<(), SandboxError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(from), to, None::<&str>, flags, None::<&str>).map_err(err(format!(
        "bind-mounting {} on {}",
        from.display(),
        to.display()
    )))
}

/// Make the bind mount at `at` read-only. The flags the kernel locks on a
/// mount inherited into a user namespace (nosuid, nodev, noexec, ...) must be
/// repeated in the remount, so they are read back first.
pub fn remount_read_only(at: &Path) -> Result<(), SandboxError> {
    let st = statvfs(at).map_err(err(format!("reading the mount flags of {}", at.display())))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    let f = st.flags();
    for (have, set) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(have) {
            flags |= set;
        }
    }
    mount(None::<&str>, at, None::<&str>, flags, None::<&str>)
        .map_err(err(format!("making {} read-only", at.display())))
}

/// `root/rel`, refusing any existing component that is not a real directory
/// (a symlink could lead outside `root`). Missing components are fine: the
/// caller creates them.
pub fn inside(root: &Path, rel: &str) -> Result<PathBuf, SandboxError> {
    let mut p = root.to_path_buf();
    for part in Path::new(rel).components() {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SandboxError::Io {
                    what: format!(
                        "the image's /{} is not a directory (a symlink?); refusing to use it from outside the chroot",
                        p.strip_prefix(root).unwrap_or(&p).display()
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("reading {}", p.display()))(e)),
        }
    }
    Ok(p)
}

/// The chroot's mounts, undone in reverse order.
#[derive(Debug)]
pub struct ChrootMounts {
    target: PathBuf,
    mounted: Vec<PathBuf>,
    made_in_target: bool,
}

impl ChrootMounts {
    /// Prepare `target` for a chroot phase, with `hooks` visible read-only at
    /// /tmp/in_target.d.
    pub fn setup(target: &Path, hooks: &Path) -> Result<ChrootMounts, SandboxError> {
        let mut m = ChrootMounts {
            target: target.to_path_buf(),
            mounted: Vec::new(),
            made_in_target: false,
        };
        // On error, drop undoes what was done so far.
        m.mount_all(hooks)?;
        Ok(m)
    }

    /// `target/rel` as a directory, created if missing. Every component must
    /// be a real directory: mounts and writes follow symlinks, and this runs
    /// outside the chroot, so an image's `tmp -> /home/user` would otherwise
    /// point them at the host.
    fn dir(&self, rel: &str) -> Result<PathBuf, SandboxError> {
        let p = inside(&self.target, rel)?;
        fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        Ok(p)
    }

    fn mount_all(&mut self, hooks: &Path) -> Result<(), SandboxError> {
        let proc_dir = self.dir("proc")?;
        mount_proc(&proc_dir, true)?;
        self.mounted.push(proc_dir);

        let sys = self.dir("sys")?;
        bind(Path::new("/sys"), &sys, true)?;
        self.mounted.push(sys.clone());
        remount_read_only(&sys)?;

        let dev = self.dir("dev")?;
        mount(
            Some("dev"),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID,
            Some("mode=755,size=64k"),
        )
        .map_err(err(format!("mounting a tmpfs on {}", dev.display())))?;
        self.mounted.push(dev.clone());
        for node in DEV_NODES {
            let at = dev.join(node);
            fs::write(&at, b"").map_err(io(format!("creating {}", at.display())))?;
            bind(&Path::new("/dev").join(node), &at, false)?;
            self.mounted.push(at);
        }
        for (name, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            symlink(to, dev.join(name)).map_err(io(format!("linking {}/{name}", dev.display())))?;
        }
        let pts = dev.join("pts");
        fs::create_dir(&pts).map_err(io(format!("creating {}", pts.display())))?;
        mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        )
        .map_err(err(format!("mounting devpts on {}", pts.display())))?;
        self.mounted.push(pts);
        let shm = dev.join("shm");
        fs::create_dir(&shm).map_err(io(format!("creating {}", shm.display())))?;
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )
        .map_err(err(format!("mounting a tmpfs on {}", shm.display())))?;
        self.mounted.push(shm);

        self.made_in_target = !self.target.join(IN_TARGET).exists();
        let in_target = self.dir(IN_TARGET)?;
        bind(hooks, &in_target, true)?;
        self.mounted.push(in_target.clone());
        remount_read_only(&in_target)?;
        Ok(())
    }

    /// Undo every mount, innermost first, and remove /tmp/in_target.d.
    pub fn close(mut self) -> Result<(), SandboxError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), SandboxError> {
        let mut first_error = None;
        while let Some(at) = self.mounted.pop() {
            if let Err(e) = umount2(&at, MntFlags::MNT_DETACH) {
                first_error.get_or_insert(SandboxError::Io {
                    what: format!("unmounting {}", at.display()),
                    source: e.into(),
                });
            }
        }
        if self.made_in_target {
            self.made_in_target = false;
            let _ = fs::remove_dir(self.target.join(IN_TARGET));
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for ChrootMounts {
    fn drop(&mut self) {
        if !self.mounted.is_empty() {
            if let Err(e) = self.undo() {
                eprintln!("dib: warning: cleaning up the chroot's mounts: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_refuses_symlinks_and_files() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("real/sub")).unwrap();
        symlink("/etc", r.join("etc")).unwrap();
        fs::write(r.join("file"), "").unwrap();
        assert_eq!(inside(r, "real/sub").unwrap(), r.join("real/sub"));
        assert_eq!(
            inside(r, "real/missing/deeper").unwrap(),
            r.join("real/missing/deeper")
        );
        for bad in ["etc", "etc/x", "file/x"] {
            let err = inside(r, bad).unwrap_err().to_string();
            assert!(
                err.contains("is not a directory (a symlink?); refusing"),
                "{bad}: {err}"
            );
        }
    }
}
