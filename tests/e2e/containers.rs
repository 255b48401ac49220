//! Containers end to end, through a real registry on the loopback: a
//! Debian tree pushed as an OCI image, a VM built on that image with
//! `oci-base` and pushed as a KubeVirt containerDisk, pulled back with
//! skopeo (the same manifest digest) and booted in QEMU to `login:`.

use std::fs;
use std::path::Path;
use std::process::Command;

use libtest_mimic::Failed;

use crate::common::qemu::{self, Firmware};
use crate::common::registry::Registry;
use crate::common::tier::{check, eq, run, succeeded, Build};
use crate::common::trees::umoci_unpacks_the_tar;
use crate::support::{cache, create_cmd, stderr, BOOT_TIMEOUT};

/// The manifest digest of a layout's one image.
fn layout_digest(layout: &Path) -> Result<String, Failed> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    Ok(index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| format!("no manifest in {}", layout.display()))?
        .to_string())
}

pub fn a_debian_image_goes_through_a_registry_and_boots_as_a_vm() -> Result<(), Failed> {
    let b = Build::new();
    let registry = Registry::start()?;
    let base_ref = format!("{}/dib/debian:bookworm", registry.addr());
    let vm_ref = format!("{}/dib/debian-vm:1", registry.addr());

    // A Debian tree as a container image, pushed.
    let base = b.f.path("base");
    let base_s = base.display().to_string();
    let o = create_cmd(
        &b,
        &cache(),
        &[
            "-t",
            "tar,oci",
            "--push",
            &base_ref,
            "-o",
            &base_s,
            "debian-minimal",
        ],
        &[],
    )
    .output()?;
    succeeded(&o)?;
    let err = stderr(&o);
    let base_digest = layout_digest(&b.f.path("base.oci"))?;
    check(
        err.contains(&format!("pushed {base_ref}@{base_digest}")),
        format!("dib did not report the push of {base_digest}: {err}"),
    )?;

    // umoci's rootless unpack of the layout is the tree of the tar output.
    let image = format!("{}:bookworm", b.f.path("base.oci").display());
    let tree = umoci_unpacks_the_tar(&image, &b.f.path("bundle"), &b.f.path("base.tar"))?;
    eprintln!(
        "  umoci unpacked the {} paths of the tar output",
        tree.len()
    );

    // A VM on that image, from the registry, pushed as a containerDisk.
    let vm = b.f.path("vm");
    let vm_s = vm.display().to_string();
    let source = format!("docker://{base_ref}");
    let o = create_cmd(
        &b,
        &cache(),
        &[
            "-t",
            "containerdisk",
            "--push",
            &vm_ref,
            "-o",
            &vm_s,
            "oci-base",
            "dpkg",
            "vm",
        ],
        &[("DIB_OCI_BASE", &source)],
    )
    .output()?;
    succeeded(&o)?;
    let vm_digest = layout_digest(&b.f.path("vm.containerdisk"))?;

    // The registry serves the manifest dib wrote; pulled back as it is,
    // the qcow2 under /disk/ boots.
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{vm_ref}")))?;
    eq(
        &dib::oci::digest_of(raw.as_bytes()),
        &vm_digest,
        "the digest of the manifest the registry serves",
    )?;
    let pulled = b.f.path("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{vm_ref}"))
        .arg(format!("oci:{}:1", pulled.display())))?;
    eq(
        &layout_digest(&pulled)?,
        &vm_digest,
        "the pulled containerDisk's manifest digest",
    )?;
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(
        pulled
            .join("blobs/sha256")
            .join(vm_digest.trim_start_matches("sha256:")),
    )?)?;
    let layer = manifest["layers"][0]["digest"].as_str().unwrap_or("");
    let mut ar = tar::Archive::new(fs::File::open(
        pulled
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )?);
    let disk = b.f.path("disk.qcow2");
    let mut found = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let path = e.path()?.display().to_string();
        if e.header().entry_type() == tar::EntryType::Regular {
            e.unpack(&disk)?;
        }
        found.push(path);
    }
    eq(
        &found.join(" "),
        "disk/ disk/vm.qcow2",
        "the containerDisk's layer",
    )?;
    let boot = qemu::boot_until(&disk, "qcow2", Firmware::Bios, "login:", BOOT_TIMEOUT)?;
    eprintln!(
        "  the pulled containerDisk booted to login: in {:.1}s",
        boot.seconds
    );
    Ok(())
}
