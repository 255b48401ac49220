//! What each [`Step`] of the plan does. The bigger ones live with their
//! subject (hooks, package lists, the disk); the rest are here.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use super::executor::{Build, Stop};
use super::outputs::write_all;
use super::plan::Step;
use crate::config::OutputType;

impl Step {
    /// Do the step.
    pub fn run(self, b: &mut Build<'_>) -> Result<(), Stop> {
        match self {
            Step::Hooks {
                phase,
                shell_on_error,
            } => match b.run_hooks(phase) {
                Err(Stop::Failed(e)) if shell_on_error => {
                    b.shell(phase, "after-error")?;
                    Err(Stop::Failed(e))
                }
                r => r,
            },
            Step::Break { at, phase } => b.shell(phase, &at.label()),
            Step::PackageLists => Ok(b.write_package_lists()?),
            Step::ExtraPackages => b.install_extra_packages(),
            Step::CheckTree => check_tree(&b.dirs.tree),
            Step::LayOutDisk => b.lay_out_disk(),
            Step::MountImage => b.mount_image(),
            Step::TreeOutputs => b.tree_outputs(),
            Step::WriteFilesystems => b.write_filesystems(),
            Step::DiskOutputs => b.disk_outputs(),
            Step::Ramdisk => b.ramdisk(),
            Step::NameOutputs => {
                let done = std::mem::take(&mut b.finished);
                Ok(done.persist(b.job.output_settings.overwrite, b.log)?)
            }
            Step::Reproducible => b.reproducible(),
            Step::NoImage => {
                b.log
                    .line("no-final-image: the build ends here, without an image");
                Ok(())
            }
        }
    }
}

/// root.d must have made the tree.
fn check_tree(tree: &Path) -> Result<(), Stop> {
    let empty = fs::read_dir(tree)
        .with_context(|| format!("reading {tree:?}"))?
        .next()
        .is_none();
    if empty {
        return Err(Stop::Failed(anyhow::anyhow!(
            "Failed to deploy the root element: root.d left TARGET_ROOT empty; \
             an operating-system element's root.d must create the tree there"
        )));
    }
    Ok(())
}

impl Build<'_> {
    /// tar, tgz and squashfs from the final tree, unnamed until the end.
    fn tree_outputs(&mut self) -> Result<(), Stop> {
        let outputs: Vec<_> = self
            .job
            .outputs
            .iter()
            .filter(|o| !o.kind.from_disk())
            .collect();
        let s = &self.job.output_settings;
        let image = self.image_spec()?;
        let done = write_all(&outputs, &self.dirs.tree, None, s, &image, self.stopped)?;
        self.finished.extend(done);
        Ok(())
    }

    /// The disk outputs, converted from the complete image file.
    fn disk_outputs(&mut self) -> Result<(), Stop> {
        // The raw output is the image file itself when it was written so.
        let raw = self.disk.as_mut().and_then(|d| d.raw.take());
        let in_place = raw.is_some();
        let disk = self
            .disk
            .as_ref()
            .context("no disk image was laid out (internal error)")?;
        let outputs: Vec<_> = self
            .job
            .outputs
            .iter()
            .filter(|o| o.kind.from_disk() && !(in_place && o.kind == OutputType::Raw))
            .collect();
        if let Some(raw) = raw {
            let sums = self.job.output_settings.checksum;
            self.finished
                .extend(super::outputs::finish_output(raw, sums)?);
        }
        let started = Instant::now();
        self.log.status("converting the image".to_string());
        let s = &self.job.output_settings;
        let image = self.image_spec()?;
        let disk = Some(disk.file.as_path());
        let done = write_all(&outputs, &self.dirs.tree, disk, s, &image, self.stopped)?;
        self.took("converted the disk image", started);
        self.finished.extend(done);
        Ok(())
    }

    /// What container images say about themselves, from the environment
    /// hooks saw.
    fn image_spec(&self) -> anyhow::Result<crate::oci::write::Spec> {
        let sourced = self.sourced.borrow();
        let env = sourced.as_ref().unwrap_or(&self.job.env);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        crate::oci::write::Spec::new(env, &self.job.output_settings.docker_target, now)
            .context("the container image's configuration")
    }

    /// The finished tree made reproducible for `SOURCE_DATE_EPOCH`.
    fn reproducible(&mut self) -> Result<(), Stop> {
        let epoch = self
            .job
            .source_date_epoch
            .context("SOURCE_DATE_EPOCH is not set (internal error)")?;
        if self
            .job
            .disk
            .as_ref()
            .is_some_and(|d| d.uuid_seed.is_none())
        {
            self.log.line(
                "warning: SOURCE_DATE_EPOCH is set but DIB_IMAGE_UUID_SEED is not: the disk's \
                 and its filesystems' identifiers are random, so each image differs",
            );
        }
        let started = Instant::now();
        let n = super::reproducible::normalize(&self.dirs.tree, epoch)
            .context("making the tree reproducible")?;
        self.took(
            &format!(
                "made the tree reproducible for SOURCE_DATE_EPOCH={epoch} ({} paths, {} \
                 build identities dropped)",
                n.paths, n.identities
            ),
            started,
        );
        Ok(())
    }

    /// The kernel and initramfs of a ramdisk build, from the final tree.
    fn ramdisk(&mut self) -> Result<(), Stop> {
        let r = self
            .job
            .ramdisk
            .as_ref()
            .context("not a ramdisk build (internal error)")?;
        let started = Instant::now();
        self.log.status("assembling the ramdisk".to_string());
        let staging = self.dirs.build.join("ramdisk");
        let done = crate::ramdisk::write(r, &self.dirs.tree, &self.dirs.hooks, &staging)
            .context("building the ramdisk")?;
        self.took("assembled the ramdisk", started);
        self.finished.extend(done);
        Ok(())
    }
}
