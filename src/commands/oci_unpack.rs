//! `dib-oci-unpack SOURCE TARGET`: the oci-base element's root.d, in the
//! build's namespace: the source made an OCI image layout (`oci::fetch`),
//! unpacked into the tree (`oci::unpack`).

use anyhow::{bail, Result};

use crate::cli::OciUnpackArgs;
use crate::oci::{fetch, unpack};

pub fn run(args: &OciUnpackArgs) -> Result<()> {
    let settings = fetch::Settings::from_env(|k| std::env::var(k).ok())?;
    if !args.target.is_dir() {
        bail!(
            "the target {} is not a directory: give the tree to unpack into (TARGET_ROOT)",
            args.target.display()
        );
    }
    let source = fetch::Source::parse(&args.source)?;
    let fetched = fetch::fetch(&source, &settings)?;
    println!(
        "dib-oci-unpack: unpacking {} for {} into {}",
        fetched.what,
        settings.arch.as_str(),
        args.target.display()
    );
    let summary = unpack::unpack_as(
        &fetched.layout,
        fetched.name.as_deref(),
        &fetched.what,
        settings.arch,
        &args.target,
        true,
    )?;
    for s in &summary.skipped_xattrs {
        tracing::warn!("the extended attribute {s} was not set: this build cannot set it");
    }
    println!("dib-oci-unpack: unpacked {summary}");
    Ok(())
}
