//! The validated build configuration: command line + environment, checked
//! before any work starts.
//!
//! Precedence follows DIB: a flag beats its environment variable, which beats
//! the default. Every value from the environment is checked here too, and an
//! error names the variable (clap already names the flag for bad flag values).
//! Everything is a pure function of the arguments and an environment snapshot,
//! so it is tested without touching the process environment.
//!
//! `env` reads the environment snapshot, `arch` the target architecture,
//! `outputs` the output types, `flags` the `break=` points, the tmpfs policy
//! and `key=value` lists.

mod arch;
mod env;
mod flags;
mod outputs;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _, Result};

pub use arch::Arch;
/// The root filesystem's type (`FS_TYPE`): the one filesystem type of dib.
pub use dib_sandbox::mkfs::FsType;
pub use env::{cleared_env, process_env, Env};
use env::{env_flag, env_parse, env_positive};
use flags::parse_kv_list;
pub use flags::{Breakpoint, Tmpfs, DEFAULT_MIN_TMPFS_GB};
pub use outputs::{OutputType, QemuFormat};

use crate::cli::{BlockBackend, CreateArgs, InstallType};
pub use crate::oci::push::PushTarget;
use crate::pipeline::layers::CacheJob;

/// Which command is building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `disk-image-create` / `dib create`.
    Disk,
    /// `ramdisk-image-create` / `dib ramdisk`.
    Ramdisk,
}

/// Everything a build needs to know, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildConfig {
    pub mode: Mode,
    pub arch: Arch,
    /// Output name without the type suffix (may include a directory).
    pub image_name: String,
    /// `-t`, each type once, in the order given.
    pub output_types: Vec<OutputType>,
    /// `DIB_DEBUG_TRACE`: 0 means no tracing.
    pub trace: u32,
    pub compress: bool,
    pub clear_env: bool,
    /// The elements to expand: `base` first unless `-n`, the ramdisk element
    /// first for ramdisks, then the ones given.
    pub elements: Vec<String>,
    pub packages: Vec<String>,
    pub checksum: bool,
    /// The container image's `REPO:TAG` (`--docker-target`, else the
    /// output's name and `latest`).
    pub docker_target: String,
    pub image_size_gb: Option<f64>,
    pub image_extra_size_mb: Option<u64>,
    pub image_cache: PathBuf,
    pub max_online_resize: Option<u64>,
    pub tmpfs: Tmpfs,
    pub mkfs_options: Option<String>,
    pub mkfs_journal_size_mb: Option<u64>,
    pub offline: bool,
    /// The layer cache (None with `--no-cache`).
    pub layer_cache: Option<crate::pipeline::layers::CacheJob>,
    /// `--strict-box` / `DIB_STRICT_BOX`: hooks see no home and, after the
    /// package phases, no network.
    pub strict_box: bool,
    /// `--trust-host-ca`: the host's CA bundle, trusted by every phase.
    pub host_ca: Option<PathBuf>,
    pub qemu_img_options: Vec<(String, String)>,
    pub fs_type: FsType,
    pub root_label: String,
    pub ramdisk_element: String,
    pub install_type: InstallType,
    pub logfile: Option<PathBuf>,
    pub breakpoints: Vec<Breakpoint>,
    pub block_backend: BlockBackend,
    /// `--push REF` / `DIB_PUSH`: where the image goes after the build.
    pub push: Option<PushTarget>,
    /// `DIB_BLOCK_DEVICE_CONFIG`, as given (inline YAML or `file://path`).
    pub block_device_config: Option<String>,
    pub overwrite_old_image: bool,
    pub quiet: bool,
    pub tmp_dir: PathBuf,
    /// The environment hooks start from (after `-c`).
    pub env: Env,
    /// The arguments as given, for `/etc/dib_arguments` and `DIB_ARGS`.
    pub args: Vec<String>,
}

/// The layer cache under the image cache, from `DIB_LAYER_CACHE_SIZE` and
/// `DIB_LAYER_CACHE_MAX_AGE`; an offline build reuses layers of any age.
fn layer_cache(env: &Env, image_cache: &Path, offline: bool) -> Result<CacheJob> {
    use crate::pipeline::layers::{parse_size, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, LAYERS_DIR};
    let max_bytes = match env.get("DIB_LAYER_CACHE_SIZE").filter(|v| !v.is_empty()) {
        None => DEFAULT_MAX_BYTES,
        Some(v) => parse_size(v).with_context(|| {
            format!(
                "DIB_LAYER_CACHE_SIZE={v:?} is not valid: give bytes, or a number with K, M, G \
                 or T (as 20G)"
            )
        })?,
    };
    let max_age: Option<u64> = env_parse(
        env,
        "DIB_LAYER_CACHE_MAX_AGE",
        "a number of seconds (how long layers of phases with network access are reused)",
    )?;
    Ok(CacheJob {
        dir: image_cache.join(LAYERS_DIR),
        max_bytes,
        max_age: (!offline).then_some(max_age.unwrap_or(DEFAULT_MAX_AGE)),
    })
}

impl BuildConfig {
    /// Validate `args` against `env`. `argv` is kept for `DIB_ARGS`.
    pub fn new(mode: Mode, args: &CreateArgs, env: &Env, argv: Vec<String>) -> Result<BuildConfig> {
        let arch = match args.arch.as_deref() {
            Some(a) => Arch::parse(a).with_context(|| {
                format!("invalid value {a:?} for '-a <ARCH>': use one of amd64, arm64, armhf, i386")
            })?,
            None => Arch::from_env(env)?,
        };

        let output_types = outputs::parse_output_types(&args.types)?;
        let image_name =
            outputs::strip_type_suffix(args.output.as_deref().unwrap_or("image"), &output_types);
        ensure!(
            !image_name.is_empty() && !image_name.ends_with('/'),
            "invalid value {image_name:?} for '-o <NAME>': give a file name (it may include a directory)"
        );

        let trace = if args.trace > 0 {
            u32::from(args.trace)
        } else {
            env_parse(
                env,
                "DIB_DEBUG_TRACE",
                "a number of -x levels (0, 1, 2, ...)",
            )?
            .unwrap_or(0)
        };

        let fs_type = match env.get("FS_TYPE").filter(|v| !v.is_empty()) {
            // Swap is a filesystem type, but not a root's.
            Some(v) => root_fs_type(v).with_context(|| {
                format!("FS_TYPE={v:?} is not valid: use one of ext2, ext3, ext4, xfs, btrfs, vfat")
            })?,
            None => FsType::Ext4,
        };
        let (root_label, label_from) = match (&args.root_label, env.get("DIB_ROOT_LABEL")) {
            (Some(l), _) => (l.clone(), "--root-label"),
            (None, Some(l)) if !l.is_empty() => (l.clone(), "DIB_ROOT_LABEL"),
            _ => (
                fs_type.default_root_label().to_string(),
                "the default label",
            ),
        };
        ensure!(
            !root_label.is_empty() && root_label.len() <= fs_type.max_label(),
            "invalid root label {root_label:?} from {label_from}: {} labels are 1 to {} bytes",
            fs_type,
            fs_type.max_label()
        );

        let mut packages = Vec::new();
        for p in &args.packages {
            let p = p.trim();
            ensure!(
                !p.is_empty() && !p.contains(char::is_whitespace),
                "invalid value {p:?} for '-p <PKGS>': give package names separated by commas"
            );
            packages.push(p.to_string());
        }

        for e in &args.elements {
            ensure!(
                crate::elements::valid_element_name(e),
                "invalid element name {e:?}: an element is named by its directory name"
            );
        }
        let ramdisk_element = args
            .ramdisk_element
            .clone()
            .unwrap_or_else(|| "ramdisk".to_string());
        ensure!(
            crate::elements::valid_element_name(&ramdisk_element),
            "invalid value {ramdisk_element:?} for '--ramdisk-element <ELEMENT>'"
        );
        let mut elements = Vec::new();
        if !args.no_base {
            elements.push("base".to_string());
        }
        if mode == Mode::Ramdisk {
            elements.push(ramdisk_element.clone());
        }
        elements.extend(args.elements.iter().cloned());

        let image_size_gb = match args.image_size {
            Some(v) => Some(v),
            None => env_positive(env, "DIB_IMAGE_SIZE")?,
        };
        let image_extra_size_mb = match args.image_extra_size {
            Some(v) => Some(v),
            None => env_parse(env, "DIB_IMAGE_EXTRA_SIZE", "a whole number of MB")?,
        };

        let image_cache = match (&args.image_cache, env.get("DIB_IMAGE_CACHE")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) if !d.is_empty() => PathBuf::from(d),
            _ => match env.get("HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join(".cache/image-create"),
                None => bail!(
                    "HOME is not set, so there is no default image cache: pass --image-cache DIR"
                ),
            },
        };

        let tmpfs = if args.no_tmpfs || env_flag(env, "DIB_NO_TMPFS")? {
            Tmpfs::Never
        } else {
            let gb = match args.min_tmpfs {
                Some(v) => v,
                None => env_positive(env, "DIB_MIN_TMPFS")?.unwrap_or(DEFAULT_MIN_TMPFS_GB),
            };
            Tmpfs::WhenMemoryAtLeastTwice(gb)
        };

        let qemu_img_options = match &args.qemu_img_options {
            None => Vec::new(),
            Some(s) => parse_kv_list(s).with_context(|| {
                format!("invalid value {s:?} for '--qemu-img-options <K=V,..>'")
            })?,
        };

        let install_type = match args.install_type {
            Some(t) => t,
            None => match env.get("DIB_DEFAULT_INSTALLTYPE").map(String::as_str) {
                None | Some("") | Some("source") => InstallType::Source,
                Some("package") => InstallType::Package,
                Some(v) => {
                    bail!("DIB_DEFAULT_INSTALLTYPE={v:?} is not valid: use source or package")
                }
            },
        };

        let mut breakpoints = Vec::new();
        if let Some(spec) = env.get("break").filter(|v| !v.is_empty()) {
            for item in spec.split(',') {
                let bp = Breakpoint::parse(item.trim()).with_context(|| {
                    format!(
                        "break={spec:?}: {item:?} is not a break point; use before-<phase>, \
                         after-<phase> or after-error, where <phase> is one of {}",
                        crate::phases::names()
                    )
                })?;
                breakpoints.push(bp);
            }
        }

        let offline = args.offline || env_flag(env, "DIB_OFFLINE")?;
        let strict_box = args.strict_box || env_flag(env, "DIB_STRICT_BOX")?;
        let layer_cache = if args.no_cache || env_flag(env, "DIB_NO_CACHE")? {
            None
        } else {
            Some(layer_cache(env, &image_cache, offline)?)
        };
        let checksum = args.checksum || env_flag(env, "DIB_CHECKSUM")?;
        let host_ca = (args.trust_host_ca || env_flag(env, "DIB_TRUST_HOST_CA")?).then(|| {
            env.get("DIB_HOST_CA_BUNDLE")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(HOST_CA_BUNDLE), PathBuf::from)
        });
        let push_insecure = args.push_insecure || env_flag(env, "DIB_PUSH_INSECURE")?;
        let push = match (&args.push, env.get("DIB_PUSH").filter(|v| !v.is_empty())) {
            (Some(r), _) => Some(PushTarget::parse(r, false, push_insecure)?),
            (None, Some(r)) => Some(PushTarget::parse(r, true, push_insecure)?),
            (None, None) => {
                ensure!(
                    !args.push_insecure,
                    "--push-insecure needs a registry to push to: add --push REF"
                );
                None
            }
        };
        // The image's name and tag: --docker-target, else the pushed
        // reference's repository and tag, else the output's name.
        let pushed = push.as_ref().map(|p| {
            let r = &p.reference;
            format!("{}:{}", r.repository, r.tag.as_deref().unwrap_or("latest"))
        });
        let docker_target = outputs::docker_target(
            args.docker_target.as_deref().or(pushed.as_deref()),
            &image_name,
        )?;
        let env_for_hooks = if args.clear_env {
            cleared_env(env)
        } else {
            env.clone()
        };

        Ok(BuildConfig {
            mode,
            arch,
            image_name,
            output_types,
            trace,
            compress: !args.uncompressed,
            clear_env: args.clear_env,
            elements,
            packages,
            checksum,
            docker_target,
            image_size_gb,
            image_extra_size_mb,
            image_cache,
            max_online_resize: args.max_online_resize,
            tmpfs,
            mkfs_options: args.mkfs_options.clone(),
            mkfs_journal_size_mb: args.mkfs_journal_size,
            offline,
            layer_cache,
            strict_box,
            host_ca,
            qemu_img_options,
            fs_type,
            root_label,
            ramdisk_element,
            install_type,
            logfile: args.logfile.clone(),
            breakpoints,
            block_backend: args.block_backend,
            push,
            block_device_config: env
                .get("DIB_BLOCK_DEVICE_CONFIG")
                .filter(|v| !v.is_empty())
                .cloned(),
            overwrite_old_image: env_flag(env, "OVERWRITE_OLD_IMAGE")?,
            quiet: env_flag(env, "DIB_QUIET")?,
            tmp_dir: env
                .get("TMP_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp")),
            env: env_for_hooks,
            args: argv,
        })
    }
}

/// The host's CA bundle on Debian (`DIB_HOST_CA_BUNDLE` names another).
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl BuildConfig {
    /// The checks that need the file system, kept apart from [`BuildConfig::new`]
    /// so that stays pure: `TMP_DIR` exists, the log file's directory exists,
    /// and a `DIB_BLOCK_DEVICE_CONFIG` is readable YAML.
    pub fn check_paths(&self) -> Result<()> {
        if let Some(ca) = &self.host_ca {
            let text = std::fs::read_to_string(ca).with_context(|| {
                format!(
                    "--trust-host-ca: cannot read the CA bundle {ca:?}: install the Debian \
                     package ca-certificates, or name a PEM bundle with DIB_HOST_CA_BUNDLE"
                )
            })?;
            ensure!(
                text.contains("-----BEGIN CERTIFICATE-----"),
                "--trust-host-ca: {ca:?} holds no PEM certificate: name a PEM bundle with \
                 DIB_HOST_CA_BUNDLE"
            );
        }
        ensure!(
            self.tmp_dir.is_dir(),
            "TMP_DIR={:?} is not a directory: create it or point TMP_DIR elsewhere",
            self.tmp_dir
        );
        if let Some(log) = &self.logfile {
            let parent = match log.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => std::path::Path::new("."),
            };
            ensure!(
                parent.is_dir(),
                "invalid value {log:?} for '--logfile <FILE>': directory {parent:?} does not exist"
            );
        }
        if let Some(cfg) = &self.block_device_config {
            let (text, origin) = crate::blockdev::env_config_text(cfg)?;
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
                .with_context(|| format!("{origin} is not valid YAML"))?;
        }
        Ok(())
    }
}

/// `FS_TYPE`: a filesystem type a root can have.
fn root_fs_type(name: &str) -> Option<FsType> {
    FsType::parse(name).filter(|t| *t != FsType::Swap)
}
