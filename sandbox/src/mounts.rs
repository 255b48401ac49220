//! The mounts a chroot phase sees: /proc and /sys read-only, a minimal /dev
//! (bind-mounted host nodes, since mknod is not allowed in a user namespace,
//! a fresh devpts and a /dev/shm tmpfs), and the hook tree read-only at
//! /tmp/in_target.d. Also the tmpfs the build directory may live in.
//!
//! [`ChrootMounts`] undoes what it did in reverse order on `close()` (or, as a
//! fallback, on drop), so the tree is plain files again for the outputs.
#![allow(unsafe_code)] // mount_setattr(2) has no wrapper yet; the block says why it is sound

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
/// The directory in the chroot where the disk image file appears
/// (finalise.d writes the bootloader into it there).
pub const IMAGE_IN_TARGET: &str = "tmp/dib-image.d";
/// The disk image file's name there.
pub const IMAGE_FILE_IN_TARGET: &str = "tmp/dib-image.d/disk.raw";

fn err(what: String) -> impl FnOnce(nix::errno::Errno) -> SandboxError {
    move |e| SandboxError::Io {
        what,
        source: e.into(),
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { what, source }
}

/// Mount a new instance of `fstype` at `at`.
fn mount_new(fstype: &str, at: &Path, flags: MsFlags, data: &str) -> Result<(), SandboxError> {
    mount(Some(fstype), at, Some(fstype), flags, Some(data))
        .map_err(err(format!("mounting a {fstype} on {}", at.display())))
}

/// Mount a tmpfs at `at` (for the build directory).
pub fn mount_tmpfs(at: &Path, mode: u32) -> Result<(), SandboxError> {
    mount_new(
        "tmpfs",
        at,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        &format!("mode={mode:o}"),
    )
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

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
/// `MOUNT_ATTR_*` (linux/mount.h).
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// mount_setattr(2) on the detached or attached mount `fd` itself: set
/// the flags `set`, clear `clear`, and idmap it into `userns` if given.
pub fn change_mount_attrs(
    fd: std::os::fd::BorrowedFd<'_>,
    set: u64,
    clear: u64,
    userns: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH (the fd
    // itself), and a properly laid out `struct mount_attr` whose size is
    // passed; both outlive the call, and the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Make the mount at `at` and every mount below it read-only. A plain
/// remount only reaches the top of a recursive bind (/sys/fs/cgroup would
/// stay writable), so this uses mount_setattr(2) with AT_RECURSIVE (Linux
/// 5.12), falling back to the top-level remount on older kernels.
pub fn read_only_recursive(at: &Path) -> Result<(), SandboxError> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(at.as_os_str().as_bytes()).map_err(|_| SandboxError::Io {
        what: format!("{} contains a NUL byte", at.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a properly
    // laid out `struct mount_attr` whose size is passed; both outlive the
    // call, and the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        return remount_read_only(at);
    }
    Err(SandboxError::Io {
        what: format!("making {} and the mounts below it read-only", at.display()),
        source: e,
    })
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path, mountinfo: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first; a path listed twice has two mounts stacked there and
    // needs two unmounts, so duplicates stay.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`
/// (proc_pid_mountinfo(5)): the text with them undone.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount everything mounted below `dir` (not `dir` itself), deepest first:
/// what the build's hooks mounted and never unmounted, and the build's own
/// bind of the tree. Done before the build directory is deleted, so the
/// deletion cannot reach through a bind mount into a host directory.
pub fn unmount_all_under(dir: &Path) -> Result<(), SandboxError> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading /proc/self/mountinfo".into()))?;
    let mut first_error = None;
    for at in mounts_under(dir, &info) {
        if at == dir {
            continue;
        }
        if let Err(e) = umount2(&at, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            first_error.get_or_insert(SandboxError::Io {
                what: format!("unmounting {}", at.display()),
                source: e.into(),
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A host directory shown in the image during a chroot phase.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageBind {
    pub from: PathBuf,
    /// Where, relative to the image's root.
    pub at: String,
    pub writable: bool,
}

/// The chroot's mounts, undone in reverse order.
#[derive(Debug)]
pub struct ChrootMounts {
    target: PathBuf,
    mounted: Vec<PathBuf>,
    /// Mount points this made in the tree, removed afterwards.
    made: Vec<String>,
}

impl ChrootMounts {
    /// Prepare `target` for a chroot phase, with `hooks` visible read-only at
    /// /tmp/in_target.d and, if given, the file `image` read-write at
    /// /tmp/dib-image.d/disk.raw. Only the file is bound: a file mounted
    /// over cannot be renamed or unlinked, so a hook can write the image but
    /// not swap it for a symlink to something dib would then write to.
    pub fn setup(
        target: &Path,
        hooks: &Path,
        image: Option<&Path>,
        binds: &[ImageBind],
    ) -> Result<ChrootMounts, SandboxError> {
        let mut m = ChrootMounts {
            target: target.to_path_buf(),
            mounted: Vec::new(),
            made: Vec::new(),
        };
        // On error, drop undoes what was done so far.
        m.mount_all(hooks)?;
        if let Some(image) = image {
            m.mount_point(IMAGE_IN_TARGET)?;
            let at = inside(&m.target, IMAGE_FILE_IN_TARGET)?;
            if fs::symlink_metadata(&at).is_err() {
                m.made.push(IMAGE_FILE_IN_TARGET.to_string());
            }
            fs::write(&at, b"").map_err(io(format!("creating {}", at.display())))?;
            bind(image, &at, false)?;
            m.mounted.push(at);
        }
        for b in binds {
            if !b.from.is_dir() {
                continue;
            }
            let at = m.mount_point(&b.at)?;
            bind(&b.from, &at, true)?;
            m.mounted.push(at.clone());
            if !b.writable {
                read_only_recursive(&at)?;
            }
        }
        Ok(m)
    }

    /// `target/rel` as a mount point, remembered for removal if made here.
    fn mount_point(&mut self, rel: &str) -> Result<PathBuf, SandboxError> {
        if !self.target.join(rel).exists() {
            // Each missing level, so that all of them go afterwards.
            let mut made = String::new();
            for part in rel.split('/').filter(|p| !p.is_empty()) {
                if !made.is_empty() {
                    made.push('/');
                }
                made.push_str(part);
                if !self.target.join(&made).exists() {
                    self.made.push(made.clone());
                }
            }
        }
        self.dir(rel)
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
        read_only_recursive(&sys)?;

        let dev = self.dir("dev")?;
        mount_new("tmpfs", &dev, MsFlags::MS_NOSUID, "mode=755,size=64k")?;
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
        mount_new(
            "devpts",
            &pts,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        )?;
        self.mounted.push(pts);
        let shm = dev.join("shm");
        fs::create_dir(&shm).map_err(io(format!("creating {}", shm.display())))?;
        mount_new(
            "tmpfs",
            &shm,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=1777",
        )?;
        self.mounted.push(shm);

        let in_target = self.mount_point(IN_TARGET)?;
        bind(hooks, &in_target, true)?;
        self.mounted.push(in_target.clone());
        read_only_recursive(&in_target)?;
        Ok(())
    }

    /// Undo every mount, innermost first, and remove /tmp/in_target.d.
    pub fn close(mut self) -> Result<(), SandboxError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), SandboxError> {
        let mut first_error = None;
        while let Some(at) = self.mounted.pop() {
            // NOFOLLOW: a hook may have replaced a mount point's parent with
            // a symlink; the mount stays in our namespace rather than
            // unmounting something else.
            if let Err(e) = umount2(&at, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                first_error.get_or_insert(SandboxError::Io {
                    what: format!("unmounting {}", at.display()),
                    source: e.into(),
                });
            }
        }
        // Innermost first (the image file before its directory).
        while let Some(rel) = self.made.pop() {
            // Only if the path still leads to a real file or directory in
            // the tree (`inside` takes directories only: check the parent).
            let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
            if let Ok(p) = inside(&self.target, parent).map(|d| d.join(name)) {
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        let _ = fs::remove_dir(p);
                    }
                    Ok(m) if m.is_file() => {
                        let _ = fs::remove_file(p);
                    }
                    _ => {}
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for ChrootMounts {
    fn drop(&mut self) {
        if !self.mounted.is_empty() {
            if let Err(e) = self.undo() {
                let e: &dyn std::error::Error = &e;
                let causes: Vec<String> = std::iter::successors(Some(e), |e| e.source())
                    .map(ToString::to_string)
                    .collect();
                eprintln!(
                    "dib: warning: cleaning up the chroot's mounts: {}",
                    causes.join(": ")
                );
            }
        }
    }
}

/// Attach the detached mount `mnt` (from dib-helper) at `at`.
pub fn attach_detached(mnt: std::os::fd::BorrowedFd<'_>, at: &Path) -> Result<(), SandboxError> {
    rustix::mount::move_mount(
        mnt,
        "",
        rustix::fs::CWD,
        at,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| SandboxError::Io {
        what: format!("mounting a filesystem at {}", at.display()),
        source: e.into(),
    })
}

/// Unmount what is mounted at `at`.
pub fn unmount(at: &Path) -> Result<(), SandboxError> {
    umount2(at, MntFlags::empty()).map_err(err(format!("unmounting {}", at.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_deepest_first() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    30 25 0:40 / /b/built rw - tmpfs t rw\n\
                    31 30 0:40 / /b/mnt rw - tmpfs t rw\n\
                    32 31 0:41 / /b/mnt/var/cache/x\\040y rw - ext4 d rw\n\
                    33 25 0:42 / /bb rw - tmpfs t rw\n";
        assert_eq!(
            mounts_under(Path::new("/b"), info),
            [
                PathBuf::from("/b/mnt/var/cache/x y"),
                PathBuf::from("/b/built"),
                PathBuf::from("/b/mnt")
            ]
        );
    }

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
