//! The disk image's steps in pid 1: lay it out from the tree (after
//! block-device.d), mount its filesystems for a backend that makes them
//! first (after pre-finalise.d), and write its filesystems (after
//! cleanup.d). The backend does the image's part; this moves the tree.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Instant;

use anyhow::{Context as _, Result};
use dib_sandbox::mounts::{bind, inside, unmount, unmount_all_under};

use super::executor::{Build, Disk, Stop};
use super::outputs::Unnamed;
use crate::blockdev::backend::Fill;
use crate::blockdev::image::{identity, measure};
use crate::blockdev::layout::{self, human};
use crate::config::OutputType;

/// The image file's name in its directory.
const IMAGE_FILE: &str = "disk.raw";

impl Build<'_> {
    /// Lay out the disk image from the tree as it is now, create the image
    /// file, and write `/etc/fstab` (and the mount points) into the tree,
    /// for finalise.d to see.
    pub fn lay_out_disk(&mut self) -> Result<(), Stop> {
        let disk = self
            .job
            .disk
            .as_ref()
            .context("no block-device configuration (internal error)")?;
        let started = Instant::now();
        let points: Vec<String> = disk
            .config
            .filesystems
            .iter()
            .filter_map(|f| f.mount_point.clone())
            .collect();
        let usage = measure(&self.dirs.tree, &points).context("measuring the tree")?;
        let mut ids: Box<dyn layout::Ids> = match &disk.uuid_seed {
            Some(seed) => Box::new(layout::SeededIds::new(seed)),
            None => Box::new(layout::RandomIds),
        };
        let layout = layout::plan(&disk.config, &disk.options, &usage, ids.as_mut())
            .with_context(|| format!("laying out the image ({})", disk.origin))?;
        let dir = self.dirs.build.join("image");
        fs::create_dir(&dir).with_context(|| format!("creating {dir:?}"))?;
        let file = dir.join(IMAGE_FILE);
        let mut backend = disk.backend.open();
        backend.create(&file, &layout)?;
        let identity = identity(&file)?;
        let tree = &self.dirs.tree;
        let etc = inside(tree, "etc").context("writing /etc/fstab")?;
        fs::create_dir_all(&etc).with_context(|| format!("creating {etc:?}"))?;
        let fstab = etc.join("fstab");
        // Replaced, not written through: a symlinked fstab must not lead out.
        let _ = fs::remove_file(&fstab);
        fs::write(&fstab, layout.fstab()).with_context(|| format!("writing {fstab:?}"))?;
        fs::set_permissions(&fstab, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod {fstab:?}"))?;
        for p in layout
            .filesystems
            .iter()
            .filter_map(|f| f.mount_point.as_deref())
        {
            let d = inside(tree, p.trim_start_matches('/'))
                .with_context(|| format!("creating the mount point {p}"))?;
            fs::create_dir_all(&d).with_context(|| format!("creating {d:?}"))?;
        }
        let mut summary = format!(
            "block device ({}): {} image, {}",
            disk.origin,
            human(layout.size),
            layout.label.map_or("no partition table", |l| l.as_str())
        );
        for f in &layout.filesystems {
            summary.push_str(&format!(
                "; {} {} {} UUID {}",
                f.mount_point.as_deref().unwrap_or("-"),
                f.kind,
                human(f.size),
                f.uuid
            ));
        }
        self.log.line(&summary);
        self.took("laid out the image", started);
        self.disk = Some(Disk {
            layout,
            backend,
            identity,
            file,
            mounted: false,
            raw: None,
        });
        Ok(())
    }

    /// Make and mount the image's filesystems at `image/root` and copy the
    /// tree in; from here on the build's tree (`TARGET_ROOT`,
    /// `TMP_MOUNT_PATH`) is the mounted image, as in DIB.
    pub fn mount_image(&mut self) -> Result<(), Stop> {
        let started = Instant::now();
        let root = self.dirs.build.join("image/root");
        let disk = self
            .disk
            .as_mut()
            .context("no disk image was laid out (internal error)")?;
        fs::create_dir(&root).with_context(|| format!("creating {root:?}"))?;
        let device = disk
            .backend
            .mount_filesystems(&disk.file, &disk.layout, &root)?;
        disk.mounted = true;
        self.check_stopped()?;
        self.log
            .status("copying the tree into the image".to_string());
        let mnt = &self.dirs.mnt;
        // Whatever a hook left mounted in the tree stays out of the image.
        unmount_all_under(mnt)
            .context("unmounting what hooks left mounted under TMP_MOUNT_PATH")?;
        let mut cp = crate::tool::command("cp");
        cp.args(["-a", "--one-file-system"])
            .arg(self.dirs.tree.join("."))
            .arg(&root);
        crate::tool::run(cp, "copying the tree into the image", self.stopped)?;
        unmount(mnt).context("moving TMP_MOUNT_PATH to the image")?;
        bind(&root, mnt, true).context("moving TMP_MOUNT_PATH to the image")?;
        self.dirs.tree = root;
        self.took(
            &format!("{device} partitioned, formatted and filled"),
            started,
        );
        Ok(())
    }

    /// Complete the image file: its filesystems from the tree (or, when
    /// mounted, finished and detached).
    pub fn write_filesystems(&mut self) -> Result<(), Stop> {
        let started = Instant::now();
        self.log.status("writing the filesystems".to_string());
        let disk = self
            .disk
            .as_mut()
            .context("no disk image was laid out (internal error)")?;
        if identity(&disk.file)? != disk.identity {
            return Err(Stop::Failed(anyhow::anyhow!(
                "the disk image {:?} was replaced during the build (by a hook?)",
                disk.file
            )));
        }
        // With the offline backend and a raw output, the filesystems are
        // written straight into the raw output (an unnamed file beside
        // where it will be named), which gets the image file's partition
        // table and boot code first: the image's bytes are written once,
        // where they end up, and not copied again.
        let offline = self
            .job
            .disk
            .as_ref()
            .is_some_and(|d| matches!(d.backend, crate::blockdev::Backend::Offline));
        let raw_out = self.job.outputs.iter().find(|o| o.kind == OutputType::Raw);
        if let (Some(out), true, false) = (raw_out, offline, disk.mounted) {
            let raw = Unnamed::new(&out.path)?;
            super::outputs::copy_sparse(
                &disk.file,
                &raw.proc_path(),
                "giving the raw output the image's partition table",
                self.stopped,
            )?;
            disk.file = raw.proc_path();
            disk.raw = Some(raw);
        }
        if disk.mounted {
            // The recursive bind at TMP_MOUNT_PATH holds the mounts too.
            let mnt = &self.dirs.mnt;
            unmount_all_under(mnt)
                .and_then(|()| unmount(mnt))
                .context("unmounting TMP_MOUNT_PATH")?;
        }
        disk.backend.write_filesystems(Fill {
            file: &disk.file,
            layout: &disk.layout,
            tree: &self.dirs.tree,
            work: &self.dirs.build,
            stop: self.stopped,
            epoch: self.job.source_date_epoch,
        })?;
        self.took("wrote the filesystems", started);
        Ok(())
    }
}
