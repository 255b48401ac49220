//! The RPM family: fedora-minimal and opensuse-minimal bootstrapped with
//! the host's real dnf and zypper, their chroot phases run with the image's
//! own, the disk images booted in QEMU to a login prompt; the fedora element
//! built on a cloud image made from such a tree; a Fedora ramdisk; the
//! bootstrap's errors.
//!
//! This machine reaches only Debian's archive, so the repositories are
//! built at test time from Debian's binaries (`tests/common/rpm_repo.rs`:
//! signed RPMs, real repository metadata, laid out as each distribution's
//! mirror) and served on the loopback, where `DIB_DISTRIBUTION_MIRROR`
//! points. With `DIB_TEST_FEDORA_MIRROR` or `DIB_TEST_OPENSUSE_MIRROR` set,
//! the same trials run against that real mirror instead.

use std::fs;
use std::path::{Path, PathBuf};

use libtest_mimic::Failed;

use crate::common::qemu::{self, Firmware};
use crate::common::rpm_repo::{Flavor, RpmMirror};
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{create_cmd, extract, stderr, BOOT_TIMEOUT};

/// The repository the trials bootstrap from: the real mirror the user
/// named, or the one built here from Debian's packages.
enum Source {
    Real(String),
    Local(RpmMirror),
}

impl Source {
    fn of(flavor: Flavor) -> Result<Source, Failed> {
        let var = match flavor {
            Flavor::Fedora => "DIB_TEST_FEDORA_MIRROR",
            Flavor::Opensuse => "DIB_TEST_OPENSUSE_MIRROR",
        };
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Ok(Source::Real(url)),
            _ => Ok(Source::Local(RpmMirror::serve(flavor)?)),
        }
    }

    fn url(&self) -> String {
        match self {
            Source::Real(url) => url.clone(),
            Source::Local(m) => m.url(),
        }
    }

    /// The release to build: the local repository's, or the element's
    /// default on a real mirror.
    fn release(&self) -> Option<String> {
        match self {
            Source::Real(_) => None,
            Source::Local(m) => Some(m.release().to_string()),
        }
    }

    /// `DIB_DISTRIBUTION_MIRROR`, and `DIB_RELEASE` where [`Source::release`]
    /// names one.
    fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("DIB_DISTRIBUTION_MIRROR", self.url())];
        vars.extend(self.release().map(|r| ("DIB_RELEASE", r)));
        vars
    }
}

/// `vars` (from [`Source::vars`]) and `more`, as `Build::dib` takes them.
fn env_with<'a>(
    vars: &'a [(&'static str, String)],
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(more);
    env
}

/// `dib create -t TYPES -o OUT ELEMENTS...` with the mirror, into a cache
/// of the trial's own (the served mirror's port is in the cached base's
/// key, so a shared cache would only grow).
fn build(
    b: &Build,
    src: &Source,
    out: &str,
    types: &str,
    elements: &[&str],
    env: &[(&str, &str)],
) -> Result<PathBuf, Failed> {
    build_with(b, src, out, &[], types, elements, env)
}

/// [`build`] with more arguments for `dib create`.
fn build_with(
    b: &Build,
    src: &Source,
    out: &str,
    extra: &[&str],
    types: &str,
    elements: &[&str],
    env: &[(&str, &str)],
) -> Result<PathBuf, Failed> {
    let out = b.f.path(out);
    let out_s = out.display().to_string();
    let mut args = extra.to_vec();
    args.extend_from_slice(&["-t", types, "-o", &out_s]);
    args.extend_from_slice(elements);
    let vars = src.vars();
    let o = create_cmd(b, &b.f.path("cache"), &args, &env_with(&vars, env)).output()?;
    succeeded(&o)?;
    eprintln!("{}", last_lines(&stderr(&o), 3));
    Ok(out)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the tree's files say: its os-release ID, what rpm-probe recorded,
/// and that /boot has GRUB's configuration and an initramfs by dracut.
fn check_tree(
    b: &Build,
    tar: &Path,
    id: &str,
    grubdir: &str,
    probe: &str,
    exact: bool,
) -> Result<(), Failed> {
    let tree = b.f.path(&format!("tree-{id}"));
    extract(tar, &tree, &["./etc", "./usr/lib/os-release", "./boot"])?;
    let os = fs::read_to_string(tree.join("usr/lib/os-release"))?;
    let got = os
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|v| v.trim_matches('"'));
    eq(
        got.unwrap_or_default(),
        id,
        "the ID of the tree's os-release",
    )?;
    probe_eq(&tree, probe, exact)?;
    let grub = fs::read_to_string(tree.join(format!("boot/{grubdir}/grub.cfg")))
        .map_err(|e| format!("/boot/{grubdir}/grub.cfg: {e}"))?;
    let boot: Vec<String> = fs::read_dir(tree.join("boot"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let initrd = boot
        .iter()
        .find(|n| n.starts_with("initramfs-") || n.starts_with("initrd-"))
        .ok_or_else(|| format!("no initramfs in /boot: {boot:?}"))?;
    check(
        grub.contains(&format!("initrd /boot/{initrd}")),
        format!("grub.cfg does not boot /boot/{initrd}:\n{grub}"),
    )?;
    let size = fs::metadata(tree.join("boot").join(initrd))?.len();
    check(
        size > 1 << 20,
        format!("/boot/{initrd} is only {size} bytes"),
    )?;
    Ok(())
}

/// What rpm-probe recorded in the tree under `tree`: `want`, or on a real
/// mirror (`exact` false) the same packages at whatever versions it has.
fn probe_eq(tree: &Path, want: &str, exact: bool) -> Result<(), Failed> {
    let got = fs::read_to_string(tree.join("etc/dib-rpm-probe"))?;
    let names = |text: &str| -> Vec<String> {
        text.trim()
            .lines()
            .map(|l| match l.split_once(' ') {
                Some((name, _)) if !l.starts_with("package ") => name.to_string(),
                _ => l.to_string(),
            })
            .collect()
    };
    if exact {
        eq(
            got.trim(),
            want,
            "what the image's rpm says of the probe's packages",
        )
    } else {
        let (got, want) = (names(&got), names(want));
        check(
            got == want,
            format!(
                "the probe's packages, as the image's rpm lists them: got {got:?}, want {want:?}"
            ),
        )
    }
}

/// Boot the image by BIOS to a login prompt, after systemd's welcome with
/// the distribution's name.
fn boots_to_login(image: &Path, welcome: &str) -> Result<(), Failed> {
    let boot = qemu::boot_until(image, "qcow2", Firmware::Bios, "login:", BOOT_TIMEOUT)?;
    eprintln!(
        "  {} booted to its login prompt in {:.1}s",
        image.display(),
        boot.seconds
    );
    check(
        plain(&boot.console).contains(welcome),
        format!("no {welcome:?} on the console:\n{}", boot.console),
    )
}

/// The console's text without its colours (systemd writes the name in bold).
fn plain(console: &str) -> String {
    let mut out = String::with_capacity(console.len());
    let mut chars = console.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, up to the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What rpm-probe finds in a Fedora tree from the local repository (Debian's
/// versions; the update repository's dib-probe-motd).
const FEDORA_PROBE: &str =
    "less 590\nprocps-ng 4.0.2\ndib-probe-motd 1.1\npackage busybox is not installed";

pub fn fedora_minimal_boots_and_the_fedora_cloud_image_builds_on_it() -> Result<(), Failed> {
    let src = Source::of(Flavor::Fedora)?;
    let b = Build::new();
    let out = build(
        &b,
        &src,
        "fedora",
        "qcow2,tar",
        &["fedora-minimal", "vm", "rpm-probe"],
        &[],
    )?;
    check_tree(
        &b,
        &out.with_extension("tar"),
        "fedora",
        "grub2",
        FEDORA_PROBE,
        src.release().is_some(),
    )?;
    let qcow2 = out.with_extension("qcow2");
    boots_to_login(&qcow2, "Welcome to Fedora")?;

    // The fedora element on that image, as on a distribution's cloud image.
    let local = qcow2.display().to_string();
    let cloud = build(
        &b,
        &src,
        "cloud",
        "qcow2,tar",
        &["fedora", "vm"],
        &[("DIB_LOCAL_IMAGE", &local)],
    )?;
    let tree = b.f.path("tree-cloud");
    extract(&cloud.with_extension("tar"), &tree, &["./etc"])?;
    probe_eq(&tree, FEDORA_PROBE, src.release().is_some())?;
    boots_to_login(&cloud.with_extension("qcow2"), "Welcome to Fedora")
}

pub fn opensuse_minimal_boots() -> Result<(), Failed> {
    let src = Source::of(Flavor::Opensuse)?;
    let b = Build::new();
    let out = build(
        &b,
        &src,
        "opensuse",
        "qcow2,tar",
        &["opensuse-minimal", "vm", "rpm-probe"],
        &[],
    )?;
    check_tree(
        &b,
        &out.with_extension("tar"),
        "opensuse-leap",
        "grub2",
        "less 590\nprocps 4.0.2\ndib-probe-motd 1.1\npackage busybox is not installed",
        src.release().is_some(),
    )?;
    boots_to_login(&out.with_extension("qcow2"), "Welcome to openSUSE")
}

/// A mirror that does not answer, and a release the mirror lacks, each
/// stop the bootstrap saying so, and leave no output.
pub fn rpm_bootstraps_fail_clearly() -> Result<(), Failed> {
    let src = Source::of(Flavor::Fedora)?;
    let b = Build::new();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let out = b.f.path("bad");
    let out_s = out.display().to_string();
    let cache = b.f.path("cache");
    for (mirror, release, want) in [
        (
            format!("http://127.0.0.1:{closed}"),
            "42",
            format!("fedora-minimal: the mirror http://127.0.0.1:{closed} does not answer"),
        ),
        (
            src.url(),
            "7",
            format!(
                "fedora-minimal: the mirror {} has no fedora 7 for amd64: no repository at",
                src.url()
            ),
        ),
    ] {
        let o = create_cmd(
            &b,
            &cache,
            &["-t", "tar", "-o", &out_s, "fedora-minimal"],
            &[
                ("DIB_DISTRIBUTION_MIRROR", mirror.as_str()),
                ("DIB_RELEASE", release),
            ],
        )
        .output()?;
        let err = stderr(&o);
        check(
            !o.status.success(),
            "a bootstrap that cannot work succeeded",
        )?;
        check(err.contains(&want), format!("no {want:?} in:\n{err}"))?;
        check(
            !out.with_extension("tar").exists(),
            "a failed build left its output",
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

/// `dib ramdisk fedora-minimal`: the ramdisk's busybox, udev (by pkg-map,
/// systemd-udev) and kmod from the repository, the kernel from the tree,
/// booted with -kernel/-initrd to its init.d.
pub fn fedora_ramdisk_runs_init_d() -> Result<(), Failed> {
    let src = Source::of(Flavor::Fedora)?;
    let b = Build::new();
    let out = b.f.path("rd");
    let out_s = out.display().to_string();
    let cache = b.f.path("cache").display().to_string();
    let vars = src.vars();
    let args = [
        "ramdisk",
        "--image-cache",
        &cache,
        "-o",
        &out_s,
        "fedora-minimal",
        "ramdisk-probe",
    ];
    succeeded(&b.dib(&args, &env_with(&vars, &[])).output()?)?;
    let (kernel, initrd) = (
        out.with_extension("kernel"),
        out.with_extension("initramfs"),
    );
    let disk = b.f.path("disk.raw");
    fs::File::create(&disk)?.set_len(1 << 20)?;
    qemu::converse(
        &qemu::DirectBoot {
            arch: "amd64",
            kernel: &kernel,
            initrd: &initrd,
            append: "console=ttyS0 dib_probe_arg=hello",
            disk: Some(&disk),
            nic: None,
        },
        &[
            ("dib-ramdisk-marker: hello disks=vda lsblk=vda rule=vda", ""),
            ("dib ramdisk: done", ""),
        ],
        BOOT_TIMEOUT,
    )?;
    Ok(())
}

/// The fedora element on a cloud image whose root is xfs, which only root
/// can mount: extract-image has dib-helper attach it read-only and mount it
/// idmapped, and copies it out. The xfs image is made through the helper
/// too; without a helper the build stops saying what it needs.
pub fn fedora_cloud_image_with_an_xfs_root_through_the_helper() -> Result<(), Failed> {
    let socket = crate::helper_backend::helper_socket().ok_or("no DIB_TEST_HELPER_SOCKET")?;
    let socket = socket.display().to_string();
    let src = Source::of(Flavor::Fedora)?;
    let b = Build::new();
    let base = build_with(
        &b,
        &src,
        "xfs-base",
        &["--block-backend", "helper"],
        "qcow2",
        &["fedora-minimal", "vm", "rpm-probe"],
        &[("FS_TYPE", "xfs"), ("DIB_HELPER_SOCKET", &socket)],
    )?;
    let local = base.with_extension("qcow2").display().to_string();

    // No helper: a clear refusal, nothing left behind.
    let none = b.f.path("no-helper.sock").display().to_string();
    let out = b.f.path("refused");
    let out_s = out.display().to_string();
    let vars = src.vars();
    let env = env_with(
        &vars,
        &[("DIB_LOCAL_IMAGE", &local), ("DIB_HELPER_SOCKET", &none)],
    );
    let o = create_cmd(
        &b,
        &b.f.path("cache"),
        &["-t", "tar", "-o", &out_s, "fedora", "vm"],
        &env,
    )
    .output()?;
    let err = stderr(&o);
    check(
        !o.status.success(),
        "an xfs root was read without dib-helper",
    )?;
    let want = "an xfs filesystem can be read only through dib-helper";
    check(err.contains(want), format!("no {want:?} in:\n{err}"))?;
    check(
        !out.with_extension("tar").exists(),
        "a failed build left its output",
    )?;
    b.assert_clean()?;

    let cloud = build(
        &b,
        &src,
        "xfs-cloud",
        "qcow2,tar",
        &["fedora", "vm"],
        &[("DIB_LOCAL_IMAGE", &local), ("DIB_HELPER_SOCKET", &socket)],
    )?;
    let tree = b.f.path("tree-xfs-cloud");
    extract(&cloud.with_extension("tar"), &tree, &["./etc"])?;
    probe_eq(&tree, FEDORA_PROBE, src.release().is_some())?;
    boots_to_login(&cloud.with_extension("qcow2"), "Welcome to Fedora")?;
    b.assert_clean()
}
