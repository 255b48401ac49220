//! Images built through dib-helper (`--block-backend helper`): GPT/BIOS
//! and UEFI images and an xfs root, booted as the offline ones are.

use std::path::PathBuf;

use libtest_mimic::Failed;

use crate::common::image;
use crate::common::qemu::Firmware;
use crate::common::tier::{check, Build};
use crate::support::{boot_efi_is_empty, boots_to, build_vm_with, check_root};

/// The dib-helper scripts/test started for the test user.
pub fn helper_socket() -> Option<PathBuf> {
    std::env::var_os("DIB_TEST_HELPER_SOCKET").map(PathBuf::from)
}

/// `build_vm` through dib-helper: the image's filesystems are made and
/// filled on a loop device, finalise.d runs on them mounted.
fn build_vm_with_helper(
    b: &Build,
    extra: &[&str],
    types: &str,
    env: &[(&str, &str)],
) -> Result<PathBuf, Failed> {
    let socket = helper_socket().ok_or("no DIB_TEST_HELPER_SOCKET")?;
    let socket = socket.display().to_string();
    let mut args = vec!["--block-backend", "helper"];
    args.extend_from_slice(extra);
    let mut env = env.to_vec();
    env.push(("DIB_HELPER_SOCKET", &socket));
    let (out, err) = build_vm_with(b, &args, types, &env)?;
    check(
        err.contains("dib-helper: /dev/loop"),
        format!("the helper backend was not used:\n{err}"),
    )?;
    Ok(out)
}

pub fn helper_gpt_bios_image_boots() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm_with_helper(&b, &["block-device-gpt"], "qcow2,raw", &[])?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda2 fstype=ext4 efi=no ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let parts = image::partitions(&raw)?.partitions;
    check_root(&raw, parts[1].start, &b.f.path("root.ext4"))?;
    b.assert_clean()
}

/// The ESP is vfat, which this kernel may not mount: the helper makes it,
/// dib fills it with mtools; the image boots under OVMF all the same.
pub fn helper_efi_image_boots_under_ovmf() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm_with_helper(&b, &["block-device-efi"], "qcow2,raw", &[])?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Uefi,
        "dib-boot-marker: root=/dev/vda3 fstype=ext4 efi=yes ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let parts = image::partitions(&raw)?.partitions;
    check_root(&raw, parts[2].start, &b.f.path("root.ext4"))?;
    boot_efi_is_empty(&b.f.path("root.ext4"))?;
    b.assert_clean()
}

/// An xfs root (which only the helper backend makes) boots by BIOS: GRUB
/// reads it, the initramfs mounts it.
pub fn helper_xfs_root_boots() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm_with_helper(&b, &[], "qcow2", &[("FS_TYPE", "xfs")])?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda1 fstype=xfs efi=no ssh=inactive",
    )?;
    b.assert_clean()
}
