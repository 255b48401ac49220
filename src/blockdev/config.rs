//! DIB's block-device configuration, parsed into a [`Config`].
//!
//! The YAML is a list of nodes, each a one-key mapping: `local_loop`,
//! `partitioning`, `lvm`, `mkfs`, `mount`, `fstab`. A node may nest the
//! next level inside it (`partitions[].mkfs.mount.fstab`), as DIB's own
//! layouts do, or name its parent with `base` at the top level; both forms
//! give the same [`Config`]. Every error names the node and the key.
//!
//! This file holds the configuration's types; `parse` reads the nodes,
//! `join` puts them together and checks that every `base` names something,
//! `values` reads the scalar values (sizes, type codes, UUIDs).

mod join;
mod parse;
#[cfg(test)]
mod tests;
mod values;

use serde::{Deserialize, Serialize};

/// A filesystem's type (the one type mkfs command lines take).
pub use dib_sandbox::mkfs::FsType;
/// A partition table's kind (the one type both backends' table writer takes).
pub use dib_sandbox::table::Label;
pub use parse::{lvm_unsupported, parse};
pub use values::parse_abs_size;

/// One image file (`local_loop`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    /// Fixed size in bytes, if the config gives one.
    pub size: Option<u64>,
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
    pub kind: Option<FsType>,
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
