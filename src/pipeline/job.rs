//! What the host side hands to pid 1: everything the build needs, as data,
//! and [`BuildJob::new`], which makes it from the validated configuration
//! without touching anything.
//!
//! The job crosses into the sandbox as a JSON file in the (still empty) build
//! directory, named by an environment variable of the re-executed dib (an
//! environment string is limited to 128 KiB, too small for a large hook
//! tree). pid 1 reads it before anything is mounted there, so it never
//! re-reads arguments, elements or the host environment: what was validated
//! outside is exactly what runs inside.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::outputs::{Output, Settings};
use super::package_lists::PackageLists;
use crate::blockdev::DiskJob;
use crate::config::{Breakpoint, BuildConfig, Mode};
use crate::elements::Resolution;
use crate::hooks::HookTree;
use crate::ramdisk::RamdiskJob;

/// The environment variable naming the job file.
pub const JOB_ENV: &str = "DIB_SANDBOX_JOB";
/// The job file's name in the build directory.
pub const JOB_FILE: &str = ".dib-job.json";
/// The marker element that ends a build after cleanup.d, without an image.
pub const NO_FINAL_IMAGE: &str = "no-final-image";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildJob {
    /// `TMP_BUILD_DIR`: an empty host directory; inside, a tmpfs when
    /// `tmpfs` is set.
    pub build_dir: PathBuf,
    pub tmpfs: bool,
    /// The merged hook tree, materialised inside at `build_dir/hooks`.
    pub hooks: HookTree,
    /// The environment every hook starts from (phase variables are added).
    pub env: BTreeMap<String, String>,
    /// The command line as given (`DIB_ARGS`, `/etc/dib_arguments`).
    pub args: String,
    /// `get_image_element_array`'s body, exported to hooks as a bash function.
    pub element_array: String,
    /// `break=` points.
    pub breakpoints: Vec<Breakpoint>,
    /// `DIB_DEBUG_TRACE`: list skipped files when > 0.
    pub trace: u32,
    /// `--logfile`.
    pub logfile: Option<PathBuf>,
    /// False when `no-final-image` is in the element set.
    pub final_image: bool,
    /// `DIB_QUIET`: no status line on a terminal.
    pub quiet: bool,
    /// What to write from the finished tree (empty with `no-final-image`).
    pub outputs: Vec<Output>,
    /// How outputs are written (overwrite, compression, checksums).
    pub output_settings: Settings,
    /// The block-device configuration, when an output is a disk image.
    pub disk: Option<DiskJob>,
    /// The kernel and initramfs to write, for a ramdisk build.
    pub ramdisk: Option<RamdiskJob>,
    /// `-p`: installed with the image's `install-packages` after install.d.
    pub packages: Vec<String>,
    /// Every element's package-installs and pkg-map, parsed.
    pub package_lists: PackageLists,
    /// `--trust-host-ca`: the host CA bundle every phase trusts.
    pub host_ca: Option<PathBuf>,
    /// What the hooks' box shows and lets them write.
    pub boxing: super::boxing::BoxJob,
    /// The dib executable's host path, which outside hooks run as
    /// `dib-oci-unpack`.
    pub exe: PathBuf,
    /// The layer cache of the first steps (None with `--no-cache` or a
    /// `break=` point).
    pub layer_cache: Option<super::layers::CacheJob>,
    /// `SOURCE_DATE_EPOCH`: the outputs made reproducible for it.
    pub source_date_epoch: Option<u64>,
}

/// What the host found out, for [`BuildJob::new`].
#[derive(Debug, Clone)]
pub struct Host {
    /// The (empty, real-path) build directory.
    pub build_dir: PathBuf,
    /// Whether it goes in a tmpfs.
    pub tmpfs: bool,
    /// The disk image's configuration, when [`Products::needs_disk`].
    pub disk: Option<DiskJob>,
    /// The dib executable (`std::env::current_exe`).
    pub exe: PathBuf,
}

/// Whether the build makes an image (no `no-final-image` in the set).
pub fn final_image(resolution: &Resolution) -> bool {
    !resolution.contains(NO_FINAL_IMAGE)
}

/// What a build makes: the image outputs (`-t`), or a ramdisk's kernel
/// and initramfs, or nothing (`no-final-image`); paths absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Products {
    pub final_image: bool,
    pub outputs: Vec<Output>,
    pub ramdisk: Option<RamdiskJob>,
}

impl Products {
    pub fn new(config: &BuildConfig, final_image: bool) -> Result<Products> {
        let mut p = Products {
            final_image,
            outputs: Vec::new(),
            ramdisk: None,
        };
        if !final_image {
            return Ok(p);
        }
        if config.mode == Mode::Ramdisk {
            let name = std::path::absolute(&config.image_name)
                .with_context(|| format!("resolving the output name {:?}", config.image_name))?;
            let with = |ext: &str| PathBuf::from(format!("{}.{ext}", name.display()));
            p.ramdisk = Some(RamdiskJob {
                kernel: with("kernel"),
                initramfs: with("initramfs"),
            });
            return Ok(p);
        }
        for &t in &config.output_types {
            p.outputs.push(Output::new(t, &config.image_name)?);
        }
        Ok(p)
    }

    /// Whether an output is made from a disk image.
    pub fn needs_disk(&self) -> bool {
        self.outputs.iter().any(|o| o.kind.from_disk())
    }
}

impl BuildJob {
    /// The job for a validated build.
    pub fn new(
        config: &BuildConfig,
        resolution: &Resolution,
        hooks: HookTree,
        package_lists: PackageLists,
        products: Products,
        host: Host,
    ) -> Result<BuildJob> {
        let args = config.args.get(1..).unwrap_or_default().join(" ");
        let logfile = config
            .logfile
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        let (env, element_array) = super::environment::job_env(config, resolution, &args)?;
        let source_date_epoch = crate::oci::image::source_date_epoch(&env)?;
        let mut boxing = super::boxing::BoxJob::new(
            config,
            resolution,
            &crate::commands::shipped_elements_dir(),
            &env,
        )?;
        // Hooks run dib itself (dib-oci-unpack): readable in every box.
        boxing.name(&host.exe);
        Ok(BuildJob {
            build_dir: host.build_dir,
            tmpfs: host.tmpfs,
            hooks,
            env,
            args,
            element_array,
            breakpoints: config.breakpoints.clone(),
            trace: config.trace,
            logfile,
            final_image: products.final_image,
            quiet: config.quiet,
            outputs: products.outputs,
            output_settings: Settings {
                overwrite: config.overwrite_old_image,
                compress: config.compress,
                qemu_img_options: config
                    .qemu_img_options
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                checksum: config.checksum,
                reproducible: source_date_epoch.is_some(),
                docker_target: config.docker_target.clone(),
            },
            disk: host.disk,
            ramdisk: products.ramdisk,
            packages: config.packages.clone(),
            package_lists,
            host_ca: config.host_ca.clone(),
            boxing,
            exe: host.exe,
            layer_cache: config
                .layer_cache
                .clone()
                .filter(|_| config.breakpoints.is_empty()),
            source_date_epoch,
        })
    }

    /// Whether a `break=` point is set.
    pub fn breaks_at(&self, at: Breakpoint) -> bool {
        self.breakpoints.contains(&at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CreateArgs;
    use crate::config::{Env, OutputType};

    fn products(mode: Mode, output: &str, types: &[&str], final_image: bool) -> Products {
        let args = CreateArgs {
            elements: vec!["x".into()],
            output: Some(output.into()),
            types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let env: Env = [("HOME".to_string(), "/h".to_string())].into();
        let config = BuildConfig::new(mode, &args, &env, vec![]).unwrap();
        Products::new(&config, final_image).unwrap()
    }

    #[test]
    fn a_build_makes_its_outputs_or_a_ramdisk_or_nothing() {
        let abs = |p: &str| std::path::absolute(p).unwrap();
        let disk = products(Mode::Disk, "out/vm", &["qcow2", "tar"], true);
        let kinds: Vec<OutputType> = disk.outputs.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [OutputType::Qcow2, OutputType::Tar]);
        assert_eq!(disk.outputs[0].path, abs("out/vm.qcow2"));
        assert!(disk.needs_disk() && disk.ramdisk.is_none());
        let tree = products(Mode::Disk, "t", &["tar"], true);
        assert!(!tree.needs_disk());
        let none = products(Mode::Disk, "vm", &["qcow2"], false);
        assert!(none.outputs.is_empty() && none.ramdisk.is_none() && !none.final_image);
        // A ramdisk is NAME.kernel and NAME.initramfs beside the resolved
        // name, whatever the name's last component.
        for (name, base) in [("r", abs("r")), ("out/.", abs("out/."))] {
            let r = products(Mode::Ramdisk, name, &[], true);
            let job = r.ramdisk.unwrap();
            assert_eq!(
                job.kernel.display().to_string(),
                format!("{}.kernel", base.display())
            );
            assert_eq!(
                job.initramfs.display().to_string(),
                format!("{}.initramfs", base.display())
            );
            assert!(r.outputs.is_empty());
        }
    }
}
