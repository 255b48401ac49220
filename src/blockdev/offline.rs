//! The offline backend: everything written straight into the image file,
//! with no loop device, no mount and no privilege. It runs inside the
//! build's user namespace (pid 1), so the filesystem tools read the tree
//! with the ids the image will have.
//!
//! Order in a build (runner.rs): [`measure`] the tree and plan the layout,
//! [`create`] the image file with its partition table (finalise.d may then
//! write a bootloader into it), and after cleanup.d [`fill`] each partition
//! with its filesystem, built from the tree at the partition's offset.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;

use anyhow::{bail, Context as _, Result};

use super::config::{FsKind, Label, PartType};
use super::layout::{Layout, PlacedFs, Usage};
use crate::tool::run;

const SECTOR: u64 = 512;

/// Bytes used under each of `points` (as `du`: allocated blocks, hard
/// links once), each file counted for the innermost mount point holding it.
pub fn measure(tree: &Path, points: &[String]) -> Result<Usage> {
    let mut usage: Usage = points.iter().map(|p| (p.clone(), 0)).collect();
    let mut seen = HashSet::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(tree.to_path_buf(), "/".to_string())];
    while let Some((dir, point)) = stack.pop() {
        let rd = fs::read_dir(&dir).with_context(|| format!("reading {dir:?}"))?;
        for entry in rd {
            let entry = entry.with_context(|| format!("reading {dir:?}"))?;
            let md = entry
                .metadata()
                .with_context(|| format!("examining {:?}", entry.path()))?;
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(tree)
                .map(|r| format!("/{}", r.display()))
                .unwrap_or_default();
            let here = if usage.contains_key(&rel) {
                rel.clone()
            } else {
                point.clone()
            };
            // Small files still take a block; directories and symlinks too.
            let bytes = (md.blocks() * 512).max(if md.len() > 0 { 4096 } else { 0 });
            *usage.entry(here.clone()).or_insert(0) += bytes;
            if md.is_dir() {
                stack.push((entry.path(), here));
            }
        }
    }
    Ok(usage)
}

/// Make the image file at `path` (sparse, `layout.size` bytes) with its
/// partition table.
pub fn create(path: &Path, layout: &Layout) -> Result<()> {
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating the image file {path:?}"))?;
    f.set_len(layout.size)
        .with_context(|| format!("sizing the image file {path:?}"))?;
    match layout.label {
        None => {}
        Some(Label::Mbr) => write_mbr(&mut f, layout)?,
        Some(Label::Gpt) => write_gpt(f.try_clone()?, layout)?,
    }
    f.sync_data().ok();
    Ok(())
}

fn write_mbr(f: &mut File, layout: &Layout) -> Result<()> {
    let sig = u32::from_str_radix(&layout.disk_id, 16)
        .context("the MBR disk signature")?
        .to_le_bytes();
    let mut mbr = mbrman::MBR::new_from(f, SECTOR as u32, sig).context("starting the MBR")?;
    for p in &layout.partitions {
        let sys = match p.ptype {
            PartType::Linux => 0x83,
            PartType::Esp => 0xef,
            PartType::Swap => 0x82,
            PartType::Lvm => 0x8e,
            PartType::Mbr(b) => b,
            PartType::BiosBoot => bail!("partition '{}': BIOS boot (EF02) is a GPT type", p.name),
        };
        let lba = |b: u64| {
            u32::try_from(b / SECTOR)
                .map_err(|_| anyhow::anyhow!("MBR cannot address past 2 TiB: use label: gpt"))
        };
        mbr[p.number as usize] = mbrman::MBRPartitionEntry {
            boot: if p.boot {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: mbrman::CHS::empty(),
            sys,
            last_chs: mbrman::CHS::empty(),
            starting_lba: lba(p.start)?,
            sectors: lba(p.size)?,
        };
    }
    mbr.write_into(f).context("writing the MBR")?;
    Ok(())
}

fn write_gpt(mut f: File, layout: &Layout) -> Result<()> {
    use gpt::partition_types::{Type, BIOS, EFI, LINUX_FS, LINUX_LVM, LINUX_SWAP};
    let disk_guid = uuid::Uuid::parse_str(&layout.disk_id).context("the GPT disk GUID")?;
    // The protective MBR first: it covers the whole disk after LBA 0.
    let sectors = layout.size / SECTOR;
    gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX))
        .overwrite_lba0(&mut f)
        .context("writing the protective MBR")?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .change_partition_count(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(f, Some(disk_guid))
        .context("starting the GPT")?;
    let mut parts = BTreeMap::new();
    for p in &layout.partitions {
        let t: Type = match p.ptype {
            PartType::Linux => LINUX_FS,
            PartType::Esp => EFI,
            PartType::BiosBoot => BIOS,
            PartType::Swap => LINUX_SWAP,
            PartType::Lvm => LINUX_LVM,
            PartType::Mbr(b) => bail!("partition '{}': type 0x{b:02x} is an MBR type", p.name),
        };
        let flags = if p.boot { 1 << 2 } else { 0 };
        parts.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: t,
                part_guid: uuid::Uuid::parse_str(&p.guid).context("a partition GUID")?,
                first_lba: p.start / SECTOR,
                last_lba: (p.start + p.size) / SECTOR - 1,
                flags,
                name: p.name.clone(),
            },
        );
    }
    // The usual 128 entries (what sfdisk and gdisk write).
    for n in 1..=128u32 {
        parts
            .entry(n)
            .or_insert_with(gpt::partition::Partition::zero);
    }
    disk.update_partitions(parts)
        .context("laying out the GPT")?;
    let mut f = disk.write().context("writing the GPT")?;
    f.flush().ok();
    Ok(())
}

/// Build every filesystem of `layout` from `tree` into `image`. Nested
/// mount points (`/boot/efi`) are moved out of the tree into `scratch`
/// first, so each filesystem gets only its own files; the tree is spent
/// afterwards (tree outputs are written before this).
pub fn fill(
    image: &Path,
    layout: &Layout,
    tree: &Path,
    scratch: &Path,
    stop: &AtomicI32,
) -> Result<()> {
    let mut fss: Vec<&PlacedFs> = layout.filesystems.iter().collect();
    // Deepest first: a mount point's content leaves before its parent's.
    fss.sort_by_key(|f| std::cmp::Reverse(f.mount_point.as_deref().map_or(0, |p| p.len())));
    let mut sources: Vec<(&PlacedFs, Option<PathBuf>)> = Vec::new();
    for (i, fs) in fss.iter().enumerate() {
        let src = match fs.mount_point.as_deref() {
            None => None,
            Some("/") => Some(tree.to_path_buf()),
            Some(p) => {
                let inner = dib_sandbox::mounts::inside(tree, p.trim_start_matches('/'))
                    .with_context(|| format!("finding {p} in the tree"))?;
                let aside = scratch.join(format!("fs{i}"));
                fs::create_dir_all(&inner).with_context(|| format!("creating {inner:?}"))?;
                let md = fs::symlink_metadata(&inner)?;
                fs::rename(&inner, &aside).with_context(|| format!("moving {inner:?} aside"))?;
                // An empty mount point stays, as it was.
                fs::create_dir(&inner).with_context(|| format!("recreating {inner:?}"))?;
                fs::set_permissions(&inner, fs::Permissions::from_mode(md.mode() & 0o7777))?;
                std::os::unix::fs::lchown(&inner, Some(md.uid()), Some(md.gid()))?;
                Some(aside)
            }
        };
        sources.push((fs, src));
    }
    for (fs, src) in sources {
        make_fs(image, fs, src.as_deref(), stop)
            .with_context(|| format!("building the {} filesystem '{}'", fs.kind, fs.name))?;
    }
    Ok(())
}

fn make_fs(image: &Path, fs: &PlacedFs, src: Option<&Path>, stop: &AtomicI32) -> Result<()> {
    let what = format!("building {}", fs.mount_point.as_deref().unwrap_or(&fs.name));
    match fs.kind {
        k if k.is_ext() => {
            // 4 KiB blocks, whole blocks only.
            let kib = fs.size / 4096 * 4;
            let mut ext = vec![format!("offset={}", fs.offset), "nodiscard".to_string()];
            if let Some(r) = fs.max_online_resize {
                ext.push(format!("resize={}", r / 4096));
            }
            ext.extend(fs.extended.iter().cloned());
            let mut cmd = crate::tool::command(&format!("mkfs.{k}"));
            cmd.args(["-F", "-q", "-b", "4096", "-E", &ext.join(",")])
                .args(["-U", &fs.uuid]);
            if let Some(l) = &fs.label {
                cmd.args(["-L", l]);
            }
            if let (Some(j), true) = (fs.journal, k != FsKind::Ext2) {
                cmd.args(["-J", &format!("size={}", j >> 20)]);
            }
            if let Some(s) = src {
                cmd.arg("-d").arg(s);
            }
            cmd.args(&fs.opts).arg(image).arg(format!("{kib}k"));
            run(cmd, "e2fsprogs", &what, stop)
        }
        FsKind::Vfat => {
            let mut cmd = crate::tool::command("mkfs.fat");
            cmd.arg(format!("--offset={}", fs.offset / SECTOR))
                .args(["-i", &fs.uuid.replace('-', "")]);
            if let Some(l) = &fs.label {
                cmd.args(["-n", l]);
            }
            cmd.args(&fs.opts)
                .arg(image)
                .arg((fs.size / 1024).to_string());
            run(cmd, "dosfstools", &what, stop)?;
            let Some(src) = src else { return Ok(()) };
            // mcopy runs outside the chroot and would copy what a symlink
            // points at on the host; FAT cannot hold one anyway.
            refuse_links(src, fs.mount_point.as_deref().unwrap_or(""))?;
            let mut names: Vec<PathBuf> = fs::read_dir(src)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            if names.is_empty() {
                return Ok(());
            }
            names.sort();
            let mut cmd = crate::tool::command("mcopy");
            cmd.env("MTOOLS_SKIP_CHECK", "1")
                .args(["-s", "-p", "-Q", "-m", "-i"])
                .arg(format!("{}@@{}", image.display(), fs.offset))
                .args(&names)
                .arg("::/");
            run(cmd, "mtools", &what, stop)
        }
        FsKind::Swap => {
            // mkswap cannot write at an offset: make the header in a sparse
            // file of the partition's size and copy its first page in.
            let tmp = tempfile::NamedTempFile::new_in(image.parent().unwrap_or(Path::new(".")))?;
            tmp.as_file().set_len(fs.size)?;
            let mut cmd = crate::tool::command("mkswap");
            cmd.args(["-q", "-U", &fs.uuid]);
            if let Some(l) = &fs.label {
                cmd.args(["-L", l]);
            }
            cmd.arg(tmp.path());
            run(cmd, "util-linux", &what, stop)?;
            let head = {
                let mut b = vec![0u8; 64 << 10];
                let n = std::io::Read::read(&mut File::open(tmp.path())?, &mut b)?;
                b.truncate(n);
                b
            };
            let mut f = File::options().write(true).open(image)?;
            f.seek(SeekFrom::Start(fs.offset))?;
            f.write_all(&head)?;
            Ok(())
        }
        k => bail!("the offline backend cannot build {k} (use the helper backend)"),
    }
}

/// Fail on any symlink or special file under `dir` (shown as under `shown`).
fn refuse_links(dir: &Path, shown: &str) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {dir:?}"))? {
        let entry = entry?;
        let t = entry.file_type()?;
        let here = format!("{shown}/{}", entry.file_name().to_string_lossy());
        if t.is_dir() {
            refuse_links(&entry.path(), &here)?;
        } else if !t.is_file() {
            bail!(
                "{here} is a {}: a FAT filesystem holds only files and directories",
                if t.is_symlink() {
                    "symlink"
                } else {
                    "special file"
                }
            );
        }
    }
    Ok(())
}

/// The image file's identity, to check that nothing replaced it (finalise.d
/// can write to it) before dib writes into it again.
pub fn identity(path: &Path) -> Result<(u64, u64)> {
    let md = fs::symlink_metadata(path).with_context(|| format!("examining {path:?}"))?;
    if !md.file_type().is_file() {
        bail!("{path:?} is no longer a regular file: a hook replaced the disk image");
    }
    Ok((md.dev(), md.ino()))
}
