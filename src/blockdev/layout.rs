//! From a [`Config`] and the tree's size to a [`Layout`]: the image size,
//! every partition's place and every filesystem's offset, size, label and
//! UUID. Pure arithmetic, DIB's sizing rules, so both backends and the
//! bootloader work from the same numbers, chosen before anything is written.
//!
//! `size` sizes the filesystems and places the partitions, `ids` chooses
//! identifiers, `fstab` writes the image's `/etc/fstab`, `mkfs_options`
//! checks the options given for mkfs against what the layout decides.

mod fstab;
mod ids;
mod mkfs_options;
mod size;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use dib_sandbox::table::SECTOR;
use serde::{Deserialize, Serialize};

use super::config::{Config, FsType, Fstab, Label, PartType};
pub use ids::{Ids, RandomIds, SeededIds};

const MIB: u64 = 1 << 20;

/// The image and the root filesystem are rounded up to this.
pub const ROUND: u64 = 64 << 10;
/// Sectors GPT keeps at the end of the disk (backup entries and header).
const GPT_TAIL: u64 = 33 * SECTOR;
/// Smallest filesystem dib makes, whatever its contents.
const MIN_FS: u64 = 16 * MIB;
/// Bytes of content per byte of filesystem when sizing (DIB's `/ 0.6`).
const FILL: f64 = 0.6;
/// The smallest filesystem mkfs.xfs makes (xfsprogs 5.19 and later).
const MIN_XFS: u64 = 300 * MIB;
/// ext3/ext4 journal assumed when `--mkfs-journal-size` is not given.
const DEFAULT_JOURNAL: u64 = 64 * MIB;
/// Online-resize headroom of the root ext filesystem: 1 PiB.
pub const DEFAULT_MAX_ONLINE_RESIZE: u64 = 1 << 50;

/// The build's settings that shape the layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// `--image-size`, in bytes.
    pub image_size: Option<u64>,
    /// `--image-extra-size`, in bytes, added to the root filesystem.
    pub extra_size: u64,
    /// `FS_TYPE`: the root's type when the config does not say.
    pub fs_type: FsType,
    /// `--root-label`: the root's label when the config does not say.
    pub root_label: String,
    /// `--mkfs-journal-size`, in bytes.
    pub journal: Option<u64>,
    /// `--mkfs-options`, for the root filesystem.
    pub mkfs_options: Vec<String>,
    /// `--max-online-resize`, in bytes.
    pub max_online_resize: Option<u64>,
    /// The helper backend builds the image (which can make xfs).
    #[serde(default)]
    pub helper: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedPartition {
    pub name: String,
    /// 1-based, as the kernel numbers them.
    pub number: u32,
    /// Byte offset and length in the image.
    pub start: u64,
    pub size: u64,
    pub ptype: PartType,
    pub boot: bool,
    /// The GPT partition's unique GUID.
    pub guid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedFs {
    pub name: String,
    pub kind: FsType,
    pub label: Option<String>,
    /// Fixed before any build step: fstab, the bootloader and both backends
    /// use it.
    pub uuid: String,
    /// Extra mkfs options (for ext, without `-E`: see `extended`).
    pub opts: Vec<String>,
    /// ext: the options' `-E` values, merged into dib's one `-E` (mke2fs
    /// keeps only the last `-E`, which would drop dib's `offset=`).
    pub extended: Vec<String>,
    pub mount_point: Option<String>,
    pub fstab: Option<Fstab>,
    /// Byte offset and length in the image file.
    pub offset: u64,
    pub size: u64,
    /// The partition number it lives in (`None`: the whole image).
    pub partition: Option<u32>,
    /// ext3/ext4 journal size, bytes (`None`: mkfs decides).
    pub journal: Option<u64>,
    /// ext: `-E resize=` in bytes.
    pub max_online_resize: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The image file's size in bytes.
    pub size: u64,
    pub label: Option<Label>,
    /// GPT disk GUID, or the MBR disk signature as 8 hex digits.
    pub disk_id: String,
    pub partitions: Vec<PlacedPartition>,
    pub filesystems: Vec<PlacedFs>,
}

impl PlacedFs {
    /// What mkfs gets, whichever backend runs it (`None`: a type neither
    /// backend makes, refused when the layout is planned).
    pub fn mkfs_spec(&self) -> Option<dib_sandbox::mkfs::MkfsSpec> {
        (self.kind != FsType::Btrfs).then(|| dib_sandbox::mkfs::MkfsSpec {
            fs: self.kind,
            label: self.label.clone(),
            uuid: self.uuid.clone(),
            size: self.size,
            journal: self.journal,
            max_online_resize: self.max_online_resize,
            extended: self.extended.clone(),
            options: self.opts.clone(),
        })
    }
}

impl Layout {
    /// The filesystem mounted at `/`.
    pub fn root(&self) -> &PlacedFs {
        self.filesystems
            .iter()
            .find(|f| f.mount_point.as_deref() == Some("/"))
            .expect("a layout always has a root (checked when parsing)")
    }

    /// Where GRUB's core image goes for BIOS boot: (first sector, sectors
    /// available). MBR: the gap before the first partition; GPT: the
    /// BIOS-boot partition. `None` when the layout cannot boot by BIOS.
    pub fn bios_boot_area(&self) -> Option<(u64, u64)> {
        match self.label? {
            Label::Mbr => {
                let first = self.partitions.iter().map(|p| p.start).min()?;
                (first > SECTOR).then(|| (1, first / SECTOR - 1))
            }
            Label::Gpt => self
                .partitions
                .iter()
                .find(|p| p.ptype == PartType::BiosBoot)
                .map(|p| (p.start / SECTOR, p.size / SECTOR)),
        }
    }

    /// The partition table both backends write (`None`: no table).
    pub fn table(&self) -> Option<dib_sandbox::table::Table> {
        use dib_sandbox::table::{Entry, Table};
        Some(Table {
            label: self.label?,
            disk_id: self.disk_id.clone(),
            entries: self
                .partitions
                .iter()
                .map(|p| Entry {
                    number: p.number,
                    start: p.start,
                    size: p.size,
                    kind: p.ptype,
                    bootable: p.boot,
                    name: p.name.clone(),
                    guid: p.guid.clone(),
                })
                .collect(),
        })
    }
}

/// Bytes of content under each mount point (from [`super::measure`]).
pub type Usage = BTreeMap<String, u64>;

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Place everything. `usage` gives the content under each mount point.
pub fn plan(config: &Config, opts: &Options, usage: &Usage, ids: &mut dyn Ids) -> Result<Layout> {
    let wants = size::wants(config, opts, usage)?;
    let (size, label, parts) = size::place_all(config, opts, &wants)?;

    let mut filesystems = Vec::new();
    for fs in &config.filesystems {
        let is_root = fs.mount_point.as_deref() == Some("/");
        let kind = fs.kind.unwrap_or(opts.fs_type);
        let (offset, len, partition) = match parts.iter().find(|p| p.name == fs.base) {
            Some(p) => (p.start, p.size, Some(p.number)),
            None => (0, size, None),
        };
        let label = fs
            .label
            .clone()
            .or_else(|| is_root.then(|| opts.root_label.clone()));
        if let Some(l) = &label {
            if l.len() > kind.max_label() {
                bail!(
                    "filesystem '{}': label {l:?} is longer than {kind} allows ({} bytes)",
                    fs.name,
                    kind.max_label()
                );
            }
        }
        let uuid = match &fs.uuid {
            Some(u) => u.clone(),
            None if kind == FsType::Vfat => ids.vfat_id(),
            None => ids.uuid(),
        };
        let mut o = fs.opts.clone();
        if is_root {
            o.extend(opts.mkfs_options.iter().cloned());
        }
        let (o, extended) = mkfs_options::split(kind, &o)
            .with_context(|| format!("mkfs options of '{}'", fs.name))?;
        filesystems.push(PlacedFs {
            name: fs.name.clone(),
            kind,
            label,
            uuid,
            opts: o,
            extended,
            mount_point: fs.mount_point.clone(),
            fstab: fs.fstab.clone(),
            offset,
            size: len,
            partition,
            journal: if is_root { opts.journal } else { None },
            max_online_resize: (is_root && kind.is_ext())
                .then(|| opts.max_online_resize.unwrap_or(DEFAULT_MAX_ONLINE_RESIZE)),
        });
    }
    let mut labels = std::collections::BTreeSet::new();
    for f in &filesystems {
        if let Some(l) = &f.label {
            if !labels.insert(l.as_str()) {
                bail!("two filesystems are labelled {l:?} (the root's comes from --root-label): LABEL= would not tell them apart");
            }
        }
    }
    let mut partitions = parts;
    for p in &mut partitions {
        p.guid = ids.uuid();
    }
    let disk_id = match label {
        Some(Label::Gpt) => ids.uuid(),
        _ => ids.uuid().replace('-', "")[..8].to_string(),
    };
    Ok(Layout {
        size,
        label,
        disk_id,
        partitions,
        filesystems,
    })
}

/// `550 MiB`, `1.3 GiB`.
pub fn human(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", b.div_ceil(MIB))
    }
}
