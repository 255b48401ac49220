//! Writing a build's outputs from the finished tree, inside pid 1 (which can
//! read every file of the tree, whatever id owns it).
//!
//! Each output is written into a file with no name (`O_TMPFILE`) in its
//! final directory, and every output is named only when all are complete,
//! so a failed, interrupted or killed build never leaves a half-written
//! image, under any name. An
//! existing output is moved aside with a timestamp, as DIB does, unless
//! `OVERWRITE_OLD_IMAGE=1`. Disk images come from the image file the
//! block-device step wrote (qemu-img), tree outputs from the final tree.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::log::Log;
use crate::tool::run;

/// Mode of a finished output.
const OUTPUT_MODE: u32 = 0o644;

use crate::config::OutputType;

/// One output: what and where (absolute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub kind: OutputType,
    pub path: PathBuf,
}

impl Output {
    /// `IMAGE_NAME.<ext>`, made absolute against the current directory.
    pub fn new(kind: OutputType, image_name: &str) -> Result<Output> {
        let path = std::path::absolute(format!("{image_name}.{}", kind.suffix()))
            .with_context(|| format!("resolving the output path of {image_name:?}"))?;
        Ok(Output { kind, path })
    }
}

/// How outputs are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// `OVERWRITE_OLD_IMAGE=1`: replace instead of moving aside.
    pub overwrite: bool,
    /// qcow2 compressed (not `-u`).
    pub compress: bool,
    /// `--qemu-img-options`, as `k=v` items.
    pub qemu_img_options: Vec<String>,
    /// `--checksum`: `.md5` and `.sha256` beside each output.
    pub checksum: bool,
    /// `SOURCE_DATE_EPOCH` is set: the same tree gives the same bytes
    /// (qcow2 clusters written in order, tar headers without the times
    /// of the build).
    pub reproducible: bool,
    /// The container image's `REPO:TAG` (`--docker-target`).
    pub docker_target: String,
}

/// An output being written: a file with no name yet (`O_TMPFILE`) in the
/// output's directory. Whatever ends the build before [`Finished::persist`]
/// (an error, a signal, even `kill -9`), the file goes with the last open
/// descriptor: no half-written image is ever left under any name.
#[derive(Debug)]
pub struct Unnamed {
    pub file: std::fs::File,
    /// Where it will be linked.
    pub path: PathBuf,
}

impl Unnamed {
    /// A new unnamed file in `path`'s directory, to be linked as `path`.
    pub fn new(path: &Path) -> Result<Unnamed> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let file =
            tempfile::tempfile_in(dir).with_context(|| format!("creating a file in {dir:?}"))?;
        Ok(Unnamed {
            file,
            path: path.to_path_buf(),
        })
    }

    /// A path other processes (tar, qemu-img, ...) open the file by.
    pub fn proc_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// Give the file its name: linked under a hidden temporary name, then
    /// renamed over the final one (atomic, also when overwriting).
    fn link(self) -> Result<()> {
        let hidden = hidden_name(&self.path);
        self.link_as(&hidden)
            .with_context(|| format!("naming the finished output {:?}", self.path))?;
        if let Err(e) = std::fs::rename(&hidden, &self.path) {
            let _ = std::fs::remove_file(&hidden);
            return Err(e)
                .with_context(|| format!("renaming the finished output to {:?}", self.path));
        }
        Ok(())
    }

    /// Link the file as `to` (a new name, on the same filesystem).
    fn link_as(&self, to: &Path) -> rustix::io::Result<()> {
        rustix::fs::linkat(
            rustix::fs::CWD,
            self.proc_path(),
            rustix::fs::CWD,
            to,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        )
    }
}

/// A hidden name beside `path` for an output being put in place, unique
/// to this build.
fn hidden_name(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(
        ".{name}.{}.dib-partial",
        uuid::Uuid::new_v4().simple()
    ))
}

/// A directory output being written (an OCI image layout): its big files
/// unnamed (as [`Unnamed`] files in the directory's parent), its small
/// ones in memory, until [`UnnamedDir::link`] makes the directory under a
/// hidden name, links them in and renames it into place.
#[derive(Debug)]
pub struct UnnamedDir {
    /// Where it will be.
    pub path: PathBuf,
    /// Files by their path in the directory.
    pub files: Vec<(PathBuf, Unnamed)>,
    pub small: Vec<(PathBuf, Vec<u8>)>,
}

impl UnnamedDir {
    fn link(self, overwrite: bool) -> Result<()> {
        let hidden = hidden_name(&self.path);
        let made = self.fill(&hidden);
        let made = made.and_then(|()| {
            if overwrite && std::fs::symlink_metadata(&self.path).is_ok() {
                // rename(2) replaces only an empty directory: swap the two
                // at once, so the name always holds a whole layout, then
                // delete the old one under the hidden name.
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &hidden,
                    rustix::fs::CWD,
                    &self.path,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .with_context(|| format!("replacing the old {:?}", self.path))?;
                let old = std::fs::symlink_metadata(&hidden).map(|m| m.is_dir());
                let removed = match old {
                    Ok(true) => std::fs::remove_dir_all(&hidden),
                    _ => std::fs::remove_file(&hidden),
                };
                removed.with_context(|| {
                    format!("removing the old {:?} (now at {hidden:?})", self.path)
                })
            } else {
                std::fs::rename(&hidden, &self.path)
                    .with_context(|| format!("renaming the finished output to {:?}", self.path))
            }
        });
        if made.is_err() {
            // Whatever is left under the hidden name is not the output.
            let _ = std::fs::remove_dir_all(&hidden);
        }
        made
    }

    fn fill(&self, at: &Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(at)
            .with_context(|| format!("creating {at:?}"))?;
        let mkparent = |p: &Path| -> Result<()> {
            if let Some(parent) = p.parent() {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .recursive(true)
                    .create(parent)
                    .with_context(|| format!("creating {parent:?}"))?;
            }
            Ok(())
        };
        for (rel, f) in &self.files {
            let to = at.join(rel);
            mkparent(&to)?;
            f.file
                .set_permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))
                .with_context(|| format!("setting the mode of {to:?}"))?;
            f.link_as(&to).with_context(|| format!("naming {to:?}"))?;
        }
        for (rel, bytes) in &self.small {
            let to = at.join(rel);
            mkparent(&to)?;
            std::fs::write(&to, bytes).with_context(|| format!("writing {to:?}"))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(OUTPUT_MODE))
                .with_context(|| format!("setting the mode of {to:?}"))?;
        }
        Ok(())
    }
}

/// Outputs written but not yet named, to be put in place together by
/// [`Finished::persist`] once every output is done.
#[derive(Debug, Default)]
pub struct Finished {
    pub files: Vec<Unnamed>,
    pub dirs: Vec<UnnamedDir>,
    /// What the writers want said in the build's log (when the outputs
    /// are named).
    pub notes: Vec<String>,
}

impl Finished {
    /// Add one unnamed file, made 0644 (as any output).
    pub fn push(&mut self, f: Unnamed) -> Result<()> {
        f.file
            .set_permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))
            .with_context(|| format!("setting the mode of {:?}", f.path))?;
        self.files.push(f);
        Ok(())
    }

    /// Add a directory output.
    pub fn push_dir(&mut self, d: UnnamedDir) {
        self.dirs.push(d);
    }

    /// Add `other`'s files, to be put in place with these.
    pub fn extend(&mut self, other: Finished) {
        self.files.extend(other.files);
        self.dirs.extend(other.dirs);
        self.notes.extend(other.notes);
    }

    /// Name every file and directory (an existing one moved aside unless
    /// `overwrite`).
    pub fn persist(self, overwrite: bool, log: &Log) -> Result<()> {
        for note in &self.notes {
            log.line(note);
        }
        for f in self.files {
            move_aside(&f.path, overwrite, log)?;
            let path = f.path.clone();
            f.link()?;
            log.line(&format!("wrote {}", path.display()));
        }
        for d in self.dirs {
            move_aside(&d.path, overwrite, log)?;
            let path = d.path.clone();
            d.link(overwrite)?;
            log.line(&format!("wrote {}", path.display()));
        }
        Ok(())
    }
}

/// Write `outputs`, each from `tree` or `image` as its kind needs, in
/// parallel (each is its own process; qcow2 compression is itself
/// multi-threaded), under temporary names. The container images of the
/// tree (oci, oci-archive, docker) share one layer, so they are written
/// together; `image` says what goes in their configs.
pub fn write_all(
    outputs: &[&Output],
    tree: &Path,
    disk: Option<&Path>,
    settings: &Settings,
    image: &crate::oci::write::Spec,
    stop: &AtomicI32,
) -> Result<Finished> {
    let (containers, mut others): (Vec<&Output>, Vec<&Output>) = outputs
        .iter()
        .partition(|o| o.kind.is_container() && !o.kind.from_disk());
    // A containerDisk wraps the qcow2 output when the build writes one,
    // rather than converting the disk image a second time.
    let container_disk = outputs
        .iter()
        .copied()
        .find(|o| o.kind == OutputType::ContainerDisk);
    let qcow2 = container_disk.and(
        outputs
            .iter()
            .copied()
            .find(|o| o.kind == OutputType::Qcow2),
    );
    others.retain(|o| {
        o.kind != OutputType::ContainerDisk && !(qcow2.is_some() && o.kind == OutputType::Qcow2)
    });
    let results: Vec<Result<Finished>> = std::thread::scope(|s| {
        let mut handles: Vec<_> = others
            .iter()
            .map(|out| s.spawn(move || write_output(out, tree, disk, settings, stop)))
            .collect();
        if let Some(out) = container_disk {
            handles.push(s.spawn(move || {
                write_container_disk(out, qcow2, tree, disk, settings, image, stop)
            }));
        }
        if !containers.is_empty() {
            let containers = &containers;
            handles.push(s.spawn(move || {
                let mut done = crate::oci::write::tree_images(containers, tree, image)?;
                let mut sums = Vec::new();
                for f in done.files.iter().filter(|_| settings.checksum) {
                    sums.extend(checksums(&f.proc_path(), &f.path)?);
                }
                done.files.extend(sums);
                Ok(done)
            }));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("an output writer panicked")))
            })
            .collect()
    });
    let mut all = Finished::default();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

fn write_output(
    out: &Output,
    tree: &Path,
    disk: Option<&Path>,
    settings: &Settings,
    stop: &AtomicI32,
) -> Result<Finished> {
    let what = format!("writing {}", out.path.display());
    let tmp = Unnamed::new(&out.path)?;
    let to = tmp.proc_path();
    if out.kind.from_disk() {
        let disk = disk.context("a disk image output needs a disk image (internal error)")?;
        convert(&out.kind, disk, &to, settings, &what, stop)?;
    } else {
        write_tree(&out.kind, tree, &to, &what, settings.reproducible, stop)?;
    }
    finish_output(tmp, settings.checksum)
}

/// A written output, its mode set (the file was made 0600; an image is as
/// readable as any file the user writes, umask 022) and its checksums
/// made when asked: one written here, or the raw image file written in
/// place.
pub fn finish_output(out: Unnamed, checksum: bool) -> Result<Finished> {
    out.file
        .set_permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))
        .with_context(|| format!("setting the mode of {:?}", out.path))?;
    let sums = if checksum {
        checksums(&out.proc_path(), &out.path)?
    } else {
        Vec::new()
    };
    let mut files = vec![out];
    files.extend(sums);
    Ok(Finished {
        files,
        ..Default::default()
    })
}

/// The containerDisk `out`, wrapping the qcow2 output `qcow2` (written
/// here first) when the build has one, else a qcow2 converted for it.
fn write_container_disk(
    out: &Output,
    qcow2: Option<&Output>,
    tree: &Path,
    disk: Option<&Path>,
    settings: &Settings,
    image: &crate::oci::write::Spec,
    stop: &AtomicI32,
) -> Result<Finished> {
    let disk = disk.context("a disk image output needs a disk image (internal error)")?;
    if let Some(q) = qcow2 {
        let mut done = write_output(q, tree, Some(disk), settings, stop)?;
        let wrapped = crate::oci::write::container_disk(out, &done.files[0], image)?;
        done.extend(wrapped);
        return Ok(done);
    }
    let converted = Unnamed::new(&out.path)?;
    let what = format!("writing {}", out.path.display());
    let to = converted.proc_path();
    convert(&OutputType::Qcow2, disk, &to, settings, &what, stop)?;
    crate::oci::write::container_disk(out, &converted, image)
}

/// `<output>.md5` and `<output>.sha256` in md5sum's format, as unnamed
/// files to link beside the output.
fn checksums(file: &Path, named: &Path) -> Result<Vec<Unnamed>> {
    use md5::Digest as _;
    use std::io::Read as _;
    let mut f = std::fs::File::open(file).with_context(|| format!("reading {file:?}"))?;
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {file:?}"))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    let name = named.file_name().unwrap_or_default().to_string_lossy();
    let mut out = Vec::new();
    for (ext, hex) in [
        ("md5", hex(&md5.finalize())),
        ("sha256", hex(&sha.finalize())),
    ] {
        let path = PathBuf::from(format!("{}.{ext}", named.display()));
        let mut tmp = Unnamed::new(&path)?;
        std::io::Write::write_all(&mut tmp.file, format!("{hex}  {name}\n").as_bytes())
            .with_context(|| format!("writing {path:?}"))?;
        tmp.file
            .set_permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))?;
        out.push(tmp);
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A copy of the sparse file `from` as `to`, its holes kept holes.
pub fn copy_sparse(from: &Path, to: &Path, what: &str, stop: &AtomicI32) -> Result<()> {
    let mut cmd = crate::tool::command("cp");
    cmd.args(["--sparse=always", "--reflink=auto"])
        .arg(from)
        .arg(to);
    run(cmd, what, stop)
}

/// The disk image in another format, with qemu-img (or a sparse copy for raw).
fn convert(
    kind: &OutputType,
    image: &Path,
    to: &Path,
    settings: &Settings,
    what: &str,
    stop: &AtomicI32,
) -> Result<()> {
    if *kind == OutputType::Raw {
        return copy_sparse(image, to, what, stop);
    }
    let mut cmd = crate::tool::command("qemu-img");
    // -W with several coroutines: blocks are converted (and compressed) in
    // parallel, not on one core.
    cmd.args(["convert", "-q", "-f", "raw"]);
    if !settings.reproducible {
        // Out of order, the clusters land where they finish first.
        cmd.args(["-W", "-m", "16"]);
    }
    let mut options = settings.qemu_img_options.clone();
    let format = kind.qemu_format().expect("tree outputs are not converted");
    cmd.args(["-O", format]);
    match kind {
        OutputType::Qcow2 if settings.compress => {
            cmd.arg("-c");
        }
        // The virtual size exactly the image's, not rounded to a CHS
        // geometry.
        OutputType::Vhd if !options.iter().any(|o| o.starts_with("force_size")) => {
            options.push("force_size=on".into());
        }
        _ => {}
    }
    if !options.is_empty() {
        cmd.args(["-o", &options.join(",")]);
    }
    cmd.arg(image).arg(to);
    run(cmd, what, stop)
}

/// mkfs's directory at the top of an ext filesystem: not part of the tree
/// (with the helper backend the tree outputs come from the mounted image).
const LOST_FOUND: &str = "lost+found";

/// The tree as a tar archive (numeric owners, modes, xattrs and ACLs kept,
/// sparse files stored sparse, entries sorted so the same tree gives the
/// same archive order) or a squashfs.
fn write_tree(
    kind: &OutputType,
    tree: &Path,
    to: &Path,
    what: &str,
    reproducible: bool,
    stop: &AtomicI32,
) -> Result<()> {
    if *kind == OutputType::Squashfs {
        let mut cmd = crate::tool::command("mksquashfs");
        cmd.arg(tree)
            .arg(to)
            .args(["-noappend", "-comp", "xz", "-no-progress", "-quiet"])
            .args(["-e", LOST_FOUND]);
        return run(cmd, what, stop);
    }
    let mut cmd = crate::tool::command("tar");
    cmd.args([
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--sparse",
        "--sort=name",
    ])
    .arg(format!("--exclude=./{LOST_FOUND}"))
    .arg("-C")
    .arg(tree);
    if reproducible {
        // PAX headers named without the process id, and no atime or
        // ctime in them; gzip without a time stamp.
        cmd.arg("--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime");
    }
    match kind {
        OutputType::Tgz if reproducible => cmd.args(["-I", "gzip -n", "-cf"]),
        OutputType::Tgz => cmd.arg("-czf"),
        _ => cmd.arg("-cf"),
    };
    cmd.arg(to).arg(".");
    run(cmd, what, stop)
}

/// Move an existing `path` aside (unless `overwrite`), making room for the
/// new output.
fn move_aside(path: &Path, overwrite: bool, log: &Log) -> Result<()> {
    if overwrite || std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let aside = aside_name(path, SystemTime::now());
    std::fs::rename(path, &aside).with_context(|| format!("moving the old {path:?} aside"))?;
    log.line(&format!(
        "moved the existing {} to {} (OVERWRITE_OLD_IMAGE=1 replaces it instead)",
        path.display(),
        aside.display()
    ));
    Ok(())
}

/// DIB's name for an old output: `NAME-YYYY.MM.DD-HH.MM.SS.EXT` (UTC).
pub fn aside_name(path: &Path, now: SystemTime) -> PathBuf {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    let stamp = format!(
        "{y:04}.{m:02}.{d:02}-{:02}.{:02}.{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{stamp}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{stamp}"),
    };
    path.with_file_name(name)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_419), (2025, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn old_outputs_get_dibs_timestamped_name() {
        let t = UNIX_EPOCH + Duration::from_secs(20_419 * 86_400 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!(
            aside_name(Path::new("/o/deb.tar"), t),
            PathBuf::from("/o/deb-2025.11.27-13.05.09.tar")
        );
        assert_eq!(
            aside_name(Path::new("/o/deb"), t),
            PathBuf::from("/o/deb-2025.11.27-13.05.09")
        );
    }
}
