//! The helper backend: dib-helper (root) attaches the image file to a loop
//! device, writes the partition table, makes the filesystems and hands each
//! one back as an idmapped detached mount; pid 1 (in the build's user
//! namespace) mounts them into its own mount namespace after
//! pre-finalise.d, copies the tree in, and finalise.d and cleanup.d run on
//! the real filesystems, as in DIB.

use std::fs::{self, File};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;

use anyhow::{Context as _, Result};
use dib_sandbox::client::Client;
use dib_sandbox::mounts::{attach_detached, inside, mount_tmpfs, unmount};
use dib_sandbox::proto::{ErrorKind, Handle};

use super::backend::{DiskBackend, Fill};
use super::config::FsType;
use super::layout::{Layout, PlacedFs};

/// The helper backend: the socket, and the image once attached.
#[derive(Debug)]
pub struct Helper {
    socket: PathBuf,
    attached: Option<Attached>,
}

impl Helper {
    pub fn new(socket: &Path) -> Helper {
        Helper {
            socket: socket.to_path_buf(),
            attached: None,
        }
    }
}

impl DiskBackend for Helper {
    /// The file only: dib-helper writes the partition table onto the
    /// loop device, after checking it against the device.
    fn create(&mut self, file: &Path, layout: &Layout) -> Result<()> {
        super::image::create_file(file, layout)?;
        Ok(())
    }

    fn mount_filesystems(&mut self, file: &Path, layout: &Layout, root: &Path) -> Result<String> {
        let image = File::options()
            .read(true)
            .write(true)
            .open(file)
            .with_context(|| format!("opening {file:?}"))?;
        let attached = self.attached.insert(attach(&self.socket, &image, layout)?);
        attached.mount_all(layout, root)?;
        Ok(format!("dib-helper: {}", attached.device))
    }

    /// The tree is already in the mounted filesystems: write what was
    /// staged, unmount and detach.
    fn write_filesystems(&mut self, image: Fill<'_>) -> Result<()> {
        self.attached
            .take()
            .context("the image was never attached through dib-helper (internal error)")?
            .finish(image.file, image.stop)
    }
}

/// The image attached through the helper, its filesystems made.
#[derive(Debug)]
pub struct Attached {
    client: Client,
    handle: Handle,
    /// The loop device's name, for messages.
    pub device: String,
    /// Where the filesystems are mounted, in mount order.
    mounted: Vec<PathBuf>,
    /// Filesystems staged in a tmpfs, written with mtools at the end.
    staged: Vec<(PlacedFs, PathBuf)>,
}

/// Attach `image` (the file made for `layout`) through the helper at
/// `socket`, partition it and make its filesystems.
pub fn attach(socket: &Path, image: &File, layout: &Layout) -> Result<Attached> {
    let client = Client::connect(socket)?;
    let (handle, device, size) = client
        .attach_loop(image.as_fd(), false)
        .context("attaching the image to a loop device")?;
    anyhow::ensure!(
        size == layout.size,
        "the loop device {device} has {size} bytes where the image has {}",
        layout.size
    );
    if let Some(t) = layout.table() {
        client
            .write_partitions(handle, &t)
            .with_context(|| format!("partitioning {device}"))?;
    }
    for fs in &layout.filesystems {
        let spec = fs
            .mkfs_spec()
            .with_context(|| format!("dib cannot make {} filesystems yet", fs.kind))?;
        client
            .mkfs(handle, fs.partition.unwrap_or(0), &spec)
            .with_context(|| format!("making the {} filesystem '{}'", fs.kind, fs.name))?;
    }
    Ok(Attached {
        client,
        handle,
        device,
        mounted: Vec::new(),
        staged: Vec::new(),
    })
}

impl Attached {
    /// Mount every filesystem with a mount point under `root`, parents
    /// first. Called in pid 1: the mounts are idmapped into its user
    /// namespace and live in its mount namespace only.
    pub fn mount_all(&mut self, layout: &Layout, root: &Path) -> Result<()> {
        let userns =
            File::open("/proc/self/ns/user").context("opening this user namespace's fd")?;
        let mut fss: Vec<&PlacedFs> = layout
            .filesystems
            .iter()
            .filter(|f| f.mount_point.is_some() && f.kind != FsType::Swap)
            .collect();
        fss.sort_by_key(|f| f.mount_point.as_deref().map_or(0, |p| p.len()));
        for fs in fss {
            let point = fs.mount_point.as_deref().unwrap_or("/");
            let dir = inside(root, point.trim_start_matches('/'))
                .with_context(|| format!("finding {point} in the image"))?;
            fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
            let spec = fs.mkfs_spec().context("a filesystem without mkfs")?;
            match self.client.mount_idmapped(
                self.handle,
                fs.partition.unwrap_or(0),
                spec.fs,
                userns.as_fd(),
            ) {
                Ok(mnt) => {
                    attach_detached(mnt.as_fd(), &dir)
                        .with_context(|| format!("mounting {point} at {dir:?}"))?;
                }
                Err(e) if e.kind() == Some(ErrorKind::Unsupported) => {
                    tracing::info!("{e}: {point} is staged and written with mtools");
                    mount_tmpfs(&dir, 0o755).with_context(|| format!("staging {point}"))?;
                    self.staged.push((fs.clone(), dir.clone()));
                }
                Err(e) => return Err(e).with_context(|| format!("mounting {point} ({})", fs.kind)),
            }
            self.mounted.push(dir);
        }
        Ok(())
    }

    /// Write the staged filesystems, unmount everything, and detach the
    /// loop device (the helper flushes it first).
    pub fn finish(mut self, image: &Path, stop: &AtomicI32) -> Result<()> {
        for (fs, dir) in std::mem::take(&mut self.staged) {
            super::image::fill_fat(image, &fs, &dir, stop)?;
        }
        self.unmount()?;
        self.client
            .detach(self.handle)
            .with_context(|| format!("detaching {}", self.device))?;
        Ok(())
    }

    fn unmount(&mut self) -> Result<()> {
        while let Some(dir) = self.mounted.pop() {
            unmount(&dir).with_context(|| format!("unmounting {dir:?}"))?;
        }
        Ok(())
    }
}

impl Drop for Attached {
    /// On an error path: unmount what is left (the helper detaches the
    /// loop device when the connection closes).
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::debug!("cleaning up the image's mounts: {e:#}");
        }
    }
}
