//! One function per subcommand, each taking parsed arguments.
//! They wire the library together; the logic lives in the modules they call.

pub mod create;
pub mod element_info;
pub mod get_kernel;
pub mod helper_copy;
pub mod lint;
pub mod oci_unpack;
pub mod run_parts;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::Env;
use crate::elements::ElementSet;

/// The shipped element tree: `<prefix>/share/dib/elements` beside an
/// installed binary, else the source tree this binary was built from.
pub fn shipped_elements_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            let installed = prefix.join("share/dib/elements");
            if installed.is_dir() {
                return installed;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("elements")
}

/// Discover elements over `ELEMENTS_PATH` and the shipped tree, warning about
/// shadowed ones.
pub fn load_elements(env: &Env) -> Result<ElementSet> {
    let set = ElementSet::discover(
        env.get("ELEMENTS_PATH").map(String::as_str),
        &shipped_elements_dir(),
    )?;
    for s in set.shadowed() {
        tracing::warn!("{s}");
    }
    Ok(set)
}
