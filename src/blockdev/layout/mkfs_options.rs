//! The mkfs options a configuration or `--mkfs-options` gives, checked
//! against what the layout decides.

use anyhow::{bail, Context as _, Result};

use super::FsType;

/// Options that would move or resize a filesystem dib places itself are
/// refused; ext's `-E` values are split out to merge with dib's.
pub(super) fn split(kind: FsType, opts: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut rest = Vec::new();
    let mut extended = Vec::new();
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        let placing = match kind {
            FsType::Vfat => ["-S", "--offset", "-C", "--sector-size"]
                .iter()
                .any(|p| o == p || o.starts_with(&format!("{p}="))),
            _ => false,
        };
        if placing {
            bail!("{o} changes where or how big the filesystem is, which the layout decides");
        }
        if kind.is_ext() && o.starts_with("-E") {
            let value = match o.strip_prefix("-E").filter(|v| !v.is_empty()) {
                Some(v) => v.to_string(),
                None => it
                    .next()
                    .with_context(|| "-E needs a value".to_string())?
                    .clone(),
            };
            for v in value.split(',').filter(|v| !v.is_empty()) {
                if v.starts_with("offset") {
                    bail!("-E {v}: the layout decides the filesystem's offset");
                }
                extended.push(v.to_string());
            }
            continue;
        }
        rest.push(o.clone());
    }
    Ok((rest, extended))
}
