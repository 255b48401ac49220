//! `debian-minimal vm` and `debian vm` disk images built offline, booted in
//! QEMU (MBR and GPT by BIOS, UEFI under OVMF) and checked against their
//! plan: the partition table, the root filesystem, the ESP, the checksum
//! files, and `get-kernel` byte for byte.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::Failed;

use crate::common::image;
use crate::common::qemu::Firmware;
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{boot_efi_is_empty, boots_to, build_vm, cache, check_root, create, extract};

/// `sha256sum -c` and `md5sum -c` accept the --checksum files.
fn checksums_verify(out: &Path, ext: &str) -> Result<(), Failed> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let name = format!(
        "{}.{ext}",
        out.file_name().unwrap_or_default().to_string_lossy()
    );
    for tool in ["sha256", "md5"] {
        let o = Command::new(format!("{tool}sum"))
            .arg("-c")
            .arg(format!("{name}.{tool}"))
            .current_dir(dir)
            .output()?;
        succeeded(&o)?;
    }
    Ok(())
}

pub fn mbr_vm_image_boots_and_matches_its_plan() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm(&b, &[], "qcow2,raw,tar")?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda1 fstype=ext4 efi=no ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let table = image::partitions(&raw)?;
    // A partition as sfdisk lists it: start sector, type, bootable.
    let parts: Vec<(u64, &str, bool)> = table
        .partitions
        .iter()
        .map(|p| (p.start, p.kind.as_str(), p.bootable))
        .collect();
    eq(
        &format!("{} {parts:?}", table.label),
        "dos [(2048, \"83\", true)]",
        "the partition table",
    )?;
    check_root(&raw, 2048, &b.f.path("root.ext4"))?;
    checksums_verify(&out, "qcow2")?;
    checksums_verify(&out, "raw")?;
    // get-kernel: the image's kernel and initrd, byte for byte.
    let (got, o) = b.get_kernel("got", &[&out.with_extension("qcow2").display().to_string()])?;
    succeeded(&o)?;
    let tree = b.f.path("tree");
    extract(&out.with_extension("tar"), &tree, &["./boot"])?;
    let newest = |prefix: &str| -> Result<PathBuf, Failed> {
        let mut v: Vec<PathBuf> = fs::read_dir(tree.join("boot"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .collect();
        v.sort();
        v.pop()
            .ok_or_else(|| format!("no /boot/{prefix}* in the tree").into())
    };
    for (mine, theirs) in [("deb-vmlinuz", "vmlinuz-"), ("deb-initrd", "initrd.img-")] {
        check(
            fs::read(got.join(mine))? == fs::read(newest(theirs)?)?,
            format!("get-kernel's {mine} differs from the image's /boot/{theirs}*"),
        )?;
    }
    b.assert_clean()
}

/// The README's first command: `debian vm` boots with sshd running (host
/// keys made on first boot, though no cloud-init datasource answers).
pub fn debian_vm_boots_with_ssh() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("debian");
    let out_s = out.display().to_string();
    succeeded(&create(
        &b,
        &cache(),
        &["-o", &out_s, "debian", "vm", "boot-marker"],
    )?)?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda1 fstype=ext4 efi=no ssh=active",
    )?;
    b.assert_clean()
}

pub fn gpt_bios_image_boots() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm(&b, &["block-device-gpt"], "qcow2")?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda2 fstype=ext4 efi=no ssh=inactive",
    )?;
    b.assert_clean()
}

pub fn efi_image_boots_under_ovmf_and_matches_its_plan() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm(&b, &["block-device-efi"], "qcow2,raw")?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Uefi,
        "dib-boot-marker: root=/dev/vda3 fstype=ext4 efi=yes ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let table = image::partitions(&raw)?;
    let parts = &table.partitions;
    let types: Vec<&str> = parts.iter().map(|p| p.kind.as_str()).collect();
    eq(
        &format!("{} {types:?}", table.label),
        "gpt [\"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\", \"21686148-6449-6E6F-744E-656564454649\", \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"]",
        "the partition table (ESP, BIOS boot, Linux)",
    )?;
    check_root(&raw, parts[2].start, &b.f.path("root.ext4"))?;
    let esp = image::identity(&raw, parts[0].start)?;
    check(esp.contains("TYPE=vfat"), format!("the ESP: {esp}"))?;
    let esp_uuid = esp
        .split(' ')
        .find_map(|k| k.strip_prefix("UUID="))
        .unwrap_or_default();
    let root = b.f.path("root.ext4");
    let fstab = image::debugfs(&root, "cat /etc/fstab")?;
    check(
        fstab.contains(&format!("UUID={esp_uuid} /boot/efi vfat defaults 0 2")),
        format!("fstab does not mount the ESP {esp_uuid}:\n{fstab}"),
    )?;
    let boot = image::mdir(&raw, parts[0].offset(), &["-b"], "::/EFI/BOOT")?;
    check(
        boot.contains("BOOTX64.EFI"),
        format!("the ESP has no EFI/BOOT/BOOTX64.EFI: {boot}"),
    )?;
    // The ESP's files live on the ESP only.
    boot_efi_is_empty(&root)?;
    b.assert_clean()
}
