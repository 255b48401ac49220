//! The offline backend: everything written straight into the image file,
//! with no loop device, no mount and no privilege. It runs inside the
//! build's user namespace (pid 1), so the filesystem tools read the tree
//! with the ids the image will have.
//!
//! Order in a build (runner.rs): [`measure`] the tree and plan the layout,
//! [`create`] the image file with its partition table (finalise.d may then
//! write a bootloader into it), and after cleanup.d [`fill`] each partition
//! with its filesystem, built from the tree at the partition's offset.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;

use anyhow::{bail, Context as _, Result};

use dib_sandbox::mkfs::{MkfsSpec, Target};

use super::config::FsType;
use super::layout::{Layout, PlacedFs, Usage};
use crate::tool::run;

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

/// Make the image file at `path` with its partition table.
pub fn create(path: &Path, layout: &Layout) -> Result<()> {
    let f = create_file(path, layout)?;
    if let Some(t) = layout.table() {
        t.write(&f, layout.size)
            .with_context(|| format!("partitioning {path:?}"))?;
    }
    f.sync_data().ok();
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
    let Some(spec) = fs.mkfs_spec() else {
        bail!(
            "the offline backend cannot build {} (use the helper backend)",
            fs.kind
        )
    };
    if fs.kind == FsType::Swap {
        // mkswap cannot write at an offset: make the header in a sparse
        // file of the partition's size and copy its first page in.
        let tmp = tempfile::NamedTempFile::new_in(image.parent().unwrap_or(Path::new(".")))?;
        tmp.as_file().set_len(fs.size)?;
        run_mkfs(&spec, Target::Device(tmp.path()), &what, stop)?;
        let head = {
            let mut b = vec![0u8; 64 << 10];
            let n = std::io::Read::read(&mut File::open(tmp.path())?, &mut b)?;
            b.truncate(n);
            b
        };
        let mut f = File::options().write(true).open(image)?;
        f.seek(SeekFrom::Start(fs.offset))?;
        f.write_all(&head)?;
        return Ok(());
    }
    let tree = src.filter(|_| fs.kind.is_ext());
    run_mkfs(
        &spec,
        Target::Image {
            file: image,
            offset: fs.offset,
            tree,
        },
        &what,
        stop,
    )?;
    match src {
        Some(src) if fs.kind == FsType::Vfat => fill_fat(image, fs, src, stop),
        _ => Ok(()),
    }
}

/// Run the mkfs `spec` gives for `target`.
fn run_mkfs(spec: &MkfsSpec, target: Target<'_>, what: &str, stop: &AtomicI32) -> Result<()> {
    let (prog, args) = spec.argv(target);
    let mut cmd = crate::tool::command(prog);
    cmd.args(args);
    run(cmd, what, stop)
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
    run(cmd, &what, stop)
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
