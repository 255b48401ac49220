//! What both disk backends do with an image file and a tree: measure the
//! tree, create the sparse file, check that nothing replaced it, and copy
//! a directory into a FAT filesystem with mtools (FAT is filled from the
//! tree by both: the offline backend for every vfat, the helper backend
//! for a vfat this kernel cannot mount).

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;

use anyhow::{bail, Context as _, Result};

use super::layout::{Layout, PlacedFs, Usage};

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

/// Make the image file at `path` (sparse, `layout.size` bytes), without a
/// partition table.
pub fn create_file(path: &Path, layout: &Layout) -> Result<File> {
    let f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating the image file {path:?}"))?;
    f.set_len(layout.size)
        .with_context(|| format!("sizing the image file {path:?}"))?;
    Ok(f)
}

/// Copy `src`'s files into the FAT filesystem `fs` of `image` (made
/// already) with mcopy.
pub fn fill_fat(image: &Path, fs: &PlacedFs, src: &Path, stop: &AtomicI32) -> Result<()> {
    let what = format!("filling {}", fs.mount_point.as_deref().unwrap_or(&fs.name));
    // mcopy runs outside the chroot and would copy what a symlink points
    // at on the host; FAT cannot hold one anyway.
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
    crate::tool::run(cmd, &what, stop)
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
