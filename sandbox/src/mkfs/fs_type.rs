//! The filesystem types dib knows: the one type the build configuration
//! (`FS_TYPE`), the block-device configuration (`mkfs` nodes), the layout and
//! both backends' mkfs command lines share, so a type is parsed once, where
//! its text comes in, and never turned back into text to be parsed again.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    /// Helper backend only: mkfs.xfs cannot fill a filesystem from a tree.
    Xfs,
    Vfat,
    Swap,
    /// Accepted in configurations so the error can say it is not built yet.
    Btrfs,
}

impl FsType {
    /// Every type, in the order messages list them.
    pub const ALL: [FsType; 7] = [
        FsType::Ext2,
        FsType::Ext3,
        FsType::Ext4,
        FsType::Xfs,
        FsType::Vfat,
        FsType::Swap,
        FsType::Btrfs,
    ];

    /// The name the kernel and mkfs know it by.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Vfat => "vfat",
            FsType::Swap => "swap",
            FsType::Btrfs => "btrfs",
        }
    }

    /// The type called `name` (exactly [`FsType::name`]; other spellings
    /// are the business of the format that accepts them).
    pub fn parse(name: &str) -> Option<FsType> {
        FsType::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn is_ext(self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }

    /// Longest label the filesystem stores, in bytes.
    pub fn max_label(self) -> usize {
        match self {
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 | FsType::Swap => 16,
            FsType::Xfs => 12,
            FsType::Vfat => 11,
            FsType::Btrfs => 255,
        }
    }

    /// The root filesystem's label when none is given (DIB's defaults).
    pub fn default_root_label(self) -> &'static str {
        match self {
            FsType::Xfs => "img-rootfs",
            _ => "cloudimg-rootfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_type() {
        for t in FsType::ALL {
            assert_eq!(FsType::parse(t.name()), Some(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(FsType::parse("fat"), None);
        assert_eq!(FsType::parse("EXT4"), None);
    }
}
