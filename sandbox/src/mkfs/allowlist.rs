//! The options dib-helper lets through to a mkfs it runs as root: an
//! allowlist per tool, each value of a plain form, so no option can name a
//! host file (`mke2fs -d DIR`, `-z UNDO`, `-l FILE`, `-J device=`,
//! `mkfs.fat -m FILE`, `mkfs.xfs -p FILE`).

use super::FsType;

/// ext options that take a value, and how the value must look.
const EXT_OPTIONS: &[(&str, Value)] = &[
    ("-O", Value::Features),
    ("-i", Value::Number),
    ("-I", Value::Number),
    ("-m", Value::Number),
    ("-N", Value::Number),
    ("-g", Value::Number),
    ("-G", Value::Number),
    ("-C", Value::Number),
    ("-r", Value::Number),
    ("-T", Value::Word),
    // Not `panic`: the helper mounts these filesystems on the host's kernel.
    ("-e", Value::OneOf(&["continue", "remount-ro"])),
];
/// ext options without a value.
const EXT_FLAGS: &[&str] = &["-j", "-S", "-n"];
/// `-E` items mke2fs may get (with or without `=value`).
const EXT_EXTENDED: &[&str] = &[
    "lazy_itable_init",
    "lazy_journal_init",
    "nodiscard",
    "discard",
    "stride",
    "stripe_width",
    "stripe-width",
    "num_backup_sb",
    "packed_meta_blocks",
    "root_owner",
    "test_fs",
    "encoding",
    "encoding_flags",
    "quotatype",
    "assume_storage_prezeroed",
    "orphan_file_size",
];
const VFAT_OPTIONS: &[(&str, Value)] = &[
    ("-F", Value::Number),
    ("-S", Value::Number),
    ("-s", Value::Number),
    ("-r", Value::Number),
    ("-f", Value::Number),
    ("-R", Value::Number),
    ("-h", Value::Number),
    ("-D", Value::Number),
    ("-M", Value::Number),
    ("-b", Value::Number),
];
const VFAT_FLAGS: &[&str] = &["-a", "-A", "-I", "--invariant"];

/// mkfs.xfs options, each a list of `key[=value]` sub-options. Left out:
/// `-p` (a prototype file), `-r` (a realtime device), and the sub-options
/// naming files or devices (`-d file,name=`, `-l logdev=`).
const XFS_OPTIONS: &[(&str, Value)] = &[
    ("-b", Value::Subopts(&["size"])),
    (
        "-m",
        Value::Subopts(&[
            "crc",
            "finobt",
            "reflink",
            "bigtime",
            "inobtcount",
            "rmapbt",
        ]),
    ),
    (
        "-i",
        Value::Subopts(&[
            "size",
            "maxpct",
            "align",
            "sparse",
            "attr",
            "projid32bit",
            "nrext64",
        ]),
    ),
    ("-n", Value::Subopts(&["size", "ftype", "version"])),
    (
        "-l",
        Value::Subopts(&["size", "version", "sunit", "su", "lazy-count", "internal"]),
    ),
    (
        "-d",
        Value::Subopts(&["agcount", "agsize", "su", "sw", "sunit", "swidth"]),
    ),
];
const XFS_FLAGS: &[&str] = &["-K"];

#[derive(Debug, Clone, Copy)]
enum Value {
    Number,
    /// Letters, digits and `_`, `-`.
    Word,
    /// A feature list: words, `^` and `,`.
    Features,
    /// Comma-separated `key[=value]` with these keys, plain values.
    Subopts(&'static [&'static str]),
    /// One of these words.
    OneOf(&'static [&'static str]),
}

impl Value {
    fn admits(self, v: &str) -> bool {
        let ok = |c: char, extra: &str| c.is_ascii_alphanumeric() || extra.contains(c);
        !v.is_empty()
            && v.len() <= 256
            && match self {
                Value::Number => v.chars().all(|c| ok(c, ".")) && !v.starts_with('.'),
                Value::Word => v.chars().all(|c| ok(c, "_-")) && !v.starts_with('-'),
                Value::Features => v.chars().all(|c| ok(c, "_^,")),
                Value::OneOf(words) => words.contains(&v),
                Value::Subopts(keys) => v.split(',').all(|item| {
                    let (k, val) = item.split_once('=').unwrap_or((item, "1"));
                    keys.contains(&k) && !val.is_empty() && val.chars().all(|c| ok(c, "._-"))
                }),
            }
    }
}

/// `-E` items besides dib's own: only for ext, only known keys, plain values.
pub(super) fn check_extended(fs: FsType, extended: &[String]) -> Result<(), String> {
    for item in extended {
        let key = item.split('=').next().unwrap_or_default();
        let value_ok = item.split_once('=').is_none_or(|(_, v)| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c))
        });
        if !fs.is_ext() || !EXT_EXTENDED.contains(&key) || !value_ok {
            return Err(format!(
                "the mkfs option -E {item} is not allowed through dib-helper \
                 (allowed -E options: {})",
                EXT_EXTENDED.join(", ")
            ));
        }
    }
    Ok(())
}

/// Further options: each a flag or an option of the tool's allowlist with
/// an admissible value.
pub(super) fn check_options(fs: FsType, given: &[String]) -> Result<(), String> {
    let (options, flags): (&[(&str, Value)], &[&str]) = match fs {
        k if k.is_ext() => (EXT_OPTIONS, EXT_FLAGS),
        FsType::Vfat => (VFAT_OPTIONS, VFAT_FLAGS),
        FsType::Xfs => (XFS_OPTIONS, XFS_FLAGS),
        _ => (&[], &[]),
    };
    let mut args = given.iter();
    while let Some(a) = args.next() {
        if flags.contains(&a.as_str()) {
            continue;
        }
        let refuse = |what: &str| {
            let names: Vec<&str> = options
                .iter()
                .map(|o| o.0)
                .chain(flags.iter().copied())
                .collect();
            Err(format!(
                "the mkfs option {what} is not allowed through dib-helper (allowed for {}: {})",
                fs.name(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(" ")
                }
            ))
        };
        // `-O feature` and `-Ofeature` both (split at a character
        // boundary: options come from an untrusted client).
        let split = a
            .strip_prefix('-')
            .filter(|rest| !rest.starts_with('-'))
            .and_then(|rest| rest.char_indices().nth(1))
            .map(|(i, _)| i + 1);
        let (name, inline) = match split {
            Some(i) => (&a[..i], Some(&a[i..])),
            None => (a.as_str(), None),
        };
        let Some((_, kind)) = options.iter().find(|o| o.0 == name) else {
            return refuse(a);
        };
        let value = match inline {
            Some(v) => v,
            None => match args.next() {
                Some(v) => v.as_str(),
                None => return refuse(&format!("{a} (without its value)")),
            },
        };
        if !kind.admits(value) {
            return refuse(&format!("{name} {value}"));
        }
    }
    Ok(())
}
