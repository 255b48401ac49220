//! Writing a build's outputs from the finished tree, inside pid 1 (which can
//! read every file of the tree, whatever id owns it).
//!
//! Each output is written under a temporary name beside its final one and
//! renamed into place only when complete, so a failed or interrupted build
//! never leaves a half-written image under the name a user expects. An
//! existing output is moved aside with a timestamp, as DIB does, unless
//! `OVERWRITE_OLD_IMAGE=1`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::log::Log;

/// Mode of a finished output.
const OUTPUT_MODE: u32 = 0o644;

/// Output types written from the tree (disk images land with issue #5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Tar,
    Tgz,
}

impl Kind {
    /// The `-t` name, which is also the file extension.
    pub fn parse(t: &str) -> Option<Kind> {
        match t {
            "tar" => Some(Kind::Tar),
            "tgz" => Some(Kind::Tgz),
            _ => None,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Kind::Tar => "tar",
            Kind::Tgz => "tgz",
        }
    }
}

/// One output: what and where (absolute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub kind: Kind,
    pub path: PathBuf,
}

impl Output {
    /// `IMAGE_NAME.<ext>`, made absolute against the current directory.
    pub fn new(kind: Kind, image_name: &str) -> Result<Output> {
        let path = std::path::absolute(format!("{image_name}.{}", kind.extension()))
            .with_context(|| format!("resolving the output path of {image_name:?}"))?;
        Ok(Output { kind, path })
    }
}

/// Write every output from `tree`.
pub fn write_all(outputs: &[Output], tree: &Path, overwrite: bool, log: &Log) -> Result<()> {
    for out in outputs {
        // A random name beside the output (pid 1's process id is 1 in every
        // build, so it cannot tell two builds apart); removed on any error.
        let dir = out.path.parent().unwrap_or(Path::new("."));
        let name = out.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".dib-partial")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {dir:?}"))?
            .into_temp_path();
        write_one(out.kind, tree, &tmp)?;
        // The temporary file was made 0600; an image is as readable as any
        // file the user writes (umask 022).
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(OUTPUT_MODE))
            .with_context(|| format!("setting the mode of {:?}", &*tmp))?;
        move_aside(&out.path, overwrite, log)?;
        tmp.persist(&out.path)
            .with_context(|| format!("renaming the finished output to {:?}", out.path))?;
        log.line(&format!("wrote {}", out.path.display()));
    }
    Ok(())
}

/// The tree as a tar archive: numeric owners, modes, xattrs and ACLs kept,
/// sparse files stored sparse, entries sorted so the same tree gives the
/// same archive order.
fn write_one(kind: Kind, tree: &Path, to: &Path) -> Result<()> {
    let mut cmd = Command::new("tar");
    cmd.args([
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--sparse",
        "--sort=name",
    ])
    .arg("-C")
    .arg(tree);
    match kind {
        Kind::Tar => cmd.arg("-cf"),
        Kind::Tgz => cmd.arg("-czf"),
    };
    cmd.arg(to).arg(".");
    let out = cmd.output().context("running tar (Debian package tar)")?;
    if !out.status.success() {
        bail!(
            "tar failed writing {} ({}): {}",
            to.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
