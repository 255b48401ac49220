//! Joining the parsed nodes into a [`Config`]: every `base` names a node of
//! the right kind, names, labels and mount points are unique, and there is
//! a root filesystem.

use std::collections::BTreeSet;

use anyhow::{bail, Context as _, Result};

use super::parse::Parser;
use super::values::normalize_point;
use super::{Config, Disk, FsType};

impl Parser {
    /// Join the nodes and check that every `base` names something.
    pub(super) fn finish(mut self) -> Result<Config> {
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
            if fs.kind == Some(FsType::Swap) {
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
