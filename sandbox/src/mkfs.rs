//! mkfs command lines: the one place that turns a filesystem's plan into
//! the argv of mkfs.ext4, mkfs.fat or mkswap, for both backends, so the same
//! plan gives the same filesystem (UUID, label, block size, features)
//! whether dib builds it into the image file or dib-helper onto a device.
//!
//! The helper runs mkfs as root with options its client chose, and some
//! options of these tools read or write host files (`mke2fs -d DIR`, `-z
//! UNDO`, `-l FILE`, `-J device=`, `mkfs.fat -m FILE`), so
//! [`MkfsSpec::check`] admits only options from an allowlist, each value of
//! a plain form. The offline backend runs the tools unprivileged and passes
//! user options through unchecked.

use std::ffi::OsString;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod allowlist;
mod fs_type;
#[cfg(test)]
mod tests;

pub use fs_type::FsType;

/// ext block size: dib always makes 4 KiB blocks.
pub const EXT_BLOCK: u64 = 4096;

/// A filesystem to make: everything of its plan that mkfs sees. A field
/// the helper does not know is an error when it decodes one (as in every
/// message of the helper protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkfsSpec {
    pub fs: FsType,
    pub label: Option<String>,
    /// A UUID (ext, swap) or an 8-hex-digit volume id (vfat).
    pub uuid: String,
    /// Bytes the filesystem spans.
    pub size: u64,
    /// ext3/ext4 journal size in bytes (`None`: mkfs decides).
    pub journal: Option<u64>,
    /// ext: `-E resize=`, in bytes.
    pub max_online_resize: Option<u64>,
    /// ext: `-E` items besides dib's own (mke2fs keeps only the last `-E`).
    pub extended: Vec<String>,
    /// Further options, as given in the block-device configuration.
    pub options: Vec<String>,
}

/// Where the filesystem goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A block device (or a file) holding just this filesystem.
    Device(&'a Path),
    /// An image file, at a byte offset, filled from a tree where the tool
    /// can (`mke2fs -d`).
    Image {
        file: &'a Path,
        offset: u64,
        tree: Option<&'a Path>,
    },
}

impl MkfsSpec {
    /// Refuse anything the helper must not pass to a mkfs it runs as root.
    pub fn check(&self) -> Result<(), String> {
        if self.fs == FsType::Btrfs {
            return Err("dib-helper does not make btrfs filesystems".into());
        }
        let uuid_ok = match self.fs {
            FsType::Vfat => {
                let id = self.uuid.replace('-', "");
                id.len() == 8 && u32::from_str_radix(&id, 16).is_ok()
            }
            _ => uuid::Uuid::parse_str(&self.uuid).is_ok() && !self.uuid.starts_with('-'),
        };
        if !uuid_ok {
            return Err(format!(
                "{:?} is not a valid {} UUID",
                self.uuid,
                self.fs.name()
            ));
        }
        if let Some(l) = &self.label {
            let max = self.fs.max_label();
            if l.len() > max || l.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "label {l:?}: a {} label is at most {max} bytes, no control characters",
                    self.fs.name()
                ));
            }
        }
        if self.size < 64 << 10 {
            return Err(format!("a {}-byte filesystem is too small", self.size));
        }
        allowlist::check_extended(self.fs, &self.extended)?;
        allowlist::check_options(self.fs, &self.options)
    }

    /// The program and its arguments, for `target`.
    pub fn argv(&self, target: Target<'_>) -> (&'static str, Vec<OsString>) {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        let (file, offset, tree) = match target {
            Target::Device(d) => (d, None, None),
            Target::Image { file, offset, tree } => (file, Some(offset), tree),
        };
        let prog = match self.fs {
            k @ (FsType::Ext2 | FsType::Ext3 | FsType::Ext4) => {
                let mut ext = Vec::new();
                if let Some(o) = offset {
                    ext.push(format!("offset={o}"));
                }
                ext.push("nodiscard".to_string());
                if let Some(r) = self.max_online_resize {
                    ext.push(format!("resize={}", r / EXT_BLOCK));
                }
                ext.extend(self.extended.iter().cloned());
                for s in [
                    "-F",
                    "-q",
                    "-b",
                    "4096",
                    "-E",
                    &ext.join(","),
                    "-U",
                    &self.uuid,
                ] {
                    push(s);
                }
                if let Some(l) = &self.label {
                    push("-L");
                    push(l);
                }
                if let (Some(j), true) = (self.journal, k != FsType::Ext2) {
                    push("-J");
                    push(&format!("size={}", j >> 20));
                }
                if let Some(t) = tree {
                    a.push("-d".into());
                    a.push(t.into());
                }
                a.extend(self.options.iter().map(OsString::from));
                a.push(file.into());
                // Whole 4 KiB blocks only.
                a.push(format!("{}k", self.size / EXT_BLOCK * 4).into());
                match k {
                    FsType::Ext2 => "mkfs.ext2",
                    FsType::Ext3 => "mkfs.ext3",
                    _ => "mkfs.ext4",
                }
            }
            FsType::Vfat => {
                if let Some(o) = offset {
                    push(&format!("--offset={}", o / crate::table::SECTOR));
                }
                push("-i");
                push(&self.uuid.replace('-', ""));
                if let Some(l) = &self.label {
                    push("-n");
                    push(l);
                }
                a.extend(self.options.iter().map(OsString::from));
                a.push(file.into());
                a.push((self.size / 1024).to_string().into());
                "mkfs.fat"
            }
            FsType::Xfs => {
                // No offset: only the helper backend makes xfs, on a device.
                for s in ["-f", "-q", "-m", &format!("uuid={}", self.uuid)] {
                    push(s);
                }
                if let Some(l) = &self.label {
                    push("-L");
                    push(l);
                }
                a.extend(self.options.iter().map(OsString::from));
                a.push(file.into());
                "mkfs.xfs"
            }
            FsType::Swap => {
                push("-q");
                push("-U");
                push(&self.uuid);
                if let Some(l) = &self.label {
                    push("-L");
                    push(l);
                }
                a.push(file.into());
                "mkswap"
            }
            FsType::Btrfs => unreachable!("check() refuses btrfs and no layout plans one"),
        };
        (prog, a)
    }
}
