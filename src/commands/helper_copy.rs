//! `dib-helper-copy FS IMAGE DEST`: sysprep's extract-image, in a root.d
//! hook, for a cloud image whose root filesystem only root can mount
//! (xfs). dib-helper attaches the filesystem image read-only and mounts it
//! idmapped into the build's user namespace (owners as the image has
//! them, to the build's root); the mount is attached in the hook's own
//! mount namespace for as long as `cp -a` copies it into DEST, then
//! unmounted and the loop device detached.

use std::fs::File;
use std::os::fd::AsFd as _;
use std::process::Command;

use anyhow::{anyhow, bail, Context as _, Result};
use dib_sandbox::client::{self, Client};
use dib_sandbox::mkfs::FsType;
use dib_sandbox::mounts::{attach_detached, unmount};

use crate::cli::HelperCopyArgs;

pub fn run(args: &HelperCopyArgs) -> Result<()> {
    let fs = match args.fs.as_str() {
        "xfs" => FsType::Xfs,
        other => bail!(
            "dib-helper-copy copies xfs filesystems, not {other:?} (ext2/3/4 are read without \
             dib-helper)"
        ),
    };
    if !args.dest.is_dir() {
        bail!("the destination {} is not a directory", args.dest.display());
    }
    let image = File::open(&args.image)
        .with_context(|| format!("opening the filesystem image {}", args.image.display()))?;
    let socket = client::socket_path();
    let helper = Client::connect(&socket).map_err(|e| {
        anyhow!(
            "{e}: an {} filesystem can be read only through dib-helper; ask an admin to run it \
             for you (sudo scripts/start-helper, docs/block-devices.md) and set {} to its socket",
            args.fs,
            client::SOCKET_ENV
        )
    })?;
    let (handle, device, _) = helper
        .attach_loop(image.as_fd(), true)
        .with_context(|| format!("attaching {} read-only", args.image.display()))?;
    let userns = File::open("/proc/self/ns/user").context("opening this user namespace's fd")?;
    let mnt = helper
        .mount_idmapped(handle, 0, fs, userns.as_fd())
        .with_context(|| format!("mounting the {} filesystem of {device}", args.fs))?;
    let dir = tempfile::Builder::new()
        .prefix("dib-helper-copy.")
        .tempdir()
        .context("a directory to mount the filesystem at")?;
    attach_detached(mnt.as_fd(), dir.path())?;
    // The mount is in the tree now; its fd would keep it busy.
    drop(mnt);
    let copied = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(dir.path().join("."))
        .arg(&args.dest)
        .status();
    // Unmounted and detached whatever the copy did.
    let unmounted = unmount(dir.path());
    let detached = helper.detach(handle);
    let status = copied.context("running cp")?;
    if !status.success() {
        bail!(
            "copying the files of {} into {} failed ({status})",
            args.image.display(),
            args.dest.display()
        );
    }
    unmounted?;
    detached.with_context(|| format!("detaching {device}"))?;
    Ok(())
}
