//! The scalar values of the configuration: sizes, partition type codes,
//! filesystem types and UUIDs, and the helpers that read a node's keys.

use anyhow::{bail, Result};
use serde_yaml_ng::{Mapping, Value};

use super::{FsType, Label, PartType, Size};

pub(super) fn normalize_point(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

pub(super) fn mapping<'a>(v: &'a Value, what: &str) -> Result<&'a Mapping> {
    match v {
        Value::Mapping(m) => Ok(m),
        _ => bail!("{what} must be a mapping of keys"),
    }
}

pub(super) fn check_keys(m: &Mapping, what: &str, allowed: &[&str]) -> Result<()> {
    for k in m.keys() {
        let k = k.as_str().unwrap_or("?");
        if !allowed.contains(&k) {
            bail!("{what}: unknown key '{k}' (known: {})", allowed.join(", "));
        }
    }
    Ok(())
}

/// A scalar as a string (numbers and booleans as written).
pub(super) fn opt_str(m: &Mapping, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => bail!("'{key}' must be a single value"),
    }
}

pub(super) fn base_of(m: &Mapping, parent: Option<&str>, kind: &str) -> Result<String> {
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

pub(super) fn parse_rel_size(s: &str) -> Result<Size> {
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

pub(super) fn parse_type(t: &str, label: Label) -> Result<PartType> {
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

/// A `mkfs` node's `type`: a filesystem's name, or DIB's other spellings
/// of vfat (`fat`, `fat32`).
pub(super) fn fs_type(t: &str) -> Option<FsType> {
    match t {
        "fat" | "fat32" => Some(FsType::Vfat),
        t => FsType::parse(t),
    }
}

/// A UUID as the filesystem takes it: RFC 4122 text for ext/xfs/swap,
/// `XXXX-XXXX` (a volume id) for vfat.
pub(super) fn check_uuid(u: &str, kind: Option<FsType>) -> Result<()> {
    if kind == Some(FsType::Vfat) {
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
