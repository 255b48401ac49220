//! Block devices (SPEC §5): the configuration ([`config`]), the layout
//! computed from it ([`layout`]) and the offline backend that writes it
//! into an image file ([`offline`]).
//!
//! The host side picks and parses the configuration before the build
//! starts (so a bad one fails before anything runs); pid 1 measures the
//! tree, plans the layout and writes the image.

pub mod config;
pub mod layout;
pub mod offline;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

pub use config::Config;
pub use layout::{Layout, Options};

/// What pid 1 needs to make a disk image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskJob {
    pub config: Config,
    /// Where the configuration came from, for messages.
    pub origin: String,
    pub options: Options,
}

/// The configuration of a build: `DIB_BLOCK_DEVICE_CONFIG` (inline YAML or
/// `file://PATH`), else the one element of the set with a
/// `block-device-ARCH.yaml` or `block-device-default.yaml`, else one
/// filesystem on the whole image.
pub fn select(
    from_env: Option<&str>,
    elements: &[(String, std::path::PathBuf)],
    arch: &str,
) -> Result<(Config, String)> {
    if let Some(cfg) = from_env {
        let (text, origin) = match cfg.strip_prefix("file://") {
            Some(path) => (
                std::fs::read_to_string(path).with_context(|| {
                    format!("DIB_BLOCK_DEVICE_CONFIG names {path:?}, which cannot be read")
                })?,
                format!("DIB_BLOCK_DEVICE_CONFIG file {path:?}"),
            ),
            None => (cfg.to_string(), "DIB_BLOCK_DEVICE_CONFIG".to_string()),
        };
        return Ok((config::parse(&text, &origin)?, origin));
    }
    let mut found: Vec<(String, std::path::PathBuf)> = Vec::new();
    for (name, dir) in elements {
        for file in [
            format!("block-device-{arch}.yaml"),
            "block-device-default.yaml".into(),
        ] {
            let p = dir.join(&file);
            if p.is_file() {
                found.push((name.clone(), p));
                break;
            }
        }
    }
    match found.as_slice() {
        [] => Ok((
            config::default_config(),
            "the default (one filesystem)".into(),
        )),
        [(name, path)] => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
            let origin = format!("element '{name}' ({})", path.display());
            Ok((config::parse(&text, &origin)?, origin))
        }
        many => {
            let names: Vec<String> = many.iter().map(|(n, _)| format!("'{n}'")).collect();
            bail!(
                "elements {} each give a block-device configuration: keep one of them, \
                 or set DIB_BLOCK_DEVICE_CONFIG",
                names.join(" and ")
            )
        }
    }
}

/// Variables finalise.d (and the phases around it) get about the image:
/// `IMAGE_BLOCK_DEVICE` (the image file, as the hook sees it) and what the
/// bootloader needs to know.
pub fn hook_env(layout: &Layout, image: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    let dev = image.display().to_string();
    set("IMAGE_BLOCK_DEVICE", dev.clone());
    set("IMAGE_BLOCK_DEVICE_WITHOUT_PART", dev);
    set(
        "DIB_BLOCK_DEVICE_LABEL",
        layout.label.map_or("none", |l| l.as_str()).to_string(),
    );
    let root = layout.root();
    set("DIB_ROOT_FS_UUID", root.uuid.clone());
    set("DIB_ROOT_FSTYPE", root.kind.to_string());
    if let Some(l) = &root.label {
        set("DIB_ROOT_LABEL", l.clone());
    }
    if let Some((start, len)) = layout.bios_boot_area() {
        set("DIB_BIOS_BOOT_SECTOR", start.to_string());
        set("DIB_BIOS_BOOT_SECTORS", len.to_string());
    }
    if let Some(esp) = layout.filesystems.iter().find(|f| {
        f.partition.is_some_and(|n| {
            layout
                .partitions
                .iter()
                .any(|p| p.number == n && p.ptype == config::PartType::Esp)
        })
    }) {
        if let Some(p) = &esp.mount_point {
            set("DIB_EFI_MOUNT_POINT", p.clone());
        }
    }
    env
}
