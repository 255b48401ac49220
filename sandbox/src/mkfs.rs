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

/// ext block size: dib always makes 4 KiB blocks.
pub const EXT_BLOCK: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    /// Helper backend only: mkfs.xfs cannot fill a filesystem from a tree.
    Xfs,
    Vfat,
    Swap,
}

impl FsType {
    /// The name the kernel and mkfs know it by.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Vfat => "vfat",
            FsType::Swap => "swap",
        }
    }

    pub fn is_ext(self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }
}

/// A filesystem to make: everything of its plan that mkfs sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl MkfsSpec {
    /// Refuse anything the helper must not pass to a mkfs it runs as root.
    pub fn check(&self) -> Result<(), String> {
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
            let max = match self.fs {
                FsType::Vfat => 11,
                FsType::Xfs => 12,
                _ => 16,
            };
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
        for item in &self.extended {
            let key = item.split('=').next().unwrap_or_default();
            let value_ok = item.split_once('=').is_none_or(|(_, v)| {
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c))
            });
            if !self.fs.is_ext() || !EXT_EXTENDED.contains(&key) || !value_ok {
                return Err(format!(
                    "the mkfs option -E {item} is not allowed through dib-helper \
                     (allowed -E options: {})",
                    EXT_EXTENDED.join(", ")
                ));
            }
        }
        let (options, flags): (&[(&str, Value)], &[&str]) = match self.fs {
            k if k.is_ext() => (EXT_OPTIONS, EXT_FLAGS),
            FsType::Vfat => (VFAT_OPTIONS, VFAT_FLAGS),
            FsType::Xfs => (XFS_OPTIONS, XFS_FLAGS),
            _ => (&[], &[]),
        };
        let mut args = self.options.iter();
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
                    self.fs.name(),
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
        };
        (prog, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fs: FsType, options: &[&str]) -> MkfsSpec {
        MkfsSpec {
            fs,
            label: Some("root".into()),
            uuid: if fs == FsType::Vfat {
                "1234-ABCD".into()
            } else {
                "6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e".into()
            },
            size: 100 << 20,
            journal: Some(64 << 20),
            max_online_resize: Some(1 << 40),
            extended: vec![],
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn both_backends_get_the_same_filesystem_arguments() {
        let s = spec(FsType::Ext4, &["-O", "^metadata_csum", "-i", "8192"]);
        let (prog, dev) = s.argv(Target::Device(Path::new("/dev/loop0p1")));
        assert_eq!(prog, "mkfs.ext4");
        let dev: Vec<String> = dev.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            dev.join(" "),
            "-F -q -b 4096 -E nodiscard,resize=268435456 -U 6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e \
             -L root -J size=64 -O ^metadata_csum -i 8192 /dev/loop0p1 102400k"
        );
        let (_, img) = s.argv(Target::Image {
            file: Path::new("disk.raw"),
            offset: 1 << 20,
            tree: Some(Path::new("/t")),
        });
        let img: Vec<String> = img.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            img.join(" "),
            "-F -q -b 4096 -E offset=1048576,nodiscard,resize=268435456 -U \
             6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e -L root -J size=64 -d /t -O ^metadata_csum \
             -i 8192 disk.raw 102400k"
        );
        let (prog, fat) = spec(FsType::Vfat, &["-F", "32"]).argv(Target::Image {
            file: Path::new("disk.raw"),
            offset: 1 << 20,
            tree: None,
        });
        assert_eq!(prog, "mkfs.fat");
        assert_eq!(
            fat,
            [
                "--offset=2048",
                "-i",
                "1234ABCD",
                "-n",
                "root",
                "-F",
                "32",
                "disk.raw",
                "102400"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn options_that_reach_host_files_are_refused() {
        for (fs, opts) in [
            (FsType::Ext4, &["-d", "/etc"][..]),
            (FsType::Ext4, &["-z", "/tmp/undo"]),
            (FsType::Ext4, &["-l", "/etc/shadow"]),
            (FsType::Ext4, &["-J", "device=/dev/sda"]),
            (FsType::Ext4, &["-O"]),
            (FsType::Ext4, &["-O", "has_journal;rm"]),
            (FsType::Ext4, &["-T", "-d"]),
            (FsType::Ext4, &["-e", "panic"]),
            (FsType::Ext4, &["-é"]),
            (FsType::Ext4, &["-Oé,x"]),
            (FsType::Ext4, &["é"]),
            (FsType::Vfat, &["-m", "/etc/shadow"]),
            (FsType::Vfat, &["-O", "x"]),
            (FsType::Swap, &["-p", "4096"]),
            (FsType::Xfs, &["-p", "/etc/protofile"]),
            (FsType::Xfs, &["-d", "file,name=/etc/shadow"]),
            (FsType::Xfs, &["-l", "logdev=/dev/sda"]),
            (FsType::Xfs, &["-r", "rtdev=/dev/sda"]),
            (FsType::Xfs, &["-m", "crc=1,uuid=x/y"]),
        ] {
            let e = spec(fs, opts).check().unwrap_err();
            assert!(
                e.contains("is not allowed through dib-helper"),
                "{opts:?}: {e}"
            );
        }
        let mut s = spec(FsType::Ext4, &[]);
        s.extended = vec!["offset=4096".into()];
        assert!(s.check().unwrap_err().contains("-E offset=4096"));
        s.extended = vec!["root_owner=0:0".into(), "lazy_itable_init=1".into()];
        s.check().unwrap();
        for ok in [
            &["-O", "^has_journal,64bit"][..],
            &["-Ohas_journal"],
            &["-j", "-m", "0.5"],
        ] {
            spec(FsType::Ext4, ok).check().unwrap();
        }
        spec(FsType::Vfat, &["-F", "32", "-a"]).check().unwrap();
        let mut x = spec(
            FsType::Xfs,
            &["-m", "crc=1,reflink=1", "-i", "size=512", "-K"],
        );
        x.label = Some("img-rootfs".into());
        x.check().unwrap();
        let (prog, args) = x.argv(Target::Device(Path::new("/dev/loop0p1")));
        assert_eq!(prog, "mkfs.xfs");
        assert_eq!(
            args,
            [
                "-f",
                "-q",
                "-m",
                "uuid=6f3e0c0a-3a5d-4b5e-9a6b-0c7c1b2a3d4e",
                "-L",
                "img-rootfs",
                "-m",
                "crc=1,reflink=1",
                "-i",
                "size=512",
                "-K",
                "/dev/loop0p1"
            ]
            .map(OsString::from)
        );
        let mut s = spec(FsType::Ext4, &[]);
        s.uuid = "--help".into();
        assert!(s.check().unwrap_err().contains("not a valid ext4 UUID"));
        s = spec(FsType::Vfat, &[]);
        s.label = Some("twelve chars".into());
        assert!(s.check().unwrap_err().contains("at most 11 bytes"));
    }
}
