//! What several of tier 4's subjects use: `dib create` with the shared
//! image cache, looking into a tar output and its dpkg database, building
//! a `debian-minimal vm` image, booting one to its marker, and checking a
//! vm image's root filesystem.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use libtest_mimic::Failed;

use crate::common::image::{self, BootRoot};
use crate::common::qemu::{self, Firmware};
use crate::common::tier::{check, eq, succeeded, Build};

pub fn cache() -> PathBuf {
    std::env::var_os("DIB_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/dib-e2e")
        })
}

/// `dib create --image-cache CACHE ARGS...` (base included), without the
/// layer cache unless `env` sets `DIB_NO_CACHE=0`: each trial's output
/// name is its own, so its layers would only fill the shared cache (the
/// rebuild trials use it).
pub fn create_cmd(b: &Build, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let cache = cache.display().to_string();
    let mut all = vec!["create", "--image-cache", cache.as_str()];
    all.extend_from_slice(args);
    let mut with = vec![("DIB_NO_CACHE", "1")];
    with.extend_from_slice(env);
    b.dib(&all, &with)
}

pub fn create(b: &Build, cache: &Path, args: &[&str]) -> Result<Output, Failed> {
    Ok(create_cmd(b, cache, args, &[]).output()?)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `tar -tv`-style facts of some members: "uid/gid mode" by path.
pub fn members(tarball: &Path, wanted: &[&str]) -> Result<Vec<String>, Failed> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(tarball)?);
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.display().to_string();
        if wanted.contains(&path.as_str()) {
            let h = entry.header();
            out.push(format!("{path} {}/{} {:o}", h.uid()?, h.gid()?, h.mode()?));
        }
    }
    out.sort();
    Ok(out)
}

/// Extract `paths` of `tarball` into a new directory `into`.
pub fn extract(tarball: &Path, into: &Path, paths: &[&str]) -> Result<(), Failed> {
    fs::create_dir_all(into)?;
    let o = Command::new("tar")
        .arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(into)
        .args(paths)
        .output()?;
    check(
        o.status.success(),
        format!("extracting {paths:?}: {}", stderr(&o)),
    )
}

/// dpkg's database of an extracted tree.
pub struct Dpkg(String);

impl Dpkg {
    pub fn of(tree: &Path) -> Dpkg {
        Dpkg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
    }

    /// "installed" or "absent" (removed, purged or never there).
    pub fn state(&self, pkg: &str) -> Result<&'static str, Failed> {
        let q = Command::new("dpkg-query")
            .arg(&self.0)
            .args(["-W", "-f", "${Status}", pkg])
            .output()?;
        Ok(if q.stdout == b"install ok installed" {
            "installed"
        } else {
            "absent"
        })
    }

    pub fn audit_is_clean(&self) -> Result<(), Failed> {
        let audit = Command::new("dpkg").arg(&self.0).arg("--audit").output()?;
        check(
            audit.status.success() && audit.stdout.is_empty(),
            format!(
                "dpkg --audit: {}{}",
                String::from_utf8_lossy(&audit.stdout),
                stderr(&audit)
            ),
        )
    }
}

/// Seconds a boot may take to print the marker (TCG; about 30 s here).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `dib create ... debian-minimal vm boot-marker LAYOUT` into `b`'s `deb.*`.
pub fn build_vm(b: &Build, extra: &[&str], types: &str) -> Result<PathBuf, Failed> {
    let mut args = vec!["--checksum"];
    args.extend_from_slice(extra);
    build_vm_with(b, &args, types, &[]).map(|(out, _)| out)
}

/// `build_vm` with more arguments and environment: the output's path and
/// dib's stderr.
pub fn build_vm_with(
    b: &Build,
    extra: &[&str],
    types: &str,
    env: &[(&str, &str)],
) -> Result<(PathBuf, String), Failed> {
    let out = b.f.path("deb");
    let out_s = out.display().to_string();
    let mut args = vec![
        "-t",
        types,
        "-o",
        &out_s,
        "debian-minimal",
        "vm",
        "boot-marker",
    ];
    args.extend_from_slice(extra);
    let o = create_cmd(b, &cache(), &args, env).output()?;
    succeeded(&o)?;
    Ok((out, stderr(&o)))
}

/// Boot, and compare the marker line the booted system printed with `want`.
pub fn boots_to(image: &Path, firmware: Firmware, want: &str) -> Result<(), Failed> {
    eq(&boot(image, firmware)?, want, "what the booted system says")
}

/// Boot and return the marker line.
fn boot(image: &Path, firmware: Firmware) -> Result<String, Failed> {
    let boot = qemu::boot_until(image, "qcow2", firmware, "dib-boot-marker:", BOOT_TIMEOUT)?;
    eprintln!(
        "  {} booted ({firmware:?}) to its marker in {:.1}s",
        image.display(),
        boot.seconds
    );
    // From the marker on: a getty's prompt may share its line.
    let line = boot
        .console
        .lines()
        .find_map(|l| l.find("dib-boot-marker:").map(|at| &l[at..]))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(line)
}

/// The root filesystem of a `vm` image: labelled cloudimg-rootfs,
/// /etc/shadow root:shadow, mounted by label.
const VM_ROOT: BootRoot<'static> = BootRoot {
    ids: "LABEL=cloudimg-rootfs TYPE=ext4 UUID=U",
    owners: &[("/etc/shadow", "User:     0   Group:    42")],
    fstab: "LABEL=cloudimg-rootfs / ext4 defaults 0 1",
};

/// The root filesystem passes `e2fsck -fn`, keeps owners, and its fstab and
/// grub.cfg name it as blkid sees it; returns its UUID.
pub fn check_root(image: &Path, sector: u64, scratch: &Path) -> Result<String, Failed> {
    image::check_boot_root(image, sector, scratch, &VM_ROOT)
}

/// The ESP's files live on the ESP only: /boot/efi on the root filesystem
/// image `root` is empty.
pub fn boot_efi_is_empty(root: &Path) -> Result<(), Failed> {
    let ls = image::debugfs(root, "ls /boot/efi")?;
    check(
        !ls.contains("EFI"),
        format!("/boot/efi on the root filesystem is not empty: {ls}"),
    )
}

/// Accept one HTTP request on `listener` within `timeout` (or until
/// `gone()`), answer it with `status` (e.g. `200 OK`), and return its
/// request line and body.
pub fn one_http_request(
    listener: &std::net::TcpListener,
    timeout: std::time::Duration,
    gone: &dyn Fn() -> bool,
    status: &str,
) -> Result<(String, String), Failed> {
    use std::io::{BufRead as _, Read as _, Write as _};
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + timeout;
    let (stream, _) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline || gone() {
                    return Err("no HTTP request from the ramdisk".into());
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    Ok((
        request.trim().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// `dib ramdisk -o NAME debian-minimal ELEMENTS...` in `b`'s scratch space
/// with the shared image cache: the kernel and initramfs it wrote. Says
/// how long the build took and how large the initramfs is.
pub fn build_ramdisk(
    b: &Build,
    name: &str,
    elements: &[&str],
) -> Result<(PathBuf, PathBuf), Failed> {
    let out = b.f.path(name);
    let out_s = out.display().to_string();
    let cache = cache().display().to_string();
    let mut args = vec![
        "ramdisk",
        "--image-cache",
        &cache,
        "-o",
        &out_s,
        "debian-minimal",
    ];
    args.extend_from_slice(elements);
    let started = std::time::Instant::now();
    succeeded(&b.dib(&args, &[("DIB_NO_CACHE", "1")]).output()?)?;
    let (kernel, initrd) = (
        out.with_extension("kernel"),
        out.with_extension("initramfs"),
    );
    eprintln!(
        "  {name} ramdisk ({}) built in {:.1}s, initramfs {:.1} MiB",
        elements.join(" "),
        started.elapsed().as_secs_f64(),
        fs::metadata(&initrd)?.len() as f64 / (1u64 << 20) as f64
    );
    Ok((kernel, initrd))
}
