//! The newc cpio format the kernel unpacks an initramfs from.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Write every entry under `root` (parents first, names sorted), owned by
/// root, as a newc archive into `out`, and finish `out`.
pub fn write_tree<W: Write>(root: &Path, mut out: W) -> Result<W> {
    let mut entries = Vec::new();
    collect(root, Path::new(""), &mut entries)?;
    for (ino, rel) in (1u32..).zip(entries.iter()) {
        let p = root.join(rel);
        let md = fs::symlink_metadata(&p).with_context(|| format!("reading {p:?}"))?;
        let data = if md.file_type().is_symlink() {
            fs::read_link(&p)?.into_os_string().into_encoded_bytes()
        } else if md.is_file() {
            fs::read(&p).with_context(|| format!("reading {p:?}"))?
        } else {
            Vec::new()
        };
        let nlink = if md.is_dir() { 2 } else { 1 };
        entry(
            &mut out,
            ino,
            md.mode(),
            nlink,
            &rel.to_string_lossy(),
            &data,
        )?;
    }
    entry(&mut out, 0, 0, 1, "TRAILER!!!", &[])?;
    Ok(out)
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .with_context(|| format!("reading {:?}", root.join(rel)))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let is_dir = fs::symlink_metadata(root.join(&r))?.is_dir();
        out.push(r.clone());
        if is_dir {
            collect(root, &r, out)?;
        }
    }
    Ok(())
}

fn entry<W: Write>(
    out: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> Result<()> {
    anyhow::ensure!(
        u32::try_from(data.len()).is_ok(),
        "{name} is 4 GiB or more: too big for a newc archive"
    );
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 0, data.len(), 0, 0, 0, 0, 0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&vec![0u8; pad(110 + namesize)])?;
    out.write_all(data)?;
    out.write_all(&vec![0u8; pad(data.len())])?;
    Ok(())
}

/// Bytes to the next multiple of 4.
fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_what_cpio_reads() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        fs::create_dir_all(r.join("bin")).unwrap();
        fs::write(r.join("init"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::write(r.join("bin/odd"), b"12345").unwrap();
        std::os::unix::fs::symlink("odd", r.join("bin/link")).unwrap();
        let bytes = write_tree(&r, Vec::new()).unwrap();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // GNU cpio (on the host tool list) lists the same entries.
        let mut cpio = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                let cpio = dib_sandbox::host_tools::describe("cpio");
                panic!("running {cpio}: {e} (scripts/prepare-host installs it)")
            });
        cpio.stdin.take().unwrap().write_all(&bytes).unwrap();
        let o = cpio.wait_with_output().unwrap();
        assert!(o.status.success());
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "bin\nbin/link\nbin/odd\ninit\n"
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/odd\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
