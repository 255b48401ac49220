//! The command line, as clap derive types. The doc comments are the help text.
//!
//! Raw arguments stop here: [`crate::config::BuildConfig::new`] turns
//! [`CreateArgs`] plus the environment into a validated configuration before
//! any work starts. Values clap can check on its own (numbers, enums) are
//! checked here, so a bad value is reported with the flag's name.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// dib: build disk images, filesystem images and ramdisks from
/// diskimage-builder elements, without root.
#[derive(Debug, Parser)]
#[command(name = "dib", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a disk image (default qcow2) from elements; also `disk-image-create`.
    Create(CreateArgs),
    /// Build a kernel + initramfs pair; also `ramdisk-image-create`.
    Ramdisk(CreateArgs),
    /// Print the expanded element set or its environment; also `element-info`.
    ElementInfo(ElementInfoArgs),
    /// Extract the kernel and initrd of a built image; also `disk-image-get-kernel`.
    GetKernel(GetKernelArgs),
    /// Check elements against dib's conventions (whitespace, names, executable bits, ...).
    Lint(LintArgs),
    /// Show which scripts of a phase directory run, in order (dib-run-parts).
    RunParts(RunPartsArgs),
    /// Unpack a container image into a tree, as the oci-base element's hooks
    /// do; also `dib-oci-unpack`.
    #[command(name = "oci-unpack", hide = true)]
    OciUnpack(OciUnpackArgs),
    /// Copy the files of a filesystem image only root can mount (xfs)
    /// through dib-helper, as sysprep's extract-image does; also
    /// `dib-helper-copy`.
    #[command(name = "helper-copy", hide = true)]
    HelperCopy(HelperCopyArgs),
    /// Internal: the supervisor inside a build's namespaces.
    #[command(name = "__sandbox-supervise", hide = true)]
    SandboxSupervise,
    /// Internal: pid 1 of a build.
    #[command(name = "__sandbox-init", hide = true)]
    SandboxInit,
}

/// Where block devices are made: `offline` writes partitions and filesystems
/// straight into the image file with no privilege; `helper` asks a running
/// dib-helper; `auto` uses the helper when its socket answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum BlockBackend {
    #[default]
    Auto,
    Offline,
    Helper,
}

/// How elements with install types install their software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InstallType {
    Source,
    Package,
}

impl InstallType {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallType::Source => "source",
            InstallType::Package => "package",
        }
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct CreateArgs {
    /// Target architecture: amd64, arm64, armhf or i386 [default: the host's, or $ARCH]
    #[arg(short = 'a', value_name = "ARCH")]
    pub arch: Option<String>,

    /// Output name; a trailing ".<type>" is dropped when one output type is given [default: image]
    #[arg(short = 'o', value_name = "NAME")]
    pub output: Option<String>,

    /// Output types, comma-separated: qcow2, raw, tar, tgz, squashfs, vhd, oci, or another
    /// qemu-img format [default: qcow2]
    #[arg(short = 't', value_name = "TYPES", value_delimiter = ',')]
    pub types: Vec<String>,

    /// Trace the build (set -x in hooks); repeat for more (sets DIB_DEBUG_TRACE)
    #[arg(short = 'x', action = clap::ArgAction::Count)]
    pub trace: u8,

    /// Do not compress qcow2 output
    #[arg(short = 'u')]
    pub uncompressed: bool,

    /// Clear the environment: keep only DIB_*, ELEMENTS_PATH, PATH, HOME, TERM and proxies
    #[arg(short = 'c')]
    pub clear_env: bool,

    /// Do not add the default `base` element
    #[arg(short = 'n')]
    pub no_base: bool,

    /// Extra packages to install after install.d, comma-separated (repeatable)
    #[arg(short = 'p', value_name = "PKGS", value_delimiter = ',')]
    pub packages: Vec<String>,

    /// Write <image>.md5 and <image>.sha256 beside each image
    #[arg(long)]
    pub checksum: bool,

    /// The name and tag of -t docker's image (REPO[:TAG]) [default: the
    /// --push reference's, else the output's name, tag latest]; its tag
    /// also names -t oci's image
    #[arg(long, value_name = "REPO[:TAG]")]
    pub docker_target: Option<String>,

    /// Image size in GB (fractions allowed) [default: computed from the tree]
    #[arg(long, value_name = "GB", value_parser = positive_number)]
    pub image_size: Option<f64>,

    /// Extra MB on top of the computed image size
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64))]
    pub image_extra_size: Option<u64>,

    /// Cache directory [default: $DIB_IMAGE_CACHE or ~/.cache/image-create]
    #[arg(long, value_name = "DIR")]
    pub image_cache: Option<PathBuf>,

    /// Let the root ext4 grow online to N blocks (mkfs -E resize=N) [default: 1 PB worth]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_online_resize: Option<u64>,

    /// Build in a tmpfs when the machine has at least 2*N GB of memory [default: 2]
    #[arg(long, value_name = "GB", value_parser = positive_number)]
    pub min_tmpfs: Option<f64>,

    /// Never build in a tmpfs
    #[arg(long)]
    pub no_tmpfs: bool,

    /// Neither reuse nor keep the layers of the build's steps: every phase
    /// runs (DIB_NO_CACHE=1)
    #[arg(long)]
    pub no_cache: bool,

    /// Extra options for the root filesystem's mkfs
    #[arg(long, value_name = "OPTS", allow_hyphen_values = true)]
    pub mkfs_options: Option<String>,

    /// Journal size of the root filesystem in MB
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub mkfs_journal_size: Option<u64>,

    /// Use only what is cached; never refresh from the network (sets DIB_OFFLINE=1)
    #[arg(long)]
    pub offline: bool,

    /// A stricter box for the hooks: the user's home hidden, and no network
    /// after the phases that install packages (none with --offline)
    /// (DIB_STRICT_BOX=1)
    #[arg(long)]
    pub strict_box: bool,

    /// Trust the host's CA certificates in every phase (for a TLS-inspecting
    /// proxy); they are never copied into the image [env: DIB_TRUST_HOST_CA=1]
    #[arg(long)]
    pub trust_host_ca: bool,

    /// Options for `qemu-img convert -o`, as k=v,k=v
    #[arg(long, value_name = "K=V,..")]
    pub qemu_img_options: Option<String>,

    /// Root filesystem label [default: cloudimg-rootfs; img-rootfs for xfs]
    #[arg(long, value_name = "LABEL")]
    pub root_label: Option<String>,

    /// Element that makes the ramdisk for ramdisk builds [default: ramdisk]
    #[arg(long, value_name = "ELEMENT")]
    pub ramdisk_element: Option<String>,

    /// Default install type of elements that offer several [default: source]
    #[arg(long, value_enum, value_name = "TYPE")]
    pub install_type: Option<InstallType>,

    /// Also write a timestamped log to this file
    #[arg(long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,

    /// After a successful build, push its OCI output (-t oci) to this registry
    /// reference, HOST[:PORT]/REPOSITORY[:TAG], with skopeo [env: DIB_PUSH]
    #[arg(long, value_name = "REF")]
    pub push: Option<String>,

    /// Let --push use plain HTTP or unverified TLS with a registry that is not
    /// on the loopback (a loopback one always may) [env: DIB_PUSH_INSECURE=1]
    #[arg(long)]
    pub push_insecure: bool,

    /// Where partitions and filesystems are made
    #[arg(long, value_enum, value_name = "BACKEND", default_value_t = BlockBackend::Auto)]
    pub block_backend: BlockBackend,

    /// Elements to build from
    #[arg(value_name = "ELEMENT", required = true)]
    pub elements: Vec<String>,
}

fn positive_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, got {s:?}")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ElementInfoArgs {
    /// Print eval-able bash: IMAGE_ELEMENT, IMAGE_ELEMENT_YAML and get_image_element_array
    #[arg(short = 'e', long)]
    pub env: bool,

    /// Print the expanded element names (the default output)
    #[arg(short = 'd', long)]
    pub expand_dependencies: bool,

    /// Elements to expand
    #[arg(value_name = "ELEMENT", required = true)]
    pub elements: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GetKernelArgs {
    /// Directory to write the kernel and initrd to [default: the current directory]
    #[arg(short = 'd', value_name = "DIR")]
    pub dest: Option<PathBuf>,

    /// Image to read (as `disk-image-get-kernel -i`)
    #[arg(short = 'i', value_name = "IMAGE", conflicts_with = "image_arg")]
    pub image: Option<PathBuf>,

    /// Prefix of the output files [default: the image name]
    #[arg(short = 'o', value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Image to read
    #[arg(value_name = "IMAGE", id = "image_arg")]
    pub image_arg: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct LintArgs {
    /// Element directories, or directories of elements [default: ELEMENTS_PATH and the shipped tree]
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RunPartsArgs {
    /// List the scripts that would run, in order, one path a line
    #[arg(long, required = true)]
    pub list: bool,

    /// Also report skipped files and why, on stderr
    #[arg(short = 'x', long)]
    pub verbose: bool,

    /// The phase directory
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `dib-helper-copy FS IMAGE DEST`: sysprep's extract-image runs it in a
/// root.d hook for a cloud image's xfs root: dib-helper attaches IMAGE (a
/// filesystem image, no partition table) read-only and mounts it idmapped
/// into the build's user namespace; its files are copied into DEST. It
/// reads DIB_HELPER_SOCKET and TMPDIR from its environment.
#[derive(Debug, Clone, Args)]
pub struct HelperCopyArgs {
    /// The filesystem's type (xfs)
    #[arg(value_name = "FS")]
    pub fs: String,

    /// The filesystem image (a file this user owns)
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// The directory its files are copied into
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

/// `dib-oci-unpack SOURCE TARGET`: the oci-base element's root.d runs it
/// in the build's namespace. It reads ARCH, DIB_IMAGE_CACHE, DIB_OFFLINE,
/// DIB_OCI_BASE_INSECURE, REGISTRY_AUTH_FILE and TMPDIR from its
/// environment.
#[derive(Debug, Clone, Args)]
pub struct OciUnpackArgs {
    /// The image: oci:DIR[:NAME], oci-archive:FILE[:NAME], docker-archive:FILE,
    /// docker://HOST[:PORT]/REPO[:TAG|@DIGEST], or a directory, archive or
    /// reference as it is
    #[arg(value_name = "SOURCE")]
    pub source: String,

    /// The directory to unpack it into (TARGET_ROOT)
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
}
