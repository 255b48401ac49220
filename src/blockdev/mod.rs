//! Block devices: the configuration ([`config`]), the layout computed from
//! it ([`layout`]), and the backends that make the image file from it
//! ([`backend`]: [`offline`] and [`helper`], sharing [`image`]).
//!
//! The host side picks and parses the configuration before the build
//! starts (so a bad one fails before anything runs); pid 1 measures the
//! tree, plans the layout and writes the image.

pub mod backend;
pub mod config;
pub mod ext4_times;
pub mod helper;
pub mod image;
pub mod layout;
pub mod offline;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

pub use backend::{Backend, DiskBackend};
pub use config::Config;
pub use layout::{Layout, Options};

/// What pid 1 needs to make a disk image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskJob {
    pub config: Config,
    /// Where the configuration came from, for messages.
    pub origin: String,
    pub options: Options,
    pub backend: Backend,
    /// `DIB_IMAGE_UUID_SEED`: identifiers derived from it, not random.
    pub uuid_seed: Option<String>,
}

/// The text of `DIB_BLOCK_DEVICE_CONFIG` (inline YAML, or `file://PATH`
/// read) and where it came from, for messages.
pub fn env_config_text(cfg: &str) -> Result<(String, String)> {
    Ok(match cfg.strip_prefix("file://") {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| {
                format!("DIB_BLOCK_DEVICE_CONFIG names {path:?}, which cannot be read")
            })?,
            format!("DIB_BLOCK_DEVICE_CONFIG file {path:?}"),
        ),
        None => (cfg.to_string(), "DIB_BLOCK_DEVICE_CONFIG".to_string()),
    })
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
        let (text, origin) = env_config_text(cfg)?;
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
    set("IMAGE_BLOCK_DEVICE_WITHOUT_PART", dev.clone());
    // `eval declare -A devices=( $IMAGE_BLOCK_DEVICES )`, as DIB's: the
    // image's node; partitions have no devices of their own here.
    set("IMAGE_BLOCK_DEVICES", format!(" [image0]={dev} "));
    set("TMP_IMAGE_PATH", dev);
    set("DIB_IMAGE_SIZE", (layout.size / 1024).to_string());
    let mut mount_points: Vec<&str> = layout
        .filesystems
        .iter()
        .filter_map(|f| f.mount_point.as_deref())
        .collect();
    mount_points.sort();
    set("DIB_MOUNTPOINTS", mount_points.join("|"));
    let boot = layout
        .filesystems
        .iter()
        .find(|f| f.mount_point.as_deref() == Some("/boot"));
    set(
        "DIB_BOOT_LABEL",
        boot.map(|f| f.label.clone().unwrap_or_else(|| f.name.clone()))
            .unwrap_or_default(),
    );
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

/// Layout settings as disk-image-create's defaults give them (ext4,
/// `cloudimg-rootfs`), for tests.
#[cfg(test)]
pub(crate) fn test_options() -> Options {
    Options {
        image_size: None,
        extra_size: 0,
        fs_type: config::FsType::Ext4,
        root_label: "cloudimg-rootfs".into(),
        journal: None,
        mkfs_options: vec![],
        max_online_resize: None,
        helper: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(dir: &Path, name: &str, files: &[(&str, &str)]) -> (String, std::path::PathBuf) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, text) in files {
            std::fs::write(d.join(f), text).unwrap();
        }
        (name.to_string(), d)
    }

    const ROOT_ONLY: &str = "- mkfs:\n    base: image0\n    mount:\n      mount_point: /\n";

    #[test]
    fn configuration_comes_from_env_then_one_element_then_the_default() {
        let t = tempfile::tempdir().unwrap();
        let mbr = element(
            t.path(),
            "layout",
            &[
                ("block-device-default.yaml", "- partitioning:\n    label: mbr\n    partitions:\n      - {name: root, size: 100%, mkfs: {mount: {mount_point: /}}}\n"),
                ("block-device-arm64.yaml", ROOT_ONLY),
            ],
        );
        let plain = element(t.path(), "plain", &[]);
        let (c, origin) = select(None, &[plain.clone(), mbr.clone()], "amd64").unwrap();
        assert!(c.table.is_some(), "{origin}");
        assert!(origin.starts_with("element 'layout'"), "{origin}");
        // The architecture's file wins over the default one.
        let (c, _) = select(None, std::slice::from_ref(&mbr), "arm64").unwrap();
        assert!(c.table.is_none());
        let (c, origin) = select(None, std::slice::from_ref(&plain), "amd64").unwrap();
        assert_eq!(c, config::default_config());
        assert_eq!(origin, "the default (one filesystem)");
        // The environment wins over elements, inline or as a file.
        let (c, origin) = select(Some(ROOT_ONLY), std::slice::from_ref(&mbr), "amd64").unwrap();
        assert!(c.table.is_none());
        assert_eq!(origin, "DIB_BLOCK_DEVICE_CONFIG");
        let f = t.path().join("bd.yaml");
        std::fs::write(&f, ROOT_ONLY).unwrap();
        let (_, origin) = select(Some(&format!("file://{}", f.display())), &[], "amd64").unwrap();
        assert!(origin.contains("bd.yaml"), "{origin}");
        let e = select(Some("file:///nonexistent.yaml"), &[], "amd64").unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
        // Two elements with a layout: an error naming both.
        let other = element(
            t.path(),
            "other",
            &[("block-device-default.yaml", ROOT_ONLY)],
        );
        let e = select(None, &[mbr, other], "amd64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "elements 'layout' and 'other' each give a block-device configuration: \
             keep one of them, or set DIB_BLOCK_DEVICE_CONFIG"
        );
    }

    #[test]
    fn hooks_learn_where_the_image_and_its_parts_are() {
        let c = config::parse(
            include_str!("../../elements/block-device-efi/block-device-default.yaml"),
            "t",
        )
        .unwrap();
        let opts = test_options();
        let usage = [("/".to_string(), 100 << 20)].into();
        let l = layout::plan(&c, &opts, &usage, &mut layout::RandomIds).unwrap();
        let env = hook_env(&l, Path::new("/tmp/dib-image.d/disk.raw"));
        assert_eq!(env["IMAGE_BLOCK_DEVICE"], "/tmp/dib-image.d/disk.raw");
        assert_eq!(env["DIB_BLOCK_DEVICE_LABEL"], "gpt");
        assert_eq!(env["DIB_ROOT_FS_UUID"], l.root().uuid);
        assert_eq!(env["DIB_ROOT_LABEL"], "cloudimg-rootfs");
        assert_eq!(env["DIB_EFI_MOUNT_POINT"], "/boot/efi");
        // The BIOS-boot partition follows the 550 MiB ESP at 1 MiB.
        assert_eq!(env["DIB_BIOS_BOOT_SECTOR"], (551u64 * 2048).to_string());
        assert_eq!(env["DIB_BIOS_BOOT_SECTORS"], "16384");
    }
}
