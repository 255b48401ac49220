//! `dib get-kernel` / `disk-image-get-kernel`.

use anyhow::{bail, ensure, Result};

use crate::cli::GetKernelArgs;
use crate::features::Feature;

pub fn run(args: &GetKernelArgs) -> Result<()> {
    let Some(image) = args.image.as_ref().or(args.image_arg.as_ref()) else {
        bail!("no image given: pass the image to read, e.g. `dib get-kernel image.qcow2`");
    };
    ensure!(
        image.is_file(),
        "image {image:?} does not exist or is not a file"
    );
    if let Some(dest) = &args.dest {
        ensure!(
            dest.is_dir(),
            "destination {dest:?} (-d) is not a directory"
        );
    }
    debug_assert!(!Feature::Ramdisks.available());
    bail!("not yet supported in this version of dib:\n  - extracting a kernel from an image (ramdisks, issue #7)")
}
