//! The chroot of the in-target phases: its mounts (from `dib-sandbox`) and
//! the host's resolv.conf in the tree while they run.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use dib_sandbox::mounts::ChrootMounts;

use super::environment::Dirs;

/// The chroot's mounts plus the resolv.conf swap, for a run of chroot phases.
#[derive(Debug)]
pub struct InTarget {
    mounts: ChrootMounts,
    resolv: ResolvConf,
}

impl InTarget {
    pub fn enter(
        dirs: &Dirs,
        image: Option<&Path>,
        binds: &[dib_sandbox::mounts::ImageBind],
        cache: &Path,
    ) -> Result<InTarget> {
        // Only real directories under the cache: an element's hooks write
        // there, and a symlink must not lead the bind elsewhere.
        let mut checked = Vec::new();
        for b in binds {
            if b.writable || b.from.is_dir() {
                let from = super::boxing::cache_dir_in_place(cache, &b.from)?;
                checked.push(dib_sandbox::mounts::ImageBind { from, ..b.clone() });
            }
        }
        let binds = checked.as_slice();
        let mounts = ChrootMounts::setup(&dirs.mnt, &dirs.hooks, image, binds)
            .context("preparing the chroot")?;
        let resolv = ResolvConf::install(&dirs.mnt)?;
        Ok(InTarget { mounts, resolv })
    }

    pub fn leave(self) -> Result<()> {
        self.resolv.restore()?;
        self.mounts.close().context("undoing the chroot's mounts")?;
        Ok(())
    }
}

/// The host's resolv.conf in the tree for the build, the image's own put
/// back afterwards.
#[derive(Debug)]
struct ResolvConf {
    path: PathBuf,
    saved: Option<PathBuf>,
    active: bool,
}

impl ResolvConf {
    fn install(root: &Path) -> Result<ResolvConf> {
        // A symlinked /etc would send these writes outside the tree.
        let etc = dib_sandbox::mounts::inside(root, "etc")
            .context("installing the host's resolv.conf")?;
        let path = etc.join("resolv.conf");
        if !etc.is_dir() {
            return Ok(ResolvConf {
                path,
                saved: None,
                active: false,
            });
        }
        let saved = etc.join(".resolv.conf.dib-saved");
        let had = fs::symlink_metadata(&path).is_ok();
        if had {
            fs::rename(&path, &saved).with_context(|| format!("saving {path:?}"))?;
        }
        let host = fs::read("/etc/resolv.conf").unwrap_or_default();
        fs::write(&path, host).with_context(|| format!("writing {path:?}"))?;
        Ok(ResolvConf {
            path,
            saved: had.then_some(saved),
            active: true,
        })
    }

    /// Put the image's own resolv.conf back. If a hook replaced the
    /// build's copy with a symlink (a systemd-resolved stub, say), that is
    /// the image's intent and is kept, as DIB does; if a hook removed it,
    /// the original comes back; a regular file is the build's and goes.
    fn restore(mut self) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        // The tree may have changed since install: never follow a new
        // symlinked /etc out of it.
        let root = self
            .path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        dib_sandbox::mounts::inside(&root, "etc").context("restoring the image's resolv.conf")?;
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Some(saved) = &self.saved {
                    fs::remove_file(saved).with_context(|| format!("removing {saved:?}"))?;
                }
                return Ok(());
            }
            Ok(_) => {
                if self.saved.is_none() {
                    fs::remove_file(&self.path)
                        .with_context(|| format!("removing the build's {:?}", self.path))?;
                }
            }
            Err(_) => {}
        }
        if let Some(saved) = &self.saved {
            fs::rename(saved, &self.path).with_context(|| format!("restoring {:?}", self.path))?;
        }
        Ok(())
    }
}
