//! Helpers shared by several subject modules: the host processes a build
//! left, what a build left in its output directory, a tar stream's entries.

use std::fs;

use libtest_mimic::Failed;

use crate::common::tier::Build;

/// Host processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("userns") {
                found.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// What a build left in its output directory `images/` (nothing when the
/// directory was never made).
pub fn images_left(b: &Build) -> Result<Vec<std::ffi::OsString>, Failed> {
    match fs::read_dir(b.f.path("images")) {
        Ok(d) => Ok(d.flatten().map(|e| e.file_name()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// (path, uid, gid, mode, xattrs) of an archive entry.
pub struct TarEntry(pub String, pub u64, pub u64, pub u32, pub Vec<String>);

/// Every entry of a tar stream.
pub fn tar_entries<R: std::io::Read>(r: R) -> Result<Vec<TarEntry>, Failed> {
    let mut archive = tar::Archive::new(r);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        let h = entry.header();
        let (uid, gid, mode) = (h.uid()?, h.gid()?, h.mode()?);
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Ok(key) = ext.key() {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.push(format!(
                            "{name}={}",
                            String::from_utf8_lossy(ext.value_bytes())
                        ));
                    }
                }
            }
        }
        out.push(TarEntry(path, uid, gid, mode, xattrs));
    }
    Ok(out)
}
