//! Foreign architectures built on this host as a plain user: arm64 (a GPT
//! disk with an ESP, booted under AAVMF on QEMU's `virt` machine, and a
//! ramdisk booted with -kernel/-initrd), i386 (a BIOS disk built through
//! dib-helper, booted in a 32-bit PC) and armhf (a tree and a filesystem
//! image whose binaries are ARM and whose chroot ran them through
//! qemu-user). Each logs in on the serial console as devuser's user and
//! asks the running system what it is.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::image;
use crate::common::qemu::{self, Drive, Firmware, Machine};
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{build_ramdisk, cache, create_cmd, extract, stderr};

const USER: &str = "dibarch";

/// Seconds an emulated machine may take to its login prompt and answers
/// (arm64 under TCG: a few minutes).
const LOGIN_DEADLINE: Duration = Duration::from_secs(900);

/// The ESP's GPT type.
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

fn password() -> Result<String, Failed> {
    let mut bytes = [0u8; 9];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `dib create -a ARCH -t TYPES -o NAME debian-minimal vm devuser
/// arch-probe EXTRA...`, timed; the output's path without extension.
fn build_vm(
    b: &Build,
    arch: &str,
    types: &str,
    password: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<(std::path::PathBuf, String), Failed> {
    let out = b.f.path(arch);
    let out_s = out.display().to_string();
    let mut args = vec![
        "-a",
        arch,
        "-t",
        types,
        "-o",
        &out_s,
        "debian-minimal",
        "vm",
        "devuser",
        "arch-probe",
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let mut all_env = vec![
        ("DIB_DEV_USER_USERNAME", USER),
        ("DIB_DEV_USER_PASSWORD", password),
        ("DIB_DEV_USER_PWDLESS_SUDO", "yes"),
        ("DIB_DEV_USER_SHELL", "/bin/bash"),
    ];
    all_env.extend_from_slice(env);
    let o = create_cmd(b, &cache(), &args, &all_env).output()?;
    succeeded(&o)?;
    eprintln!(
        "  {arch} vm built in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok((out, stderr(&o)))
}

/// Boot `image` (qcow2, never written), log in, and return what the
/// running system says: `uname -m`, its dpkg architecture, whether it came
/// up by UEFI, and what the chroot said at build time.
fn boot_and_ask(image: &Path, firmware: Firmware, password: &str) -> Result<String, Failed> {
    let deadline = Instant::now() + LOGIN_DEADLINE;
    let mut m = Machine::boot(
        &[Drive {
            path: image,
            format: "qcow2",
            snapshot: true,
        }],
        firmware,
        None,
    )?;
    m.login(USER, password, deadline)?;
    eprintln!(
        "  {} ({firmware:?}): logged in on the console after {:.0}s",
        image.display(),
        m.seconds()
    );
    let out = m.run(
        "uname -m; dpkg --print-architecture; \
         [ -d /sys/firmware/efi ] && echo efi || echo bios; \
         tr '\\n' ' ' < /etc/dib-arch-probe; echo",
        deadline,
    )?;
    Ok(out)
}

/// `-a arm64 debian-minimal vm`: GPT with an ESP (the default layout on
/// arm64), GRUB for arm64-efi from the image, booted under AAVMF with
/// `-cpu max` to a login prompt; the system reports aarch64. Then `dib
/// ramdisk -a arm64` from the same cached base: an arm64 kernel and an
/// initramfs whose init.d fragment runs in a `virt` machine, and `dib
/// get-kernel` of the vm image gives the same kernel.
pub fn arm64_vm_boots_under_aavmf_and_its_ramdisk_runs_init_d() -> Result<(), Failed> {
    let b = Build::new();
    let password = password()?;
    let (out, _) = build_vm(&b, "arm64", "qcow2,raw", &password, &[], &[])?;
    let table = image::partitions(&out.with_extension("raw"))?;
    let kinds: Vec<&str> = table.partitions.iter().map(|p| p.kind.as_str()).collect();
    check(
        table.label == "gpt" && kinds.first() == Some(&ESP),
        format!(
            "arm64's default layout is not GPT with the ESP first: {} {kinds:?}",
            table.label
        ),
    )?;
    // The ESP holds GRUB on the removable path, as an arm64 PE image.
    let esp = table.partitions[0].start * 512;
    let efi = image::mdir(&out.with_extension("raw"), esp, &["-b"], "::/EFI/BOOT")?;
    check(
        efi.contains("BOOTAA64.EFI"),
        format!("no BOOTAA64.EFI on the ESP: {efi}"),
    )?;
    fs::remove_file(out.with_extension("raw"))?;
    eq(
        &boot_and_ask(&out.with_extension("qcow2"), Firmware::Aavmf, &password)?,
        "aarch64\narm64\nefi\naarch64 arm64 arm64 \n",
        "uname -m, the dpkg architecture, the firmware, the build's chroot",
    )?;

    // The ramdisk: the kernel is an arm64 Image ("ARM\x64" at 0x38).
    let (kernel, initrd) = build_ramdisk(&b, "rd", &["-a", "arm64", "ramdisk-probe"])?;
    let head = fs::read(&kernel)?;
    check(
        head.get(0x38..0x3c) == Some(b"ARM\x64".as_slice()),
        "the ramdisk's kernel is not an arm64 Image",
    )?;
    // get-kernel out of the vm image: the same kernel, from the same base.
    let (got, o) = b.get_kernel("got", &[&out.with_extension("qcow2").display().to_string()])?;
    succeeded(&o)?;
    check(
        fs::read(got.join("arm64-vmlinuz"))? == head,
        "get-kernel's arm64-vmlinuz differs from the ramdisk's kernel",
    )?;
    check(
        fs::metadata(got.join("arm64-initrd"))?.len() > 0,
        "get-kernel wrote no arm64-initrd",
    )?;
    let disk = b.f.path("disk.raw");
    fs::File::create(&disk)?.set_len(1 << 20)?;
    let started = Instant::now();
    qemu::converse(
        &qemu::DirectBoot {
            arch: "arm64",
            kernel: &kernel,
            initrd: &initrd,
            append: "console=ttyAMA0 dib_probe_arg=hello",
            disk: Some(&disk),
            nic: None,
        },
        &[
            ("dib-ramdisk-marker: hello disks=vda lsblk=vda rule=vda", ""),
            ("dib ramdisk: done", ""),
        ],
        LOGIN_DEADLINE,
    )?;
    eprintln!(
        "  the arm64 ramdisk ran its init.d in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    b.assert_clean()
}

/// `-a i386 debian-minimal vm` through dib-helper: the MBR layout, BIOS
/// GRUB from the image, booted in a 32-bit PC to a login prompt; the
/// system reports i686.
pub fn i386_vm_built_by_the_helper_boots_by_bios() -> Result<(), Failed> {
    let b = Build::new();
    let password = password()?;
    let socket = crate::helper_backend::helper_socket().ok_or("no DIB_TEST_HELPER_SOCKET")?;
    let socket = socket.display().to_string();
    let (out, err) = build_vm(
        &b,
        "i386",
        "qcow2",
        &password,
        &["--block-backend", "helper"],
        &[("DIB_HELPER_SOCKET", &socket)],
    )?;
    check(
        err.contains("dib-helper: /dev/loop"),
        format!("the helper backend was not used:\n{err}"),
    )?;
    eq(
        &boot_and_ask(&out.with_extension("qcow2"), Firmware::Bios32, &password)?,
        "i686\ni386\nbios\ni686 i386 i386 \n",
        "uname -m, the dpkg architecture, the firmware, the build's chroot",
    )?;
    b.assert_clean()
}

/// The ELF class and machine of a file's header: "32 40" for ARM.
fn elf_kind(path: &Path) -> Result<String, Failed> {
    let head = fs::read(path)?;
    check(
        head.starts_with(b"\x7fELF") && head.len() > 20,
        format!("{} is not an ELF file", path.display()),
    )?;
    let class = if head[4] == 2 { 64 } else { 32 };
    let machine = u16::from_le_bytes([head[18], head[19]]);
    Ok(format!("{class} {machine}"))
}

/// `-a armhf -t tar,raw debian-minimal`: the tree's binaries are 32-bit
/// ARM, its dpkg architecture is armhf, the chroot ran them through
/// qemu-user (armv7l), and the filesystem image holds the same tree.
///
/// The base is bootstrapped without a kernel (DIB_DEBOOTSTRAP_INCLUDE
/// without linux-image-armmp): a tree and a filesystem image need none,
/// and an emulated initramfs build is the slowest step of an armhf
/// bootstrap.
pub fn armhf_tree_and_filesystem_are_arm() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("armhf");
    let out_s = out.display().to_string();
    let started = Instant::now();
    let o = create_cmd(
        &b,
        &cache(),
        &[
            "-a",
            "armhf",
            "-t",
            "tar,raw",
            "-o",
            &out_s,
            "debian-minimal",
            "arch-probe",
        ],
        &[(
            "DIB_DEBOOTSTRAP_INCLUDE",
            "systemd-sysv,busybox,sudo,gnupg,python3,adduser,ca-certificates,locales,lsb-release",
        )],
    )
    .output()?;
    succeeded(&o)?;
    eprintln!(
        "  armhf tree built in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // A cold cache bootstraps ("... for armhf from ..."); a warm one
    // unpacks the armhf base it holds (".../RELEASE-armhf-KEY.tar").
    let log = stderr(&o);
    check(
        log.contains(" for armhf from ")
            || (log.contains("unpacking the cached base") && log.contains("-armhf-")),
        "dib's log names neither an armhf bootstrap nor a cached armhf base",
    )?;
    let tree = b.f.path("tree");
    extract(
        &out.with_extension("tar"),
        &tree,
        &[
            "./usr/bin/bash",
            "./usr/bin/dpkg",
            "./var/lib/dpkg",
            "./etc/dib-arch-probe",
        ],
    )?;
    for bin in ["usr/bin/bash", "usr/bin/dpkg"] {
        eq(
            &elf_kind(&tree.join(bin))?,
            "32 40",
            &format!("{bin}'s ELF class and machine"),
        )?;
    }
    eq(
        &fs::read_to_string(tree.join("var/lib/dpkg/arch"))?,
        "armhf\n",
        "var/lib/dpkg/arch",
    )?;
    eq(
        &fs::read_to_string(tree.join("etc/dib-arch-probe"))?,
        "armv7l\narmhf\narmhf\n",
        "uname -m, dpkg --print-architecture and ARCH in the chroot",
    )?;
    // The filesystem image: the same bash, byte for byte.
    let raw = out.with_extension("raw");
    image::e2fsck(&raw)?;
    let dumped = b.f.path("bash.from-raw");
    let o = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(format!("dump /usr/bin/bash {}", dumped.display()))
        .arg(&raw)
        .output()?;
    succeeded(&o)?;
    check(
        fs::read(&dumped)? == fs::read(tree.join("usr/bin/bash"))?,
        "the filesystem image's /usr/bin/bash differs from the tree's",
    )?;
    b.assert_clean()
}
