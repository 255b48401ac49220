//! Settling the inode times of an ext2/3/4 filesystem that `mke2fs -d`
//! made, for reproducible images. mke2fs copies each file's access and
//! change times from the tree, and the change time is the moment the
//! build wrote the file, which no program can set. Here every inode in
//! use gets its modification time (clamped in the tree already) as its
//! access and change time too, and its checksum again.
//!
//! Only the inode tables are read and written: for each block group not
//! flagged uninitialised, its inode bitmap says which inodes are in use.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

const SUPERBLOCK: u64 = 1024;
const MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_INODE_UNINIT: u16 = 0x1;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// What of the superblock the walk needs.
struct Super {
    block_size: u64,
    inodes_per_group: u32,
    inode_size: usize,
    groups: u64,
    desc_size: usize,
    first_desc: u64,
    csum_seed: Option<u32>,
}

impl Super {
    fn read(f: &File, at: u64) -> Result<Super> {
        let mut sb = [0u8; 1024];
        f.read_exact_at(&mut sb, at + SUPERBLOCK)
            .context("reading the superblock")?;
        if u16_at(&sb, 0x38) != MAGIC {
            bail!("no ext2/3/4 superblock at offset {at}");
        }
        let block_size = 1024u64 << u32_at(&sb, 0x18);
        let blocks = u64::from(u32_at(&sb, 0x04));
        let incompat = u32_at(&sb, 0x60);
        let blocks = if incompat & INCOMPAT_64BIT != 0 {
            blocks | (u64::from(u32_at(&sb, 0x150)) << 32)
        } else {
            blocks
        };
        let first_data = u64::from(u32_at(&sb, 0x14));
        let per_group = u64::from(u32_at(&sb, 0x20));
        let groups = (blocks - first_data).div_ceil(per_group);
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            usize::from(u16_at(&sb, 0xFE)).max(32)
        } else {
            32
        };
        let csum_seed = (u32_at(&sb, 0x64) & RO_COMPAT_METADATA_CSUM != 0).then(|| {
            if incompat & INCOMPAT_CSUM_SEED != 0 {
                u32_at(&sb, 0x270)
            } else {
                crc32c(!0, &sb[0x68..0x78])
            }
        });
        Ok(Super {
            block_size,
            inodes_per_group: u32_at(&sb, 0x28),
            inode_size: usize::from(u16_at(&sb, 0x58)),
            groups,
            desc_size,
            first_desc: (first_data + 1) * block_size,
            csum_seed,
        })
    }
}

/// Give every inode in use of the filesystem at `offset` in `image` its
/// mtime as atime and ctime; the number of inodes settled.
pub fn settle(image: &Path, offset: u64) -> Result<u64> {
    let f = File::options()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {image:?}"))?;
    let s = Super::read(&f, offset)
        .with_context(|| format!("reading the filesystem at {offset} of {image:?}"))?;
    let mut descs = vec![0u8; s.groups as usize * s.desc_size];
    f.read_exact_at(&mut descs, offset + s.first_desc)
        .context("reading the group descriptors")?;
    let mut settled = 0;
    let mut bitmap = vec![0u8; s.block_size as usize];
    let mut table = vec![0u8; s.inodes_per_group as usize * s.inode_size];
    for g in 0..s.groups as usize {
        let d = &descs[g * s.desc_size..(g + 1) * s.desc_size];
        if u16_at(d, 0x12) & BG_INODE_UNINIT != 0 {
            continue;
        }
        let hi = |o: usize| {
            if s.desc_size >= 64 {
                u64::from(u32_at(d, o)) << 32
            } else {
                0
            }
        };
        let bitmap_at = u64::from(u32_at(d, 0x04)) | hi(0x24);
        let table_at = u64::from(u32_at(d, 0x08)) | hi(0x28);
        f.read_exact_at(&mut bitmap, offset + bitmap_at * s.block_size)
            .context("reading an inode bitmap")?;
        f.read_exact_at(&mut table, offset + table_at * s.block_size)
            .context("reading an inode table")?;
        let mut changed = false;
        for i in 0..s.inodes_per_group as usize {
            if bitmap[i / 8] & (1 << (i % 8)) == 0 {
                continue;
            }
            let number = g as u32 * s.inodes_per_group + i as u32 + 1;
            let inode = &mut table[i * s.inode_size..(i + 1) * s.inode_size];
            if settle_inode(inode, number, s.csum_seed) {
                changed = true;
            }
            settled += 1;
        }
        if changed {
            f.write_all_at(&table, offset + table_at * s.block_size)
                .context("writing an inode table")?;
        }
    }
    Ok(settled)
}

/// One inode's times and checksum; whether it changed.
fn settle_inode(inode: &mut [u8], number: u32, seed: Option<u32>) -> bool {
    let before = inode.to_vec();
    let mtime: [u8; 4] = inode[0x10..0x14].try_into().expect("4 bytes");
    inode[0x08..0x0C].copy_from_slice(&mtime);
    inode[0x0C..0x10].copy_from_slice(&mtime);
    let extra = if inode.len() > 128 {
        usize::from(u16_at(inode, 0x80))
    } else {
        0
    };
    // i_ctime_extra at 0x84, i_mtime_extra at 0x88, i_atime_extra at 0x8C.
    if extra >= 0x10 {
        let m: [u8; 4] = inode[0x88..0x8C].try_into().expect("4 bytes");
        inode[0x84..0x88].copy_from_slice(&m);
        inode[0x8C..0x90].copy_from_slice(&m);
    }
    if let Some(seed) = seed {
        let lo = 0x7C;
        let hi = (extra >= 4).then_some(0x82);
        inode[lo..lo + 2].fill(0);
        if let Some(h) = hi {
            inode[h..h + 2].fill(0);
        }
        let mut c = crc32c(seed, &number.to_le_bytes());
        c = crc32c(c, &inode[0x64..0x68]);
        c = crc32c(c, inode);
        inode[lo..lo + 2].copy_from_slice(&(c as u16).to_le_bytes());
        if let Some(h) = hi {
            inode[h..h + 2].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
        }
    }
    inode != before.as_slice()
}

/// CRC-32C as ext4 computes it: from `crc`, no final inversion.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    for &b in data {
        crc = t[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_its_check_value() {
        // The standard check value, with the usual inversions around.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }
}
