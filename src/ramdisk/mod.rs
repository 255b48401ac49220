//! Ramdisks: after cleanup.d, pid 1 assembles an initramfs from
//! the finished tree: busybox and every `binary-deps.d` executable with the
//! shared libraries they need (read from their ELF headers: nothing of the
//! target runs on the host), udev with its rules and the `udev.d` rules of
//! the elements, the kernel modules for disks and network, firmware, and a
//! generated `/init` (the template below, then every element's `init.d`
//! fragment in run-parts order). It is written as a gzip-compressed newc
//! cpio, beside the tree's newest kernel.

mod cpio;
mod deps;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::pipeline::outputs::{Finished, Unnamed};

/// What pid 1 writes for a ramdisk build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamdiskJob {
    /// `NAME.kernel`.
    pub kernel: PathBuf,
    /// `NAME.initramfs`.
    pub initramfs: PathBuf,
}

/// The start of `/init`; the elements' init.d fragments follow it.
const INIT_HEAD: &str = include_str!("init-head.sh");
/// The end of `/init`, after the fragments.
const INIT_TAIL: &str = include_str!("init-tail.sh");

/// Kernel modules (directories or files under `kernel/`) a ramdisk
/// carries: disks, filesystems a deploy writes, wired network.
const MODULES: &[&str] = &[
    "drivers/block",
    "drivers/ata",
    "drivers/scsi",
    "drivers/nvme",
    "drivers/md",
    "drivers/virtio",
    "drivers/cdrom",
    "drivers/net",
    "drivers/mmc",
    "drivers/usb/storage",
    "drivers/target",
    "fs/ext4",
    "fs/jbd2",
    "fs/mbcache.ko",
    "fs/fat",
    "fs/vfat",
    "fs/nls",
    "fs/isofs",
    "fs/xfs",
    "fs/btrfs",
    "fs/squashfs",
    "fs/overlayfs",
    "fs/udf",
    "crypto",
    "lib",
    "arch",
    "net/core",
    "net/802",
    "net/8021q",
    "net/llc",
];

/// Under [`MODULES`], what no disk or wired network needs (the bulk of it).
const MODULES_LEFT_OUT: &[&str] = &[
    "arch/x86/kvm",
    "drivers/net/wireless",
    "drivers/net/can",
    "drivers/net/wwan",
    "drivers/net/ieee802154",
    "drivers/net/hamradio",
    "drivers/net/arcnet",
    "drivers/net/fddi",
    "drivers/net/wan",
];

/// Under [`COPIED_DIRS`], what the ramdisk leaves out: udev's hardware
/// database (20 MB of device names, not needed to find or load drivers).
const LEFT_OUT: &[&str] = &[
    "lib/udev/hwdb.bin",
    "lib/udev/hwdb.d",
    "usr/lib/udev/hwdb.bin",
    "usr/lib/udev/hwdb.d",
];

/// Directories copied whole (files, with the libraries their ELF files
/// need): udev's rules and helpers, its configuration.
const COPIED_DIRS: &[&str] = &[
    "lib/udev",
    "usr/lib/udev",
    "etc/udev",
    "lib/firmware",
    "usr/lib/firmware",
];

/// Build the kernel and initramfs of `job` from `tree`, with the element
/// files of `hooks` (the merged hook tree), using `staging` as scratch.
pub fn write(job: &RamdiskJob, tree: &Path, hooks: &Path, staging: &Path) -> Result<Finished> {
    let (kernel, version) = newest_kernel(tree)?;
    fs::create_dir_all(staging).with_context(|| format!("creating {staging:?}"))?;
    let mut copier = deps::Copier::new(tree, staging)?;
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "mnt", "var", "root", "usr/bin",
        "usr/sbin",
    ] {
        fs::create_dir_all(staging.join(d))?;
    }
    // busybox first: /init runs on it, as /bin/sh until it links its
    // other applets at boot.
    let busybox = copier
        .binary("busybox")
        .context("the ramdisk needs busybox in the image (the ramdisk element installs it)")?;
    if busybox != Path::new("bin/busybox") {
        copier.link(Path::new("/").join(&busybox), "bin/busybox".into());
    }
    copier.link("busybox".into(), "bin/sh".into());
    for (file, names) in binary_deps(hooks)? {
        for name in names {
            copier
                .binary(&name)
                .with_context(|| format!("binary-deps.d/{file} lists {name:?}"))?;
        }
    }
    for d in COPIED_DIRS {
        copier.dir(d)?;
    }
    for l in LEFT_OUT {
        let p = staging.join(l);
        if p.is_dir() {
            fs::remove_dir_all(&p)?;
        } else if p.is_file() {
            fs::remove_file(&p)?;
        }
    }
    copy_modules(tree, staging, &version)?;
    let rules = staging.join("etc/udev/rules.d");
    fs::create_dir_all(&rules)?;
    for (name, path) in run_parts_files(&hooks.join("udev.d"))? {
        fs::copy(&path, rules.join(&name)).with_context(|| format!("copying udev.d/{name}"))?;
    }
    // Where the libraries went, for the loader (the ramdisk has no
    // ld.so.cache).
    let lib_path: Vec<String> = copier
        .used_lib_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    fs::write(staging.join("etc/dib-ld-library-path"), lib_path.join(":"))?;
    copier.finish()?;
    let init = staging.join("init");
    fs::write(&init, init_script(hooks)?).context("writing /init")?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    fs::write(
        staging.join("etc/dib-ramdisk-kernel"),
        format!("{version}\n"),
    )?;

    let mut done = Finished::default();
    let mut k = Unnamed::new(&job.kernel)?;
    std::io::copy(
        &mut fs::File::open(&kernel).with_context(|| format!("reading {kernel:?}"))?,
        &mut k.file,
    )
    .context("writing the kernel")?;
    done.push(k)?;
    let mut i = Unnamed::new(&job.initramfs)?;
    let gz = flate2::write::GzEncoder::new(&mut i.file, flate2::Compression::new(6));
    cpio::write_tree(staging, gz)
        .and_then(|gz| Ok(gz.finish()?))
        .context("writing the initramfs")?;
    done.push(i)?;
    Ok(done)
}

/// The tree's newest `/boot/vmlinuz-VERSION`: its path and VERSION.
fn newest_kernel(tree: &Path) -> Result<(PathBuf, String)> {
    // Resolved inside the tree: a symlinked /boot must not lead to the host.
    let boot = deps::real_dir(tree, Path::new("boot"))?.unwrap_or_else(|| tree.join("boot"));
    let names: Vec<String> = fs::read_dir(&boot)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let Some((kernel, _)) = crate::commands::get_kernel::pick(&names) else {
        bail!(
            "the image has no kernel (/boot/vmlinuz-*): a ramdisk needs one \
             (debian-minimal installs it)"
        );
    };
    let version = kernel.trim_start_matches("vmlinuz-").to_string();
    let path = boot.join(&kernel);
    if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        bail!("/boot/{kernel} is not a regular file");
    }
    Ok((path, version))
}

/// `binary-deps.d` files: (file name, the names it lists).
fn binary_deps(hooks: &Path) -> Result<Vec<(String, Vec<String>)>> {
    run_parts_files(&hooks.join("binary-deps.d"))?
        .into_iter()
        .map(|(name, path)| {
            let text = fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
            let names = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .flat_map(str::split_whitespace)
                .map(String::from)
                .collect();
            Ok((name, names))
        })
        .collect()
}

/// Regular files of `dir`, sorted by name (run-parts order).
fn run_parts_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut v: Vec<(String, PathBuf)> = match fs::read_dir(dir) {
        Ok(d) => d
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {dir:?}")),
    };
    v.sort();
    Ok(v)
}

/// `/init`: the head, each init.d fragment (named in a comment), the tail.
fn init_script(hooks: &Path) -> Result<String> {
    let mut s = String::from(INIT_HEAD);
    for (name, path) in run_parts_files(&hooks.join("init.d"))? {
        let text = fs::read_to_string(&path).with_context(|| format!("reading init.d/{name}"))?;
        s.push_str(&format!(
            "\n# ---- init.d/{name}\ndib_step {name}\n{text}\n"
        ));
    }
    s.push_str(INIT_TAIL);
    Ok(s)
}

/// The kernel's modules for disks, filesystems and network, with a fresh
/// modules.dep (host depmod on the copied tree: nothing of the target runs).
fn copy_modules(tree: &Path, staging: &Path, version: &str) -> Result<()> {
    let rel = Path::new("lib/modules").join(version);
    let from = deps::real_dir(tree, &rel)?;
    let Some(from) = from else {
        // A kernel without modules (all built in) is fine.
        return Ok(());
    };
    let to = staging.join(&rel);
    fs::create_dir_all(&to)?;
    for e in fs::read_dir(&from)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("modules.") && e.file_type()?.is_file() && !n.ends_with(".bin") {
            fs::copy(e.path(), to.join(&n))?;
        }
    }
    let mut seen = BTreeSet::new();
    let kernel = from.join("kernel");
    let left_out: Vec<PathBuf> = MODULES_LEFT_OUT.iter().map(|d| kernel.join(d)).collect();
    for m in MODULES {
        // Resolved inside the tree: a symlink must not lead to the host.
        let Some(src) = deps::resolve(tree, &rel.join("kernel").join(m)).map(|r| tree.join(r))
        else {
            continue;
        };
        let dst = to.join("kernel").join(m);
        let Ok(md) = fs::symlink_metadata(&src) else {
            continue;
        };
        if md.is_dir() {
            copy_plain_tree(&src, &dst, &left_out, &mut seen)?;
        } else if md.is_file() {
            fs::create_dir_all(dst.parent().unwrap_or(&to))?;
            fs::copy(&src, &dst)?;
            seen.insert(dst);
        }
    }
    // And every module those need, wherever it lives (failover for
    // virtio_net, configfs for the iSCSI target, ...), from the image's
    // own modules.dep.
    let deps_text = fs::read_to_string(from.join("modules.dep")).unwrap_or_default();
    for extra in module_closure(&deps_text, &seen, &to) {
        let dst = to.join(&extra);
        let Some(src) = deps::resolve(tree, &rel.join(&extra)).map(|r| tree.join(r)) else {
            continue;
        };
        if fs::symlink_metadata(&src).is_ok_and(|m| m.is_file()) {
            fs::create_dir_all(dst.parent().unwrap_or(&to))?;
            fs::copy(&src, &dst).with_context(|| format!("copying {src:?}"))?;
        }
    }
    let o = crate::tool::command("depmod")
        .arg("-b")
        .arg(staging)
        .arg(version)
        .output()
        .with_context(|| format!("running {}", dib_sandbox::host_tools::describe("depmod")))?;
    if !o.status.success() {
        bail!(
            "depmod failed for the ramdisk's modules: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// The modules (paths relative to the modules directory) that those in
/// `have` (absolute paths under `root`) need and are not among them, by
/// `modules.dep` (`kernel/a.ko: kernel/b.ko kernel/c.ko`).
fn module_closure(modules_dep: &str, have: &BTreeSet<PathBuf>, root: &Path) -> Vec<String> {
    let deps: std::collections::BTreeMap<&str, Vec<&str>> = modules_dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.trim(), d.split_whitespace().collect()))
        .collect();
    let mut present: BTreeSet<String> = have
        .iter()
        .filter_map(|p| p.strip_prefix(root).ok())
        .map(|p| p.display().to_string())
        .collect();
    let mut todo: Vec<String> = present.iter().cloned().collect();
    let mut extra = Vec::new();
    while let Some(m) = todo.pop() {
        for d in deps.get(m.as_str()).into_iter().flatten() {
            if present.insert(d.to_string()) {
                extra.push(d.to_string());
                todo.push(d.to_string());
            }
        }
    }
    extra.sort();
    extra
}

/// Copy files and directories (no symlinks) from `src` to `dst`, but none
/// of `skip`.
fn copy_plain_tree(
    src: &Path,
    dst: &Path,
    skip: &[PathBuf],
    seen: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    fs::create_dir_all(dst)?;
    for e in fs::read_dir(src).with_context(|| format!("reading {src:?}"))? {
        let e = e?;
        let t = e.file_type()?;
        let to = dst.join(e.file_name());
        if skip.contains(&e.path()) {
            continue;
        }
        if t.is_dir() {
            copy_plain_tree(&e.path(), &to, skip, seen)?;
        } else if t.is_file() && seen.insert(to.clone()) {
            fs::copy(e.path(), &to).with_context(|| format!("copying {:?}", e.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_bring_what_they_depend_on() {
        let dep = "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
                   kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
                   kernel/net/core/failover.ko:\n\
                   kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\n";
        let root = Path::new("/s/lib/modules/6");
        let have: BTreeSet<PathBuf> = [
            root.join("kernel/drivers/net/virtio_net.ko"),
            root.join("kernel/drivers/net/net_failover.ko"),
        ]
        .into();
        assert_eq!(
            module_closure(dep, &have, root),
            ["kernel/net/core/failover.ko"]
        );
    }
}
