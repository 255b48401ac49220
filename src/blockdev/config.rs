//! DIB's block-device configuration (SPEC §5), parsed into a [`Config`].
//!
//! The YAML is a list of nodes, each a one-key mapping: `local_loop`,
//! `partitioning`, `lvm`, `mkfs`, `mount`, `fstab`. A node may nest the
//! next level inside it (`partitions[].mkfs.mount.fstab`), as DIB's own
//! layouts do, or name its parent with `base` at the top level; both forms
//! give the same [`Config`]. Every error names the node and the key.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

/// One image file (`local_loop`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    /// Fixed size in bytes, if the config gives one.
    pub size: Option<u64>,
}

/// A partition table kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Label {
    Mbr,
    Gpt,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Mbr => "mbr",
            Label::Gpt => "gpt",
        }
    }
}

/// A partition's size as written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Size {
    Bytes(u64),
    /// Percent of the space not yet partitioned when this partition is
    /// placed (DIB's rule).
    Percent(f64),
}

/// A partition's type (the one type both backends' table writer takes):
/// Linux (0x83 / 8300, the default), Esp (0xEF / EF00), BiosBoot (EF02,
/// GPT only), Swap (0x82 / 8200), Lvm (0x8e / 8E00), or any other MBR type
/// byte.
pub use dib_sandbox::table::Kind as PartType;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub name: String,
    pub size: Size,
    pub boot: bool,
    pub primary: bool,
    pub ptype: PartType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// The disk it is written to.
    pub base: String,
    pub label: Label,
    /// Partition start alignment in bytes (default 1 MiB).
    pub align: u64,
    pub partitions: Vec<Partition>,
}

/// Filesystem types of `mkfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Vfat,
    Swap,
    Btrfs,
}

impl FsKind {
    pub fn parse(s: &str) -> Option<FsKind> {
        Some(match s {
            "ext2" => FsKind::Ext2,
            "ext3" => FsKind::Ext3,
            "ext4" => FsKind::Ext4,
            "xfs" => FsKind::Xfs,
            "vfat" | "fat" | "fat32" => FsKind::Vfat,
            "swap" => FsKind::Swap,
            "btrfs" => FsKind::Btrfs,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Vfat => "vfat",
            FsKind::Swap => "swap",
            FsKind::Btrfs => "btrfs",
        }
    }

    pub fn is_ext(self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)
    }

    /// Longest label the filesystem stores, in bytes.
    pub fn max_label(self) -> usize {
        match self {
            FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Swap => 16,
            FsKind::Xfs => 12,
            FsKind::Vfat => 11,
            FsKind::Btrfs => 255,
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fstab {
    pub options: String,
    pub dump_freq: u32,
    pub fsck_passno: u32,
}

/// One filesystem (`mkfs`) and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    pub name: String,
    /// A partition's or a disk's name.
    pub base: String,
    /// `None`: the build's `FS_TYPE` (given for the root only).
    pub kind: Option<FsKind>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// Extra mkfs options, split on whitespace.
    pub opts: Vec<String>,
    pub mount_point: Option<String>,
    pub fstab: Option<Fstab>,
}

/// A whole configuration: what the image file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub disk: Disk,
    pub table: Option<Table>,
    pub filesystems: Vec<Filesystem>,
}

/// The configuration used when neither `DIB_BLOCK_DEVICE_CONFIG` nor an
/// element gives one: one filesystem on the whole image, mounted at `/`.
pub fn default_config() -> Config {
    Config {
        disk: Disk {
            name: "image0".into(),
            size: None,
        },
        table: None,
        filesystems: vec![Filesystem {
            name: "mkfs_root".into(),
            base: "image0".into(),
            kind: None,
            label: None,
            uuid: None,
            opts: vec![],
            mount_point: Some("/".into()),
            fstab: Some(Fstab {
                options: "defaults".into(),
                dump_freq: 0,
                fsck_passno: 1,
            }),
        }],
    }
}

/// Parse `text` (from `origin`, for messages).
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    let doc: Value =
        serde_yaml_ng::from_str(text).with_context(|| format!("{origin} is not valid YAML"))?;
    let mut p = Parser::default();
    p.top(&doc)
        .and_then(|()| p.finish())
        .with_context(|| format!("in the block-device configuration from {origin}"))
}

/// A mount node before it is joined with its filesystem.
#[derive(Debug)]
struct MountNode {
    name: String,
    base: String,
    point: String,
}

#[derive(Debug)]
struct FstabNode {
    base: String,
    fstab: Fstab,
}

#[derive(Debug, Default)]
struct Parser {
    disks: Vec<Disk>,
    tables: Vec<Table>,
    mkfs: Vec<Filesystem>,
    mounts: Vec<MountNode>,
    fstabs: Vec<FstabNode>,
}

const NODE_KINDS: &str = "local_loop, partitioning, lvm, mkfs, mount, fstab";

impl Parser {
    fn top(&mut self, doc: &Value) -> Result<()> {
        let nodes = match doc {
            Value::Sequence(s) => s.clone(),
            // DIB also accepts a single mapping of several nodes.
            Value::Mapping(m) => m
                .iter()
                .map(|(k, v)| {
                    let mut one = Mapping::new();
                    one.insert(k.clone(), v.clone());
                    Value::Mapping(one)
                })
                .collect(),
            _ => bail!("the configuration must be a list of nodes ({NODE_KINDS})"),
        };
        for (i, node) in nodes.iter().enumerate() {
            let Value::Mapping(m) = node else {
                bail!("node {} is not a mapping: each node is `- KIND: {{...}}` with KIND one of {NODE_KINDS}", i + 1);
            };
            for (k, v) in m {
                let kind = k.as_str().unwrap_or("");
                self.node(kind, v, None)
                    .with_context(|| format!("node {} ({kind})", i + 1))?;
            }
        }
        Ok(())
    }

    /// One node of `kind`; `parent` is the enclosing node's name when nested.
    fn node(&mut self, kind: &str, v: &Value, parent: Option<&str>) -> Result<()> {
        let m = mapping(v, kind)?;
        match kind {
            "local_loop" => {
                check_keys(m, kind, &["name", "size", "directory"])?;
                let name = opt_str(m, "name")?.unwrap_or_else(|| "image0".into());
                let size = opt_str(m, "size")?
                    .map(|s| {
                        parse_abs_size(&s).with_context(|| format!("'size' of local_loop '{name}'"))
                    })
                    .transpose()?;
                self.disks.push(Disk { name, size });
            }
            "partitioning" => self.partitioning(m, parent)?,
            "lvm" => bail!(
                "{}",
                lvm_unsupported(&std::fs::read_to_string("/proc/misc").unwrap_or_default())
            ),
            "mkfs" => {
                check_keys(
                    m,
                    kind,
                    &["name", "base", "type", "label", "opts", "uuid", "mount"],
                )?;
                let base = base_of(m, parent, kind)?;
                let name = opt_str(m, "name")?.unwrap_or_else(|| format!("mkfs_{base}"));
                let kind_s = opt_str(m, "type")?;
                let fs_kind = match &kind_s {
                    None => None,
                    Some(t) => Some(FsKind::parse(t).with_context(|| {
                        format!("mkfs '{name}': unknown 'type' {t:?} (ext2, ext3, ext4, xfs, vfat, swap)")
                    })?),
                };
                let label = opt_str(m, "label")?;
                if let (Some(l), Some(k)) = (&label, fs_kind) {
                    if l.len() > k.max_label() {
                        bail!(
                            "mkfs '{name}': 'label' {l:?} is longer than {k} allows ({} bytes)",
                            k.max_label()
                        );
                    }
                }
                let uuid = opt_str(m, "uuid")?;
                if let Some(u) = &uuid {
                    check_uuid(u, fs_kind).with_context(|| format!("mkfs '{name}': 'uuid'"))?;
                }
                let opts = opt_str(m, "opts")?
                    .map(|o| o.split_whitespace().map(String::from).collect())
                    .unwrap_or_default();
                self.mkfs.push(Filesystem {
                    name: name.clone(),
                    base,
                    kind: fs_kind,
                    label,
                    uuid,
                    opts,
                    mount_point: None,
                    fstab: None,
                });
                if let Some(child) = m.get("mount") {
                    self.node("mount", child, Some(&name))
                        .with_context(|| format!("mkfs '{name}'"))?;
                }
            }
            "mount" => {
                check_keys(m, kind, &["name", "base", "mount_point", "fstab"])?;
                let base = base_of(m, parent, kind)?;
                let name = opt_str(m, "name")?.unwrap_or_else(|| format!("mount_{base}"));
                let point = opt_str(m, "mount_point")?
                    .with_context(|| format!("mount '{name}': 'mount_point' is missing"))?;
                if !point.starts_with('/') || point.split('/').any(|c| c == "..") {
                    bail!("mount '{name}': 'mount_point' {point:?} must be an absolute path without '..'");
                }
                self.mounts.push(MountNode {
                    name: name.clone(),
                    base,
                    point,
                });
                if let Some(child) = m.get("fstab") {
                    self.node("fstab", child, Some(&name))
                        .with_context(|| format!("mount '{name}'"))?;
                }
            }
            "fstab" => {
                check_keys(
                    m,
                    kind,
                    &["name", "base", "options", "dump-freq", "fsck-passno"],
                )?;
                let base = base_of(m, parent, kind)?;
                let options = opt_str(m, "options")?.unwrap_or_else(|| "defaults".into());
                let num = |key: &str, default: u32| -> Result<u32> {
                    match opt_str(m, key)? {
                        None => Ok(default),
                        Some(s) => s.parse().map_err(|_| {
                            anyhow::anyhow!(
                                "fstab of '{base}': '{key}' must be a number, not {s:?}"
                            )
                        }),
                    }
                };
                let fstab = Fstab {
                    options,
                    // DIB's defaults.
                    dump_freq: num("dump-freq", 0)?,
                    fsck_passno: num("fsck-passno", 2)?,
                };
                self.fstabs.push(FstabNode { base, fstab });
            }
            other => bail!("unknown node type {other:?}: the node types are {NODE_KINDS}"),
        }
        Ok(())
    }

    fn partitioning(&mut self, m: &Mapping, parent: Option<&str>) -> Result<()> {
        check_keys(m, "partitioning", &["base", "label", "align", "partitions"])?;
        let base = match opt_str(m, "base")? {
            Some(b) => b,
            None => parent.unwrap_or("image0").to_string(),
        };
        let label = match opt_str(m, "label")?.as_deref() {
            Some("mbr") => Label::Mbr,
            Some("gpt") => Label::Gpt,
            Some(other) => {
                bail!("partitioning of '{base}': 'label' must be mbr or gpt, not {other:?}")
            }
            None => bail!("partitioning of '{base}': 'label' is missing (mbr or gpt)"),
        };
        let align = match opt_str(m, "align")? {
            Some(a) => {
                let a = parse_abs_size(&a)
                    .with_context(|| format!("partitioning of '{base}': 'align'"))?;
                if a < 512 || a % 512 != 0 {
                    bail!("partitioning of '{base}': 'align' must be a multiple of 512 bytes");
                }
                a
            }
            None => 1 << 20,
        };
        let Some(Value::Sequence(parts)) = m.get("partitions") else {
            bail!("partitioning of '{base}': 'partitions' is missing or not a list");
        };
        let mut partitions = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let pm = mapping(p, "partition")
                .with_context(|| format!("partitioning of '{base}': partition {}", i + 1))?;
            let name = opt_str(pm, "name")?.with_context(|| {
                format!(
                    "partitioning of '{base}': partition {} has no 'name'",
                    i + 1
                )
            })?;
            let ctx = || format!("partition '{name}'");
            check_keys(pm, "partition", &["name", "size", "flags", "type", "mkfs"])
                .with_context(ctx)?;
            let size = opt_str(pm, "size")?
                .with_context(|| format!("partition '{name}': 'size' is missing"))?;
            let size =
                parse_rel_size(&size).with_context(|| format!("partition '{name}': 'size'"))?;
            let mut boot = false;
            let mut primary = false;
            match pm.get("flags") {
                None => {}
                Some(Value::Sequence(flags)) => {
                    for f in flags {
                        match f.as_str() {
                            Some("boot") => boot = true,
                            Some("primary") => primary = true,
                            _ => bail!(
                                "partition '{name}': unknown flag {f:?} in 'flags' (boot, primary)"
                            ),
                        }
                    }
                }
                Some(_) => bail!("partition '{name}': 'flags' must be a list (boot, primary)"),
            }
            if let Some(Value::Number(n)) = pm.get("type") {
                bail!(
                    "partition '{name}': 'type' {n} is a number to YAML (0x83 reads as 131): \
                     quote it, like type: '0x83' or type: '8300'"
                );
            }
            let ptype = match opt_str(pm, "type")? {
                None => PartType::Linux,
                Some(t) => {
                    parse_type(&t, label).with_context(|| format!("partition '{name}': 'type'"))?
                }
            };
            partitions.push(Partition {
                name: name.clone(),
                size,
                boot,
                primary,
                ptype,
            });
            if let Some(child) = pm.get("mkfs") {
                self.node("mkfs", child, Some(&name)).with_context(ctx)?;
            }
        }
        if partitions.is_empty() {
            bail!("partitioning of '{base}': 'partitions' is empty");
        }
        if label == Label::Mbr && partitions.len() > 4 {
            bail!(
                "partitioning of '{base}': {} partitions, but an MBR holds 4 primary ones \
                 (logical partitions are not supported): use label: gpt",
                partitions.len()
            );
        }
        self.tables.push(Table {
            base,
            label,
            align,
            partitions,
        });
        Ok(())
    }

    /// Join the nodes and check that every `base` names something.
    fn finish(mut self) -> Result<Config> {
        let disk = match self.disks.len() {
            0 => Disk {
                name: "image0".into(),
                size: None,
            },
            1 => self.disks.remove(0),
            n => bail!("{n} local_loop nodes: the offline backend builds one image file"),
        };
        let table = match self.tables.len() {
            0 => None,
            1 => Some(self.tables.remove(0)),
            n => bail!("{n} partitioning nodes: one partition table per image is supported"),
        };
        if let Some(t) = &table {
            if t.base != disk.name {
                bail!(
                    "partitioning: 'base' is '{}', but the image is local_loop '{}'",
                    t.base,
                    disk.name
                );
            }
        }
        let mut names = BTreeSet::new();
        let mut bases: BTreeSet<String> = [disk.name.clone()].into();
        if let Some(t) = &table {
            for p in &t.partitions {
                if !names.insert(p.name.clone()) || p.name == disk.name {
                    bail!("the name '{}' is used twice", p.name);
                }
                bases.insert(p.name.clone());
            }
            // With a table, filesystems go in partitions, not on the disk.
            bases.remove(&disk.name);
        }
        let mut used = BTreeSet::new();
        for fs in &self.mkfs {
            if !bases.contains(&fs.base) {
                bail!(
                    "mkfs '{}': 'base' '{}' is not a partition{} (known: {})",
                    fs.name,
                    fs.base,
                    if table.is_none() { " or the image" } else { "" },
                    bases.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            if !used.insert(fs.base.clone()) {
                bail!(
                    "mkfs '{}': '{}' already holds a filesystem",
                    fs.name,
                    fs.base
                );
            }
            if !names.insert(fs.name.clone()) {
                bail!("the name '{}' is used twice", fs.name);
            }
        }
        for m in std::mem::take(&mut self.mounts) {
            let fs = self
                .mkfs
                .iter_mut()
                .find(|f| f.name == m.base)
                .with_context(|| {
                    format!("mount '{}': 'base' '{}' is not a mkfs node", m.name, m.base)
                })?;
            if fs.mount_point.is_some() {
                bail!("mkfs '{}' is mounted twice", fs.name);
            }
            if fs.kind == Some(FsKind::Swap) {
                bail!("mount '{}': swap '{}' has no mount point", m.name, fs.name);
            }
            fs.mount_point = Some(normalize_point(&m.point));
            // fstab nodes name the mount.
            for f in self.fstabs.iter_mut().filter(|f| f.base == m.name) {
                f.base = format!("\0{}", fs.name);
            }
        }
        for f in std::mem::take(&mut self.fstabs) {
            let Some(fs_name) = f.base.strip_prefix('\0') else {
                bail!("fstab: 'base' '{}' is not a mount node", f.base);
            };
            let fs = self
                .mkfs
                .iter_mut()
                .find(|x| x.name == fs_name)
                .expect("joined above");
            fs.fstab = Some(f.fstab);
        }
        let mut labels = BTreeSet::new();
        for fs in &self.mkfs {
            if let Some(l) = &fs.label {
                if !labels.insert(l.clone()) {
                    bail!("two filesystems are labelled {l:?}: LABEL= would not tell them apart");
                }
            }
        }
        let mut points = BTreeSet::new();
        for fs in &self.mkfs {
            if let Some(p) = &fs.mount_point {
                if !points.insert(p.clone()) {
                    bail!("two filesystems are mounted at {p}");
                }
            }
        }
        if !points.contains("/") {
            bail!("no filesystem is mounted at '/': the image needs a root filesystem");
        }
        Ok(Config {
            disk,
            table,
            filesystems: self.mkfs,
        })
    }
}

/// Why an `lvm` node cannot be built, given /proc/misc (where the kernel
/// lists device-mapper when it has it).
pub fn lvm_unsupported(proc_misc: &str) -> String {
    let has_dm = proc_misc
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"));
    if has_dm {
        "LVM ('lvm' node) is not supported by this version of dib: neither backend \
         creates volume groups yet; use partitions"
            .into()
    } else {
        "LVM ('lvm' node) needs the kernel's device-mapper, which this machine's kernel \
         lacks (no device-mapper in /proc/misc): use partitions, or build on a machine \
         whose kernel has device-mapper"
            .into()
    }
}

fn normalize_point(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn mapping<'a>(v: &'a Value, what: &str) -> Result<&'a Mapping> {
    match v {
        Value::Mapping(m) => Ok(m),
        _ => bail!("{what} must be a mapping of keys"),
    }
}

fn check_keys(m: &Mapping, what: &str, allowed: &[&str]) -> Result<()> {
    for k in m.keys() {
        let k = k.as_str().unwrap_or("?");
        if !allowed.contains(&k) {
            bail!("{what}: unknown key '{k}' (known: {})", allowed.join(", "));
        }
    }
    Ok(())
}

/// A scalar as a string (numbers and booleans as written).
fn opt_str(m: &Mapping, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => bail!("'{key}' must be a single value"),
    }
}

fn base_of(m: &Mapping, parent: Option<&str>, kind: &str) -> Result<String> {
    match (opt_str(m, "base")?, parent) {
        (Some(b), _) => Ok(b),
        (None, Some(p)) => Ok(p.to_string()),
        (None, None) => bail!("{kind}: 'base' is missing (or nest the node in its parent)"),
    }
}

/// `8MiB`, `1G`, `512`, `1.5GiB`: bytes. DIB's units: `KiB`..`TiB` are
/// binary, `K`/`KB`..`T`/`TB` decimal.
pub fn parse_abs_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a size (like 8MiB or 2GiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        u => bail!("{s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, TiB, or decimal KB, MB, GB, TB)"),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes <= 0.0 || bytes > u64::MAX as f64 {
        bail!("{s:?} is not a positive size");
    }
    Ok(bytes.ceil() as u64)
}

fn parse_rel_size(s: &str) -> Result<Size> {
    match s.trim().strip_suffix('%') {
        Some(p) => {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{s:?} is not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                bail!("{s:?}: a percentage must be above 0 and at most 100");
            }
            Ok(Size::Percent(p))
        }
        None => parse_abs_size(s).map(Size::Bytes),
    }
}

fn parse_type(t: &str, label: Label) -> Result<PartType> {
    let hex = t.trim().trim_start_matches("0x").trim_start_matches("0X");
    let v = u32::from_str_radix(hex, 16)
        .map_err(|_| anyhow::anyhow!("{t:?} is not a hex type code (like 0x83 or 8300)"))?;
    // GPT codes are sgdisk's four hex digits; MBR takes one byte, and DIB's
    // layouts also write GPT-style codes on GPT only.
    Ok(match (label, v) {
        (_, 0x83 | 0x8300) => PartType::Linux,
        (_, 0xef | 0xef00) => PartType::Esp,
        (Label::Gpt, 0xef02) => PartType::BiosBoot,
        (_, 0x82 | 0x8200) => PartType::Swap,
        (_, 0x8e | 0x8e00) => PartType::Lvm,
        (Label::Mbr, b) if b <= 0xff => PartType::Mbr(b as u8),
        (Label::Mbr, _) => bail!("{t:?} is not an MBR type (one byte, like 0x83)"),
        (Label::Gpt, _) => bail!(
            "{t:?} is not a GPT type dib knows (8300 Linux, EF00 ESP, EF02 BIOS boot, 8200 swap, 8E00 LVM)"
        ),
    })
}

/// A UUID as the filesystem takes it: RFC 4122 text for ext/xfs/swap,
/// `XXXX-XXXX` (a volume id) for vfat.
fn check_uuid(u: &str, kind: Option<FsKind>) -> Result<()> {
    if kind == Some(FsKind::Vfat) {
        let ok = u.len() == 9
            && u.as_bytes()[4] == b'-'
            && u.chars()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_hexdigit());
        if !ok {
            bail!("{u:?}: a vfat volume id is XXXX-XXXX (8 hex digits)");
        }
        return Ok(());
    }
    uuid::Uuid::parse_str(u).map_err(|_| anyhow::anyhow!("{u:?} is not a UUID"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EFI: &str = "
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 550MiB
        mkfs:
          type: vfat
          mount:
            mount_point: /boot/efi
            fstab:
              options: \"defaults\"
              fsck-passno: 2
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: root
        type: '8300'
        size: 100%
        mkfs:
          label: cloudimg-rootfs
          mount:
            mount_point: /
            fstab:
              options: \"defaults\"
              fsck-passno: 1
";

    const FLAT: &str = "
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 550MiB
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: root
        type: '8300'
        size: 100%
- mkfs:
    name: mkfs_ESP
    base: ESP
    type: vfat
- mount:
    base: mkfs_ESP
    mount_point: /boot/efi/
- fstab:
    base: mount_mkfs_ESP
    options: defaults
    fsck-passno: 2
- mkfs:
    name: mkfs_root
    base: root
    label: cloudimg-rootfs
- mount:
    name: mount_root
    base: mkfs_root
    mount_point: /
- fstab:
    base: mount_root
    options: defaults
    fsck-passno: 1
";

    #[test]
    fn nested_and_flat_forms_agree() {
        let a = parse(EFI, "t").unwrap();
        let b = parse(FLAT, "t").unwrap();
        assert_eq!(a, b);
        let t = a.table.as_ref().unwrap();
        assert_eq!(t.label, Label::Gpt);
        assert_eq!(t.align, 1 << 20);
        let types: Vec<_> = t.partitions.iter().map(|p| p.ptype).collect();
        assert_eq!(types, [PartType::Esp, PartType::BiosBoot, PartType::Linux]);
        assert_eq!(t.partitions[0].size, Size::Bytes(550 << 20));
        assert_eq!(t.partitions[2].size, Size::Percent(100.0));
        let esp = &a.filesystems[0];
        assert_eq!(esp.kind, Some(FsKind::Vfat));
        assert_eq!(esp.mount_point.as_deref(), Some("/boot/efi"));
        assert_eq!(esp.fstab.as_ref().unwrap().fsck_passno, 2);
        let root = &a.filesystems[1];
        assert_eq!(root.kind, None);
        assert_eq!(root.label.as_deref(), Some("cloudimg-rootfs"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_abs_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_abs_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_abs_size("4096").unwrap(), 4096);
        // DIB's decimal units.
        assert_eq!(parse_abs_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_abs_size("3MB").unwrap(), 3_000_000);
        assert!(parse_abs_size("2 parsecs").is_err());
        assert!(parse_abs_size("-1M").is_err());
        assert_eq!(parse_rel_size("50%").unwrap(), Size::Percent(50.0));
        assert!(parse_rel_size("150%").is_err());
    }

    #[test]
    fn lvm_says_whether_the_kernel_lacks_device_mapper() {
        assert!(lvm_unsupported(" 10 loop-control\n").contains("lacks (no device-mapper"));
        assert!(lvm_unsupported("236 device-mapper\n").contains("neither backend"));
    }

    #[test]
    fn errors_name_the_node_and_key() {
        let cases: &[(&str, &str)] = &[
            ("- lvm: {name: lvm}", "LVM ('lvm' node)"),
            ("- frobnicate: {}", "unknown node type \"frobnicate\""),
            (
                "- partitioning: {base: image0, label: mbr, partitions: [{name: root}]}",
                "partition 'root': 'size' is missing",
            ),
            (
                "- partitioning: {base: image0, label: zfs, partitions: []}",
                "'label' must be mbr or gpt",
            ),
            (
                "- partitioning: {base: image0, label: mbr, partitions: [{name: r, size: 1G, flags: [fast]}]}",
                "partition 'r': unknown flag",
            ),
            (
                "- partitioning: {base: image0, label: mbr, partitions: [{name: r, size: 1G, mkfs: {type: zfs}}]}",
                "mkfs 'mkfs_r': unknown 'type' \"zfs\"",
            ),
            (
                "- mkfs: {base: nowhere, mount: {mount_point: /}}",
                "mkfs 'mkfs_nowhere': 'base' 'nowhere' is not a partition",
            ),
            ("- mkfs: {base: image0}", "no filesystem is mounted at '/'"),
            (
                "- mkfs: {base: image0, sizes: 3, mount: {mount_point: /}}",
                "unknown key 'sizes'",
            ),
            (
                "- mkfs: {base: image0, type: vfat, label: waytoolongforfat, mount: {mount_point: /}}",
                "longer than vfat allows",
            ),
            ("- mkfs: {base: image0, uuid: nope, mount: {mount_point: /}}", "is not a UUID"),
            ("[1, 2", "is not valid YAML"),
            (
                "- partitioning: {label: mbr, partitions: [{name: r, size: 1G, type: 0x83}]}",
                "partition 'r': 'type' 131 is a number to YAML",
            ),
            (
                "- partitioning: {label: gpt, partitions: [{name: a, size: 1G, mkfs: {label: x}}, {name: b, size: 1G, mkfs: {label: x, mount: {mount_point: /}}}]}",
                "two filesystems are labelled \"x\"",
            ),
        ];
        for (yaml, want) in cases {
            let err = format!("{:#}", parse(yaml, "DIB_BLOCK_DEVICE_CONFIG").unwrap_err());
            assert!(err.contains(want), "{yaml}\n  gave: {err}\n  want: {want}");
            assert!(err.contains("DIB_BLOCK_DEVICE_CONFIG"), "{err}");
        }
    }

    #[test]
    fn mbr_types_and_limits() {
        let c = parse(
            "- partitioning:\n    label: mbr\n    partitions:\n      - {name: root, size: 100%, flags: [boot, primary], type: '0x83', mkfs: {mount: {mount_point: /}}}\n",
            "t",
        )
        .unwrap();
        let p = &c.table.unwrap().partitions[0];
        assert!(p.boot && p.primary);
        assert_eq!(p.ptype, PartType::Linux);
        let five = (1..=5)
            .map(|i| format!("{{name: p{i}, size: 10%}}"))
            .collect::<Vec<_>>()
            .join(", ");
        let err = parse(
            &format!("- partitioning: {{label: mbr, partitions: [{five}]}}"),
            "t",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("use label: gpt"));
    }

    #[test]
    fn default_is_one_filesystem_on_the_image() {
        let c = default_config();
        assert!(c.table.is_none());
        assert_eq!(c.filesystems[0].base, "image0");
        assert_eq!(c.filesystems[0].mount_point.as_deref(), Some("/"));
    }
}
