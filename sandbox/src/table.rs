//! Partition tables: the one writer both block-device backends use, so an
//! image partitioned by the offline backend (into the image file) and one
//! partitioned by dib-helper (onto the loop device) carry the same bytes.
//!
//! A [`Table`] is plain data that crosses the helper socket; the helper
//! [`Table::check`]s it against the device it is written to before writing
//! anything, since its client is not trusted.

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};

use serde::{Deserialize, Serialize};

/// Bytes per sector of every table dib writes (and of the loop devices the
/// helper attaches).
pub const SECTOR: u64 = 512;
/// GPT entries written: the usual 128, as sfdisk and gdisk write.
pub const GPT_ENTRIES: u32 = 128;
/// Sectors a GPT with 128 entries takes at each end of the disk (the header
/// and 32 sectors of entries; plus the protective MBR at the start).
const GPT_RESERVED: u64 = 34;
/// Most partitions a table may carry (MBR primary partitions: 4).
pub const MAX_PARTITIONS: usize = 16;
/// GPT partition names are 36 UTF-16 code units.
const GPT_NAME_UNITS: usize = 36;
/// The GPT attribute bit "legacy BIOS bootable".
const GPT_LEGACY_BOOTABLE: u64 = 1 << 2;

/// A partition table's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Label {
    Mbr,
    Gpt,
}

impl Label {
    /// The name DIB's block-device configuration uses (`label: gpt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Mbr => "mbr",
            Label::Gpt => "gpt",
        }
    }
}

/// A partition's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Linux,
    Esp,
    /// GPT only.
    BiosBoot,
    Swap,
    Lvm,
    /// Any other MBR type byte.
    Mbr(u8),
}

/// One partition. A field the helper does not know is an error when it
/// decodes one (as in every message of the helper protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1-based, as the kernel numbers partitions.
    pub number: u32,
    /// Byte offset and length on the disk, whole sectors.
    pub start: u64,
    pub size: u64,
    pub kind: Kind,
    pub bootable: bool,
    /// GPT: the partition's name and unique GUID (ignored for MBR).
    pub name: String,
    pub guid: String,
}

/// A partition table; unknown fields are errors, as in [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub label: Label,
    /// GPT disk GUID, or the MBR disk signature as 8 hex digits.
    pub disk_id: String,
    pub entries: Vec<Entry>,
}

/// Why a table cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{0}")]
    Invalid(String),
    #[error("writing the partition table: {0}")]
    Write(String),
}

fn invalid<T>(msg: String) -> Result<T, TableError> {
    Err(TableError::Invalid(msg))
}

impl Table {
    /// Check the table against a disk of `disk_size` bytes: numbers, sizes,
    /// alignment, overlaps, the table's own sectors and the label's limits.
    pub fn check(&self, disk_size: u64) -> Result<(), TableError> {
        if self.entries.len() > MAX_PARTITIONS {
            return invalid(format!(
                "{} partitions: at most {MAX_PARTITIONS} are allowed",
                self.entries.len()
            ));
        }
        let sectors = disk_size / SECTOR;
        let (first, last, max_number) = match self.label {
            Label::Mbr => {
                if u32::from_str_radix(&self.disk_id, 16).is_err() || self.disk_id.len() != 8 {
                    return invalid(format!(
                        "MBR disk signature {:?} is not 8 hex digits",
                        self.disk_id
                    ));
                }
                (1, sectors.min(1 << 32), 4)
            }
            Label::Gpt => {
                if uuid::Uuid::parse_str(&self.disk_id).is_err() {
                    return invalid(format!("GPT disk GUID {:?} is not a GUID", self.disk_id));
                }
                if sectors < 2 * GPT_RESERVED + 1 {
                    return invalid(format!("a {disk_size}-byte disk is too small for a GPT"));
                }
                (GPT_RESERVED, sectors - GPT_RESERVED + 1, GPT_ENTRIES)
            }
        };
        let mut spans: Vec<(u64, u64, u32)> = Vec::new();
        for e in &self.entries {
            let n = e.number;
            if n == 0 || n > max_number {
                return invalid(format!(
                    "partition number {n}: a {:?} table numbers partitions 1 to {max_number}",
                    self.label
                ));
            }
            if spans.iter().any(|s| s.2 == n) {
                return invalid(format!("partition number {n} appears twice"));
            }
            if e.start % SECTOR != 0 || e.size % SECTOR != 0 || e.size == 0 {
                return invalid(format!(
                    "partition {n}: start {} and size {} must be whole, non-empty sectors",
                    e.start, e.size
                ));
            }
            let (s, end) = (
                e.start / SECTOR,
                (e.start / SECTOR).checked_add(e.size / SECTOR),
            );
            let Some(end) = end.filter(|&end| s >= first && end <= last) else {
                return invalid(format!(
                    "partition {n} (sectors {s}..+{}) lies outside the usable sectors \
                     {first}..{last} of a {disk_size}-byte disk",
                    e.size / SECTOR
                ));
            };
            if let Some(o) = spans.iter().find(|o| s < o.1 && o.0 < end) {
                return invalid(format!("partitions {} and {n} overlap", o.2));
            }
            spans.push((s, end, n));
            match (self.label, e.kind) {
                (Label::Mbr, Kind::BiosBoot) => {
                    return invalid(format!("partition {n}: BIOS boot (EF02) is a GPT type"))
                }
                (Label::Gpt, Kind::Mbr(b)) => {
                    return invalid(format!("partition {n}: type 0x{b:02x} is an MBR type"))
                }
                _ => {}
            }
            if self.label == Label::Gpt {
                if uuid::Uuid::parse_str(&e.guid).is_err() {
                    return invalid(format!("partition {n}: GUID {:?} is not a GUID", e.guid));
                }
                if e.name.encode_utf16().count() > GPT_NAME_UNITS {
                    return invalid(format!(
                        "partition {n}: the name {:?} is longer than {GPT_NAME_UNITS} characters",
                        e.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Write the table to `disk` (an image file or a block device of
    /// `disk_size` bytes), after [`Table::check`]ing it.
    pub fn write(&self, disk: &File, disk_size: u64) -> Result<(), TableError> {
        self.check(disk_size)?;
        let w = |e: std::io::Error| TableError::Write(e.to_string());
        let mut f = disk.try_clone().map_err(w)?;
        match self.label {
            Label::Mbr => self.write_mbr(&mut f),
            Label::Gpt => self.write_gpt(f, disk_size),
        }
    }

    fn write_mbr(&self, f: &mut File) -> Result<(), TableError> {
        let werr = |e: mbrman::Error| TableError::Write(e.to_string());
        let sig = u32::from_str_radix(&self.disk_id, 16)
            .map_err(|e| TableError::Invalid(e.to_string()))?
            .to_le_bytes();
        let mut mbr = mbrman::MBR::new_from(f, SECTOR as u32, sig).map_err(werr)?;
        for e in &self.entries {
            let sys = match e.kind {
                Kind::Linux => 0x83,
                Kind::Esp => 0xef,
                Kind::Swap => 0x82,
                Kind::Lvm => 0x8e,
                Kind::Mbr(b) => b,
                Kind::BiosBoot => unreachable!("check() refuses BIOS boot in an MBR"),
            };
            // check() bounded every sector number below 2^32.
            let lba = |b: u64| (b / SECTOR) as u32;
            mbr[e.number as usize] = mbrman::MBRPartitionEntry {
                boot: if e.bootable {
                    mbrman::BOOT_ACTIVE
                } else {
                    mbrman::BOOT_INACTIVE
                },
                first_chs: mbrman::CHS::empty(),
                sys,
                last_chs: mbrman::CHS::empty(),
                starting_lba: lba(e.start),
                sectors: lba(e.size),
            };
        }
        mbr.write_into(f).map_err(werr)?;
        f.flush().map_err(|e| TableError::Write(e.to_string()))
    }

    fn write_gpt(&self, mut f: File, disk_size: u64) -> Result<(), TableError> {
        use gpt::partition_types::{Type, BIOS, EFI, LINUX_FS, LINUX_LVM, LINUX_SWAP};
        let werr = |e: &dyn std::fmt::Display| TableError::Write(e.to_string());
        let guid =
            |s: &str| uuid::Uuid::parse_str(s).map_err(|e| TableError::Invalid(e.to_string()));
        let sectors = disk_size / SECTOR;
        // The protective MBR first: it covers the whole disk after LBA 0.
        f.seek(SeekFrom::Start(0)).map_err(|e| werr(&e))?;
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX))
            .overwrite_lba0(&mut f)
            .map_err(|e| werr(&e))?;
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .change_partition_count(true)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .create_from_device(f, Some(guid(&self.disk_id)?))
            .map_err(|e| werr(&e))?;
        let mut parts = std::collections::BTreeMap::new();
        for e in &self.entries {
            let t: Type = match e.kind {
                Kind::Linux => LINUX_FS,
                Kind::Esp => EFI,
                Kind::BiosBoot => BIOS,
                Kind::Swap => LINUX_SWAP,
                Kind::Lvm => LINUX_LVM,
                Kind::Mbr(_) => unreachable!("check() refuses MBR types in a GPT"),
            };
            parts.insert(
                e.number,
                gpt::partition::Partition {
                    part_type_guid: t,
                    part_guid: guid(&e.guid)?,
                    first_lba: e.start / SECTOR,
                    last_lba: (e.start + e.size) / SECTOR - 1,
                    flags: if e.bootable { GPT_LEGACY_BOOTABLE } else { 0 },
                    name: e.name.clone(),
                },
            );
        }
        for n in 1..=GPT_ENTRIES {
            parts
                .entry(n)
                .or_insert_with(gpt::partition::Partition::zero);
        }
        disk.update_partitions(parts).map_err(|e| werr(&e))?;
        let mut f = disk.write().map_err(|e| werr(&e))?;
        f.flush().map_err(|e| werr(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(number: u32, start_mib: u64, size_mib: u64) -> Entry {
        Entry {
            number,
            start: start_mib << 20,
            size: size_mib << 20,
            kind: Kind::Linux,
            bootable: false,
            name: format!("p{number}"),
            guid: "0a1b2c3d-0000-4000-8000-000000000001".into(),
        }
    }

    fn table(label: Label, entries: Vec<Entry>) -> Table {
        Table {
            label,
            disk_id: match label {
                Label::Mbr => "1234abcd".into(),
                Label::Gpt => "0a1b2c3d-0000-4000-8000-0000000000ff".into(),
            },
            entries,
        }
    }

    #[test]
    fn tables_that_do_not_fit_the_disk_are_refused_with_the_reason() {
        let disk = 64 << 20;
        let ok = table(Label::Gpt, vec![entry(1, 1, 10), entry(2, 11, 52)]);
        ok.check(disk).unwrap();
        let cases: Vec<(Table, &str)> =
            vec![
            (
                table(Label::Gpt, vec![entry(1, 1, 10), entry(2, 5, 10)]),
                "partitions 1 and 2 overlap",
            ),
            (
                table(Label::Gpt, vec![entry(1, 1, 64)]),
                "partition 1 (sectors 2048..+131072) lies outside the usable sectors 34..131039",
            ),
            (
                table(Label::Gpt, vec![Entry { start: 0, ..entry(1, 0, 1) }]),
                "lies outside the usable sectors",
            ),
            (table(Label::Mbr, vec![entry(5, 1, 1)]), "numbers partitions 1 to 4"),
            (table(Label::Gpt, vec![entry(0, 1, 1)]), "partition number 0"),
            (
                table(Label::Gpt, vec![entry(1, 1, 1), entry(1, 3, 1)]),
                "appears twice",
            ),
            (
                table(Label::Gpt, vec![Entry { size: 1000, ..entry(1, 1, 1) }]),
                "whole, non-empty sectors",
            ),
            (
                table(Label::Mbr, vec![Entry { kind: Kind::BiosBoot, ..entry(1, 1, 1) }]),
                "GPT type",
            ),
            (
                table(Label::Gpt, vec![Entry { guid: "x".into(), ..entry(1, 1, 1) }]),
                "is not a GUID",
            ),
            (
                Table { disk_id: "nothex".into(), ..table(Label::Mbr, vec![]) },
                "not 8 hex digits",
            ),
            (
                table(Label::Gpt, (1..=17).map(|n| entry(n, n as u64, 1)).collect()),
                "at most 16",
            ),
        ];
        for (t, want) in cases {
            let e = t.check(disk).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }

    #[test]
    fn mbr_and_gpt_are_written_where_the_entries_say() {
        let dir = tempfile::tempdir().unwrap();
        for label in [Label::Mbr, Label::Gpt] {
            let path = dir.path().join(format!("{label:?}"));
            let f = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            f.set_len(64 << 20).unwrap();
            let mut e2 = entry(2, 11, 20);
            e2.bootable = true;
            e2.guid = "0a1b2c3d-0000-4000-8000-000000000002".into();
            table(label, vec![entry(1, 1, 10), e2])
                .write(&f, 64 << 20)
                .unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
            match label {
                Label::Mbr => {
                    // Entry 2 at 0x1ce: active, type 0x83, LBA 11 MiB.
                    let e = &bytes[0x1ce..0x1de];
                    assert_eq!(e[0], 0x80);
                    assert_eq!(e[4], 0x83);
                    assert_eq!(u32::from_le_bytes(e[8..12].try_into().unwrap()), 11 * 2048);
                    assert_eq!(&bytes[440..444], &[0xcd, 0xab, 0x34, 0x12]);
                }
                Label::Gpt => {
                    assert_eq!(&bytes[512..520], b"EFI PART");
                    // The second entry: first LBA 11 MiB, legacy-bootable.
                    let e = &bytes[1024 + 128..1024 + 256];
                    assert_eq!(u64::from_le_bytes(e[32..40].try_into().unwrap()), 11 * 2048);
                    assert_eq!(u64::from_le_bytes(e[48..56].try_into().unwrap()), 4);
                }
            }
        }
    }
}
