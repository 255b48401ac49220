//! Offline disk images: a GPT image checked against its configuration (table,
//! filesystems, root tree, fstab, ESP, vhd, squashfs, tar), symlinks refused
//! on a FAT filesystem, and bad block-device input refused.

use std::fs;
use std::process::Command;

use libtest_mimic::Failed;

use crate::common::image;
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{images_left, tar_entries};

pub fn offline_image_matches_its_configuration() -> Result<(), Failed> {
    let b = Build::new();
    let layout = crate::common::full_gpt_layout();
    b.f.file(
        "e/probe/root.d/50-files",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/boot/efi/EFI\" \"$TARGET_ROOT/srv\"\n\
         echo hello > \"$TARGET_ROOT/boot/efi/EFI/hello.txt\"\n\
         touch \"$TARGET_ROOT/srv/owned\"\nchown 1234:4321 \"$TARGET_ROOT/srv/owned\"\nchmod 4750 \"$TARGET_ROOT/srv/owned\"\n",
        0o755,
    );
    // finalise.d sees the image and what dib planned, and can write to it.
    b.f.file(
        "e/probe/finalise.d/50-saw",
        "#!/bin/sh\nset -eu\n\
         echo \"$IMAGE_BLOCK_DEVICE|$DIB_BLOCK_DEVICE_LABEL|$DIB_ROOT_FS_UUID|$DIB_ROOT_LABEL|$DIB_EFI_MOUNT_POINT|$DIB_BIOS_BOOT_SECTORS\" > /etc/finalise-saw\n\
         echo dib-finalise-wrote | dd of=\"$IMAGE_BLOCK_DEVICE\" bs=512 seek=\"$DIB_BIOS_BOOT_SECTOR\" conv=notrunc 2>/dev/null\n",
        0o755,
    );
    let out = b.f.path("images/img");
    let out_s = out.display().to_string();
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "raw,tar,vhd,squashfs",
                "-o",
                &out_s,
                "tiny-os",
                "probe",
            ],
            &[("DIB_BLOCK_DEVICE_CONFIG", &layout)],
        )
        .output()?;
    succeeded(&o)?;
    let raw = out.with_extension("raw");
    let table = image::partitions(&raw)?;
    let parts = &table.partitions;
    let summary: Vec<String> = parts
        .iter()
        .map(|p| format!("{} {}", p.name.as_deref().unwrap_or("?"), p.kind))
        .collect();
    eq(
        &format!("{} {summary:?}", table.label),
        "gpt [\"ESP C12A7328-F81F-11D2-BA4B-00A0C93EC93B\", \"BSP 21686148-6449-6E6F-744E-656564454649\", \
         \"swap 0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\", \"root 0FC63DAF-8483-4772-8E79-3D69D8477DE4\"]",
        "the partition table",
    )?;
    let start = |i: usize| parts[i].start;
    check(
        (0..4).all(|i| start(i) % 2048 == 0),
        "partitions are 1 MiB aligned",
    )?;
    let fss: Vec<String> = [0, 2, 3]
        .iter()
        .map(|&i| {
            // (type, label, uuid) of the filesystem.
            Ok(image::blkid(&raw, Some(start(i) * 512))?.values(&["TYPE", "LABEL", "UUID"]))
        })
        .collect::<Result<_, Failed>>()?;
    eq(
        &fss.join("; "),
        "vfat EFI 1234-ABCD; swap - 5d0c5f2e-8a55-4f6e-9b52-6f1f4e0c1a11; \
         ext4 myroot 0b9d8a7c-3e2f-4d1a-8b6c-5a4f3e2d1c0b",
        "the filesystems (type, label, UUID)",
    )?;
    // What finalise.d wrote into the image landed in the BIOS-boot partition.
    let bsp = fs::read(&raw)?;
    let at = (start(1) * 512) as usize;
    check(
        bsp[at..].starts_with(b"dib-finalise-wrote"),
        "finalise.d's write to IMAGE_BLOCK_DEVICE is not in the image",
    )?;
    // The root filesystem: sound, with owners and modes, and only its files.
    let root = image::copy_partition(&raw, start(3), &b.f.path("root.ext4"))?;
    image::e2fsck(&root)?;
    let debugfs = |req: &str| image::debugfs(&root, req);
    let owned = debugfs("stat /srv/owned")?;
    check(
        owned.contains("Mode:  04750") && owned.contains("User:  1234   Group:  4321"),
        format!("/srv/owned in the image:\n{owned}"),
    )?;
    eq(
        debugfs("cat /etc/fstab")?.trim_end(),
        "# Written by dib from the block-device configuration.\n\
         LABEL=myroot / ext4 defaults,noatime 0 1\n\
         UUID=1234-ABCD /boot/efi vfat umask=0077 0 2",
        "the image's fstab",
    )?;
    let raw_in = format!("/{}", dib_sandbox::mounts::IMAGE_IN_TARGET);
    eq(
        debugfs("cat /etc/finalise-saw")?.trim_end(),
        &format!(
            "{raw_in}/disk.raw|gpt|0b9d8a7c-3e2f-4d1a-8b6c-5a4f3e2d1c0b|myroot|/boot/efi|2048"
        ),
        "what finalise.d was told",
    )?;
    let efi_dir = debugfs("ls /boot/efi")?;
    check(
        !efi_dir.contains("EFI"),
        format!("the ESP's files are on the root filesystem too: {efi_dir}"),
    )?;
    let mtype = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", raw.display(), start(0) * 512))
        .arg("::/EFI/hello.txt")
        .output()?;
    eq(
        String::from_utf8_lossy(&mtype.stdout).trim_end(),
        "hello",
        "EFI/hello.txt on the ESP",
    )?;
    // vhd: the same disk, as qemu-img reads it.
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(out.with_extension("vhd"))
        .output()?;
    succeeded(&info)?;
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)?;
    eq(
        &format!("{} {}", info["format"], info["virtual-size"]),
        &format!("\"vpc\" {}", fs::metadata(&raw)?.len()),
        "the vhd's format and size",
    )?;
    // squashfs: the whole tree, owners kept.
    let ls = Command::new("unsquashfs")
        .args(["-lln", "-d", "/nonexistent"])
        .arg(out.with_extension("squashfs"))
        .output()?;
    let listing = String::from_utf8_lossy(&ls.stdout);
    check(
        listing
            .lines()
            .any(|l| l.starts_with("-rwsr-x--- 1234/4321") && l.ends_with("/srv/owned"))
            && listing.contains("/boot/efi/EFI/hello.txt"),
        format!("the squashfs listing:\n{listing}"),
    )?;
    // The tar output has the whole tree, ESP files included.
    let entries = tar_entries(fs::File::open(out.with_extension("tar"))?)?;
    check(
        entries.iter().any(|e| e.0 == "./boot/efi/EFI/hello.txt"),
        "the tar output lacks /boot/efi's files",
    )?;
    // Regression: the chroot's mount point for the image file stayed in
    // the image (tmp/dib-image.d/disk.raw).
    check(
        !entries.iter().any(|e| e.0.starts_with("./tmp/dib-image.d")),
        "the image keeps the chroot's tmp/dib-image.d",
    )?;
    b.assert_clean()
}

pub fn a_symlink_bound_for_a_fat_filesystem_fails_the_build() -> Result<(), Failed> {
    let b = Build::new();
    // mcopy runs outside the chroot: a link must never bring a host file
    // onto the ESP.
    b.f.file(
        "e/probe/root.d/50-link",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/boot/efi/EFI\"\nln -s /etc/passwd \"$TARGET_ROOT/boot/efi/EFI/leak\"\n",
        0o755,
    );
    let config = "- partitioning:\n    label: gpt\n    partitions:\n      - {name: ESP, type: 'EF00', size: 8MiB, mkfs: {type: vfat, mount: {mount_point: /boot/efi}}}\n      - {name: root, size: 100%, mkfs: {mount: {mount_point: /}}}\n";
    let out = b.f.path("images/img").display().to_string();
    let o = b
        .dib(
            &["create", "-n", "-t", "raw", "-o", &out, "tiny-os", "probe"],
            &[("DIB_BLOCK_DEVICE_CONFIG", config)],
        )
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        !o.status.success()
            && err.contains("/boot/efi/EFI/leak is a symlink: a FAT filesystem holds only files and directories"),
        format!("want the symlink refused, got:\n{err}"),
    )?;
    let left = images_left(&b)?;
    check(left.is_empty(), format!("left: {left:?}"))?;
    b.assert_clean()
}

pub fn bad_block_device_input_fails_clearly_and_leaves_nothing() -> Result<(), Failed> {
    let lvm = "- lvm:\n    name: lvm\n    pvs: []\n";
    let unknown = "- mkfs:\n    base: image0\n    sizes: 3\n";
    // (extra arguments, environment, what the error must say)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 8] = [
        (
            &[],
            &[("DIB_BLOCK_DEVICE_CONFIG", "[1, 2")],
            "DIB_BLOCK_DEVICE_CONFIG is not valid YAML",
        ),
        (&[], &[("DIB_BLOCK_DEVICE_CONFIG", lvm)], "LVM ('lvm' node)"),
        (
            &[],
            &[("DIB_BLOCK_DEVICE_CONFIG", unknown)],
            "mkfs: unknown key 'sizes'",
        ),
        (&[], &[("FS_TYPE", "xfs")], "filesystem 'mkfs_root' is xfs"),
        (
            &["--image-size", "0.01"],
            &[],
            "give a larger --image-size (or local_loop size) or none",
        ),
        (
            &["block-device-mbr", "block-device-gpt"],
            &[],
            "include only one of them",
        ),
        (
            &["-o", "/proc/img"],
            &[],
            "its directory \"/proc\" is not writable",
        ),
        // No helper answers (the harness points DIB_HELPER_SOCKET nowhere).
        (
            &["--block-backend=helper"],
            &[],
            "--block-backend helper needs a running dib-helper: start one with \
             `sudo scripts/start-helper`",
        ),
    ];
    for (extra, env, want) in cases {
        let b = Build::new();
        let out = b.f.path("images/img").display().to_string();
        let mut args = vec!["create", "-n", "-t", "raw"];
        if !extra.contains(&"-o") {
            args.extend(["-o", &out]);
        }
        // Flags and their values (numbers, paths) before the elements.
        let (flags, elements): (Vec<&str>, Vec<&str>) = extra
            .iter()
            .partition(|a| a.starts_with('-') || a.starts_with('/') || a.parse::<f64>().is_ok());
        args.extend(flags);
        args.push("tiny-os");
        args.extend(elements);
        let o = b.dib(&args, env).output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        check(
            !o.status.success() && err.contains(want),
            format!("{extra:?} {env:?}: want an error with {want:?}, got:\n{err}"),
        )?;
        let left = images_left(&b)?;
        check(left.is_empty(), format!("{want}: left {left:?}"))?;
        b.assert_clean()?;
    }
    Ok(())
}
