//! The validated build configuration: command line + environment, checked
//! before any work starts.
//!
//! Precedence follows DIB: a flag beats its environment variable, which beats
//! the default. Every value from the environment is checked here too, and an
//! error names the variable (clap already names the flag for bad flag values).
//! Everything is a pure function of the arguments and an environment snapshot,
//! so it is tested without touching the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context as _, Result};

use crate::cli::{BlockBackend, CreateArgs, InstallType};

/// An environment snapshot.
pub type Env = BTreeMap<String, String>;

/// The environment of the current process. Entries that are not UTF-8 are
/// dropped (with a debug line): dib reads none of them, and hooks still get
/// the process environment.
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => Some((k, v)),
            (k, _) => {
                tracing::debug!("ignoring environment variable {k:?}: not UTF-8");
                None
            }
        })
        .collect()
}

/// Which command is building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `disk-image-create` / `dib create`.
    Disk,
    /// `ramdisk-image-create` / `dib ramdisk`.
    Ramdisk,
}

/// Target architectures (Debian names, as DIB's `ARCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
    Armhf,
    I386,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::I386 => "i386",
        }
    }

    /// Debian names plus the kernel's spellings users type by habit.
    pub fn parse(s: &str) -> Option<Arch> {
        Some(match s {
            "amd64" | "x86_64" => Arch::Amd64,
            "arm64" | "aarch64" => Arch::Arm64,
            "armhf" | "armv7l" => Arch::Armhf,
            "i386" | "i686" => Arch::I386,
            _ => return None,
        })
    }

    /// `ARCH` from the environment (as DIB reads it), else the host's.
    pub fn from_env(env: &Env) -> Result<Arch> {
        match env.get("ARCH").filter(|a| !a.is_empty()) {
            Some(a) => Arch::parse(a).with_context(|| {
                format!("ARCH={a:?} is not valid: use one of amd64, arm64, armhf, i386")
            }),
            None => Ok(Arch::host()),
        }
    }

    /// The architecture this binary was built for.
    pub fn host() -> Arch {
        Arch::parse(std::env::consts::ARCH).unwrap_or(Arch::Amd64)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Output types dib writes itself; anything else in [`QEMU_FORMATS`] goes to
/// `qemu-img convert -O`.
pub const OWN_TYPES: &[&str] = &["qcow2", "raw", "tar", "tgz", "squashfs", "vhd", "oci"];
/// Writable `qemu-img` formats accepted as output types besides [`OWN_TYPES`].
pub const QEMU_FORMATS: &[&str] = &["vmdk", "vdi", "vhdx", "vpc", "qed", "parallels", "qcow"];

/// Root filesystem types (`FS_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
}

impl FsType {
    fn parse(s: &str) -> Option<FsType> {
        Some(match s {
            "ext2" => FsType::Ext2,
            "ext3" => FsType::Ext3,
            "ext4" => FsType::Ext4,
            "xfs" => FsType::Xfs,
            "btrfs" => FsType::Btrfs,
            "vfat" => FsType::Vfat,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
            FsType::Vfat => "vfat",
        }
    }

    /// Longest label the filesystem stores, in bytes.
    fn max_label(self) -> usize {
        match self {
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => 16,
            FsType::Xfs => 12,
            FsType::Btrfs => 255,
            FsType::Vfat => 11,
        }
    }

    /// The root label used when none is given.
    pub fn default_label(self) -> &'static str {
        match self {
            FsType::Xfs => "img-rootfs",
            _ => "cloudimg-rootfs",
        }
    }
}

/// A `break=` point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Breakpoint {
    Before(crate::phases::Phase),
    After(crate::phases::Phase),
    AfterError,
}

impl Breakpoint {
    /// Parse `before-<phase>`, `after-<phase>` or `after-error`. A trailing
    /// `.d` on the phase is accepted (`after-install.d`).
    fn parse(s: &str) -> Option<Breakpoint> {
        if s == "after-error" {
            return Some(Breakpoint::AfterError);
        }
        let phase_of = |p: &str| {
            let p = p.strip_suffix(".d").unwrap_or(p);
            crate::phases::by_name(p)
        };
        if let Some(p) = s.strip_prefix("before-") {
            return phase_of(p).map(Breakpoint::Before);
        }
        s.strip_prefix("after-")
            .and_then(phase_of)
            .map(Breakpoint::After)
    }

    /// The point as `break=` names it (`before-install`).
    pub fn label(self) -> String {
        match self {
            Breakpoint::Before(p) => format!("before-{p}"),
            Breakpoint::After(p) => format!("after-{p}"),
            Breakpoint::AfterError => "after-error".to_string(),
        }
    }
}

/// Whether to build in a tmpfs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tmpfs {
    Never,
    /// Use one when MemTotal >= 2 * this many GB.
    WhenMemoryAtLeastTwice(f64),
}

/// Default `--min-tmpfs`, in GB.
pub const DEFAULT_MIN_TMPFS_GB: f64 = 2.0;

/// Everything a build needs to know, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildConfig {
    pub mode: Mode,
    pub arch: Arch,
    /// Output name without the type suffix (may include a directory).
    pub image_name: String,
    pub output_types: Vec<String>,
    /// `DIB_DEBUG_TRACE`: 0 means no tracing.
    pub trace: u32,
    pub compress: bool,
    pub clear_env: bool,
    /// The elements to expand: `base` first unless `-n`, the ramdisk element
    /// first for ramdisks, then the ones given.
    pub elements: Vec<String>,
    pub packages: Vec<String>,
    pub checksum: bool,
    pub image_size_gb: Option<f64>,
    pub image_extra_size_mb: Option<u64>,
    pub image_cache: PathBuf,
    pub max_online_resize: Option<u64>,
    pub tmpfs: Tmpfs,
    pub mkfs_options: Option<String>,
    pub mkfs_journal_size_mb: Option<u64>,
    pub offline: bool,
    pub qemu_img_options: Vec<(String, String)>,
    pub fs_type: FsType,
    pub root_label: String,
    pub ramdisk_element: String,
    pub install_type: InstallType,
    pub logfile: Option<PathBuf>,
    pub breakpoints: Vec<Breakpoint>,
    pub block_backend: BlockBackend,
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

/// Variables kept by `-c` besides `DIB_*`.
const KEPT_BY_CLEAR: &[&str] = &[
    "ELEMENTS_PATH",
    "PATH",
    "HOME",
    "TERM",
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
];

/// The environment `-c` leaves.
pub fn cleared_env(env: &Env) -> Env {
    env.iter()
        .filter(|(k, _)| k.starts_with("DIB_") || KEPT_BY_CLEAR.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn env_flag(env: &Env, var: &str) -> Result<bool> {
    match env.get(var).map(String::as_str) {
        None | Some("") | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => bail!("{var}={other:?} is not valid: use 1 to enable or 0 to disable"),
    }
}

fn env_parse<T: std::str::FromStr>(env: &Env, var: &str, what: &str) -> Result<Option<T>> {
    match env.get(var).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{var}={v:?} is not valid: expected {what}")),
    }
}

fn env_positive(env: &Env, var: &str) -> Result<Option<f64>> {
    let v: Option<f64> = env_parse(env, var, "a positive number")?;
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            bail!("{var}={x} is not valid: expected a positive number")
        }
        other => Ok(other),
    }
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

        let output_types = if args.types.is_empty() {
            vec!["qcow2".to_string()]
        } else {
            let mut types: Vec<String> = Vec::new();
            for t in &args.types {
                let t = t.trim();
                ensure!(
                    OWN_TYPES.contains(&t) || QEMU_FORMATS.contains(&t),
                    "invalid value {t:?} for '-t <TYPES>': use {} or a qemu-img format ({})",
                    OWN_TYPES.join(", "),
                    QEMU_FORMATS.join(", ")
                );
                if !types.iter().any(|x| x == t) {
                    types.push(t.to_string());
                }
            }
            types
        };

        let mut image_name = args.output.clone().unwrap_or_else(|| "image".to_string());
        if let [only] = output_types.as_slice() {
            if let Some(stripped) = image_name.strip_suffix(&format!(".{only}")) {
                // `-o .qcow2` or `-o dir/.qcow2` would leave no file name.
                if !stripped.is_empty() && !stripped.ends_with('/') {
                    image_name = stripped.to_string();
                }
            }
        }
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
            Some(v) => FsType::parse(v).with_context(|| {
                format!("FS_TYPE={v:?} is not valid: use one of ext2, ext3, ext4, xfs, btrfs, vfat")
            })?,
            None => FsType::Ext4,
        };
        let (root_label, label_from) = match (&args.root_label, env.get("DIB_ROOT_LABEL")) {
            (Some(l), _) => (l.clone(), "--root-label"),
            (None, Some(l)) if !l.is_empty() => (l.clone(), "DIB_ROOT_LABEL"),
            _ => (fs_type.default_label().to_string(), "the default label"),
        };
        ensure!(
            !root_label.is_empty() && root_label.len() <= fs_type.max_label(),
            "invalid root label {root_label:?} from {label_from}: {} labels are 1 to {} bytes",
            fs_type.as_str(),
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
        let checksum = args.checksum || env_flag(env, "DIB_CHECKSUM")?;
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
            image_size_gb,
            image_extra_size_mb,
            image_cache,
            max_online_resize: args.max_online_resize,
            tmpfs,
            mkfs_options: args.mkfs_options.clone(),
            mkfs_journal_size_mb: args.mkfs_journal_size,
            offline,
            qemu_img_options,
            fs_type,
            root_label,
            ramdisk_element,
            install_type,
            logfile: args.logfile.clone(),
            breakpoints,
            block_backend: args.block_backend,
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

impl BuildConfig {
    /// The checks that need the file system, kept apart from [`BuildConfig::new`]
    /// so that stays pure: `TMP_DIR` exists, the log file's directory exists,
    /// and a `DIB_BLOCK_DEVICE_CONFIG` is readable YAML.
    pub fn check_paths(&self) -> Result<()> {
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

/// Parse `k=v,k=v` (keys non-empty, no spaces around).
fn parse_kv_list(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                Ok((k.to_string(), v.to_string()))
            }
            _ => bail!("{item:?} is not of the form key=value"),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // inline case tables read better than named types
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut e: Env = [("HOME".to_string(), "/home/u".to_string())].into();
        e.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        e
    }

    fn args(elements: &[&str]) -> CreateArgs {
        CreateArgs {
            elements: elements.iter().map(|s| s.to_string()).collect(),
            block_backend: BlockBackend::Auto,
            ..Default::default()
        }
    }

    fn build(a: &CreateArgs, e: &Env) -> Result<BuildConfig> {
        BuildConfig::new(Mode::Disk, a, e, vec![])
    }

    #[test]
    fn defaults() {
        let c = build(&args(&["debian", "vm"]), &env(&[])).unwrap();
        assert_eq!(c.elements, vec!["base", "debian", "vm"]);
        assert_eq!(c.output_types, vec!["qcow2"]);
        assert_eq!(c.image_name, "image");
        assert_eq!(c.image_cache, PathBuf::from("/home/u/.cache/image-create"));
        assert_eq!(c.root_label, "cloudimg-rootfs");
        assert_eq!(c.tmpfs, Tmpfs::WhenMemoryAtLeastTwice(2.0));
        assert_eq!(c.fs_type, FsType::Ext4);
        assert!(c.compress && !c.offline && !c.checksum && !c.overwrite_old_image);
        assert_eq!(c.trace, 0);
        assert_eq!(c.arch, Arch::host());
    }

    #[test]
    fn output_name_suffix() {
        // (-o, -t, expected image name)
        let cases: &[(&str, &[&str], &str)] = &[
            ("foo.qcow2", &[], "foo"),
            ("foo.qcow2", &["qcow2"], "foo"),
            ("foo.raw", &["raw"], "foo"),
            ("foo.qcow2", &["raw"], "foo.qcow2"),
            ("foo.qcow2", &["qcow2", "raw"], "foo.qcow2"),
            ("out/deb.tar", &["tar"], "out/deb"),
            (".qcow2", &[], ".qcow2"),
            ("dir/.qcow2", &[], "dir/.qcow2"),
        ];
        for (o, t, want) in cases {
            let mut a = args(&["x"]);
            a.output = Some(o.to_string());
            a.types = t.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                build(&a, &env(&[])).unwrap().image_name,
                *want,
                "-o {o} -t {t:?}"
            );
        }
    }

    #[test]
    fn flags_beat_environment() {
        let e = env(&[
            ("DIB_IMAGE_SIZE", "3"),
            ("DIB_DEBUG_TRACE", "1"),
            ("DIB_IMAGE_CACHE", "/c"),
            ("DIB_ROOT_LABEL", "envlabel"),
            ("DIB_DEFAULT_INSTALLTYPE", "package"),
            ("ARCH", "arm64"),
        ]);
        let c = build(&args(&["x"]), &e).unwrap();
        assert_eq!(
            (
                c.image_size_gb,
                c.trace,
                c.image_cache.clone(),
                c.root_label.as_str(),
                c.install_type,
                c.arch
            ),
            (
                Some(3.0),
                1,
                PathBuf::from("/c"),
                "envlabel",
                InstallType::Package,
                Arch::Arm64
            )
        );
        let mut a = args(&["x"]);
        a.image_size = Some(1.5);
        a.trace = 2;
        a.image_cache = Some("/flag".into());
        a.root_label = Some("flaglabel".into());
        a.install_type = Some(InstallType::Source);
        a.arch = Some("i386".into());
        let c = build(&a, &e).unwrap();
        assert_eq!(
            (
                c.image_size_gb,
                c.trace,
                c.image_cache,
                c.root_label.as_str(),
                c.install_type,
                c.arch
            ),
            (
                Some(1.5),
                2,
                PathBuf::from("/flag"),
                "flaglabel",
                InstallType::Source,
                Arch::I386
            )
        );
    }

    #[test]
    fn environment_switches() {
        let e = env(&[
            ("DIB_OFFLINE", "1"),
            ("DIB_CHECKSUM", "1"),
            ("DIB_NO_TMPFS", "1"),
            ("OVERWRITE_OLD_IMAGE", "1"),
            ("FS_TYPE", "xfs"),
            ("break", "before-install,after-finalise.d,after-error"),
            ("TMP_DIR", "/var/tmp"),
        ]);
        let c = build(&args(&["x"]), &e).unwrap();
        assert!(c.offline && c.checksum && c.overwrite_old_image);
        assert_eq!(c.tmpfs, Tmpfs::Never);
        assert_eq!(c.root_label, "img-rootfs");
        assert_eq!(
            c.breakpoints,
            vec![
                Breakpoint::Before(crate::phases::Phase::Install),
                Breakpoint::After(crate::phases::Phase::Finalise),
                Breakpoint::AfterError
            ]
        );
        assert_eq!(c.tmp_dir, PathBuf::from("/var/tmp"));
    }

    #[test]
    fn errors_name_what_was_wrong() {
        // (environment, extra args, expected message fragment)
        let cases: &[(&[(&str, &str)], fn(&mut CreateArgs), &str)] = &[
            (
                &[("DIB_IMAGE_SIZE", "big")],
                |_| {},
                "DIB_IMAGE_SIZE=\"big\" is not valid",
            ),
            (
                &[("DIB_IMAGE_SIZE", "-1")],
                |_| {},
                "DIB_IMAGE_SIZE=-1 is not valid",
            ),
            (
                &[("DIB_OFFLINE", "yes")],
                |_| {},
                "DIB_OFFLINE=\"yes\" is not valid: use 1",
            ),
            (
                &[("FS_TYPE", "zfs")],
                |_| {},
                "FS_TYPE=\"zfs\" is not valid",
            ),
            (&[("ARCH", "sparc")], |_| {}, "ARCH=\"sparc\" is not valid"),
            (
                &[("break", "during-install")],
                |_| {},
                "\"during-install\" is not a break point",
            ),
            (
                &[("break", "after-instal")],
                |_| {},
                "\"after-instal\" is not a break point",
            ),
            (
                &[("DIB_DEFAULT_INSTALLTYPE", "pip")],
                |_| {},
                "DIB_DEFAULT_INSTALLTYPE=\"pip\"",
            ),
            (
                &[],
                |a| a.arch = Some("sparc".into()),
                "invalid value \"sparc\" for '-a <ARCH>'",
            ),
            (
                &[],
                |a| a.types = vec!["iso".into()],
                "invalid value \"iso\" for '-t <TYPES>'",
            ),
            (
                &[],
                |a| a.root_label = Some("a-label-longer-than-16".into()),
                "from --root-label: ext4 labels are 1 to 16 bytes",
            ),
            (
                &[("FS_TYPE", "xfs"), ("DIB_ROOT_LABEL", "cloudimg-rootfs")],
                |_| {},
                "from DIB_ROOT_LABEL: xfs labels are 1 to 12 bytes",
            ),
            (
                &[],
                |a| a.qemu_img_options = Some("compat=1.1,bad".into()),
                "'--qemu-img-options <K=V,..>'",
            ),
            (
                &[],
                |a| a.packages = vec!["vim".into(), "".into()],
                "for '-p <PKGS>'",
            ),
            (
                &[],
                |a| a.elements = vec!["a b".into()],
                "invalid element name \"a b\"",
            ),
            (&[], |a| a.output = Some("dir/".into()), "for '-o <NAME>'"),
        ];
        for (e, tweak, want) in cases {
            let mut a = args(&["x"]);
            tweak(&mut a);
            let err = format!("{:#}", build(&a, &env(e)).unwrap_err());
            assert!(err.contains(want), "{e:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn path_checks() {
        let dir = tempfile::tempdir().unwrap();
        let bad_yaml = dir.path().join("bd.yaml");
        std::fs::write(&bad_yaml, "- local_loop:\n    name: [\n").unwrap();
        let d = dir.path().display().to_string();
        // (environment, --logfile, expected error or None)
        let cases: Vec<(Vec<(&str, String)>, Option<&str>, Option<String>)> = vec![
            (vec![("TMP_DIR", d.clone())], None, None),
            (
                vec![("TMP_DIR", format!("{d}/nope"))],
                None,
                Some(format!("TMP_DIR=\"{d}/nope\" is not a directory: create it or point TMP_DIR elsewhere")),
            ),
            (
                vec![("TMP_DIR", d.clone())],
                Some("/nonexistent/dir/log"),
                Some("invalid value \"/nonexistent/dir/log\" for '--logfile <FILE>': directory \"/nonexistent/dir\" does not exist".into()),
            ),
            (vec![("TMP_DIR", d.clone())], Some("build.log"), None),
            (
                vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", "file:///nonexistent.yaml".into())],
                None,
                Some("DIB_BLOCK_DEVICE_CONFIG names \"/nonexistent.yaml\", which cannot be read: No such file or directory (os error 2)".into()),
            ),
            (
                vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", format!("file://{}", bad_yaml.display()))],
                None,
                Some(format!("DIB_BLOCK_DEVICE_CONFIG file {bad_yaml:?} is not valid YAML: ")),
            ),
            (
                vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", "- mkfs: {type: ext4".into())],
                None,
                Some("DIB_BLOCK_DEVICE_CONFIG is not valid YAML: ".into()),
            ),
            (vec![("TMP_DIR", d.clone()), ("DIB_BLOCK_DEVICE_CONFIG", "- mkfs: {type: ext4}".into())], None, None),
        ];
        for (vars, logfile, want) in cases {
            let e: Env = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .chain([("HOME".to_string(), "/h".to_string())])
                .collect();
            let mut a = args(&["x"]);
            a.logfile = logfile.map(PathBuf::from);
            let got = build(&a, &e)
                .unwrap()
                .check_paths()
                .map_err(|e| format!("{e:#}"));
            match (&want, &got) {
                (None, Ok(())) => {}
                (Some(w), Err(g)) if g.starts_with(w.as_str()) => {}
                _ => panic!("{vars:?} {logfile:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn missing_home_needs_image_cache() {
        let e: Env = BTreeMap::new();
        let err = build(&args(&["x"]), &e).unwrap_err().to_string();
        assert!(err.contains("pass --image-cache DIR"), "{err}");
    }

    #[test]
    fn base_and_ramdisk_elements() {
        let mut a = args(&["deploy-ironic"]);
        let c = BuildConfig::new(Mode::Ramdisk, &a, &env(&[]), vec![]).unwrap();
        assert_eq!(c.elements, vec!["base", "ramdisk", "deploy-ironic"]);
        a.no_base = true;
        a.ramdisk_element = Some("dracut-ramdisk".into());
        let c = BuildConfig::new(Mode::Ramdisk, &a, &env(&[]), vec![]).unwrap();
        assert_eq!(c.elements, vec!["dracut-ramdisk", "deploy-ironic"]);
    }

    #[test]
    fn clear_env_keeps_dib_and_essentials() {
        let e = env(&[
            ("DIB_RELEASE", "bookworm"),
            ("PATH", "/bin"),
            ("SECRET", "x"),
            ("https_proxy", "p"),
        ]);
        let mut a = args(&["x"]);
        a.clear_env = true;
        let c = build(&a, &e).unwrap();
        let keys: Vec<&str> = c.env.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["DIB_RELEASE", "HOME", "PATH", "https_proxy"]);
    }
}
