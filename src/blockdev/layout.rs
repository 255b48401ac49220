//! From a [`Config`] and the tree's size to a [`Layout`]: the image size,
//! every partition's place and every filesystem's offset, size, label and
//! UUID. Pure arithmetic (SPEC §5's sizing), so both backends and the
//! bootloader work from the same numbers, chosen before anything is written.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::config::{Config, FsKind, Fstab, Label, PartType, Size};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
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
    pub fs_type: FsKind,
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
    pub kind: FsKind,
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
    /// backend makes, refused when the configuration is parsed).
    pub fn mkfs_spec(&self) -> Option<dib_sandbox::mkfs::MkfsSpec> {
        use dib_sandbox::mkfs::{FsType, MkfsSpec};
        Some(MkfsSpec {
            fs: match self.kind {
                FsKind::Ext2 => FsType::Ext2,
                FsKind::Ext3 => FsType::Ext3,
                FsKind::Ext4 => FsType::Ext4,
                FsKind::Vfat => FsType::Vfat,
                FsKind::Swap => FsType::Swap,
                FsKind::Xfs => FsType::Xfs,
                FsKind::Btrfs => return None,
            },
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
        use dib_sandbox::table::{Entry, Label as L, Table};
        Some(Table {
            label: match self.label? {
                Label::Mbr => L::Mbr,
                Label::Gpt => L::Gpt,
            },
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

    /// `/etc/fstab` of the image: one line per filesystem with an fstab
    /// node, by label when it has one (as DIB), else by UUID.
    pub fn fstab(&self) -> String {
        let mut out = String::from("# Written by dib from the block-device configuration.\n");
        let mut fss: Vec<&PlacedFs> = self
            .filesystems
            .iter()
            .filter(|f| f.fstab.is_some())
            .collect();
        // Parents before children, as mount order needs.
        fss.sort_by_key(|f| {
            f.mount_point.as_deref().map_or(usize::MAX, |p| {
                p.matches('/').count() + usize::from(p != "/")
            })
        });
        for f in fss {
            let t = f.fstab.as_ref().expect("filtered");
            let spec = match (&f.label, f.kind) {
                (Some(l), k) if k != FsKind::Vfat => format!("LABEL={l}"),
                _ => format!("UUID={}", f.uuid),
            };
            let point = f
                .mount_point
                .as_deref()
                .map_or_else(|| "none".to_string(), fstab_escape);
            out.push_str(&format!(
                "{spec} {point} {} {} {} {}\n",
                f.kind, t.options, t.dump_freq, t.fsck_passno
            ));
        }
        out
    }
}

/// fstab's octal escapes for the characters that separate its fields.
fn fstab_escape(p: &str) -> String {
    p.replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012")
}

/// Bytes of content under each mount point (from [`super::measure`]).
pub type Usage = BTreeMap<String, u64>;

/// Random UUIDs for every filesystem and partition that has none: the only
/// input of [`plan`] that is not deterministic, so tests pass their own.
pub trait Ids {
    fn uuid(&mut self) -> String;
    fn vfat_id(&mut self) -> String;
}

/// Fresh random identifiers.
#[derive(Debug, Default)]
pub struct RandomIds;

impl Ids for RandomIds {
    fn uuid(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
    fn vfat_id(&mut self) -> String {
        let b = uuid::Uuid::new_v4();
        let b = b.as_bytes();
        format!("{:02X}{:02X}-{:02X}{:02X}", b[0], b[1], b[2], b[3])
    }
}

/// Identifiers derived from a seed (`DIB_IMAGE_UUID_SEED`): the same
/// seed and configuration give the same disk, partition and filesystem
/// identifiers, whichever backend builds the image (reproducible images).
#[derive(Debug)]
pub struct SeededIds {
    seed: String,
    n: u64,
}

impl SeededIds {
    pub fn new(seed: &str) -> Self {
        SeededIds {
            seed: seed.to_string(),
            n: 0,
        }
    }

    fn next(&mut self) -> uuid::Uuid {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.seed.as_bytes());
        h.update(self.n.to_le_bytes());
        self.n += 1;
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

impl Ids for SeededIds {
    fn uuid(&mut self) -> String {
        self.next().to_string()
    }
    fn vfat_id(&mut self) -> String {
        let b = *self.next().as_bytes();
        format!("{:02X}{:02X}-{:02X}{:02X}", b[0], b[1], b[2], b[3])
    }
}

/// How big a filesystem with `content` bytes must be.
fn need(kind: FsKind, content: u64, extra: u64, journal: Option<u64>) -> u64 {
    let data = (content as f64 / FILL).ceil() as u64 + extra;
    let j = match kind {
        FsKind::Ext3 | FsKind::Ext4 | FsKind::Xfs => journal.unwrap_or(DEFAULT_JOURNAL),
        _ => 0,
    };
    let min = if kind == FsKind::Xfs { MIN_XFS } else { MIN_FS };
    round_up(data + j, ROUND).max(min)
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Place everything. `usage` gives the content under each mount point.
pub fn plan(config: &Config, opts: &Options, usage: &Usage, ids: &mut dyn Ids) -> Result<Layout> {
    // What each filesystem must be, and which base (partition or disk) holds it.
    struct Want {
        kind: FsKind,
        need: u64,
    }
    let mut wants: BTreeMap<&str, Want> = BTreeMap::new();
    for fs in &config.filesystems {
        let is_root = fs.mount_point.as_deref() == Some("/");
        let kind = fs.kind.unwrap_or(opts.fs_type);
        match kind {
            FsKind::Xfs if !opts.helper => bail!(
                "filesystem '{}' is xfs: the offline backend builds ext2/3/4, vfat and swap \
                 (mkfs.xfs cannot fill a filesystem from a tree without privilege); use ext4, \
                 or the helper backend (--block-backend helper, with a dib-helper running: \
                 docs/security.md)",
                fs.name
            ),
            FsKind::Btrfs => bail!(
                "filesystem '{}' is btrfs, which dib does not build yet: use ext4 or xfs",
                fs.name
            ),
            _ => {}
        }
        let content = fs
            .mount_point
            .as_ref()
            .and_then(|p| usage.get(p))
            .copied()
            .unwrap_or(0);
        let extra = if is_root { opts.extra_size } else { 0 };
        let journal = if is_root { opts.journal } else { None };
        let n = match kind {
            FsKind::Swap => MIB,
            FsKind::Vfat => {
                round_up((content as f64 / FILL).ceil() as u64 + MIB, ROUND).max(MIB * 2)
            }
            _ => need(kind, content, extra, journal),
        };
        wants.insert(fs.base.as_str(), Want { kind, need: n });
    }

    let (size, label, parts) = match &config.table {
        None => {
            let want = wants
                .get(config.disk.name.as_str())
                .map_or(MIN_FS, |w| w.need);
            let size = fixed_size(config, opts).unwrap_or(want);
            if size < want {
                bail!(
                    "the image is {} but its filesystem needs {}: give a larger --image-size \
                     (or local_loop size) or none",
                    human(size),
                    human(want)
                );
            }
            (size, None, Vec::new())
        }
        Some(table) => {
            let fits = |total: u64| place(table, total);
            let mut total = match fixed_size(config, opts) {
                Some(s) => s,
                None => {
                    let mut t = table.align + GPT_TAIL + table.align;
                    for p in &table.partitions {
                        t += match p.size {
                            Size::Bytes(b) => round_up(b, table.align),
                            Size::Percent(_) => wants.get(p.name.as_str()).map_or(MIB, |w| w.need),
                        } + table.align;
                    }
                    round_up(t, MIB)
                }
            };
            let auto = fixed_size(config, opts).is_none();
            let mut placed;
            let mut tries = 0;
            loop {
                placed = fits(total)?;
                let mut short = 0u64;
                for (p, spec) in placed.iter().zip(&table.partitions) {
                    let Some(w) = wants.get(p.name.as_str()) else {
                        continue;
                    };
                    if p.size < w.need {
                        let deficit = w.need - p.size;
                        if let Size::Bytes(b) = spec.size {
                            bail!(
                                "partition '{}' is {} but its {} filesystem needs {}: make it larger",
                                p.name,
                                human(b),
                                w.kind,
                                human(w.need)
                            );
                        }
                        short = short.max(deficit);
                        if let Size::Percent(pc) = spec.size {
                            short = short.max((deficit as f64 * 100.0 / pc).ceil() as u64);
                        }
                    }
                }
                if short == 0 {
                    break;
                }
                if !auto {
                    bail!(
                        "the image ({}) is too small for its filesystems (about {} more is needed): \
                         give a larger --image-size (or local_loop size) or none",
                        human(total),
                        human(short)
                    );
                }
                tries += 1;
                if tries > 64 {
                    bail!("could not size the image for this partition layout");
                }
                total = round_up(total + short + table.align, MIB);
            }
            (total, Some(table.label), placed)
        }
    };

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
            None if kind == FsKind::Vfat => ids.vfat_id(),
            None => ids.uuid(),
        };
        let mut o = fs.opts.clone();
        if is_root {
            o.extend(opts.mkfs_options.iter().cloned());
        }
        let (o, extended) = split_mkfs_options(kind, &o)
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

/// Options that would move or resize a filesystem dib places itself are
/// refused; ext's `-E` values are split out to merge with dib's.
fn split_mkfs_options(kind: FsKind, opts: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut rest = Vec::new();
    let mut extended = Vec::new();
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let placing = match kind {
            FsKind::Vfat => ["-S", "--offset", "-C", "--sector-size"]
                .iter()
                .any(|p| o == p || o.starts_with(&format!("{p}="))),
            _ => false,
        };
        if placing {
            bail!("{o} changes where or how big the filesystem is, which the layout decides");
        }
        if kind.is_ext() && o.starts_with("-E") {
            let value = match o.strip_prefix("-E").filter(|v| !v.is_empty()) {
                Some(v) => v.to_string(),
                None => it
                    .next()
                    .with_context(|| "-E needs a value".to_string())?
                    .clone(),
            };
            for v in value.split(',').filter(|v| !v.is_empty()) {
                if v.starts_with("offset") {
                    bail!("-E {v}: the layout decides the filesystem's offset");
                }
                extended.push(v.to_string());
            }
            continue;
        }
        rest.push(o.clone());
    }
    Ok((rest, extended))
}

/// A size fixed by the config (`local_loop` size) or `--image-size`.
fn fixed_size(config: &Config, opts: &Options) -> Option<u64> {
    config
        .disk
        .size
        .or(opts.image_size)
        .map(|s| round_up(s, ROUND))
}

/// DIB's placement: in order, each partition at the next aligned offset,
/// sized absolutely or as a percentage of the space still free.
fn place(table: &super::config::Table, total: u64) -> Result<Vec<PlacedPartition>> {
    let tail = if table.label == Label::Gpt {
        GPT_TAIL
    } else {
        0
    };
    let end = total.saturating_sub(tail) / SECTOR * SECTOR;
    // GPT's header and 128 entries take the first 34 sectors.
    let first = if table.label == Label::Gpt {
        34 * SECTOR
    } else {
        SECTOR
    };
    let mut cursor = round_up(first, table.align).max(table.align);
    let mut out = Vec::new();
    for (i, p) in table.partitions.iter().enumerate() {
        if cursor >= end {
            bail!(
                "partition '{}' does not fit: the image ({}) is full",
                p.name,
                human(total)
            );
        }
        let free = end - cursor;
        let size = match p.size {
            Size::Bytes(b) => round_up(b, SECTOR),
            Size::Percent(pc) => ((free as f64 * pc / 100.0).floor() as u64) / SECTOR * SECTOR,
        };
        if size == 0 || size > free {
            bail!(
                "partition '{}' ({}) does not fit in the {} left of the image",
                p.name,
                human(size),
                human(free)
            );
        }
        out.push(PlacedPartition {
            name: p.name.clone(),
            number: i as u32 + 1,
            start: cursor,
            size,
            ptype: p.ptype,
            boot: p.boot,
            guid: String::new(),
        });
        cursor = round_up(cursor + size, table.align);
    }
    Ok(out)
}

/// `550 MiB`, `1.3 GiB`.
pub fn human(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", b.div_ceil(MIB))
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{default_config, parse};
    use super::*;

    /// Counting identifiers, so layouts compare exactly.
    struct Seq(u32);
    impl Ids for Seq {
        fn uuid(&mut self) -> String {
            self.0 += 1;
            format!("00000000-0000-4000-8000-{:012x}", self.0)
        }
        fn vfat_id(&mut self) -> String {
            self.0 += 1;
            format!("0000-{:04X}", self.0)
        }
    }

    fn opts() -> Options {
        Options {
            image_size: None,
            extra_size: 0,
            fs_type: FsKind::Ext4,
            root_label: "cloudimg-rootfs".into(),
            journal: None,
            mkfs_options: vec![],
            max_online_resize: None,
            helper: false,
        }
    }

    fn usage(pairs: &[(&str, u64)]) -> Usage {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    const EFI: &str = include_str!("../../elements/block-device-efi/block-device-default.yaml");
    const MBR: &str = include_str!("../../elements/block-device-mbr/block-device-default.yaml");

    #[test]
    fn a_seed_gives_the_same_identifiers_every_time() {
        let c = crate::blockdev::config::parse(
            include_str!("../../elements/block-device-efi/block-device-default.yaml"),
            "t",
        )
        .unwrap();
        let u = usage(&[("/", 10 << 20)]);
        let a = plan(&c, &opts(), &u, &mut SeededIds::new("x")).unwrap();
        let b = plan(&c, &opts(), &u, &mut SeededIds::new("x")).unwrap();
        let other = plan(&c, &opts(), &u, &mut SeededIds::new("y")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.disk_id, other.disk_id);
        assert_ne!(a.root().uuid, other.root().uuid);
        uuid::Uuid::parse_str(&a.root().uuid).unwrap();
    }

    #[test]
    fn root_is_content_over_fill_plus_journal_rounded() {
        let l = plan(
            &default_config(),
            &opts(),
            &usage(&[("/", 600 * MIB)]),
            &mut Seq(0),
        )
        .unwrap();
        assert_eq!(l.size, 1000 * MIB + DEFAULT_JOURNAL);
        assert_eq!(l.size % ROUND, 0);
        let root = l.root();
        assert_eq!((root.offset, root.size, root.partition), (0, l.size, None));
        assert_eq!(root.label.as_deref(), Some("cloudimg-rootfs"));
        assert_eq!(root.max_online_resize, Some(1 << 50));
    }

    #[test]
    fn mbr_layout_puts_root_at_one_mib_with_room_for_grub() {
        let c = parse(MBR, "t").unwrap();
        let l = plan(&c, &opts(), &usage(&[("/", 300 * MIB)]), &mut Seq(0)).unwrap();
        assert_eq!(l.label, Some(Label::Mbr));
        let p = &l.partitions[0];
        assert_eq!((p.number, p.start, p.boot), (1, MIB, true));
        assert!(p.start + p.size <= l.size);
        assert!(p.size >= need(FsKind::Ext4, 300 * MIB, 0, None));
        assert_eq!(l.bios_boot_area(), Some((1, 2047)));
        assert_eq!(l.root().offset, MIB);
    }

    #[test]
    fn efi_layout_sizes_the_esp_and_the_root() {
        let c = parse(EFI, "t").unwrap();
        let l = plan(
            &c,
            &opts(),
            &usage(&[("/", 400 * MIB), ("/boot/efi", 5 * MIB)]),
            &mut Seq(0),
        )
        .unwrap();
        let names: Vec<_> = l
            .partitions
            .iter()
            .map(|p| (p.name.as_str(), p.number))
            .collect();
        assert_eq!(names, [("ESP", 1), ("BSP", 2), ("root", 3)]);
        assert_eq!(l.partitions[0].size, 550 * MIB);
        assert_eq!(
            l.bios_boot_area(),
            Some((l.partitions[1].start / 512, 8 * MIB / 512))
        );
        let root = l.root();
        assert!(root.size >= need(FsKind::Ext4, 400 * MIB, 0, None));
        // GPT's backup table fits after the last partition.
        assert!(root.offset + root.size + 33 * 512 <= l.size);
        let esp = &l.filesystems[0];
        assert_eq!(esp.kind, FsKind::Vfat);
        assert_eq!(esp.uuid.len(), 9);
        assert_eq!(
            l.fstab(),
            format!(
                "# Written by dib from the block-device configuration.\n\
                 LABEL=cloudimg-rootfs / ext4 defaults 0 1\n\
                 UUID={} /boot/efi vfat defaults 0 2\n",
                esp.uuid
            )
        );
    }

    #[test]
    fn percentages_are_of_the_space_left() {
        let c = parse(
            "- partitioning:\n    label: gpt\n    partitions:\n      - {name: a, size: 50%, mkfs: {mount: {mount_point: /}}}\n      - {name: b, size: 100%, mkfs: {type: swap}}\n",
            "t",
        )
        .unwrap();
        let o = Options {
            image_size: Some(1 << 30),
            ..opts()
        };
        let l = plan(&c, &o, &usage(&[("/", 10 * MIB)]), &mut Seq(0)).unwrap();
        let (a, b) = (&l.partitions[0], &l.partitions[1]);
        let usable = (1 << 30) - GPT_TAIL - MIB;
        assert_eq!(a.size, usable / 2 / 512 * 512);
        assert_eq!(b.start, round_up(a.start + a.size, MIB));
        // 100% of what is left: up to the GPT backup area.
        assert_eq!(b.start + b.size, (1 << 30) - GPT_TAIL);
    }

    #[test]
    fn too_small_is_an_error_that_says_what_to_do() {
        let o = Options {
            image_size: Some(100 * MIB),
            ..opts()
        };
        let e = plan(
            &default_config(),
            &o,
            &usage(&[("/", 600 * MIB)]),
            &mut Seq(0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("larger --image-size"), "{e}");
        let c = parse(EFI, "t").unwrap();
        let e = plan(
            &c,
            &opts(),
            &usage(&[("/", MIB), ("/boot/efi", 600 * MIB)]),
            &mut Seq(0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("partition 'ESP' is 550 MiB"), "{e}");
        let x = Options {
            fs_type: FsKind::Xfs,
            ..opts()
        };
        let e = plan(&default_config(), &x, &usage(&[]), &mut Seq(0)).unwrap_err();
        assert!(e.to_string().contains("helper backend"), "{e}");
    }

    #[test]
    fn gpt_partitions_never_overlap_the_table_whatever_the_alignment() {
        for (align, first) in [("4KiB", 5 * 4096), ("512", 34 * 512), ("1MiB", MIB)] {
            let c = parse(
                &format!("- partitioning:\n    label: gpt\n    align: {align}\n    partitions:\n      - {{name: r, size: 100%, mkfs: {{mount: {{mount_point: /}}}}}}\n"),
                "t",
            )
            .unwrap();
            let l = plan(&c, &opts(), &usage(&[("/", MIB)]), &mut Seq(0)).unwrap();
            assert_eq!(l.partitions[0].start, first, "align {align}");
        }
    }

    #[test]
    fn mkfs_options_merge_extended_and_refuse_placement() {
        let (rest, ext) = split_mkfs_options(
            FsKind::Ext4,
            &[
                "-E".into(),
                "lazy_itable_init=0,stride=16".into(),
                "-Enodiscard".into(),
                "-m".into(),
                "1".into(),
            ],
        )
        .unwrap();
        assert_eq!(rest, ["-m", "1"]);
        assert_eq!(ext, ["lazy_itable_init=0", "stride=16", "nodiscard"]);
        let e = split_mkfs_options(FsKind::Ext4, &["-E".into(), "offset=0".into()]).unwrap_err();
        assert!(e.to_string().contains("offset"), "{e}");
        let e = split_mkfs_options(FsKind::Vfat, &["-S".into(), "4096".into()]).unwrap_err();
        assert!(e.to_string().contains("-S changes"), "{e}");
        // Through plan: --mkfs-options reach the root only, split.
        let o = Options {
            mkfs_options: vec!["-E".into(), "stride=8".into(), "-m".into(), "0".into()],
            ..opts()
        };
        let l = plan(&default_config(), &o, &usage(&[("/", MIB)]), &mut Seq(0)).unwrap();
        assert_eq!(
            (l.root().opts.clone(), l.root().extended.clone()),
            (vec!["-m".into(), "0".into()], vec!["stride=8".to_string()])
        );
    }

    #[test]
    fn fstab_escapes_spaces_and_dib_defaults_apply() {
        let c = parse(
            "- mkfs:\n    base: image0\n    mount:\n      mount_point: /\n      fstab: {}\n",
            "t",
        )
        .unwrap();
        let mut l = plan(&c, &opts(), &usage(&[]), &mut Seq(0)).unwrap();
        l.filesystems[0].mount_point = Some("/my data".into());
        assert!(
            l.fstab()
                .contains("LABEL=cloudimg-rootfs /my\\040data ext4 defaults 0 2\n"),
            "{}",
            l.fstab()
        );
        let dup = Options {
            root_label: "data".into(),
            ..opts()
        };
        let c = parse(
            "- partitioning:\n    label: gpt\n    partitions:\n      - {name: d, size: 1GiB, mkfs: {label: data}}\n      - {name: r, size: 100%, mkfs: {mount: {mount_point: /}}}\n",
            "t",
        )
        .unwrap();
        let e = plan(&c, &dup, &usage(&[]), &mut Seq(0)).unwrap_err();
        assert!(
            e.to_string()
                .contains("two filesystems are labelled \"data\""),
            "{e}"
        );
    }

    #[test]
    fn extra_size_and_journal_grow_the_root() {
        let o = Options {
            extra_size: 100 * MIB,
            journal: Some(16 * MIB),
            ..opts()
        };
        let l = plan(
            &default_config(),
            &o,
            &usage(&[("/", 60 * MIB)]),
            &mut Seq(0),
        )
        .unwrap();
        assert_eq!(l.size, 100 * MIB + 100 * MIB + 16 * MIB);
    }
}
