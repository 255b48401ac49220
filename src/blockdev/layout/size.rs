//! Sizing: how big each filesystem must be for its content, how big the
//! image must be, and where each partition goes (DIB's placement rules).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use dib_sandbox::table::SECTOR;

use super::{
    human, round_up, Config, FsType, Label, Options, PlacedPartition, Usage, DEFAULT_JOURNAL, FILL,
    GPT_TAIL, MIB, MIN_FS, MIN_XFS, ROUND,
};
use crate::blockdev::config::{Size, Table};

/// What a filesystem must be.
pub(super) struct Want {
    pub(super) kind: FsType,
    pub(super) need: u64,
}

/// What each filesystem must be, by the base (partition or disk) that
/// holds it. Refuses the types this backend cannot build.
pub(super) fn wants<'a>(
    config: &'a Config,
    opts: &Options,
    usage: &Usage,
) -> Result<BTreeMap<&'a str, Want>> {
    let mut wants: BTreeMap<&str, Want> = BTreeMap::new();
    for fs in &config.filesystems {
        let is_root = fs.mount_point.as_deref() == Some("/");
        let kind = fs.kind.unwrap_or(opts.fs_type);
        match kind {
            FsType::Xfs if !opts.helper => bail!(
                "filesystem '{}' is xfs: the offline backend builds ext2/3/4, vfat and swap \
                 (mkfs.xfs cannot fill a filesystem from a tree without privilege); use ext4, \
                 or the helper backend (--block-backend helper, with a dib-helper running: \
                 docs/security.md)",
                fs.name
            ),
            FsType::Btrfs => bail!(
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
            FsType::Swap => MIB,
            FsType::Vfat => {
                round_up((content as f64 / FILL).ceil() as u64 + MIB, ROUND).max(MIB * 2)
            }
            _ => need(kind, content, extra, journal),
        };
        wants.insert(fs.base.as_str(), Want { kind, need: n });
    }
    Ok(wants)
}

/// The image's size, its table's label and the placed partitions.
pub(super) fn place_all(
    config: &Config,
    opts: &Options,
    wants: &BTreeMap<&str, Want>,
) -> Result<(u64, Option<Label>, Vec<PlacedPartition>)> {
    Ok(match &config.table {
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
    })
}

/// How big a filesystem with `content` bytes must be.
pub(super) fn need(kind: FsType, content: u64, extra: u64, journal: Option<u64>) -> u64 {
    let data = (content as f64 / FILL).ceil() as u64 + extra;
    let j = match kind {
        FsType::Ext3 | FsType::Ext4 | FsType::Xfs => journal.unwrap_or(DEFAULT_JOURNAL),
        _ => 0,
    };
    let min = if kind == FsType::Xfs { MIN_XFS } else { MIN_FS };
    round_up(data + j, ROUND).max(min)
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
fn place(table: &Table, total: u64) -> Result<Vec<PlacedPartition>> {
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
