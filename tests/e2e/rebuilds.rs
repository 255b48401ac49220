//! Rebuilding a real image: a changed post-install.d script of a leaf
//! element replays the cached layers up to install.d and boots with the
//! change; the same inputs with SOURCE_DATE_EPOCH and DIB_IMAGE_UUID_SEED
//! give byte-identical raw, qcow2, tar and initramfs outputs.

use std::process::Output;
use std::time::Instant;

use libtest_mimic::Failed;

use crate::common::qemu::{self, Firmware};
use crate::common::tier::{check, eq, succeeded, Build};
use crate::common::trees::file_sha256;
use crate::support::{cache, create_cmd, stderr, BOOT_TIMEOUT};

/// The leaf element at version `v`: its post-install.d installs a unit
/// that prints `dib-leaf: v` on the serial console before the boot
/// marker.
fn leaf(b: &Build, v: &str) {
    b.f.file(
        "e/leaf/post-install.d/50-leaf",
        &format!(
            "#!/bin/bash\nset -eu\ncat > /etc/systemd/system/dib-leaf.service <<'UNIT'\n\
             [Unit]\nDescription=The leaf's version\nBefore=dib-boot-marker.service\n\n\
             [Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo \"dib-leaf: {v}\" > /dev/ttyS0'\n\n\
             [Install]\nWantedBy=multi-user.target\nUNIT\n\
             ln -sf /etc/systemd/system/dib-leaf.service /etc/systemd/system/multi-user.target.wants/dib-leaf.service\n"
        ),
        0o755,
    );
    b.f.file(
        "e/leaf/README.md",
        "A leaf element for the rebuild trial.\n",
        0o644,
    );
}

fn build(b: &Build, types: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Output, Failed> {
    let out = b.f.path("deb").display().to_string();
    let mut args = vec!["-t", types, "-o", &out];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["debian-minimal", "vm", "boot-marker", "leaf"]);
    let mut with = vec![("DIB_NO_CACHE", "0"), ("OVERWRITE_OLD_IMAGE", "1")];
    with.extend_from_slice(env);
    let started = Instant::now();
    let o = create_cmd(b, &cache(), &args, &with).output()?;
    succeeded(&o)?;
    eprintln!("  built {types} in {:.1}s", started.elapsed().as_secs_f64());
    Ok(o)
}

pub fn a_changed_post_install_script_rebuilds_from_the_cache_and_boots_with_it(
) -> Result<(), Failed> {
    let b = Build::new();
    leaf(&b, "v1");
    build(&b, "raw", &[], &[])?;
    leaf(&b, "v2");
    let o = build(&b, "raw", &[], &[])?;
    let log = stderr(&o);
    check(
        log.contains("reused the cached layers of root.d to the -p packages")
            || log.contains("reused the cached layers of root.d to install.d"),
        format!("the rebuild did not replay up to install.d:\n{log}"),
    )?;
    for phase in ["root.d", "pre-install.d", "install.d"] {
        check(
            !log.contains(&format!("running {phase} ")),
            format!("the rebuild ran {phase}:\n{log}"),
        )?;
    }
    let boot = qemu::boot_until(
        &b.f.path("deb.raw"),
        "raw",
        Firmware::Bios,
        "dib-boot-marker:",
        BOOT_TIMEOUT,
    )?;
    eprintln!("  the rebuilt image booted in {:.1}s", boot.seconds);
    check(
        boot.console.contains("dib-leaf: v2") && !boot.console.contains("dib-leaf: v1"),
        format!(
            "the booted system does not say dib-leaf: v2; its console's end:\n{}",
            boot.console
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )
}

pub fn the_same_inputs_give_byte_identical_images_and_ramdisks() -> Result<(), Failed> {
    let b = Build::new();
    leaf(&b, "v1");
    let env = [
        ("SOURCE_DATE_EPOCH", "1700000000"),
        ("DIB_IMAGE_UUID_SEED", "dib-e2e-rebuilds"),
    ];
    let mut sums = Vec::new();
    for round in ["first", "second"] {
        // The first runs the phases (this trial's output name is new to
        // the layer cache) and keeps their layers, the second replays
        // them: the same cached base.
        let o = build(&b, "raw,qcow2,tar", &[], &env)?;
        let replayed = stderr(&o).contains("reused the cached layers");
        eq(
            &replayed.to_string(),
            &(round == "second").to_string(),
            &format!("the {round} build replayed layers"),
        )?;
        let mut s = Vec::new();
        for ext in ["raw", "qcow2", "tar"] {
            s.push((ext, file_sha256(&b.f.path(&format!("deb.{ext}")))?));
        }
        sums.push(s);
    }
    for (a, c) in sums[0].iter().zip(&sums[1]) {
        eq(
            &c.1,
            &a.1,
            &format!("the {} of two builds of the same inputs", a.0),
        )?;
    }

    // A ramdisk, twice.
    let mut initramfs = Vec::new();
    for n in ["r1", "r2"] {
        let out = b.f.path(n).display().to_string();
        let cache = cache().display().to_string();
        let o = b
            .dib(
                &[
                    "ramdisk",
                    "--image-cache",
                    &cache,
                    "-o",
                    &out,
                    "debian-minimal",
                ],
                &env,
            )
            .output()?;
        succeeded(&o)?;
        initramfs.push(file_sha256(&b.f.path(&format!("{n}.initramfs")))?);
    }
    eq(
        &initramfs[1],
        &initramfs[0],
        "the initramfs of two ramdisk builds",
    )
}
