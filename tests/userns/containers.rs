//! Container outputs read by the real container tools: skopeo inspects the
//! layout, umoci unpacks it rootless into the same tree as the tar output,
//! podman loads the docker-archive; the same tree gives the same digests;
//! a containerDisk holds the qcow2 as KubeVirt expects; a bad image
//! configuration fails the build with nothing written.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Command;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, run, succeeded, Build};
use crate::common::trees::{sha256_hex, umoci_unpacks_the_tar, xattr_value};
use crate::support::images_left;

/// The probe element: an owned setuid file with an xattr, a hard link, a
/// symlink, and image settings from its environment.d.
fn probe(b: &Build) {
    b.f.file(
        "e/oci-probe/install.d/10-files",
        "#!/bin/sh\nset -eu\nmkdir -p /srv/app\necho payload > /srv/app/owned\n\
         chown 1234:4321 /srv/app/owned\nchmod 4750 /srv/app/owned\n\
         ln /srv/app/owned /srv/app/hard\nln -s app/owned /srv/link\n",
        0o755,
    );
    b.f.file(
        "e/oci-probe/cleanup.d/10-xattr",
        "#!/bin/bash\nset -eu\npython3 -c 'import os, sys; os.setxattr(sys.argv[1], \"user.dib\", b\"kept\")' \"$TARGET_ROOT/srv/app/owned\"\n",
        0o755,
    );
    b.f.file(
        "e/oci-probe/environment.d/10-oci",
        "export DIB_OCI_ENTRYPOINT='[\"/bin/sh\", \"-c\"]'\n",
        0o644,
    );
}

const EPOCH: &str = "1700000000";

fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        _ => "arm",
    }
}

pub fn container_images_are_what_skopeo_umoci_and_podman_read() -> Result<(), Failed> {
    let b = Build::new();
    probe(&b);
    let out = b.f.path("images/img");
    let out_s = out.display().to_string();
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "tar,oci,oci-archive,docker",
                "--docker-target",
                "dib/probe:1",
                "-o",
                &out_s,
                "tiny-os",
                "oci-probe",
            ],
            &[
                ("SOURCE_DATE_EPOCH", EPOCH),
                ("DIB_OCI_CMD", "echo hi"),
                ("DIB_OCI_LABELS", "org.example.built-by=dib"),
                ("DIB_OCI_ENV", "LANG=C.UTF-8"),
            ],
        )
        .output()?;
    succeeded(&o)?;
    let layout = b.f.path("images/img.oci");
    let layout_s = layout.display().to_string();

    // skopeo reads the config dib wrote.
    let config: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{layout_s}:1")))?)?;
    eq(
        config["architecture"].as_str().unwrap_or(""),
        host_platform(),
        "architecture",
    )?;
    eq(config["os"].as_str().unwrap_or(""), "linux", "os")?;
    eq(
        &config["created"].to_string(),
        "\"2023-11-14T22:13:20Z\"",
        "created (SOURCE_DATE_EPOCH)",
    )?;
    let c = &config["config"];
    eq(&c["Cmd"].to_string(), r#"["echo","hi"]"#, "Cmd")?;
    eq(
        &c["Entrypoint"].to_string(),
        r#"["/bin/sh","-c"]"#,
        "Entrypoint (from an element)",
    )?;
    eq(
        &c["Env"].to_string(),
        r#"["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","LANG=C.UTF-8"]"#,
        "Env",
    )?;
    eq(
        &c["Labels"].to_string(),
        r#"{"org.example.built-by":"dib"}"#,
        "Labels",
    )?;

    // umoci's rootless unpack gives the tree of the tar output.
    let bundle = b.f.path("bundle");
    let image = format!("{layout_s}:1");
    let want = umoci_unpacks_the_tar(&image, &bundle, &b.f.path("images/img.tar"))?;
    let owned = &want["srv/app/owned"];
    eq(
        &format!("{} {} {:o}", owned.uid, owned.gid, owned.mode),
        "1234 4321 4750",
        "owner and mode of /srv/app/owned",
    )?;
    let kept = xattr_value(&bundle.join("rootfs/srv/app/owned"), "user.dib")?;
    check(
        kept.as_deref() == Some(b"kept".as_slice()),
        format!("user.dib after umoci: {kept:?}"),
    )?;

    // The archive is the same image as the layout.
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let archived: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").arg("inspect").arg(format!(
            "oci-archive:{}",
            b.f.path("images/img.oci.tar").display()
        )))?)?;
    eq(
        archived["Digest"].as_str().unwrap_or(""),
        &digest,
        "the oci-archive's manifest digest",
    )?;

    // podman loads the docker-archive under its tag.
    let store = b.f.path("podman");
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args)
            .env("XDG_RUNTIME_DIR", store.join("xdg"))
            .env("XDG_CONFIG_HOME", store.join("config"));
        cmd
    };
    fs::create_dir_all(store.join("xdg"))?;
    fs::set_permissions(store.join("xdg"), fs::Permissions::from_mode(0o700))?;
    let docker = b.f.path("images/img.docker.tar").display().to_string();
    let loaded = run(&mut podman(&["load", "-i", &docker]));
    // podman's store holds files of the test user's subordinate ids.
    let _ = podman(&["unshare", "rm", "-rf"])
        .arg(store.join("root"))
        .output();
    // Rootless podman keeps a pause process holding its user namespace,
    // per runtime directory: this one goes with the test.
    let pause = stop_pause_process(&store.join("xdg/libpod/tmp/pause.pid"));
    let loaded = loaded?;
    pause?;
    check(
        loaded.contains("Loaded image: localhost/dib/probe:1"),
        format!("podman load said: {loaded}"),
    )?;
    b.assert_clean()
}

pub fn the_same_tree_gives_the_same_image_digests() -> Result<(), Failed> {
    let b = Build::new();
    probe(&b);
    let mut seen = Vec::new();
    for round in ["one", "two"] {
        let out = b.f.path("images/img");
        let out_s = out.display().to_string();
        let o = b
            .dib(
                &[
                    "create",
                    "-n",
                    "-t",
                    "oci,docker",
                    "-o",
                    &out_s,
                    "tiny-os",
                    "oci-probe",
                ],
                &[("SOURCE_DATE_EPOCH", EPOCH)],
            )
            .output()?;
        succeeded(&o)?;
        let layout = b.f.path("images/img.oci");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
        let manifest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let m: serde_json::Value = serde_json::from_slice(&fs::read(
            layout
                .join("blobs/sha256")
                .join(manifest.trim_start_matches("sha256:")),
        )?)?;
        let layer = m["layers"][0]["digest"].as_str().unwrap_or("").to_string();
        let docker = sha256_hex(&fs::read(b.f.path("images/img.docker.tar"))?);
        seen.push((manifest, layer, docker));
        fs::rename(b.f.path("images"), b.f.path(&format!("images-{round}")))?;
    }
    eq(
        &seen[1].1,
        &seen[0].1,
        "the layer digest of the second build",
    )?;
    eq(
        &seen[1].0,
        &seen[0].0,
        "the manifest digest of the second build",
    )?;
    eq(
        &seen[1].2,
        &seen[0].2,
        "the docker-archive's sha256 of the second build",
    )?;
    b.assert_clean()
}

pub fn a_container_disk_holds_the_qcow2_as_kubevirt_expects() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("images/vm");
    let out_s = out.display().to_string();
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "containerdisk,qcow2",
                "-o",
                &out_s,
                "tiny-os",
            ],
            &[],
        )
        .output()?;
    succeeded(&o)?;
    let layout = b.f.path("images/vm.containerdisk");
    let info: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}", layout.display())))?)?;
    eq(
        info["Architecture"].as_str().unwrap_or(""),
        host_platform(),
        "the containerDisk's architecture",
    )?;
    let layers = info["Layers"].as_array().cloned().unwrap_or_default();
    eq(&layers.len().to_string(), "1", "the containerDisk's layers")?;
    let layer = layout.join("blobs/sha256").join(
        layers[0]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("sha256:"),
    );
    let mut ar = tar::Archive::new(fs::File::open(&layer)?);
    let mut entries = Vec::new();
    let disk = b.f.path("disk.qcow2");
    for e in ar.entries()? {
        let mut e = e?;
        let h = e.header();
        entries.push(format!(
            "{} {}:{} {:o}",
            e.path()?.display(),
            h.uid()?,
            h.gid()?,
            h.mode()?
        ));
        if e.header().entry_type() == tar::EntryType::Regular {
            e.unpack(&disk)?;
        }
    }
    eq(
        &entries.join(", "),
        "disk/ 107:107 555, disk/vm.qcow2 107:107 440",
        "the containerDisk's layer",
    )?;
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o644))?;
    run(Command::new("qemu-img")
        .args(["compare", "-q"])
        .arg(&disk)
        .arg(b.f.path("images/vm.qcow2")))?;
    let fmt = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk))?;
    check(
        fmt.contains("\"format\": \"qcow2\""),
        format!("the disk in the layer: {fmt}"),
    )?;
    check(
        fs::metadata(&layout)?.mode() & 0o777 == 0o755,
        "the layout directory is 0755",
    )?;
    b.assert_clean()
}

pub fn a_bad_image_configuration_fails_the_build_and_writes_nothing() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/bad-oci/environment.d/10-oci",
        "export DIB_OCI_CMD='[\"unterminated'\n",
        0o644,
    );
    let out = b.f.path("images/img");
    let out_s = out.display().to_string();
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "-t",
                "tar,oci,docker",
                "-o",
                &out_s,
                "tiny-os",
                "bad-oci",
            ],
            &[],
        )
        .output()?;
    check(!o.status.success(), "the build succeeded")?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains("the container image's configuration: DIB_OCI_CMD=\"[\\\"unterminated\" is not a JSON array of strings"),
        format!("dib said: {err}"),
    )?;
    let left = images_left(&b)?;
    check(
        left.is_empty(),
        format!("left in the output directory: {left:?}"),
    )?;
    b.assert_clean()
}

/// Kill the pause process whose pid `pid_file` holds, and wait until it
/// runs no more (it may stay a zombie of an init that does not reap).
fn stop_pause_process(pid_file: &std::path::Path) -> Result<(), Failed> {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return Ok(());
    };
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|e| format!("{pid_file:?}: {e}"))?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The field after the command's closing parenthesis.
        let running = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'));
        if !running {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("podman's pause process {pid} still runs").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
