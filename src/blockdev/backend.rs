//! The seam between a build and the code that makes its disk image: the
//! [`Backend`] a build asked for (plain data, in the job) and the
//! [`DiskBackend`] that does the work in pid 1. The offline backend writes
//! everything into the image file itself; the helper backend has
//! dib-helper attach the file, partition it and make its filesystems, and
//! mounts them so the last phases run on the real filesystems.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::layout::Layout;

/// Which backend builds a disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// No privilege at all: the image written as a file.
    Offline,
    /// dib-helper, at this socket.
    Helper { socket: PathBuf },
}

impl Backend {
    /// Whether the image's filesystems are made and mounted before
    /// finalise.d (and the tree moved into them), as DIB's are.
    pub fn mounts_filesystems(&self) -> bool {
        matches!(self, Backend::Helper { .. })
    }

    /// The backend's worker, for one image.
    pub fn open(&self) -> Box<dyn DiskBackend> {
        match self {
            Backend::Offline => Box::new(super::offline::Offline),
            Backend::Helper { socket } => Box::new(super::helper::Helper::new(socket)),
        }
    }
}

/// What pid 1 asks of a backend, in build order: [`create`] the image file
/// once the layout is planned; [`mount_filesystems`] after pre-finalise.d
/// (only for a backend whose [`Backend::mounts_filesystems`] says so); and
/// [`write_filesystems`] after cleanup.d, which leaves the image complete.
///
/// [`create`]: DiskBackend::create
/// [`mount_filesystems`]: DiskBackend::mount_filesystems
/// [`write_filesystems`]: DiskBackend::write_filesystems
pub trait DiskBackend: std::fmt::Debug {
    /// Make the image file at `file`, `layout.size` bytes.
    fn create(&mut self, file: &Path, layout: &Layout) -> Result<()>;

    /// Make the image's filesystems and mount them under `root` (empty).
    /// Returns what to call the device in messages (`dib-helper:
    /// /dev/loop0`).
    fn mount_filesystems(&mut self, file: &Path, layout: &Layout, root: &Path) -> Result<String> {
        let _ = (file, layout, root);
        anyhow::bail!("{self:?} mounts no filesystems (internal error)")
    }

    /// Put the tree's files into the image's filesystems (or, once
    /// mounted, finish them), leaving the image file complete.
    fn write_filesystems(&mut self, image: Fill<'_>) -> Result<()>;
}

/// What [`DiskBackend::write_filesystems`] works with.
#[derive(Debug, Clone, Copy)]
pub struct Fill<'a> {
    /// The image file.
    pub file: &'a Path,
    pub layout: &'a Layout,
    /// The final tree; it may be spent afterwards.
    pub tree: &'a Path,
    /// A directory of the build the backend may use.
    pub work: &'a Path,
    /// Set by a stop signal: host tools are killed at once.
    pub stop: &'a AtomicI32,
    /// `SOURCE_DATE_EPOCH`: filesystems made the same each time (their
    /// times this, their hash seeds their UUIDs).
    pub epoch: Option<u64>,
}
