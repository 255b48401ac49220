//! Tar outputs (owners, modes, xattrs; old outputs moved aside or
//! overwritten), and no output at all from a failed build.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{images_left, tar_entries};

pub fn tar_and_tgz_keep_owners_modes_and_xattrs() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/10-own",
        "#!/bin/sh\nset -eu\ntouch /root/owned\nchown 1234:4321 /root/owned\nchmod 4750 /root/owned\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/10-xattr",
        "#!/bin/bash\nset -eu\npython3 -c 'import os, sys; os.setxattr(sys.argv[1], \"user.dib\", b\"kept\")' \"$TARGET_ROOT/root/owned\"\n",
        0o755,
    );
    let out = b.f.path("images/img").display().to_string();
    let mut cmd = b.dib(
        &[
            "create", "-n", "-t", "tar,tgz", "-o", &out, "tiny-os", "probe",
        ],
        &[],
    );
    let o = cmd.output()?;
    succeeded(&o)?;
    for (file, gz) in [("img.tar", false), ("img.tgz", true)] {
        let mode = fs::metadata(b.f.path("images").join(file))?
            .permissions()
            .mode()
            & 0o777;
        eq(&format!("{mode:o}"), "644", &format!("{file}'s mode"))?;
        let f = fs::File::open(b.f.path("images").join(file))?;
        let entries = if gz {
            tar_entries(flate2::read::GzDecoder::new(f))?
        } else {
            tar_entries(f)?
        };
        let owned = entries
            .iter()
            .find(|e| e.0 == "./root/owned")
            .ok_or_else(|| format!("{file}: no ./root/owned"))?;
        eq(
            &format!("{} {} {:o} {:?}", owned.1, owned.2, owned.3, owned.4),
            "1234 4321 4750 [\"user.dib=kept\"]",
            &format!("{file}: uid gid mode xattrs of /root/owned"),
        )?;
        check(
            entries.iter().any(|e| e.0 == "./bin/busybox"),
            format!("{file}: no ./bin/busybox"),
        )?;
        check(
            !entries.iter().any(|e| {
                ["./proc/", "./dev/"]
                    .iter()
                    .any(|d| e.0.starts_with(d) && e.0 != *d)
            }),
            format!("{file}: mounted /proc or /dev content was archived"),
        )?;
    }
    // Building again moves the old output aside; OVERWRITE_OLD_IMAGE=1 replaces it.
    succeeded(&cmd.output()?)?;
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let after_second = names(&b.f.path("images"));
    eq(
        &after_second.len().to_string(),
        "4",
        &format!("outputs after a second build: {after_second:?}"),
    )?;
    check(
        after_second
            .iter()
            .filter(|n| n.starts_with("img-") && n.ends_with(".tar"))
            .count()
            == 1,
        format!("no timestamped old tar: {after_second:?}"),
    )?;
    cmd.env("OVERWRITE_OLD_IMAGE", "1");
    succeeded(&cmd.output()?)?;
    eq(
        &names(&b.f.path("images")).len().to_string(),
        "4",
        "outputs after OVERWRITE_OLD_IMAGE=1",
    )?;
    b.assert_clean()
}

pub fn a_failed_build_leaves_no_output() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/cleanup.d/90-fail", "#!/bin/sh\nexit 1\n", 0o755);
    let out = b.f.path("images/img").display().to_string();
    let o = b
        .dib(
            &["create", "-n", "-t", "tar", "-o", &out, "tiny-os", "probe"],
            &[],
        )
        .output()?;
    check(!o.status.success(), "the build should fail")?;
    // A failure after the tar is written (mkfs rejects an option) leaves
    // neither the disk image nor the finished tar.
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "tar,raw,qcow2",
                "--mkfs-options",
                "-O no_such_feature",
                "-o",
                &out,
                "tiny-os",
            ],
            &[],
        )
        .output()?;
    check(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("mkfs.ext4 failed"),
        format!("the mkfs failure: {}", String::from_utf8_lossy(&o.stderr)),
    )?;
    let left = images_left(&b)?;
    check(
        left.is_empty(),
        format!("left in the output directory: {left:?}"),
    )?;
    b.assert_clean()
}
