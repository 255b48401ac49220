//! Cloud-ready for real: the `debian vm` image booted as a cloud boots
//! it. A NoCloud seed made with `cloud-localds` gives the default user an
//! ssh key made for the test, the disk is made larger than the image
//! before the first boot, and QEMU's user network forwards a host port to
//! sshd. Once ssh lets the default user in, the machine is checked over
//! ssh.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::qemu::{Drive, Firmware, Machine};
use crate::common::ssh::{free_port, keygen, Ssh};
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{cache, create, stderr};

/// The user Debian's cloud-init configuration makes.
const DEFAULT_USER: &str = "debian";

/// Seconds from starting the machine to the end of the checks (TCG, with
/// cloud-init's first boot).
const DEADLINE: Duration = Duration::from_secs(600);

/// How much larger the disk is than the image.
const GROWTH: u64 = 3 << 30;

/// A qcow2 image's virtual size in bytes.
fn virtual_size(image: &Path) -> Result<u64, Failed> {
    let o = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(image)
        .output()?;
    check(o.status.success(), format!("qemu-img info: {}", stderr(&o)))?;
    let info = String::from_utf8_lossy(&o.stdout);
    info.split("\"virtual-size\":")
        .nth(1)
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(|| format!("no virtual-size in qemu-img info: {info}").into())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), Failed> {
    let o = cmd.output().map_err(|e| format!("running {what}: {e}"))?;
    check(
        o.status.success(),
        format!("{what} failed ({}): {}", o.status, stderr(&o)),
    )
}

pub fn debian_vm_is_cloud_ready_over_ssh() -> Result<(), Failed> {
    let missing = dib_sandbox::host_tools::missing(["cloud-localds", "ssh", "ssh-keygen"]);
    check(
        missing.is_empty(),
        format!("not installed (scripts/prepare-host installs them): {missing:?}"),
    )?;
    let b = Build::new();
    let out = b.f.path("cloud");
    let started = Instant::now();
    succeeded(&create(
        &b,
        &cache(),
        &["-o", &out.display().to_string(), "debian", "vm"],
    )?)?;
    eprintln!("  built in {:.0}s", started.elapsed().as_secs_f64());

    // The machine's disk: a copy of the image, made larger.
    let disk = b.f.path("disk.qcow2");
    fs::copy(out.with_extension("qcow2"), &disk)?;
    let image_size = virtual_size(&disk)?;
    run(
        Command::new("qemu-img")
            .args(["resize", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg(format!("+{GROWTH}")),
        "qemu-img resize",
    )?;
    let disk_size = virtual_size(&disk)?;
    eq(
        &disk_size.to_string(),
        &(image_size + GROWTH).to_string(),
        "the resized disk",
    )?;

    // The NoCloud seed: the default user gets the test's key.
    let (key, public) = keygen(&b.f.path("ssh"))?;
    let user_data = b.f.file(
        "seed/user-data",
        &format!("#cloud-config\nssh_authorized_keys:\n  - {public}\n"),
        0o644,
    );
    let meta_data = b.f.file(
        "seed/meta-data",
        "instance-id: dib-e2e-cloud\nlocal-hostname: dib-e2e-cloud\n",
        0o644,
    );
    let seed = b.f.path("seed.img");
    run(
        Command::new("cloud-localds")
            .arg(&seed)
            .arg(&user_data)
            .arg(&meta_data),
        "cloud-localds (cloud-image-utils)",
    )?;

    let port = free_port()?;
    let nic = format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:22");
    let deadline = Instant::now() + DEADLINE;
    let mut m = Machine::boot(
        &[
            Drive {
                path: &disk,
                format: "qcow2",
                snapshot: false,
            },
            Drive {
                path: &seed,
                format: "raw",
                snapshot: true,
            },
        ],
        Firmware::Bios,
        Some(&nic),
    )?;
    let ssh = Ssh {
        user: DEFAULT_USER.into(),
        port,
        key,
        known_hosts: b.f.path("ssh/known_hosts"),
    };
    let ready = ssh.wait_ready(&mut m, deadline)?;
    eprintln!("  ssh let {DEFAULT_USER} in after {ready:.0}s");
    let result = checks(&ssh, disk_size, image_size);
    eprintln!("  checked after {:.0}s", m.seconds());
    if let Err(e) = result {
        return Err(m.failure(e.message().unwrap_or("a check failed")));
    }
    drop(m);
    b.assert_clean()
}

/// What the booted machine must be, seen over ssh.
fn checks(ssh: &Ssh, disk_size: u64, image_size: u64) -> Result<(), Failed> {
    eq(
        &ssh.run("id -un")?,
        &format!("{DEFAULT_USER}\n"),
        "the user ssh logged in as",
    )?;
    ssh.run("sudo -n true").map_err(|e| {
        format!(
            "sudo -n true as {DEFAULT_USER}: {}",
            e.message().unwrap_or_default()
        )
    })?;
    // cloud-init's first boot (growpart, resizefs, the keys) is over.
    let status = ssh.run("cloud-init status --wait")?;
    check(
        status.contains("status: done"),
        format!("cloud-init status: {status}"),
    )?;
    let state = ssh.run("sudo -n systemctl is-system-running --wait || true")?;
    let failed = ssh.run("sudo -n systemctl --failed --no-legend --plain")?;
    check(
        state.trim() == "running" && failed.trim().is_empty(),
        format!("the system is {:?}; failed units:\n{failed}", state.trim()),
    )?;
    // The root filesystem fills (almost) all of the larger disk.
    let sizes = ssh.run("lsblk -bdno SIZE /dev/vda; df -B1 --output=size / | tail -n 1")?;
    let sizes: Vec<u64> = sizes
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    check(
        matches!(sizes[..], [disk, root] if disk == disk_size && root > image_size && root * 100 > disk * 90),
        format!(
            "the root filesystem did not grow into the {disk_size}-byte disk (the image is \
             {image_size}): disk, root = {sizes:?}"
        ),
    )?;
    // Host keys: every one newer than this boot, and sshd serves the one
    // ssh recorded.
    let ages = ssh.run(
        "btime=$(awk '/^btime/ {print $2}' /proc/stat); \
         for k in /etc/ssh/ssh_host_*_key; do \
         if [ $(stat -c %Y $k) -ge $btime ]; then echo new; else echo old $k; fi; done",
    )?;
    check(
        !ages.is_empty() && ages.lines().all(|l| l == "new"),
        format!("host keys not made at this boot: {ages:?}"),
    )?;
    let known = fs::read_to_string(&ssh.known_hosts)?;
    let served: Vec<String> = known
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| format!("{} {}", f[1], f[2]))
        })
        .collect();
    let public = ssh.run("cat /etc/ssh/ssh_host_*_key.pub")?;
    let theirs: Vec<String> = public
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 2).then(|| format!("{} {}", f[0], f[1]))
        })
        .collect();
    check(
        !served.is_empty() && served.iter().all(|k| theirs.contains(k)),
        format!("the host key sshd served is not one of the machine's: {served:?} vs {theirs:?}"),
    )
}
