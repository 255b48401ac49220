//! Tier 4: end to end against the real Debian mirror (the host's apt
//! sources, or DIB_DISTRIBUTION_MIRROR), as a plain user with a subuid range.
//!
//! The trials share one image cache (`DIB_E2E_CACHE`, default
//! `~/.cache/dib-e2e`), so the base tree is bootstrapped once per machine and
//! unpacked from the cache after that; concurrent trials meet at the cache
//! lock. Where this tier cannot run, its trials are ignored with the reason
//! (with CI=true they fail instead).

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::qemu::{self, Firmware};

use common::tier::{check, eq, run_trials, skip_reason, succeeded, Build};
use libtest_mimic::Failed;

fn cache() -> PathBuf {
    std::env::var_os("DIB_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/dib-e2e")
        })
}

/// `dib create --image-cache CACHE ARGS...` (base included).
fn create_cmd(b: &Build, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let cache = cache.display().to_string();
    let mut all = vec!["create", "--image-cache", cache.as_str()];
    all.extend_from_slice(args);
    b.dib(&all, env)
}

fn create(b: &Build, cache: &Path, args: &[&str]) -> Result<Output, Failed> {
    Ok(create_cmd(b, cache, args, &[]).output()?)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `tar -tv`-style facts of some members: "uid/gid mode" by path.
fn members(tarball: &Path, wanted: &[&str]) -> Result<Vec<String>, Failed> {
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
fn extract(tarball: &Path, into: &Path, paths: &[&str]) -> Result<(), Failed> {
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
struct Dpkg(String);

impl Dpkg {
    fn of(tree: &Path) -> Dpkg {
        Dpkg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
    }

    /// "installed" or "absent" (removed, purged or never there).
    fn state(&self, pkg: &str) -> Result<&'static str, Failed> {
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

    fn audit_is_clean(&self) -> Result<(), Failed> {
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

fn debian_minimal_tar_is_a_sound_debian_tree() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/50-marker",
        "#!/bin/bash\nset -eu\necho e2e > /etc/dib-e2e-marker\n",
        0o755,
    );
    b.f.file(
        "e/probe/package-installs.yaml",
        "file:\n  phase: post-install.d\ntree:\n  build-only: true\nnano:\n  when: DIB_E2E_NANO = yes\n",
        0o644,
    );
    // when: needs its variable set (DIB errors otherwise): environment.d does.
    b.f.file(
        "e/probe/environment.d/10-probe.bash",
        "export DIB_E2E_NANO=${DIB_E2E_NANO:-no}\n",
        0o644,
    );
    // Between the installs and the build-only removals of post-install.d.
    b.f.file(
        "e/probe/post-install.d/50-saw-tree",
        "#!/bin/bash\nset -eu\ncommand -v tree > /etc/dib-e2e-saw-tree\n",
        0o755,
    );
    let out = b.f.path("deb");
    let o = create(
        &b,
        &cache(),
        &[
            "-t",
            "tar",
            "-o",
            &out.display().to_string(),
            "-p",
            "less",
            "debian-minimal",
            "probe",
        ],
    )?;
    succeeded(&o)?;
    let tarball = b.f.path("deb.tar");
    let got = members(
        &tarball,
        &[
            "./etc/shadow",
            "./var/cache/apt/archives/partial/",
            "./etc/dib_environment",
            "./etc/dib-e2e-marker",
            "./usr/bin/less",
        ],
    )?;
    eq(
        &got.join("\n"),
        "./etc/dib-e2e-marker 0/0 644\n\
         ./etc/dib_environment 0/0 644\n\
         ./etc/shadow 0/42 640\n\
         ./usr/bin/less 0/0 755\n\
         ./var/cache/apt/archives/partial/ 42/0 700",
        "owners and modes in the tar",
    )?;
    // dpkg's view of the tree: nothing half-installed, less (from -p) in;
    // package-installs.yaml: file installed in post-install.d, tree only
    // while building, nano not at all (its when: does not hold).
    let x = b.f.path("x");
    extract(&tarball, &x, &["./var/lib/dpkg"])?;
    let dpkg = Dpkg::of(&x);
    dpkg.audit_is_clean()?;
    for (pkg, want) in [
        ("less", "installed"),
        ("file", "installed"),
        ("tree", "absent"),
        ("nano", "absent"),
    ] {
        eq(dpkg.state(pkg)?, want, &format!("package {pkg}"))?;
    }
    let saw = members(&tarball, &["./etc/dib-e2e-saw-tree"])?;
    check(
        saw.len() == 1,
        "the build-only package was not there during post-install.d",
    )?;
    // The .deb of less stays in the image cache for the next build, and
    // not in the image.
    let cached: Vec<String> = fs::read_dir(cache().join("apt"))?
        .flatten()
        .flat_map(|d| {
            fs::read_dir(d.path().join("archives"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    check(
        cached
            .iter()
            .any(|n| n.starts_with("less_") && n.ends_with(".deb")),
        format!("no less .deb in the image cache's apt archives: {cached:?}"),
    )?;
    let mut archive = tar::Archive::new(fs::File::open(&tarball)?);
    for entry in archive.entries()? {
        let path = entry?.path()?.display().to_string();
        check(
            !(path.starts_with("./var/cache/apt/archives/") && path.ends_with(".deb")),
            format!("a .deb was left in the image: {path}"),
        )?;
    }
    // The build's own settings are gone from the image.
    let leftovers = members(
        &tarball,
        &[
            "./usr/sbin/policy-rc.d",
            "./etc/dpkg/dpkg.cfg.d/dib-unsafe-io",
        ],
    )?;
    check(
        leftovers.is_empty(),
        format!("build-time files left in the image: {leftovers:?}"),
    )?;
    b.assert_clean()
}

fn framework_elements_do_their_job() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/README.md", "probe\n", 0o644);
    b.f.file(
        "e/probe/bin/dib-probe-tool",
        "#!/bin/sh\necho tool\n",
        0o700,
    );
    b.f.file("e/probe/static/etc/dib-probe/secret.conf", "s=1\n", 0o600);
    b.f.file(
        "e/probe/element-deps",
        "apt-conf\napt-preferences\ninstall-bin\ninstall-static\n",
        0o644,
    );
    b.f.file(
        "e/probe/pkg-map",
        r#"{"family": {"debian": {"editor": "nano"}}, "default": {"editor": "vi", "none": ""}}"#,
        0o644,
    );
    b.f.file(
        "e/probe/post-install.d/50-report",
        "#!/bin/bash\nset -eu\n{\n\
         echo \"pkg-map: $(pkg-map --element probe editor none)\"\n\
         echo \"missing: $(pkg-map --element probe --missing-ok other)\"\n\
         echo \"init: ${DIB_INIT_SYSTEM:-none}\"\n\
         } > /etc/dib-probe-report\n",
        0o755,
    );
    // install-static follows the image's symlinked /lib (merged /usr) and
    // leaves existing directories' modes alone.
    b.f.file("e/probe/static/lib/dib-probe/data", "d\n", 0o644);
    std::fs::set_permissions(
        b.f.path("e/probe/static/etc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    // environment.d sees the tree when package lists are made (as DIB's
    // squash in extra-data.d), and package-installs.yaml's when: uses it.
    b.f.file(
        "e/probe/environment.d/10-probe.bash",
        "if [ -e \"${TMP_MOUNT_PATH:-/nonexistent}/etc/debian_version\" ] || [ -e /tmp/in_target.d ]; then\n\
         \x20   export DIB_E2E_HAS_TREE=yes\nelse\n    export DIB_E2E_HAS_TREE=no\nfi\n",
        0o644,
    );
    b.f.file(
        "e/probe/package-installs.yaml",
        "ed:\n  when: DIB_E2E_HAS_TREE = yes\n  colour: red\n",
        0o644,
    );
    // apt used directly by a hook, install-packages -m mapping through
    // pkg-map, and install-packages in finalise.d.
    b.f.file(
        "e/probe/install.d/60-apt",
        "#!/bin/bash\nset -eu\napt-get install -y -q --no-install-recommends bc\n",
        0o755,
    );
    b.f.file(
        "e/probe/install.d/61-mapped",
        "#!/bin/bash\nset -eu\ninstall-packages -m probe editor\n",
        0o755,
    );
    b.f.file(
        "e/probe/finalise.d/50-late",
        "#!/bin/bash\nset -eu\ninstall-packages dc\n",
        0o755,
    );
    let apt_conf =
        b.f.file("apt.conf", "APT::Get::Assume-Yes \"true\";\n", 0o644);
    let manifest = b.f.file("manifest", "less 590-2.1~deb12u2\n", 0o644);
    let out = b.f.path("img").display().to_string();
    let (apt_conf, manifest) = (
        apt_conf.display().to_string(),
        manifest.display().to_string(),
    );
    let o = create_cmd(
        &b,
        &cache(),
        &["-t", "tar", "-o", &out, "debian-minimal", "probe"],
        &[
            ("DIB_APT_CONF", &apt_conf),
            ("DIB_DPKG_MANIFEST", &manifest),
        ],
    )
    .output()?;
    succeeded(&o)?;
    let tarball = b.f.path("img.tar");
    eq(
        &members(
            &tarball,
            &[
                "./usr/local/bin/dib-probe-tool",
                "./etc/dib-probe/secret.conf",
                "./etc/apt/apt.conf",
                "./etc/apt/preferences",
                "./etc/dib-manifests/dib_environment",
            ],
        )?
        .join("\n"),
        "./etc/apt/apt.conf 0/0 644\n\
         ./etc/apt/preferences 0/0 644\n\
         ./etc/dib-manifests/dib_environment 0/0 644\n\
         ./etc/dib-probe/secret.conf 0/0 600\n\
         ./usr/local/bin/dib-probe-tool 0/0 755",
        "files the framework elements installed",
    )?;
    let x = b.f.path("x");
    extract(
        &tarball,
        &x,
        &[
            "./etc/dib-probe-report",
            "./etc/apt/preferences",
            "./var/lib/dpkg",
        ],
    )?;
    check(
        stderr(&o).contains("unknown key 'colour' ignored"),
        format!("no warning about the unknown key:\n{}", stderr(&o)),
    )?;
    let dpkg = Dpkg::of(&x);
    for pkg in ["ed", "bc", "nano", "dc"] {
        eq(dpkg.state(pkg)?, "installed", pkg)?;
    }
    let modes = members(&tarball, &["./etc/", "./usr/lib/dib-probe/data"])?;
    eq(
        &modes.join("\n"),
        "./etc/ 0/0 755\n./usr/lib/dib-probe/data 0/0 644",
        "install-static: /etc's mode, and a file under the symlinked /lib",
    )?;
    eq(
        fs::read_to_string(x.join("etc/dib-probe-report"))?.trim_end(),
        "pkg-map: nano\nmissing: other\ninit: systemd",
        "what the hooks saw",
    )?;
    eq(
        fs::read_to_string(x.join("etc/apt/preferences"))?.trim_end(),
        "Package: less\nPin: version 590-2.1~deb12u2\nPin-Priority: 1001",
        "apt preferences from the manifest",
    )?;
    // manifests: a copy beside the output, with the dpkg manifest.
    let saved = b.f.path("img.d/dib-manifests");
    check(
        saved.join("dib_environment").is_file(),
        "no img.d/dib-manifests/dib_environment",
    )?;
    let dpkg_manifest = fs::read_to_string(saved.join("dib-manifest-dpkg-img"))?;
    check(
        dpkg_manifest.lines().any(|l| l.starts_with("dpkg ")),
        format!("the dpkg manifest lists no dpkg: {dpkg_manifest}"),
    )?;
    b.assert_clean()
}

fn the_debian_element_is_cloud_ready() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("cloud");
    let o = create(
        &b,
        &cache(),
        &["-t", "tar", "-o", &out.display().to_string(), "debian"],
    )?;
    succeeded(&o)?;
    let tarball = b.f.path("cloud.tar");
    let x = b.f.path("x");
    extract(&tarball, &x, &["./var/lib/dpkg"])?;
    let dpkg = Dpkg::of(&x);
    for pkg in ["openssh-server", "cloud-init", "cloud-guest-utils", "sudo"] {
        eq(dpkg.state(pkg)?, "installed", pkg)?;
    }
    dpkg.audit_is_clean()?;
    let mut archive = tar::Archive::new(fs::File::open(&tarball)?);
    for entry in archive.entries()? {
        let path = entry?.path()?.display().to_string();
        check(
            !path.starts_with("./etc/ssh/ssh_host_"),
            format!("a build-time ssh host key is in the image: {path}"),
        )?;
    }
    b.assert_clean()
}

fn concurrent_cold_builds_share_one_bootstrap() -> Result<(), Failed> {
    let b = Build::new();
    let cache = b.f.path("fresh-cache");
    let spawn = |name: &str| -> Result<std::process::Child, Failed> {
        let out = b.f.path(name).display().to_string();
        Ok(create_cmd(
            &b,
            &cache,
            &["-t", "tar", "-o", &out, "debian-minimal"],
            &[],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?)
    };
    let (one, two) = (spawn("one")?, spawn("two")?);
    let (one, two) = (one.wait_with_output()?, two.wait_with_output()?);
    succeeded(&one)?;
    succeeded(&two)?;
    let logs = format!("{}{}", stderr(&one), stderr(&two));
    let count = |what: &str| logs.matches(what).count();
    eq(
        &format!(
            "{} {}",
            count("debian-minimal: bootstrapping"),
            count("debian-minimal: unpacking the cached base")
        ),
        "1 1",
        "bootstraps and unpacks across the two builds",
    )?;
    // Both trees are the same: the cached tarball is whole.
    let list = |p: &Path| -> Result<usize, Failed> {
        Ok(tar::Archive::new(fs::File::open(p)?).entries()?.count())
    };
    eq(
        &list(&b.f.path("one.tar"))?.to_string(),
        &list(&b.f.path("two.tar"))?.to_string(),
        "entries in the two outputs",
    )?;
    b.assert_clean()
}

fn apt_sources_replaces_the_images_sources() -> Result<(), Failed> {
    let b = Build::new();
    // The sources the bootstrap used (from a first build's tree), plus a
    // marker: still valid for installing, and recognisable afterwards.
    let first = b.f.path("first").display().to_string();
    succeeded(&create(
        &b,
        &cache(),
        &["-t", "tar", "-o", &first, "debian-minimal"],
    )?)?;
    let x = b.f.path("x");
    extract(&b.f.path("first.tar"), &x, &["./etc/apt/sources.list"])?;
    let sources = format!(
        "# dib-e2e apt-sources\n{}",
        fs::read_to_string(x.join("etc/apt/sources.list"))?
    );
    let file =
        b.f.file("sources.list", &sources, 0o644)
            .display()
            .to_string();
    b.f.file("e/probe/element-deps", "apt-sources\n", 0o644);
    let second = b.f.path("second").display().to_string();
    let o = create_cmd(
        &b,
        &cache(),
        &[
            "-t",
            "tar",
            "-o",
            &second,
            "-p",
            "less",
            "debian-minimal",
            "probe",
        ],
        &[("DIB_APT_SOURCES", &file)],
    )
    .output()?;
    succeeded(&o)?;
    let y = b.f.path("y");
    extract(&b.f.path("second.tar"), &y, &["./etc/apt/sources.list"])?;
    eq(
        &fs::read_to_string(y.join("etc/apt/sources.list"))?,
        &sources,
        "the image's sources.list",
    )?;
    b.assert_clean()
}

fn a_warm_build_unpacks_the_cached_base() -> Result<(), Failed> {
    let b = Build::new();
    let cache = cache();
    succeeded(&create(
        &b,
        &cache,
        &[
            "-t",
            "tar",
            "-o",
            &b.f.path("one").display().to_string(),
            "debian-minimal",
        ],
    )?)?;
    let o = create(
        &b,
        &cache,
        &[
            "-t",
            "tar",
            "-o",
            &b.f.path("two").display().to_string(),
            "debian-minimal",
        ],
    )?;
    succeeded(&o)?;
    check(
        stderr(&o).contains("debian-minimal: unpacking the cached base"),
        format!("the second build did not use the cache:\n{}", stderr(&o)),
    )?;
    b.assert_clean()
}

fn offline_builds_use_only_the_cache() -> Result<(), Failed> {
    let b = Build::new();
    // Nothing cached: a clear error, nothing left behind.
    let empty = b.f.path("empty-cache");
    let o = create(
        &b,
        &empty,
        &[
            "--offline",
            "-t",
            "tar",
            "-o",
            &b.f.path("no").display().to_string(),
            "debian-minimal",
        ],
    )?;
    check(
        !o.status.success(),
        "an offline build with an empty cache succeeded",
    )?;
    check(
        stderr(&o).contains("debian-minimal: offline, and no cached base tree for"),
        format!("stderr:\n{}", stderr(&o)),
    )?;
    check(!b.f.path("no.tar").exists(), "an output was written")?;
    // With the shared cache filled, offline works.
    let cache = cache();
    succeeded(&create(
        &b,
        &cache,
        &[
            "-t",
            "tar",
            "-o",
            &b.f.path("fill").display().to_string(),
            "-p",
            "less",
            "debian-minimal",
        ],
    )?)?;
    succeeded(&create(
        &b,
        &cache,
        &[
            "--offline",
            "-t",
            "tar",
            "-o",
            &b.f.path("yes").display().to_string(),
            "-p",
            "less",
            "debian-minimal",
        ],
    )?)?;
    // A package no online build fetched cannot come from nowhere.
    let o = create(
        &b,
        &cache,
        &[
            "--offline",
            "-t",
            "tar",
            "-o",
            &b.f.path("hello").display().to_string(),
            "-p",
            "hello",
            "debian-minimal",
        ],
    )?;
    check(
        !o.status.success(),
        "an offline build installed a package it never downloaded",
    )?;
    check(
        stderr(&o).contains(
            "install-packages: offline, and some of hello (or what they need) were never downloaded",
        ),
        format!("stderr:\n{}", stderr(&o)),
    )?;
    b.assert_clean()
}

/// Seconds a boot may take to print the marker (TCG; about 30 s here).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `dib create ... debian-minimal vm boot-marker LAYOUT` into `b`'s `deb.*`.
fn build_vm(b: &Build, extra: &[&str], types: &str) -> Result<PathBuf, Failed> {
    let mut args = vec!["--checksum"];
    args.extend_from_slice(extra);
    build_vm_with(b, &args, types, &[]).map(|(out, _)| out)
}

/// `build_vm` with more arguments and environment: the output's path and
/// dib's stderr.
fn build_vm_with(
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

/// The dib-helper scripts/test started for the test user.
fn helper_socket() -> Option<PathBuf> {
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

fn helper_gpt_bios_image_boots() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm_with_helper(&b, &["block-device-gpt"], "qcow2,raw", &[])?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda2 fstype=ext4 efi=no ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let (_, parts) = partitions(&raw)?;
    check_root(&raw, parts[1].0, &b.f.path("root.ext4"))?;
    b.assert_clean()
}

/// The ESP is vfat, which this kernel may not mount: the helper makes it,
/// dib fills it with mtools; the image boots under OVMF all the same.
fn helper_efi_image_boots_under_ovmf() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm_with_helper(&b, &["block-device-efi"], "qcow2,raw", &[])?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Uefi,
        "dib-boot-marker: root=/dev/vda3 fstype=ext4 efi=yes ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let (_, parts) = partitions(&raw)?;
    check_root(&raw, parts[2].0, &b.f.path("root.ext4"))?;
    let ls = debugfs(&b.f.path("root.ext4"), "ls /boot/efi")?;
    check(
        !ls.contains("EFI"),
        format!("/boot/efi on the root filesystem is not empty: {ls}"),
    )?;
    b.assert_clean()
}

/// An xfs root (which only the helper backend makes) boots by BIOS: GRUB
/// reads it, the initramfs mounts it.
fn helper_xfs_root_boots() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm_with_helper(&b, &[], "qcow2", &[("FS_TYPE", "xfs")])?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda1 fstype=xfs efi=no ssh=inactive",
    )?;
    b.assert_clean()
}

/// Boot, and compare the marker line the booted system printed with `want`.
fn boots_to(image: &Path, firmware: Firmware, want: &str) -> Result<(), Failed> {
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

/// A partition as sfdisk lists it: start sector, type, bootable.
type Part = (u64, String, bool);

/// `sfdisk --json` of an image: its label and partitions.
fn partitions(image: &Path) -> Result<(String, Vec<Part>), Failed> {
    let o = Command::new("sfdisk").arg("--json").arg(image).output()?;
    succeeded(&o)?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let t = &v["partitiontable"];
    let parts = t["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap_or(0),
                p["type"].as_str().unwrap_or("").to_string(),
                p["bootable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    Ok((t["label"].as_str().unwrap_or("").to_string(), parts))
}

/// blkid's view of the filesystem at `sector` of `image`: KEY=value lines.
fn blkid(image: &Path, sector: u64) -> Result<String, Failed> {
    let o = Command::new("blkid")
        .args(["-p", "-o", "export", "-O", &(sector * 512).to_string()])
        .arg(image)
        .output()?;
    succeeded(&o)?;
    let mut keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| {
            ["LABEL=", "UUID=", "TYPE="]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(String::from)
        .collect();
    keys.sort();
    Ok(keys.join(" "))
}

/// The ext filesystem at `sector`, copied out (sparse) for e2fsprogs.
fn ext_partition(image: &Path, sector: u64, to: &Path) -> Result<PathBuf, Failed> {
    let o = Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=1M", "conv=sparse", "status=none"])
        .arg(format!("skip={}", sector * 512))
        .arg("iflag=skip_bytes")
        .output()?;
    succeeded(&o)?;
    Ok(to.to_path_buf())
}

fn debugfs(fs: &Path, request: &str) -> Result<String, Failed> {
    let o = Command::new("debugfs")
        .args(["-R", request])
        .arg(fs)
        .output()?;
    succeeded(&o)?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The root filesystem passes `e2fsck -fn`, keeps owners, and its fstab and
/// grub.cfg name it as blkid sees it; returns its UUID.
fn check_root(image: &Path, sector: u64, scratch: &Path) -> Result<String, Failed> {
    let ids = blkid(image, sector)?;
    let uuid = ids
        .split(' ')
        .find_map(|k| k.strip_prefix("UUID="))
        .unwrap_or_default()
        .to_string();
    eq(
        &ids.replace(&uuid, "U"),
        "LABEL=cloudimg-rootfs TYPE=ext4 UUID=U",
        "the root filesystem (blkid)",
    )?;
    let root = ext_partition(image, sector, scratch)?;
    let fsck = Command::new("e2fsck").arg("-fn").arg(&root).output()?;
    check(
        fsck.status.success(),
        format!(
            "e2fsck -fn: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            stderr(&fsck)
        ),
    )?;
    let shadow = debugfs(&root, "stat /etc/shadow")?;
    check(
        shadow.contains("User:     0   Group:    42"),
        format!("/etc/shadow is not root:shadow in the image:\n{shadow}"),
    )?;
    let grub = debugfs(&root, "cat /boot/grub/grub.cfg")?;
    check(
        grub.contains(&format!("root=UUID={uuid} ")),
        format!("grub.cfg does not boot root UUID {uuid}:\n{grub}"),
    )?;
    let fstab = debugfs(&root, "cat /etc/fstab")?;
    check(
        fstab.contains("LABEL=cloudimg-rootfs / ext4 defaults 0 1"),
        format!("fstab:\n{fstab}"),
    )?;
    Ok(uuid)
}

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

fn mbr_vm_image_boots_and_matches_its_plan() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm(&b, &[], "qcow2,raw,tar")?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda1 fstype=ext4 efi=no ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let (label, parts) = partitions(&raw)?;
    eq(
        &format!("{label} {parts:?}"),
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
fn debian_vm_boots_with_ssh() -> Result<(), Failed> {
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

fn gpt_bios_image_boots() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm(&b, &["block-device-gpt"], "qcow2")?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Bios,
        "dib-boot-marker: root=/dev/vda2 fstype=ext4 efi=no ssh=inactive",
    )?;
    b.assert_clean()
}

fn efi_image_boots_under_ovmf_and_matches_its_plan() -> Result<(), Failed> {
    let b = Build::new();
    let out = build_vm(&b, &["block-device-efi"], "qcow2,raw")?;
    boots_to(
        &out.with_extension("qcow2"),
        Firmware::Uefi,
        "dib-boot-marker: root=/dev/vda3 fstype=ext4 efi=yes ssh=inactive",
    )?;
    let raw = out.with_extension("raw");
    let (label, parts) = partitions(&raw)?;
    let types: Vec<&str> = parts.iter().map(|p| p.1.as_str()).collect();
    eq(
        &format!("{label} {types:?}"),
        "gpt [\"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\", \"21686148-6449-6E6F-744E-656564454649\", \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"]",
        "the partition table (ESP, BIOS boot, Linux)",
    )?;
    check_root(&raw, parts[2].0, &b.f.path("root.ext4"))?;
    let esp = blkid(&raw, parts[0].0)?;
    check(esp.contains("TYPE=vfat"), format!("the ESP: {esp}"))?;
    let esp_uuid = esp
        .split(' ')
        .find_map(|k| k.strip_prefix("UUID="))
        .unwrap_or_default();
    let root = b.f.path("root.ext4");
    let fstab = debugfs(&root, "cat /etc/fstab")?;
    check(
        fstab.contains(&format!("UUID={esp_uuid} /boot/efi vfat defaults 0 2")),
        format!("fstab does not mount the ESP {esp_uuid}:\n{fstab}"),
    )?;
    let mdir = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-b")
        .arg("-i")
        .arg(format!("{}@@{}", raw.display(), parts[0].0 * 512))
        .arg("::/EFI/BOOT")
        .output()?;
    succeeded(&mdir)?;
    check(
        String::from_utf8_lossy(&mdir.stdout).contains("BOOTX64.EFI"),
        format!(
            "the ESP has no EFI/BOOT/BOOTX64.EFI: {}",
            String::from_utf8_lossy(&mdir.stdout)
        ),
    )?;
    // The ESP's files live on the ESP only.
    let ls = debugfs(&root, "ls /boot/efi")?;
    check(
        !ls.contains("EFI"),
        format!("/boot/efi on the root filesystem is not empty: {ls}"),
    )?;
    b.assert_clean()
}

/// A Debian ramdisk: built as a plain user, booted with -kernel/-initrd;
/// its init.d fragment runs and sees the kernel's arguments and the disk
/// udev found; `troubleshoot` gives a shell that answers on the serial
/// console; a failing fragment offers one too.
fn debian_ramdisk_boots_runs_init_d_and_troubleshoots() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("rd");
    let out_s = out.display().to_string();
    let cache = cache().display().to_string();
    let started = std::time::Instant::now();
    let o = b
        .dib(
            &[
                "ramdisk",
                "--image-cache",
                &cache,
                "-o",
                &out_s,
                "debian-minimal",
                "ramdisk-probe",
            ],
            &[],
        )
        .output()?;
    succeeded(&o)?;
    let kernel = out.with_extension("kernel");
    let initrd = out.with_extension("initramfs");
    let size = fs::metadata(&initrd)?.len();
    eprintln!(
        "  ramdisk built in {:.1}s (warm), initramfs {:.1} MiB",
        started.elapsed().as_secs_f64(),
        size as f64 / (1u64 << 20) as f64
    );
    check(
        fs::read(&initrd)?.starts_with(&[0x1f, 0x8b]),
        "the initramfs is not gzip-compressed",
    )?;
    let disk = b.f.path("disk.raw");
    fs::File::create(&disk)?.set_len(1 << 20)?;
    let boot = |append: &str, script: &[(&str, &str)]| {
        qemu::converse(
            &qemu::DirectBoot {
                kernel: &kernel,
                initrd: &initrd,
                append,
                disk: Some(&disk),
                nic: None,
            },
            script,
            BOOT_TIMEOUT,
        )
    };
    boot(
        "console=ttyS0 dib_probe_arg=hello",
        &[
            ("dib-ramdisk-marker: hello disks=vda lsblk=vda rule=vda", ""),
            ("dib ramdisk: done", ""),
        ],
    )?;
    boot(
        "console=ttyS0 troubleshoot",
        &[
            ("troubleshooting shell", ""),
            ("# ", "echo answer-$((6*7))\n"),
            ("answer-42", "exit\n"),
            ("dib-ramdisk-marker: none", ""),
            ("troubleshooting shell", ""),
            ("# ", "exit\n"),
            ("Power down", ""),
        ],
    )?;
    boot(
        "console=ttyS0 dib_probe_fail=1",
        &[
            ("ERROR in 50-probe", ""),
            ("press t", "t"),
            ("troubleshooting shell", ""),
            ("# ", "echo failed-$((2+3))\n"),
            ("failed-5", "exit\n"),
            ("Power down", ""),
        ],
    )?;
    b.assert_clean()
}

/// A free TCP port on the host loopback.
fn free_port() -> Result<u16, Failed> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Accept one HTTP request on `listener` within `timeout`, answer 202, and
/// return its request line and body.
fn one_http_request(
    listener: &std::net::TcpListener,
    timeout: Duration,
    gone: &dyn Fn() -> bool,
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
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
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
    w.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    Ok((
        request.trim().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// deploy-ironic: the ramdisk posts pass_deploy_info to an HTTP server on
/// the host loopback, exports its disk over iSCSI (read through a
/// forwarded port with qemu's userspace initiator), and reboots when told
/// `done` on port 10000.
fn deploy_ironic_ramdisk_reports_and_exports_its_disk() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("deploy");
    let out_s = out.display().to_string();
    let cache = cache().display().to_string();
    let started = std::time::Instant::now();
    succeeded(
        &b.dib(
            &[
                "ramdisk",
                "--image-cache",
                &cache,
                "-o",
                &out_s,
                "debian-minimal",
                "deploy-ironic",
            ],
            &[],
        )
        .output()?,
    )?;
    let (kernel, initrd) = (
        out.with_extension("kernel"),
        out.with_extension("initramfs"),
    );
    eprintln!(
        "  deploy-ironic ramdisk built in {:.1}s (warm), initramfs {:.1} MiB",
        started.elapsed().as_secs_f64(),
        fs::metadata(&initrd)?.len() as f64 / (1u64 << 20) as f64
    );
    // The disk the ramdisk exports: a recognisable first sector.
    let disk = b.f.path("target.raw");
    let mut first = b"dib-iscsi-first-sector".to_vec();
    first.resize(512, 0);
    fs::write(&disk, &first)?;
    fs::OpenOptions::new()
        .write(true)
        .open(&disk)?
        .set_len(8 << 20)?;

    let api = std::net::TcpListener::bind("127.0.0.1:0")?;
    let api_port = api.local_addr()?.port();
    let (iscsi_port, done_port) = (free_port()?, free_port()?);
    let iqn = "iqn.2008-10.org.openstack:dib-e2e";
    let append = format!(
        "console=ttyS0 ironic_api_url=http://10.0.2.2:{api_port} deployment_id=node-1 \
         deployment_key=k3y iscsi_target_iqn={iqn} disk=cciss/c0d0,sda,hda,vda"
    );
    let nic = format!(
        "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{iscsi_port}-:3260,\
         hostfwd=tcp:127.0.0.1:{done_port}-:10000"
    );
    let machine = {
        let (kernel, initrd, disk, append) =
            (kernel.clone(), initrd.clone(), disk.clone(), append.clone());
        std::thread::spawn(move || {
            qemu::converse(
                &qemu::DirectBoot {
                    kernel: &kernel,
                    initrd: &initrd,
                    append: &append,
                    disk: Some(&disk),
                    nic: Some(nic),
                },
                &[
                    ("waiting for the deploy to finish", ""),
                    ("dib ramdisk: deploy finished", ""),
                    ("reboot", ""),
                ],
                BOOT_TIMEOUT,
            )
        })
    };
    let result = (|| -> Result<(), Failed> {
        let (request, body) = one_http_request(&api, BOOT_TIMEOUT, &|| machine.is_finished())?;
        eq(
            &request,
            "POST /v1/nodes/node-1/vendor_passthru/pass_deploy_info HTTP/1.1",
            "the deploy call",
        )?;
        let info: serde_json::Value = serde_json::from_str(&body)?;
        eq(
            &format!(
                "{} {} {} {}",
                info["address"], info["key"], info["iqn"], info["error"]
            ),
            &format!("\"10.0.2.15\" \"k3y\" \"{iqn}\" \"\""),
            "the deploy info",
        )?;
        // Log in as an initiator and read the first sector.
        let sector = b.f.path("sector");
        let dd = Command::new("qemu-img")
            .args(["dd", "-f", "raw", "-O", "raw", "bs=512", "count=1"])
            .arg(format!("if=iscsi://127.0.0.1:{iscsi_port}/{iqn}/1"))
            .arg(format!("of={}", sector.display()))
            .output()?;
        succeeded(&dd)?;
        check(
            fs::read(&sector)? == first,
            "the first sector read over iSCSI is not the disk's",
        )?;
        // The deploy service writes the image through the target.
        let url = format!("iscsi://127.0.0.1:{iscsi_port}/{iqn}/1");
        let write = Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "write -P 0x5a 4096 4096",
                "-c",
                "read -P 0x5a 4096 4096",
            ])
            .arg(&url)
            .output()?;
        succeeded(&write)?;
        check(
            !String::from_utf8_lossy(&write.stdout).contains("Pattern verification failed"),
            format!(
                "writing over iSCSI: {}",
                String::from_utf8_lossy(&write.stdout)
            ),
        )?;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", done_port))?;
        std::io::Write::write_all(&mut s, b"done")?;
        Ok(())
    })();
    let console = machine.join().map_err(|_| "the QEMU thread panicked")?;
    match (result, console) {
        (Ok(()), Ok(_)) => b.assert_clean(),
        (Err(e), Ok(log)) => {
            Err(format!("{}\n--- console ---\n{log}", e.message().map_or("", |m| m)).into())
        }
        (_, Err(e)) => Err(e),
    }
}

/// Why tier 4 cannot run here, beyond tier 2's reasons.
fn e2e_skip_reason() -> Option<String> {
    if let Some(r) = skip_reason() {
        return Some(r);
    }
    let tools = [
        "qemu-system-x86_64",
        "sfdisk",
        "mcopy",
        "mkfs.fat",
        "mmdebstrap",
        "/usr/lib/*/qemu/block-iscsi.so",
        "/usr/share/ovmf/OVMF.fd",
    ];
    if let Some(tool) = dib_sandbox::host_tools::missing(tools).first() {
        return Some(format!(
            "{tool} is not installed (scripts/prepare-host installs it)"
        ));
    }
    None
}

fn main() {
    let tests = trials![
        debian_minimal_tar_is_a_sound_debian_tree,
        a_warm_build_unpacks_the_cached_base,
        framework_elements_do_their_job,
        apt_sources_replaces_the_images_sources,
        the_debian_element_is_cloud_ready,
        concurrent_cold_builds_share_one_bootstrap,
        offline_builds_use_only_the_cache,
        mbr_vm_image_boots_and_matches_its_plan,
        gpt_bios_image_boots,
        debian_ramdisk_boots_runs_init_d_and_troubleshoots,
        deploy_ironic_ramdisk_reports_and_exports_its_disk,
        debian_vm_boots_with_ssh,
        efi_image_boots_under_ovmf_and_matches_its_plan,
    ];
    let skip = if std::env::var("DIB_SKIP_TIER4").as_deref() == Ok("1") {
        Some("scripts/test runs this tier on its own, after tier 2".to_string())
    } else {
        e2e_skip_reason()
    };
    let in_ci = std::env::var("CI").as_deref() == Ok("true")
        && std::env::var("DIB_TIER4").as_deref() == Ok("1");
    // The helper backend's boots need a dib-helper serving the test user.
    let helper_skip = skip.clone().or_else(|| {
        helper_socket().is_none().then(|| {
            "no dib-helper for the test user (DIB_TEST_HELPER_SOCKET; scripts/test starts one \
             as root)"
                .to_string()
        })
    });
    if let (Some(r), None) = (&helper_skip, &skip) {
        eprintln!("tier 4's helper trials skipped: {r}");
    }
    let helper = trials![
        helper_gpt_bios_image_boots,
        helper_efi_image_boots_under_ovmf,
        helper_xfs_root_boots,
    ];
    let extra = common::tier::trials(helper, &helper_skip, in_ci);
    run_trials("tier 4 (end to end)", tests, skip, in_ci, extra);
}
