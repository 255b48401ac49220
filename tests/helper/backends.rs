//! What each block backend builds: the same configuration built offline
//! and through the helper gives the same image, and an xfs root, which the
//! offline backend refuses (naming the way out), is built through the helper.

use std::process::Command;

use crate::common::image;
use crate::common::tier::{check, succeeded};
use crate::image::{describe, Attached};
use crate::support::{chown_tree, dib, no_leaks_under, user, user_build, Helper};
use libtest_mimic::Failed;

pub fn both_backends_build_the_same_image() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let b = user_build()?;
    b.f.file(
        "e/probe/root.d/50-files",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/boot/efi/EFI/BOOT\" \"$TARGET_ROOT/srv/d\"\n\
         echo hello > \"$TARGET_ROOT/boot/efi/EFI/BOOT/hello.txt\"\n\
         echo data > \"$TARGET_ROOT/srv/owned\"\nchown 1234:4321 \"$TARGET_ROOT/srv/owned\"\n\
         chmod 4750 \"$TARGET_ROOT/srv/owned\"\nln \"$TARGET_ROOT/srv/owned\" \"$TARGET_ROOT/srv/d/hard\"\n\
         ln -s ../owned \"$TARGET_ROOT/srv/d/soft\"\nmkfifo \"$TARGET_ROOT/srv/fifo\"\n\
         chown -h 7:8 \"$TARGET_ROOT/srv/d/soft\"\nchmod 0711 \"$TARGET_ROOT/srv/d\"\n\
         python3 -c 'import os,sys; os.setxattr(sys.argv[1], \"user.dib\", b\"backends\")' \"$TARGET_ROOT/srv/owned\"\n\
         yes dib-backends | head -c 3000000 > \"$TARGET_ROOT/srv/big\"\ntruncate -s 50M \"$TARGET_ROOT/srv/sparse\"\n",
        0o755,
    );
    b.f.file(
        "e/probe/finalise.d/50-write",
        "#!/bin/sh\nset -eu\necho \"finalise saw $DIB_ROOT_FS_UUID\" > /etc/finalise-saw\n\
         echo bios-area-from-finalise | dd of=\"$IMAGE_BLOCK_DEVICE\" bs=512 seek=\"$DIB_BIOS_BOOT_SECTOR\" conv=notrunc 2>/dev/null\n\
         echo efi > /boot/efi/EFI/BOOT/from-finalise.txt\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/50-clean",
        "#!/bin/sh\nset -eu\necho cleaned > \"$TARGET_ROOT/etc/cleaned\"\n",
        0o755,
    );
    chown_tree(b.f.dir.path(), user().uid, user().gid)?;
    let layout = crate::common::full_gpt_layout();
    let mut described = Vec::new();
    for (name, helper) in [("offline", None), ("helper", Some(&h))] {
        let out = b.f.path(&format!("images/{name}"));
        let out_s = out.display().to_string();
        let o = dib(
            &b,
            helper,
            &["-t", "raw,tar", "-o", &out_s, "tiny-os", "probe"],
            &[
                ("DIB_BLOCK_DEVICE_CONFIG", &layout),
                ("DIB_IMAGE_UUID_SEED", "same-image"),
            ],
        )
        .output()?;
        succeeded(&o)?;
        let err = String::from_utf8_lossy(&o.stderr);
        if helper.is_some() {
            check(
                err.contains("dib-helper: /dev/loop"),
                format!("the helper backend was not used:\n{err}"),
            )?;
        }
        let mut d = describe(&out.with_extension("raw"), &b.f.path(name))?;
        // The tar output: the same members, owners and modes.
        let o = Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(out.with_extension("tar"))
            .output()?;
        succeeded(&o)?;
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            // mode owner size date time name: all but the date and time.
            let f: Vec<&str> = l.split_whitespace().collect();
            d.push_str(&format!(
                "tar: {} {} {} {}\n",
                f[0],
                f[1],
                f[2],
                f[5..].join(" ")
            ));
        }
        described.push(d);
    }
    if described[0] != described[1] {
        let diff: Vec<String> = described[0]
            .lines()
            .zip(described[1].lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("  offline: {a}\n  helper:  {b}"))
            .collect();
        return Err(format!(
            "the backends' images differ:\n{}\n(offline has {} lines, helper {})",
            diff.join("\n"),
            described[0].lines().count(),
            described[1].lines().count()
        )
        .into());
    }
    // And what is the same is right: the files the hooks made are there.
    for want in [
        "srv/owned 104750 1234:4321 n2",
        "user.dib=\"backends\"",
        "etc/finalise-saw",
        "etc/cleaned",
        "::/EFI/BOOT/hello.txt",
        "bios-area-from-finalise",
        "srv/d/soft 120777 7:8",
        "srv/fifo 10644",
    ] {
        check(
            described[0].contains(want),
            format!("the image lacks {want:?}:\n{}", described[0]),
        )?;
    }
    no_leaks_under(b.f.dir.path())?;
    b.assert_clean()?;
    h.alive()
}

/// xfs, which the offline backend cannot fill, through the helper.
pub fn xfs_is_built_through_the_helper() -> Result<(), Failed> {
    let h = Helper::for_test_user()?;
    let b = user_build()?;
    b.f.file(
        "e/probe/root.d/50-files",
        "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/srv\"\necho data > \"$TARGET_ROOT/srv/owned\"\n\
         chown 1234:4321 \"$TARGET_ROOT/srv/owned\"\nchmod 2755 \"$TARGET_ROOT/srv/owned\"\n",
        0o755,
    );
    chown_tree(b.f.dir.path(), user().uid, user().gid)?;
    let out = b.f.path("images/xfs");
    let out_s = out.display().to_string();
    let args = [
        "-t",
        "raw",
        "-o",
        &out_s,
        "tiny-os",
        "block-device-mbr",
        "probe",
    ];
    let env = [("FS_TYPE", "xfs"), ("DIB_IMAGE_UUID_SEED", "xfs")];
    // The offline backend says what to do instead.
    let o = dib(&b, None, &args, &env).output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        !o.status.success() && err.contains("or the helper backend (--block-backend helper"),
        format!("an offline xfs build: {err}"),
    )?;
    succeeded(&dib(&b, Some(&h), &args, &env).output()?)?;
    let attached = Attached::new(&out.with_extension("raw"))?;
    let keys = attached.blkid(1, image::is_identity)?;
    let (tree, fstab) = attached.tree(1, &b.f.path("view"))?;
    drop(attached);
    check(
        keys.starts_with("LABEL=img-rootfs TYPE=xfs UUID="),
        format!("the root filesystem: {keys}"),
    )?;
    for want in ["bin/busybox 100755 0:0", "srv/owned 102755 1234:4321"] {
        check(
            tree.iter().any(|l| l.starts_with(want)),
            format!("the xfs root lacks {want:?}:\n{}", tree.join("\n")),
        )?;
    }
    check(
        fstab.contains("LABEL=img-rootfs / xfs "),
        format!("/etc/fstab: {fstab}"),
    )?;
    no_leaks_under(b.f.dir.path())?;
    b.assert_clean()?;
    h.alive()
}
