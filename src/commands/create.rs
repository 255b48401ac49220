//! `dib create` / `disk-image-create` and `dib ramdisk` / `ramdisk-image-create`.

use anyhow::{Context as _, Result};

use crate::build;
use crate::cli::CreateArgs;
use crate::config::{process_env, BuildConfig, Mode};
use crate::elements::resolve;
use crate::features;
use crate::hooks::{self, InstallTypes};

pub fn run(mode: Mode, args: &CreateArgs, argv: Vec<String>) -> Result<()> {
    let env = process_env();
    let config = BuildConfig::new(mode, args, &env, argv)?;
    config.check_paths()?;
    let set = super::load_elements(&env)?;
    let resolution = resolve(&set, &config.elements, config.arch.as_str())?;
    let install = InstallTypes::from_env(config.install_type.as_str(), &config.env);
    let tree =
        hooks::plan(&resolution.elements, &install).context("merging the elements' hook trees")?;
    tracing::info!(
        "elements: {} ({} hook files)",
        resolution.names().collect::<Vec<_>>().join(" "),
        tree.entries.len()
    );
    check_package_lists(&resolution)?;
    // Everything above is checked for every build; some requests need
    // features that land in later issues (see features.rs).
    let final_image = !resolution.contains(build::NO_FINAL_IMAGE);
    features::require(&config, final_image)?;
    build::run(&config, &resolution, tree)
}

/// Parse every element's package-installs.yaml (or .json) and pkg-map up
/// front, so a mistake in one stops the build before anything runs. They
/// are evaluated in the build, where environment.d has run.
fn check_package_lists(resolution: &crate::elements::Resolution) -> Result<()> {
    for e in &resolution.elements {
        for file in ["package-installs.yaml", "package-installs.json"] {
            if let Ok(text) = std::fs::read_to_string(e.path.join(file)) {
                crate::packages::parse(&e.name, &text)?;
                break;
            }
        }
        if let Ok(text) = std::fs::read_to_string(e.path.join("pkg-map")) {
            crate::packages::PkgMap::parse(&e.name, &text)?;
        }
    }
    Ok(())
}
