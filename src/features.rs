//! What this version of dib can do yet.
//!
//! Every flag of DIB's disk-image-create is parsed and validated from the start, but the work
//! behind many of them lands piece by piece. Rather than ignore a flag whose
//! feature is missing, a build lists every such flag and fails before doing
//! anything, naming what is missing and where it is tracked. When a feature
//! lands, its [`Feature`] flips to available here and the list shrinks.

use std::fmt;

use crate::cli::BlockBackend;
use crate::config::{Arch, BuildConfig, Mode, OutputType, Tmpfs, DEFAULT_MIN_TMPFS_GB};

/// A piece of dib that may not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Running phases in the rootless sandbox.
    Phases,
    /// `tar` and `tgz` outputs of the final tree.
    TreeOutputs,
    /// `-p` packages (through the image's install-packages) and `--offline`
    /// (honoured by the elements that download).
    Packages,
    /// Building for another architecture (binfmt + qemu-user-static).
    ForeignArch,
    /// Disk images: block devices, bootloader, image outputs.
    DiskImages,
    /// The privileged helper backend.
    Helper,
    /// Ramdisk builds.
    Ramdisks,
    /// OCI image layout output (not planned yet).
    Oci,
}

impl Feature {
    /// Whether the feature works in this build of dib.
    pub fn available(self) -> bool {
        match self {
            Feature::Phases
            | Feature::TreeOutputs
            | Feature::Packages
            | Feature::DiskImages
            | Feature::Helper
            | Feature::Ramdisks => true,
            Feature::ForeignArch | Feature::Oci => false,
        }
    }

    fn tracked(self) -> &'static str {
        match self {
            Feature::Phases => "the rootless phase runner",
            Feature::TreeOutputs => "tree outputs",
            Feature::Packages => "packages",
            Feature::ForeignArch => "foreign architectures, no issue yet",
            Feature::DiskImages => "bootable disk images",
            Feature::Helper => "the dib-helper backend",
            Feature::Ramdisks => "ramdisks",
            Feature::Oci => "no issue yet",
        }
    }
}

/// One thing a command asked for that needs a missing feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub what: String,
    pub feature: Feature,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.what, self.feature.tracked())
    }
}

/// Everything `config` uses that this version cannot do, in a stable order.
/// `final_image` is false when the element set has `no-final-image`: then
/// no output is written and the output types need nothing.
pub fn missing(config: &BuildConfig, final_image: bool) -> Vec<Missing> {
    let mut uses: Vec<(String, Feature)> = vec![("running build phases".into(), Feature::Phases)];
    if config.mode == Mode::Ramdisk {
        uses.push(("building ramdisks".into(), Feature::Ramdisks));
    } else if final_image {
        for t in &config.output_types {
            let feature = match t {
                OutputType::Tar | OutputType::Tgz => Feature::TreeOutputs,
                OutputType::Oci => Feature::Oci,
                _ => Feature::DiskImages,
            };
            uses.push((format!("output type '{t}'"), feature));
        }
    }
    let c = config;
    let flags: [(bool, &str, Feature); 20] = [
        (!c.packages.is_empty(), "-p", Feature::Packages),
        (c.offline, "--offline / DIB_OFFLINE", Feature::Packages),
        (
            c.arch != Arch::host(),
            "-a (foreign architecture)",
            Feature::ForeignArch,
        ),
        (
            c.image_size_gb.is_some(),
            "--image-size / DIB_IMAGE_SIZE",
            Feature::DiskImages,
        ),
        (
            c.image_extra_size_mb.is_some(),
            "--image-extra-size / DIB_IMAGE_EXTRA_SIZE",
            Feature::DiskImages,
        ),
        (
            c.max_online_resize.is_some(),
            "--max-online-resize",
            Feature::DiskImages,
        ),
        (
            c.mkfs_options.is_some(),
            "--mkfs-options",
            Feature::DiskImages,
        ),
        (
            c.mkfs_journal_size_mb.is_some(),
            "--mkfs-journal-size",
            Feature::DiskImages,
        ),
        (
            !c.qemu_img_options.is_empty(),
            "--qemu-img-options",
            Feature::DiskImages,
        ),
        (!c.compress, "-u", Feature::DiskImages),
        (c.checksum, "--checksum / DIB_CHECKSUM", Feature::DiskImages),
        (
            c.root_label != c.fs_type.default_root_label(),
            "--root-label / DIB_ROOT_LABEL",
            Feature::DiskImages,
        ),
        (
            c.block_device_config.is_some(),
            "DIB_BLOCK_DEVICE_CONFIG",
            Feature::DiskImages,
        ),
        (
            c.block_backend == BlockBackend::Offline,
            "--block-backend offline",
            Feature::DiskImages,
        ),
        (
            c.block_backend == BlockBackend::Helper,
            "--block-backend helper",
            Feature::Helper,
        ),
        (c.logfile.is_some(), "--logfile", Feature::Phases),
        (!c.breakpoints.is_empty(), "break=", Feature::Phases),
        (c.trace > 0, "-x / DIB_DEBUG_TRACE", Feature::Phases),
        (c.clear_env, "-c", Feature::Phases),
        (
            c.tmpfs != Tmpfs::WhenMemoryAtLeastTwice(DEFAULT_MIN_TMPFS_GB),
            "--min-tmpfs / --no-tmpfs",
            Feature::Phases,
        ),
    ];
    uses.extend(
        flags
            .into_iter()
            .filter(|(set, _, _)| *set)
            .map(|(_, what, f)| (what.to_string(), f)),
    );
    uses.into_iter()
        .filter(|(_, f)| !f.available())
        .map(|(what, feature)| Missing { what, feature })
        .collect()
}

/// Fail with every missing feature listed, or succeed when none is missing.
pub fn require(config: &BuildConfig, final_image: bool) -> anyhow::Result<()> {
    let missing = missing(config, final_image);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing.iter().map(|m| format!("  - {m}")).collect();
    anyhow::bail!(
        "not yet supported in this version of dib:\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CreateArgs;
    use crate::config::Env;

    #[test]
    fn every_used_missing_feature_is_listed() {
        let args = CreateArgs {
            elements: vec!["x".into()],
            types: vec!["qcow2".into(), "oci".into()],
            packages: vec!["vim".into()],
            block_backend: BlockBackend::Helper,
            ..Default::default()
        };
        let env: Env = [("HOME".to_string(), "/h".to_string())].into();
        let config = BuildConfig::new(Mode::Disk, &args, &env, vec![]).unwrap();
        let msg = require(&config, true).unwrap_err().to_string();
        assert_eq!(
            msg,
            "not yet supported in this version of dib:\n\
             \x20 - output type 'oci' (no issue yet)"
        );
    }

    #[test]
    fn defaults_need_only_the_default_output() {
        let env: Env = [("HOME".to_string(), "/h".to_string())].into();
        let plain = CreateArgs {
            elements: vec!["x".into()],
            ..Default::default()
        };
        let config = BuildConfig::new(Mode::Disk, &plain, &env, vec![]).unwrap();
        let what: Vec<String> = missing(&config, true).into_iter().map(|m| m.what).collect();
        assert!(what.is_empty(), "{what:?}");

        let tweaked = CreateArgs {
            uncompressed: true,
            trace: 2,
            no_tmpfs: true,
            root_label: Some("root".into()),
            ..plain
        };
        let config = BuildConfig::new(Mode::Disk, &tweaked, &env, vec![]).unwrap();
        let what: Vec<String> = missing(&config, true).into_iter().map(|m| m.what).collect();
        assert!(what.is_empty(), "{what:?}");
        let foreign = CreateArgs {
            arch: Some("arm64".into()),
            types: vec!["oci".into()],
            ..tweaked
        };
        let config = BuildConfig::new(Mode::Disk, &foreign, &env, vec![]).unwrap();
        let what: Vec<String> = missing(&config, true).into_iter().map(|m| m.what).collect();
        assert_eq!(what, ["output type 'oci'", "-a (foreign architecture)"]);
    }
}
