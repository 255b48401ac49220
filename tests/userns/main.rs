//! Tier 2: the rootless sandbox, driven through `dib create` as a plain user
//! with a subordinate id range (CI runs this as the `dibtest` user).
//!
//! Each build uses the `tiny-os` fixture (a busybox tree, no mirror needed)
//! and `no-final-image`; hooks write what they observe into `DIB_TEST_OUT`,
//! a host directory, from cleanup.d.
//!
//! When this tier cannot run here (root, or no subuid range), every trial is
//! reported as ignored with the reason; with CI=true it fails instead. One
//! trial is the other way round: dib run as root maps ids to themselves, and
//! that runs only as root (tier 1 in CI).

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tier::{check, eq, run_trials, skip_reason, succeeded, Build};
use libtest_mimic::{Failed, Trial};

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("userns") {
                found.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

const PROBE: &str = r#"#!/bin/sh
set -eu
id -u > /root/uid
touch /root/owned
chown 1234:1234 /root/owned
if touch /tmp/in_target.d/x 2>/dev/null; then echo writable; else echo read-only; fi > /root/in_target
ls /proc | grep -c '^[0-9]' > /root/nprocs
tr '\0' ' ' < /proc/1/cmdline > /root/pid1
echo "$TMP_HOOKS_PATH $HOME $PATH" > /root/env
echo "${DIB_FROM_ENV_D:-unset}" > /root/envd
cat /etc/resolv.conf > /root/resolv_during
"#;

const REPORT: &str = r#"#!/bin/bash
set -eu -o pipefail
cd "$TARGET_ROOT/root"
cp uid in_target nprocs pid1 env envd resolv_during "$DIB_TEST_OUT/"
stat -c %u:%g owned > "$DIB_TEST_OUT/owned"
sudo id -u > "$DIB_TEST_OUT/sudo"
get_image_element_array > "$DIB_TEST_OUT/array"
echo "$IMAGE_ELEMENT" > "$DIB_TEST_OUT/image_element"
cat "$TARGET_ROOT/etc/resolv.conf" > "$DIB_TEST_OUT/resolv_after"
"#;

fn chroot_phases_run_as_root_in_an_isolated_tree() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/10-probe", PROBE, 0o755);
    b.f.file(
        "e/probe/environment.d/10-probe.bash",
        "export DIB_FROM_ENV_D=sourced\n",
        0o644,
    );
    b.f.file("e/probe/cleanup.d/90-report", REPORT, 0o755);
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    eq(&b.out("uid"), "0", "id -u in the chroot")?;
    eq(
        &b.out("owned"),
        "1234:1234",
        "owner of a chowned file, seen from cleanup.d",
    )?;
    eq(&b.out("in_target"), "read-only", "/tmp/in_target.d")?;
    let nprocs: usize = b.out("nprocs").parse()?;
    check(
        nprocs < 10,
        format!("/proc in the chroot shows {nprocs} processes"),
    )?;
    check(
        b.out("pid1").contains("__sandbox-init"),
        format!("pid 1 is {:?}", b.out("pid1")),
    )?;
    eq(
        &b.out("env"),
        "/tmp/in_target.d /root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TMP_HOOKS_PATH HOME PATH in the chroot",
    )?;
    eq(
        &b.out("envd"),
        "sourced",
        "a variable exported by environment.d",
    )?;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    eq(
        &b.out("resolv_during"),
        host_resolv.trim_end(),
        "resolv.conf during the build",
    )?;
    eq(
        &b.out("resolv_after"),
        "nameserver 192.0.2.1",
        "the image's resolv.conf afterwards",
    )?;
    eq(&b.out("sudo"), "0", "sudo id -u in an outside phase")?;
    eq(
        &b.out("image_element"),
        "no-final-image probe tiny-os",
        "IMAGE_ELEMENT",
    )?;
    check(
        b.out("array").contains("[probe]="),
        format!("get_image_element_array: {}", b.out("array")),
    )?;
    b.assert_clean()
}

fn on_disk_builds_clean_up_chowned_files_and_log_to_a_file() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/10-own",
        "#!/bin/sh\nset -eu\nmkdir -p /srv/deep\ntouch /srv/deep/f\nchown -R 4321:4321 /srv\nchmod 0500 /srv/deep\necho owned\n",
        0o755,
    );
    let log = b.f.path("build.log");
    let mut cmd = b.command(&["tiny-os", "probe"], &[]);
    cmd.arg("--no-tmpfs").arg("--logfile").arg(&log);
    let o = cmd.output()?;
    succeeded(&o)?;
    let text = fs::read_to_string(&log)?;
    for want in [
        "| running install.d (1 scripts)\n",
        "| owned\n",
        "|   ",
        "10-own (probe)\n",
        "| build finished\n",
    ] {
        check(
            text.contains(want),
            format!("{want:?} not in the log file:\n{text}"),
        )?;
    }
    // Files the host user could not delete (owned by subordinate ids) are
    // removed from inside the namespace.
    b.assert_clean()
}

fn odd_output_and_large_hook_trees_are_fine() -> Result<(), Failed> {
    let b = Build::new();
    // Not UTF-8, then more output: the hook must not die of SIGPIPE.
    b.f.file(
        "e/probe/install.d/10-latin1",
        "#!/bin/sh\nprintf 'caf\\351\\n'\nsleep 0.1\necho after\n",
        0o755,
    );
    // More hook files than fit in one environment string (128 KiB).
    for i in 0..1500 {
        b.f.file(
            &format!("e/probe/static/many/file-with-a-long-name-{i:05}"),
            "x\n",
            0o644,
        );
    }
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains("| caf\u{fffd}\n") && err.contains("| after\n"),
        format!("stderr:\n{err}"),
    )?;
    b.assert_clean()
}

fn cleanup_never_reaches_through_a_hooks_bind_mount() -> Result<(), Failed> {
    // TMP_DIR as given, and through a symlink (regression: the build
    // directory's mounts were then not recognised and cleanup emptied the
    // bind-mounted host directory).
    for via_link in [false, true] {
        let b = Build::new();
        let victim = b.out.join("victim");
        fs::create_dir(&victim)?;
        fs::write(victim.join("data"), "precious\n")?;
        b.f.file(
            "e/probe/root.d/20-bind",
            &format!(
                "#!/bin/bash\nset -eu\nmkdir -p \"$TARGET_ROOT/var/cache/x\"\nmount --bind {} \"$TARGET_ROOT/var/cache/x\"\n",
                victim.display()
            ),
            0o755,
        );
        b.f.file("e/probe/install.d/20-fail", "#!/bin/sh\nexit 5\n", 0o755);
        let link = b.f.path("tmp-link");
        std::os::unix::fs::symlink(&b.tmp, &link)?;
        let tmp_dir = if via_link {
            link.display().to_string()
        } else {
            b.tmp.display().to_string()
        };
        let mut cmd = b.command(&["tiny-os", "probe"], &[("TMP_DIR", &tmp_dir)]);
        cmd.arg("--no-tmpfs");
        let o = cmd.output()?;
        check(!o.status.success(), "the build should fail")?;
        eq(
            &fs::read_to_string(victim.join("data")).unwrap_or_default(),
            "precious\n",
            &format!("the bind-mounted host file (TMP_DIR through a symlink: {via_link})"),
        )?;
        let err = String::from_utf8_lossy(&o.stderr);
        check(!err.contains("warning"), format!("cleanup warned:\n{err}"))?;
        b.assert_clean()?;
    }
    Ok(())
}

fn resolv_conf_follows_what_the_hooks_did() -> Result<(), Failed> {
    // (install.d hook, what /etc/resolv.conf is after the build)
    let cases = [
        (
            "ln -sf ../run/resolve/stub-resolv.conf /etc/resolv.conf",
            "link:../run/resolve/stub-resolv.conf",
        ),
        ("rm -f /etc/resolv.conf", "file:nameserver 192.0.2.1"),
        (
            "echo 'nameserver 198.51.100.1' > /etc/resolv.conf",
            "file:nameserver 192.0.2.1",
        ),
    ];
    for (hook, want) in cases {
        let b = Build::new();
        b.f.file(
            "e/probe/install.d/10-resolv",
            &format!("#!/bin/sh\nset -eu\n{hook}\n"),
            0o755,
        );
        b.f.file(
            "e/probe/cleanup.d/90-report",
            "#!/bin/bash\nset -eu\nf=\"$TARGET_ROOT/etc/resolv.conf\"\n\
             if [ -L \"$f\" ]; then echo \"link:$(readlink \"$f\")\"; else echo \"file:$(cat \"$f\")\"; fi > \"$DIB_TEST_OUT/resolv\"\n\
             ls -A \"$TARGET_ROOT/etc\" > \"$DIB_TEST_OUT/etc\"\n",
            0o755,
        );
        let o = b.run(&["tiny-os", "probe"], &[]);
        succeeded(&o)?;
        eq(&b.out("resolv"), want, hook)?;
        check(
            !b.out("etc").contains("dib-saved"),
            format!("{hook}: /etc holds {}", b.out("etc")),
        )?;
    }
    Ok(())
}

fn early_stop_signals_never_let_a_build_succeed() -> Result<(), Failed> {
    use nix::sys::signal::{kill, Signal};
    for i in 0..20u64 {
        let b = Build::new();
        b.f.file("e/probe/install.d/10-nop", "#!/bin/sh\ntrue\n", 0o755);
        let mut child = b
            .command(&["tiny-os", "probe"], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(i * 3 / 2));
        kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGTERM,
        )?;
        let status = child.wait()?;
        check(
            !status.success(),
            format!("SIGTERM after {} ms: the build succeeded", i * 3 / 2),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

/// (path, uid, gid, mode, xattrs) of an archive entry.
struct TarEntry(String, u64, u64, u32, Vec<String>);

/// Every entry of a tar stream.
fn tar_entries<R: std::io::Read>(r: R) -> Result<Vec<TarEntry>, Failed> {
    let mut archive = tar::Archive::new(r);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        let h = entry.header();
        let (uid, gid, mode) = (h.uid()?, h.gid()?, h.mode()?);
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Ok(key) = ext.key() {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.push(format!(
                            "{name}={}",
                            String::from_utf8_lossy(ext.value_bytes())
                        ));
                    }
                }
            }
        }
        out.push(TarEntry(path, uid, gid, mode, xattrs));
    }
    Ok(out)
}

fn tar_and_tgz_keep_owners_modes_and_xattrs() -> Result<(), Failed> {
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

fn a_failed_build_leaves_no_output() -> Result<(), Failed> {
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

/// (type, label, uuid) of the filesystem at byte `offset` of `image`.
fn probe_fs(image: &Path, offset: u64) -> Result<String, Failed> {
    let o = Command::new("blkid")
        .args(["-p", "-o", "export", "-O", &offset.to_string()])
        .arg(image)
        .output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("-")
            .to_string()
    };
    Ok(format!("{} {} {}", get("TYPE"), get("LABEL"), get("UUID")))
}

fn offline_image_matches_its_configuration() -> Result<(), Failed> {
    let b = Build::new();
    let layout = common::full_gpt_layout();
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
    let table = Command::new("sfdisk").arg("--json").arg(&raw).output()?;
    succeeded(&table)?;
    let v: serde_json::Value = serde_json::from_slice(&table.stdout)?;
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let summary: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap_or("?"),
                p["type"].as_str().unwrap_or("?")
            )
        })
        .collect();
    eq(
        &format!("{} {summary:?}", v["partitiontable"]["label"].as_str().unwrap_or("?")),
        "gpt [\"ESP C12A7328-F81F-11D2-BA4B-00A0C93EC93B\", \"BSP 21686148-6449-6E6F-744E-656564454649\", \
         \"swap 0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\", \"root 0FC63DAF-8483-4772-8E79-3D69D8477DE4\"]",
        "the partition table",
    )?;
    let start = |i: usize| parts[i]["start"].as_u64().unwrap_or(0);
    check(
        (0..4).all(|i| start(i) % 2048 == 0),
        "partitions are 1 MiB aligned",
    )?;
    let fss: Vec<String> = [0, 2, 3]
        .iter()
        .map(|&i| probe_fs(&raw, start(i) * 512))
        .collect::<Result<_, _>>()?;
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
    let root = b.f.path("root.ext4");
    let dd = Command::new("dd")
        .arg(format!("if={}", raw.display()))
        .arg(format!("of={}", root.display()))
        .arg(format!("skip={}", start(3)))
        .args(["bs=512", "conv=sparse", "status=none"])
        .output()?;
    succeeded(&dd)?;
    let fsck = Command::new("e2fsck").arg("-fn").arg(&root).output()?;
    check(
        fsck.status.success(),
        format!("e2fsck -fn: {}", String::from_utf8_lossy(&fsck.stdout)),
    )?;
    let debugfs = |req: &str| -> Result<String, Failed> {
        let o = Command::new("debugfs")
            .args(["-R", req])
            .arg(&root)
            .output()?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
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

fn bad_block_device_input_fails_clearly_and_leaves_nothing() -> Result<(), Failed> {
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

fn a_symlink_bound_for_a_fat_filesystem_fails_the_build() -> Result<(), Failed> {
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

fn get_kernel_reads_qcow2_and_gpt_images_without_privilege() -> Result<(), Failed> {
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

fn ubuntu_without_a_mirror_or_keyring_fails_clearly() -> Result<(), Failed> {
    // (environment, expected message)
    let cases: [(&[(&str, &str)], &str); 2] = [
        (
            &[],
            "ubuntu-minimal: no ubuntu mirror for 'noble': set DIB_DISTRIBUTION_MIRROR, or add a deb source for noble",
        ),
        (
            &[
                ("DIB_DISTRIBUTION_MIRROR", "http://mirror.invalid/ubuntu"),
                ("DIB_DEBOOTSTRAP_KEYRING", "/nonexistent/ubuntu-archive-keyring.gpg"),
            ],
            "ubuntu-minimal: the archive keyring /nonexistent/ubuntu-archive-keyring.gpg is missing",
        ),
    ];
    for (env, want) in cases {
        let b = Build::new();
        let o = b
            .dib(
                &[
                    "create",
                    "-n",
                    "-t",
                    "tar",
                    "-o",
                    &b.out.join("u").display().to_string(),
                    "ubuntu-minimal",
                ],
                env,
            )
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        check(
            !o.status.success() && err.contains(want),
            format!("{env:?}:\n{err}"),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

fn a_failing_script_fails_the_build_naming_it() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/20-fail",
        "#!/bin/sh\necho about to fail\nexit 3\n",
        0o755,
    );
    b.f.file(
        "e/probe/post-install.d/10-never",
        "#!/bin/sh\ntouch /never\n",
        0o755,
    );
    let o = b.run(&["tiny-os", "probe"], &[]);
    eq(&format!("{:?}", o.status.code()), "Some(1)", "exit code")?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.ends_with(
            "dib: error: install.d/20-fail of element 'probe' failed with exit status 3; its last lines:\n    about to fail\n",
        ),
        format!("stderr:\n{err}"),
    )?;
    check(
        !err.contains("post-install.d"),
        "a phase ran after the failure",
    )?;
    b.assert_clean()
}

fn an_empty_root_is_a_failed_deploy() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/nothing-os/element-provides", "operating-system\n", 0o644);
    b.f.file("e/nothing-os/root.d/10-nothing", "#!/bin/sh\ntrue\n", 0o755);
    let o = b.run(&["nothing-os"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains(
            "dib: error: Failed to deploy the root element: root.d left TARGET_ROOT empty",
        ),
        format!("stderr:\n{err}"),
    )?;
    b.assert_clean()
}

fn symlinks_in_the_image_cannot_point_the_build_at_the_host() -> Result<(), Failed> {
    // (directory replaced by a symlink to a host directory, expected message)
    for dir in ["tmp", "etc"] {
        let b = Build::new();
        let victim = b.out.join("victim");
        fs::create_dir(&victim)?;
        fs::write(victim.join("keep"), "mine\n")?;
        b.f.file(
            "e/probe/root.d/20-hostile",
            &format!(
                "#!/bin/bash\nset -eu\nrm -rf \"$TARGET_ROOT/{dir}\"\nln -s {} \"$TARGET_ROOT/{dir}\"\n",
                victim.display()
            ),
            0o755,
        );
        b.f.file("e/probe/install.d/10-nop", "#!/bin/sh\ntrue\n", 0o755);
        let o = b.run(&["tiny-os", "probe"], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        check(
            !o.status.success()
                && err.contains(&format!(
                    "the image's /{dir} is not a directory (a symlink?); refusing to use it"
                )),
            format!("/{dir} as a symlink: {}\n{err}", o.status),
        )?;
        let names: Vec<_> = fs::read_dir(&victim)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        check(
            names == ["keep"],
            format!("the host directory was touched: {names:?}"),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

fn a_daemon_started_by_a_hook_dies_with_its_phase() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/10-daemon",
        "#!/bin/sh\nsleep 876541 >/dev/null 2>&1 &\necho started\n",
        0o755,
    );
    b.f.file(
        "e/probe/post-install.d/10-check",
        "#!/bin/sh\nif ps | grep -v grep | grep -q 'sleep 876541'; then echo alive; else echo gone; fi > /root/daemon\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/90-report",
        "#!/bin/bash\nset -eu\ncp \"$TARGET_ROOT/root/daemon\" \"$DIB_TEST_OUT/\"\n",
        0o755,
    );
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    eq(&b.out("daemon"), "gone", "the daemon in the next phase")?;
    let left = processes_with("876541");
    check(
        left.is_empty(),
        format!("left running on the host: {left:?}"),
    )?;
    b.assert_clean()
}

/// Start a build whose extra-data.d waits forever; return once it started.
fn start_waiting_build(b: &Build, marker: &str) -> Result<Child, Failed> {
    b.f.file(
        "e/probe/extra-data.d/10-wait",
        &format!("#!/bin/bash\nsleep {marker}\n"),
        0o755,
    );
    b.f.file("e/probe/install.d/10-daemon", "#!/bin/sh\nsleep 1\n", 0o755);
    let child = b
        .command(&["tiny-os", "probe"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Ready when the hook's process runs (not when it was about to).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !processes_with(&format!("sleep {marker}"))
        .iter()
        .any(|p| p.ends_with(&format!("sleep {marker} ")))
    {
        check(
            Instant::now() < deadline,
            "the build's extra-data.d hook did not run in 60 s",
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn wait_until_gone(marker: &str) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return Ok(());
        }
        check(
            Instant::now() < deadline,
            format!("still running 10 s later: {left:?}"),
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_signals_leave_no_process_or_mount() -> Result<(), Failed> {
    use nix::sys::signal::{kill, Signal};
    // (signal, marker, exit code): SIGINT is what Ctrl-C sends.
    for (sig, marker, code) in [
        (Signal::SIGTERM, "876542", 143),
        (Signal::SIGINT, "876544", 130),
    ] {
        let b = Build::new();
        let mut child = start_waiting_build(&b, marker)?;
        kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)?;
        let status = child.wait()?;
        eq(
            &format!("{:?}", status.code()),
            &format!("Some({code})"),
            &format!("exit code after {sig}"),
        )?;
        wait_until_gone(marker)?;
        b.assert_clean()?;
    }
    Ok(())
}

fn after_error_opens_a_shell_then_fails() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/20-fail", "#!/bin/sh\nexit 4\n", 0o755);
    let mut cmd = b.command(&["tiny-os", "probe"], &[("break", "after-error")]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"echo in-shell-$((40+2)) $(id -u)\nexit 0\n")?;
    let o = child.wait_with_output()?;
    eq(&format!("{:?}", o.status.code()), "Some(1)", "exit code")?;
    let out = String::from_utf8_lossy(&o.stdout);
    check(
        out.contains("in-shell-42 0"),
        format!("the shell did not answer; stdout:\n{out}"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains("break=after-error: starting a shell in the chroot")
            && err.ends_with(
                "dib: error: install.d/20-fail of element 'probe' failed with exit status 4\n",
            ),
        format!("stderr:\n{err}"),
    )?;
    b.assert_clean()
}

fn kill_9_of_dib_takes_the_build_down() -> Result<(), Failed> {
    let b = Build::new();
    let mut child = start_waiting_build(&b, "876543")?;
    child.kill()?;
    child.wait()?;
    wait_until_gone("876543")?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    check(
        !mounts.contains(&b.tmp.display().to_string()),
        "a build mount is visible on the host",
    )
}

/// Start a build whose squashfs output takes a while (200 MB of random
/// data through xz) and return it once mksquashfs runs.
fn start_slow_output(b: &Build) -> Result<Child, Failed> {
    b.f.file(
        "e/probe/root.d/50-bulk",
        "#!/bin/bash\nset -eu\nhead -c 200M /dev/urandom > \"$TARGET_ROOT/bulk\"\n",
        0o755,
    );
    let out = b.f.path("images/img").display().to_string();
    let mut child = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "raw,squashfs",
                "-o",
                &out,
                "tiny-os",
                "probe",
            ],
            &[],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let marker = b.tmp.display().to_string();
    // As /proc shows it: with no symlink on the way (TMPDIR may have one).
    let images = fs::canonicalize(b.f.dir.path())?.join("images");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Ready when mksquashfs has written into its output (a file with no
    // name in images/), as its open files say.
    while !processes_with(&marker)
        .iter()
        .filter(|p| p.contains("mksquashfs"))
        .filter_map(|p| p.split(':').next())
        .any(|pid| writes_under(pid, &images))
    {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            return Err("mksquashfs never wrote its output".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// Whether process `pid` has a file under `dir` open that is not empty.
fn writes_under(pid: &str, dir: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir))
            && fs::metadata(fd.path()).is_ok_and(|m| m.len() > 0)
    })
}

/// What a build left in its output directory `images/` (nothing when the
/// directory was never made).
fn images_left(b: &Build) -> Result<Vec<std::ffi::OsString>, Failed> {
    match fs::read_dir(b.f.path("images")) {
        Ok(d) => Ok(d.flatten().map(|e| e.file_name()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn stopping_while_writing_outputs_leaves_no_file() -> Result<(), Failed> {
    // SIGTERM: the running tool is killed at once, the build reports the
    // signal, and nothing is left.
    let b = Build::new();
    let child = start_slow_output(&b)?;
    let asked = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let o = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        asked.elapsed() < Duration::from_secs(5),
        format!("the build took {:?} to stop", asked.elapsed()),
    )?;
    check(
        o.status.code() == Some(128 + 15) && err.contains("build interrupted by signal 15"),
        format!("status {:?}, stderr:\n{err}", o.status),
    )?;
    let left = images_left(&b)?;
    check(
        left.is_empty(),
        format!("SIGTERM while writing outputs left: {left:?}"),
    )?;
    wait_until_gone(&b.tmp.display().to_string())?;
    b.assert_clean()?;

    // kill -9 of dib: the unnamed outputs go with the processes.
    let b = Build::new();
    let mut child = start_slow_output(&b)?;
    child.kill()?;
    child.wait()?;
    wait_until_gone(&b.tmp.display().to_string())?;
    let left = images_left(&b)?;
    check(
        left.is_empty(),
        format!("kill -9 while writing outputs left: {left:?}"),
    )
}

fn skipped_hooks_are_listed_with_x() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/10-foo.sh", "#!/bin/sh\ntrue\n", 0o755);
    b.f.file("e/probe/install.d/20-notexec", "#!/bin/sh\ntrue\n", 0o644);
    let mut cmd = b.command(&["tiny-os", "probe"], &[]);
    cmd.arg("-x");
    let o = cmd.output()?;
    succeeded(&o)?;
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "| install.d: skipping 10-foo.sh: name has characters other than 0-9 A-Z a-z _ -\n",
        "| install.d: skipping 20-notexec: not executable\n",
    ] {
        check(
            err.contains(want),
            format!("{want:?} not in stderr:\n{err}"),
        )?;
    }
    Ok(())
}

fn break_shell_answers_on_a_terminal() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/10-nop", "#!/bin/sh\ntrue\n", 0o755);
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)?;
    let slave = fs::File::from(pty.slave);
    let mut cmd = b.command(&["tiny-os", "probe"], &[("break", "after-install")]);
    cmd.stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave);
    let mut child = cmd.spawn()?;
    drop(cmd);
    let mut master = fs::File::from(pty.master);
    let mut reader = master.try_clone()?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |what: &str| -> Result<(), Failed> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => seen.push_str(&s),
                Err(_) => {
                    return Err(
                        format!("{what:?} did not appear; the terminal showed:\n{seen}").into(),
                    )
                }
            }
        }
        Ok(())
    };
    wait_for("break=after-install: starting a shell in the chroot")?;
    master.write_all(b"echo marker-$((6*7)) $(id -u); exit\n")?;
    wait_for("marker-42 0")?;
    wait_for("build finished")?;
    let status = child.wait()?;
    check(status.success(), format!("dib exited with {status}"))?;
    b.assert_clean()
}

fn as_root_ids_map_to_themselves() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/10-own",
        "#!/bin/sh\nset -eu\nid -u > /root/uid\ntouch /root/owned\nchown 1234:1234 /root/owned\n",
        0o755,
    );
    b.f.file(
        "e/probe/cleanup.d/90-report",
        "#!/bin/bash\nset -eu\ncp \"$TARGET_ROOT/root/uid\" \"$DIB_TEST_OUT/\"\nstat -c %u:%g \"$TARGET_ROOT/root/owned\" > \"$DIB_TEST_OUT/owned\"\ngrep -E '^ *0 +0 +65536$' /proc/self/uid_map > \"$DIB_TEST_OUT/uid_map\"\n",
        0o755,
    );
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    eq(&b.out("uid"), "0", "id -u in the chroot")?;
    eq(&b.out("owned"), "1234:1234", "owner of a chowned file")?;
    check(
        !b.out("uid_map").is_empty(),
        "the uid map is not the identity 0 0 65536",
    )?;
    b.assert_clean()
}

fn main() {
    let tests = trials![
        offline_image_matches_its_configuration,
        bad_block_device_input_fails_clearly_and_leaves_nothing,
        a_symlink_bound_for_a_fat_filesystem_fails_the_build,
        get_kernel_reads_qcow2_and_gpt_images_without_privilege,
        stopping_while_writing_outputs_leaves_no_file,
        chroot_phases_run_as_root_in_an_isolated_tree,
        a_failing_script_fails_the_build_naming_it,
        on_disk_builds_clean_up_chowned_files_and_log_to_a_file,
        an_empty_root_is_a_failed_deploy,
        a_daemon_started_by_a_hook_dies_with_its_phase,
        stop_signals_leave_no_process_or_mount,
        after_error_opens_a_shell_then_fails,
        ubuntu_without_a_mirror_or_keyring_fails_clearly,
        tar_and_tgz_keep_owners_modes_and_xattrs,
        a_failed_build_leaves_no_output,
        odd_output_and_large_hook_trees_are_fine,
        cleanup_never_reaches_through_a_hooks_bind_mount,
        resolv_conf_follows_what_the_hooks_did,
        early_stop_signals_never_let_a_build_succeed,
        symlinks_in_the_image_cannot_point_the_build_at_the_host,
        kill_9_of_dib_takes_the_build_down,
        skipped_hooks_are_listed_with_x,
        break_shell_answers_on_a_terminal,
    ];
    let in_ci = std::env::var("CI").as_deref() == Ok("true")
        && std::env::var("DIB_TIER2").as_deref() == Ok("1");
    // The identity mapping is dib's path as root: that trial runs only as root.
    let as_root = Trial::test(
        "as_root_ids_map_to_themselves",
        as_root_ids_map_to_themselves,
    )
    .with_ignored_flag(!nix::unistd::geteuid().is_root());
    run_trials(
        "tier 2 (user namespaces)",
        tests,
        skip_reason(),
        in_ci,
        vec![as_root],
    );
}
