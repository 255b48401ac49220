//! What the host side hands to pid 1: everything the phases need, as data.
//!
//! The job crosses into the sandbox as a JSON file in the (still empty) build
//! directory, named by an environment variable of the re-executed dib (an
//! environment string is limited to 128 KiB, too small for a large hook
//! tree). pid 1 reads it before anything is mounted there, so it never
//! re-reads arguments, elements or the host environment: what was validated
//! outside is exactly what runs inside.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Breakpoint;
use crate::hooks::HookTree;

/// The environment variable naming the job file.
pub const JOB_ENV: &str = "DIB_SANDBOX_JOB";
/// The job file's name in the build directory.
pub const JOB_FILE: &str = ".dib-job.json";

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
    /// `get_image_element_array`'s body, exported to hooks as a bash function.
    pub element_array: String,
    /// `break=` points.
    pub breakpoints: Vec<BreakAt>,
    /// `DIB_DEBUG_TRACE`: list skipped files when > 0.
    pub trace: u32,
    /// `--logfile`.
    pub logfile: Option<PathBuf>,
    /// False when `no-final-image` is in the element set.
    pub final_image: bool,
    /// `DIB_QUIET`: no status line on a terminal.
    pub quiet: bool,
    /// What to write from the finished tree (empty with `no-final-image`).
    pub outputs: Vec<super::outputs::Output>,
    /// How outputs are written (overwrite, compression, checksums).
    pub output_settings: super::outputs::Settings,
    /// The block-device configuration, when an output is a disk image.
    pub disk: Option<crate::blockdev::DiskJob>,
    /// The kernel and initramfs to write, for a ramdisk build.
    pub ramdisk: Option<crate::ramdisk::RamdiskJob>,
    /// `-p`: installed with the image's `install-packages` after install.d.
    pub packages: Vec<String>,
    /// The element set with real paths, for files read per element
    /// (`package-installs.yaml`, `pkg-map`).
    pub elements: Vec<(String, PathBuf)>,
}

/// A `break=` point, in a form that crosses the JSON boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakAt {
    Before(String),
    After(String),
    AfterError,
}

impl From<&Breakpoint> for BreakAt {
    fn from(b: &Breakpoint) -> Self {
        match b {
            Breakpoint::Before(p) => BreakAt::Before(p.to_string()),
            Breakpoint::After(p) => BreakAt::After(p.to_string()),
            Breakpoint::AfterError => BreakAt::AfterError,
        }
    }
}
