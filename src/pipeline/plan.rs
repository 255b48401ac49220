//! pid 1's build as data: the [`Step`]s of a job, in order. [`plan`] is a
//! pure function of the job; the executor only runs the list, and each
//! step's work is in [`super::steps`].

use crate::config::Breakpoint;
use crate::phases::{Phase, PHASES};

use super::job::BuildJob;

/// One step of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run a phase's hooks; a failure opens the after-error shell when
    /// `break=after-error` asked for it.
    Hooks { phase: Phase, shell_on_error: bool },
    /// An interactive shell at a `break=` point, where that phase runs.
    Break { at: Breakpoint, phase: Phase },
    /// What environment.d decides after extra-data.d, as DIB's elements
    /// do at its end: the chosen install types linked into install.d, and
    /// every element's package-installs (through its pkg-map) squashed into
    /// per-phase lists in the hook tree.
    PackageLists,
    /// `-p`: the image's `install-packages` with the listed packages.
    ExtraPackages,
    /// Fail unless root.d made a tree.
    CheckTree,
    /// Lay out the disk image from the tree, create the image file and
    /// write `/etc/fstab`.
    LayOutDisk,
    /// Make and mount the image's filesystems and move the tree into them
    /// (a backend that mounts them), so finalise.d and cleanup.d run there.
    MountImage,
    /// tar, tgz, squashfs from the final tree.
    TreeOutputs,
    /// The image's filesystems from the tree, completing the image file.
    WriteFilesystems,
    /// raw, qcow2, vhd, ... converted from the image file.
    DiskOutputs,
    /// The kernel and initramfs of a ramdisk build.
    Ramdisk,
    /// Every output named at once, when all are written.
    NameOutputs,
    /// Say that the build ends without an image (`no-final-image`).
    NoImage,
    /// `SOURCE_DATE_EPOCH`: the finished tree made the same each time
    /// (identities dropped, times clamped, directories in name order).
    Reproducible,
}

impl Step {
    /// Whether the step runs with the chroot's mounts in place.
    /// Whether the chroot shows the elements' `cache-binds` (the package
    /// phases, as DIB's pypi and pip-cache mount them until pre-finalise.d).
    pub fn binds_caches(self) -> bool {
        match self {
            Step::Hooks { phase, .. } | Step::Break { phase, .. } => matches!(
                phase,
                Phase::PreInstall | Phase::Install | Phase::PostInstall
            ),
            Step::ExtraPackages => true,
            _ => false,
        }
    }

    pub fn in_chroot(self) -> bool {
        match self {
            Step::Hooks { phase, .. } | Step::Break { phase, .. } => phase.chroot(),
            Step::ExtraPackages => true,
            _ => false,
        }
    }
}

/// A step's name in the log.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Hooks { phase, .. } | Step::Break { phase, .. } => phase.dir().to_string(),
        Step::PackageLists => "the package lists".into(),
        Step::ExtraPackages => "the -p packages".into(),
        Step::CheckTree => "the tree's check".into(),
        other => format!("{other:?}"),
    }
}

/// The steps of `job`, in order.
pub fn plan(job: &BuildJob) -> Vec<Step> {
    let shell_on_error = job.breaks_at(Breakpoint::AfterError);
    let disk = job.disk.as_ref().filter(|_| job.final_image);
    let mut steps = Vec::new();
    for phase in PHASES {
        if phase == Phase::PreInstall {
            // The tree exists by now, so environment.d files that look at
            // it see it.
            steps.push(Step::PackageLists);
        }
        if job.breaks_at(Breakpoint::Before(phase)) {
            steps.push(Step::Break {
                at: Breakpoint::Before(phase),
                phase,
            });
        }
        steps.push(Step::Hooks {
            phase,
            shell_on_error,
        });
        if phase == Phase::Install && !job.packages.is_empty() {
            steps.push(Step::ExtraPackages);
        }
        if job.breaks_at(Breakpoint::After(phase)) {
            steps.push(Step::Break {
                at: Breakpoint::After(phase),
                phase,
            });
        }
        match phase {
            Phase::Root => steps.push(Step::CheckTree),
            Phase::BlockDevice if disk.is_some() => steps.push(Step::LayOutDisk),
            // pre-finalise.d still saw the tree (the dpkg element's bind
            // mounts are gone by then).
            Phase::PreFinalise if disk.is_some_and(|d| d.backend.mounts_filesystems()) => {
                steps.push(Step::MountImage)
            }
            _ => {}
        }
    }
    if !job.final_image {
        steps.push(Step::NoImage);
        return steps;
    }
    if job.source_date_epoch.is_some() {
        steps.push(Step::Reproducible);
    }
    if job.ramdisk.is_some() {
        steps.extend([Step::Ramdisk, Step::NameOutputs]);
        return steps;
    }
    if job.outputs.iter().any(|o| !o.kind.from_disk()) {
        steps.push(Step::TreeOutputs);
    }
    if disk.is_some() {
        steps.extend([Step::WriteFilesystems, Step::DiskOutputs]);
    }
    steps.push(Step::NameOutputs);
    steps
}

#[cfg(test)]
mod tests;
