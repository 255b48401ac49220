//! `dib get-kernel` / `disk-image-get-kernel`: the kernel and initrd out
//! of a built disk image, with no privilege and no mount: a qcow2 (or any
//! qemu-img format) is converted to a sparse raw file, the partition table
//! read, and the files dumped from the ext filesystem with debugfs.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _, Result};
use dib_sandbox::table::SECTOR;

use crate::cli::GetKernelArgs;

pub fn run(args: &GetKernelArgs) -> Result<()> {
    let Some(image) = args.image.as_ref().or(args.image_arg.as_ref()) else {
        bail!("no image given: pass the image to read, e.g. `dib get-kernel image.qcow2`");
    };
    ensure!(
        image.is_file(),
        "image {image:?} does not exist or is not a file"
    );
    let dest = args.dest.clone().unwrap_or_else(|| PathBuf::from("."));
    ensure!(
        dest.is_dir(),
        "destination {dest:?} (-d) is not a directory"
    );
    let prefix = match &args.prefix {
        Some(p) => p.clone(),
        None => image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into()),
    };
    let scratch = tempfile::Builder::new()
        .prefix("dib-get-kernel.")
        .tempdir()
        .context("creating a scratch directory")?;
    let raw = as_raw(image, scratch.path())?;
    let mut tried = Vec::new();
    for offset in filesystem_offsets(&raw)? {
        if !is_ext(&raw, offset)? {
            continue;
        }
        let fs = format!("{}?offset={offset}", raw.display());
        let Some((kernel, initrd)) = find_kernel(&fs)? else {
            tried.push(offset);
            continue;
        };
        let out_kernel = dest.join(format!("{prefix}-vmlinuz"));
        let out_initrd = dest.join(format!("{prefix}-initrd"));
        dump(&fs, &kernel, &out_kernel)?;
        println!("{}", out_kernel.display());
        match initrd {
            Some(i) => {
                dump(&fs, &i, &out_initrd)?;
                println!("{}", out_initrd.display());
            }
            None => eprintln!("dib: warning: {image:?} has no initrd beside {kernel}"),
        }
        return Ok(());
    }
    bail!(
        "no kernel (/boot/vmlinuz-*) in {image:?}: looked in {} ext filesystem(s); \
         is it a bootable image built with a kernel?",
        tried.len()
    )
}

/// The image as a raw file: itself, or converted into `scratch`.
fn as_raw(image: &Path, scratch: &Path) -> Result<PathBuf> {
    let info = qemu_img(&["info", "--output=json"], image, None, "cannot read")?;
    let v: serde_json::Value =
        serde_json::from_slice(&info).context("reading qemu-img info's output")?;
    if v["format"] == "raw" {
        return Ok(image.to_path_buf());
    }
    let raw = scratch.join("image.raw");
    qemu_img(
        &["convert", "-q", "-O", "raw"],
        image,
        Some(&raw),
        "could not convert",
    )?;
    Ok(raw)
}

/// `qemu-img ARGS IMAGE [TO]`, its stdout; `failing` says what went wrong.
fn qemu_img(args: &[&str], image: &Path, to: Option<&Path>, failing: &str) -> Result<Vec<u8>> {
    let mut cmd = crate::tool::command("qemu-img");
    cmd.args(args).arg(image).args(to);
    let o = cmd
        .output()
        .with_context(|| format!("running {}", dib_sandbox::host_tools::describe("qemu-img")))?;
    ensure!(
        o.status.success(),
        "qemu-img {failing} {image:?}: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(o.stdout)
}

/// Byte offsets where a filesystem may start: every partition of a GPT or
/// MBR table, else the whole image.
fn filesystem_offsets(raw: &Path) -> Result<Vec<u64>> {
    let mut f = File::open(raw).with_context(|| format!("reading {raw:?}"))?;
    // A GPT is there when LBA 1 holds its signature; a header that is there
    // but broken is an error, not a reason to read the protective MBR.
    let gpt = !matches!(
        gpt::header::read_header_from_arbitrary_device(&mut f, gpt::disk::LogicalBlockSize::Lb512),
        Err(gpt::header::HeaderError::InvalidGptSignature | gpt::header::HeaderError::Io(_))
    );
    if gpt {
        let disk = gpt::GptConfig::new()
            .writable(false)
            .open_from_device(f)
            .with_context(|| format!("reading the GPT of {raw:?}"))?;
        return Ok(disk
            .partitions()
            .values()
            .filter(|p| p.is_used())
            .map(|p| p.first_lba * SECTOR)
            .collect());
    }
    f.seek(SeekFrom::Start(0))?;
    let mbr = mbrman::MBR::read_from(&mut f, SECTOR as u32);
    let offsets: Vec<u64> = match mbr {
        Ok(mbr) => mbr
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(_, p)| u64::from(p.starting_lba) * SECTOR)
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(if offsets.is_empty() { vec![0] } else { offsets })
}

/// Whether an ext2/3/4 superblock is at `offset`.
fn is_ext(raw: &Path, offset: u64) -> Result<bool> {
    let mut f = File::open(raw)?;
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(offset + 1024 + 0x38))?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == [0x53, 0xef])
}

fn debugfs(fs: &str, request: &str) -> Result<String> {
    let o = crate::tool::command("debugfs")
        .args(["-R", request])
        .arg(fs)
        .output()
        .with_context(|| format!("running {}", dib_sandbox::host_tools::describe("debugfs")))?;
    let err = String::from_utf8_lossy(&o.stderr);
    // debugfs exits 0 even when it could not open the filesystem.
    ensure!(
        o.status.success() && !err.contains("while trying to open") && !err.contains("not open"),
        "debugfs {request:?} failed: {}",
        err.trim()
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The newest kernel and its initrd, as paths in the filesystem: under
/// /boot (root filesystem) or at the top (a separate /boot).
fn find_kernel(fs: &str) -> Result<Option<(String, Option<String>)>> {
    for dir in ["/boot", ""] {
        let listing = debugfs(
            fs,
            &format!("ls -p {}", if dir.is_empty() { "/" } else { dir }),
        )?;
        let names = regular_files(&listing);
        if let Some((kernel, initrd)) = pick(&names) {
            return Ok(Some((
                format!("{dir}/{kernel}"),
                initrd.map(|i| format!("{dir}/{i}")),
            )));
        }
    }
    Ok(None)
}

/// Names of regular files in `debugfs ls -p` output
/// (`/inode/mode/uid/gid/name/size/`).
fn regular_files(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().trim_matches('/').split('/').collect();
            (f.len() >= 5 && f[1].starts_with("10")).then(|| f[4].to_string())
        })
        .collect()
}

/// The newest `vmlinuz-VERSION` (version order) and the initrd of that
/// version (Debian's `initrd.img-V`, Red Hat's `initramfs-V.img`, `initrd-V`).
pub fn pick(names: &[String]) -> Option<(String, Option<String>)> {
    let kernel = names
        .iter()
        .filter(|n| n.starts_with("vmlinuz-") && !n.ends_with(".old"))
        .max_by(|a, b| version_cmp(a, b))?;
    let version = kernel.trim_start_matches("vmlinuz-");
    let initrd = [
        format!("initrd.img-{version}"),
        format!("initramfs-{version}.img"),
        format!("initrd-{version}"),
    ]
    .into_iter()
    .find(|c| names.contains(c));
    Some((kernel.clone(), initrd))
}

/// Compare as `sort -V` does for kernel names: digit runs as numbers.
fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                let strip = |d: &[u8]| -> Vec<u8> {
                    d.iter().copied().skip_while(|c| *c == b'0').collect()
                };
                let (sa, sb) = (strip(da), strip(db));
                let ord = sa.len().cmp(&sb.len()).then_with(|| sa.cmp(&sb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Dump `path` of the filesystem to `to` (written beside it, then renamed).
fn dump(fs: &str, path: &str, to: &Path) -> Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".dib-get-kernel.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {dir:?}"))?
        .into_temp_path();
    // debugfs's request language: quoted names, which cannot hold a quote.
    let out = tmp.display().to_string();
    ensure!(
        !path.contains('"') && !out.contains('"'),
        "cannot dump {path:?} to {out:?}: debugfs cannot quote a '\"'"
    );
    debugfs(fs, &format!("dump \"{path}\" \"{out}\""))?;
    let len = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    ensure!(len > 0, "debugfs wrote nothing for {path}");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(to).with_context(|| format!("writing {to:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sort_by_version_and_find_their_initrd() {
        let names: Vec<String> = [
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "vmlinuz-5.19.0-1-amd64",
            "initrd.img-6.1.0-9-amd64",
            "initrd.img-6.1.0-10-amd64",
            "config-6.1.0-10-amd64",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            pick(&names),
            Some((
                "vmlinuz-6.1.0-10-amd64".into(),
                Some("initrd.img-6.1.0-10-amd64".into())
            ))
        );
        let rh: Vec<String> = [
            "vmlinuz-5.14.0-70.el9.x86_64",
            "initramfs-5.14.0-70.el9.x86_64.img",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            pick(&rh).unwrap().1.as_deref(),
            Some("initramfs-5.14.0-70.el9.x86_64.img")
        );
        assert_eq!(pick(&["config-1".to_string()]), None);
        assert_eq!(version_cmp("a-10", "a-9"), Ordering::Greater);
        assert_eq!(version_cmp("a-010", "a-10"), Ordering::Equal);
    }

    /// A sparse image file of `mib` MiB.
    fn image(mib: u64) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(mib << 20).unwrap();
        f
    }

    #[test]
    fn partitions_are_read_from_gpt_then_mbr_else_the_whole_image() {
        let gpt_image = image(8);
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .create(gpt_image.path())
            .unwrap();
        disk.update_partitions(Default::default()).unwrap();
        let p1 = disk
            .add_partition_at("a", 1, 2048, 2048, gpt::partition_types::LINUX_FS, 0)
            .unwrap();
        let p2 = disk
            .add_partition_at("b", 2, 6144, 4096, gpt::partition_types::LINUX_FS, 0)
            .unwrap();
        assert_eq!((p1, p2), (1, 2));
        disk.write().unwrap();
        assert_eq!(
            filesystem_offsets(gpt_image.path()).unwrap(),
            [2048 * SECTOR, 6144 * SECTOR]
        );

        let mbr_image = image(8);
        let mut mbr =
            mbrman::MBR::new_from(&mut mbr_image.as_file(), SECTOR as u32, [1, 2, 3, 4]).unwrap();
        mbr[1] = mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys: 0x83,
            last_chs: mbrman::CHS::empty(),
            starting_lba: 4096,
            sectors: 8192,
        };
        mbr.write_into(&mut mbr_image.as_file()).unwrap();
        assert_eq!(
            filesystem_offsets(mbr_image.path()).unwrap(),
            [4096 * SECTOR]
        );

        assert_eq!(filesystem_offsets(image(1).path()).unwrap(), [0]);

        // A GPT signature with a broken header is an error, not an MBR.
        let broken = image(1);
        std::fs::write(
            broken.path(),
            [&[0u8; 512][..], b"EFI PART", &[0u8; 600]].concat(),
        )
        .unwrap();
        let e = filesystem_offsets(broken.path()).unwrap_err();
        assert!(format!("{e}").starts_with("reading the GPT of "), "{e:#}");
    }

    #[test]
    fn debugfs_listings_give_regular_files() {
        let listing = "/13/040755/0/0/.//\n/2/040755/0/0/..//\n\
                       /16/040755/0/0/grub//\n/303/100644/0/0/initrd.img-6.1.0-56-amd64/36386865/\n\
                       /304/100644/0/0/vmlinuz-6.1.0-56-amd64/8247232/\n/9/120777/0/0/vmlinuz.old/26/\n";
        assert_eq!(
            regular_files(listing),
            ["initrd.img-6.1.0-56-amd64", "vmlinuz-6.1.0-56-amd64"]
        );
    }
}
