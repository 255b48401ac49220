//! The offline backend: everything written straight into the image file,
//! with no loop device, no mount and no privilege. It runs inside the
//! build's user namespace (pid 1), so the filesystem tools read the tree
//! with the ids the image will have.
//!
//! The image file is made with its partition table when the layout is
//! planned (finalise.d may then write a bootloader into it), and after
//! cleanup.d each partition is filled with its filesystem, built from the
//! tree at the partition's offset.

use std::fs::{self, File};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;

use anyhow::{bail, Context as _, Result};

use dib_sandbox::mkfs::{MkfsSpec, Target};

use super::backend::{DiskBackend, Fill};
use super::config::FsType;
use super::image::{create_file, fill_fat};
use super::layout::{Layout, PlacedFs};
use crate::tool::run;

/// The offline backend (no state: the image file is all there is).
#[derive(Debug, Default)]
pub struct Offline;

impl DiskBackend for Offline {
    fn create(&mut self, file: &Path, layout: &Layout) -> Result<()> {
        create(file, layout)
    }

    fn write_filesystems(&mut self, image: Fill<'_>) -> Result<()> {
        let scratch = image.work.join("fs-aside");
        fs::create_dir(&scratch).with_context(|| format!("creating {scratch:?}"))?;
        fill(
            image.file,
            image.layout,
            image.tree,
            &scratch,
            image.stop,
            image.epoch,
        )
    }
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
    epoch: Option<u64>,
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
                let parent = inner.parent().map(|p| (p, fs::symlink_metadata(p)));
                fs::rename(&inner, &aside).with_context(|| format!("moving {inner:?} aside"))?;
                // An empty mount point stays, as it was (its times and its
                // parent's too).
                fs::create_dir(&inner).with_context(|| format!("recreating {inner:?}"))?;
                fs::set_permissions(&inner, fs::Permissions::from_mode(md.mode() & 0o7777))?;
                std::os::unix::fs::lchown(&inner, Some(md.uid()), Some(md.gid()))?;
                keep_times(&inner, &md)?;
                if let Some((p, Ok(pmd))) = parent {
                    keep_times(p, &pmd)?;
                }
                Some(aside)
            }
        };
        sources.push((fs, src));
    }
    for (fs, src) in sources {
        make_fs(image, fs, src.as_deref(), scratch, stop, epoch)
            .with_context(|| format!("building the {} filesystem '{}'", fs.kind, fs.name))?;
    }
    Ok(())
}

fn make_fs(
    image: &Path,
    fs: &PlacedFs,
    src: Option<&Path>,
    scratch: &Path,
    stop: &AtomicI32,
    epoch: Option<u64>,
) -> Result<()> {
    let what = format!("building {}", fs.mount_point.as_deref().unwrap_or(&fs.name));
    let Some(mut spec) = fs.mkfs_spec() else {
        bail!(
            "the offline backend cannot build {} (use the helper backend)",
            fs.kind
        )
    };
    if fs.kind == FsType::Swap {
        // mkswap cannot write at an offset: make the header in a sparse
        // file of the partition's size and copy its first page in.
        let tmp = tempfile::NamedTempFile::new_in(scratch)?;
        tmp.as_file().set_len(fs.size)?;
        run_mkfs(&spec, Target::Device(tmp.path()), &what, stop, None)?;
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
    if epoch.is_some() && fs.kind.is_ext() {
        // Directory hashes seeded from the (seeded) UUID, not at random.
        spec.extended.push(format!("hash_seed={}", fs.uuid));
    }
    if epoch.is_some() && fs.kind == FsType::Vfat {
        // No creation time in the volume label (the serial stays -i's).
        spec.options.push("--invariant".into());
    }
    run_mkfs(
        &spec,
        Target::Image {
            file: image,
            offset: fs.offset,
            tree,
        },
        &what,
        stop,
        epoch,
    )?;
    if epoch.is_some() && fs.kind.is_ext() {
        super::ext4_times::settle(image, fs.offset)
            .with_context(|| format!("settling the inode times of {what}"))?;
    }
    match src {
        Some(src) if fs.kind == FsType::Vfat => fill_fat(image, fs, src, stop),
        _ => Ok(()),
    }
}

/// Run the mkfs `spec` gives for `target`.
fn run_mkfs(
    spec: &MkfsSpec,
    target: Target<'_>,
    what: &str,
    stop: &AtomicI32,
    epoch: Option<u64>,
) -> Result<()> {
    let (prog, args) = spec.argv(target);
    let mut cmd = crate::tool::command(prog);
    cmd.args(args);
    if let Some(t) = epoch {
        // mke2fs's own times (superblock, root, lost+found, journal).
        cmd.env("E2FSPROGS_FAKE_TIME", t.to_string());
    }
    run(cmd, what, stop)
}

/// Give `path` the access and modification times `md` has.
fn keep_times(path: &Path, md: &fs::Metadata) -> Result<()> {
    let ts = |s: i64, ns: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts(md.atime(), md.atime_nsec()),
            last_modification: ts(md.mtime(), md.mtime_nsec()),
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting the times of {path:?}"))
}
