//! `dib create` / `disk-image-create` and `dib ramdisk` / `ramdisk-image-create`.

use anyhow::{Context as _, Result};

use crate::cli::CreateArgs;
use crate::config::{process_env, BuildConfig, Mode};
use crate::elements::resolve;
use crate::hooks;
use crate::oci;
use crate::pipeline::job::Products;
use crate::pipeline::{self, package_lists::PackageLists};

pub fn run(mode: Mode, args: &CreateArgs, argv: Vec<String>) -> Result<()> {
    let env = process_env();
    let config = BuildConfig::new(mode, args, &env, argv)?;
    config.check_paths()?;
    let set = super::load_elements(&env)?;
    let resolution = resolve(&set, &config.elements, config.arch.as_str())?;
    let tree = hooks::plan(&resolution.elements).context("merging the elements' hook trees")?;
    tracing::info!(
        "elements: {} ({} hook files)",
        resolution.names().collect::<Vec<_>>().join(" "),
        tree.entries.len()
    );
    let package_lists = PackageLists::read(&resolution)?;
    let final_image = pipeline::job::final_image(&resolution);
    // A push is checked first: everything it needs is known now, and the
    // registry must answer before anything is built.
    let push = match &config.push {
        Some(target) => Some(oci::push::check(target, &config, final_image, &env)?),
        None => None,
    };
    // Before anything is downloaded: the target's binaries must run here.
    config.arch.check_runnable()?;
    let products = Products::new(&config, final_image)?;
    if products.outputs.iter().any(|o| o.kind.is_container()) {
        // What the user set; what elements set is checked when the image
        // is written.
        oci::image::ImageConfig::from_env(&config.env)?;
        oci::image::source_date_epoch(&config.env)?;
    }
    pipeline::run(&config, &resolution, tree, package_lists, products)?;
    // The outputs are named: the build is done whatever the push does.
    if let Some(push) = push {
        push.run(&config.tmp_dir, config.quiet)?;
    }
    Ok(())
}
