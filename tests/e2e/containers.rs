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
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{cache, create_cmd, stderr, BOOT_TIMEOUT};

fn run(cmd: &mut Command) -> Result<String, Failed> {
    let o = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

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
            "oci",
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

    // Pulled back: the same manifest, and the qcow2 under /disk/ boots.
    let pulled = b.f.path("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
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
