//! Reading the nodes, nested or flat, into a [`Parser`]'s lists.

use anyhow::{bail, Context as _, Result};
use serde_yaml_ng::{Mapping, Value};

use super::values::{
    base_of, check_keys, check_uuid, fs_type, mapping, opt_str, parse_abs_size, parse_rel_size,
    parse_type,
};
use super::{Config, Disk, Filesystem, Fstab, Label, PartType, Partition, Table};

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
pub(super) struct MountNode {
    pub(super) name: String,
    pub(super) base: String,
    pub(super) point: String,
}

#[derive(Debug)]
pub(super) struct FstabNode {
    pub(super) base: String,
    pub(super) fstab: Fstab,
}

#[derive(Debug, Default)]
pub(super) struct Parser {
    pub(super) disks: Vec<Disk>,
    pub(super) tables: Vec<Table>,
    pub(super) mkfs: Vec<Filesystem>,
    pub(super) mounts: Vec<MountNode>,
    pub(super) fstabs: Vec<FstabNode>,
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
                    Some(t) => Some(fs_type(t).with_context(|| {
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
