//! `dib get-kernel`: the kernel and ramdisk read out of a qcow2 GPT image
//! without privilege, and a clear error for an image without one.

use std::fs;

use libtest_mimic::Failed;

use crate::common::tier::{check, succeeded, Build};

pub fn get_kernel_reads_qcow2_and_gpt_images_without_privilege() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/root.d/50-kernel",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/boot\"\n\
         head -c 300000 /dev/urandom > \"$TARGET_ROOT/boot/vmlinuz-1.9.0\"\n\
         head -c 500000 /dev/urandom > \"$TARGET_ROOT/boot/vmlinuz-1.10.0\"\n\
         head -c 700000 /dev/urandom > \"$TARGET_ROOT/boot/initrd.img-1.10.0\"\n\
         cp \"$TARGET_ROOT/boot/vmlinuz-1.10.0\" \"$TARGET_ROOT/boot/initrd.img-1.10.0\" \"$DIB_TEST_OUT/\"\n",
        0o755,
    );
    let out = b.f.path("images/img").display().to_string();
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-o",
                &out,
                "tiny-os",
                "block-device-gpt",
                "probe",
                "baremetal",
            ],
            &[],
        )
        .output()?;
    succeeded(&o)?;
    // The baremetal element's copies, beside the image.
    for (mine, theirs) in [
        ("img.vmlinuz", "vmlinuz-1.10.0"),
        ("img.initrd", "initrd.img-1.10.0"),
    ] {
        check(
            fs::read(b.f.path("images").join(mine))? == fs::read(b.out.join(theirs))?,
            format!("baremetal's {mine} is not /boot/{theirs}"),
        )?;
    }
    let (got, o) = b.get_kernel("got", &["-o", "k", "-i", &format!("{out}.qcow2")])?;
    succeeded(&o)?;
    for (mine, theirs) in [
        ("k-vmlinuz", "vmlinuz-1.10.0"),
        ("k-initrd", "initrd.img-1.10.0"),
    ] {
        check(
            fs::read(got.join(mine))? == fs::read(b.out.join(theirs))?,
            format!("{mine} is not the image's /boot/{theirs}"),
        )?;
    }
    // An image without a kernel: a clear error, nothing written.
    let bare = b.f.path("images/bare").display().to_string();
    succeeded(
        &b.dib(&["create", "-n", "-t", "raw", "-o", &bare, "tiny-os"], &[])
            .output()?,
    )?;
    let (empty, o) = b.get_kernel("empty", &[&format!("{bare}.raw")])?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        !o.status.success() && err.contains("no kernel (/boot/vmlinuz-*) in"),
        format!("want a clear error, got:\n{err}"),
    )?;
    check(
        fs::read_dir(&empty)?.next().is_none(),
        "get-kernel left files",
    )?;
    b.assert_clean()
}
