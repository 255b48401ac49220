//! Ramdisks booted with `-kernel`/`-initrd`: a Debian ramdisk's init.d,
//! its troubleshooting shell and error prompt over the serial console; a
//! deploy-ironic ramdisk's deploy call to an HTTP server on the host and
//! its disk exported over iSCSI; a deploy-kexec ramdisk kexecing into the
//! kernel, initrd and arguments it fetched by TFTP.

use std::fs;
use std::process::Command;

use libtest_mimic::Failed;

use crate::common::qemu;
use crate::common::ssh::free_port;
use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{build_ramdisk, one_http_request, BOOT_TIMEOUT};

/// A Debian ramdisk: built as a plain user, booted with -kernel/-initrd;
/// its init.d fragment runs and sees the kernel's arguments and the disk
/// udev found; `troubleshoot` gives a shell that answers on the serial
/// console; a failing fragment offers one too.
pub fn debian_ramdisk_boots_runs_init_d_and_troubleshoots() -> Result<(), Failed> {
    let b = Build::new();
    let (kernel, initrd) = build_ramdisk(&b, "rd", &["ramdisk-probe"])?;
    check(
        fs::read(&initrd)?.starts_with(&[0x1f, 0x8b]),
        "the initramfs is not gzip-compressed",
    )?;
    let disk = b.f.path("disk.raw");
    fs::File::create(&disk)?.set_len(1 << 20)?;
    let boot = |append: &str, script: &[(&str, &str)]| {
        qemu::converse(
            &qemu::DirectBoot {
                arch: "amd64",
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

/// deploy-ironic: the ramdisk posts pass_deploy_info to an HTTP server on
/// the host loopback, exports its disk over iSCSI (read through a
/// forwarded port with qemu's userspace initiator), and reboots when told
/// `done` on port 10000.
pub fn deploy_ironic_ramdisk_reports_and_exports_its_disk() -> Result<(), Failed> {
    let b = Build::new();
    let (kernel, initrd) = build_ramdisk(&b, "deploy", &["deploy-ironic"])?;
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
                    arch: "amd64",
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
        let (request, body) = one_http_request(
            &api,
            BOOT_TIMEOUT,
            &|| machine.is_finished(),
            "202 Accepted",
        )?;
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

/// The MAC of the deploy-kexec trial's NIC.
const KEXEC_MAC: &str = "52:54:00:12:34:56";

/// deploy-kexec: when the deploy ends with `reboot`, the ramdisk fetches
/// its pxelinux config, kernel and ramdisk by TFTP (QEMU's user network
/// serves them at 10.0.2.2) and kexecs into them: the second kernel's
/// command line is the config's `append` line from its third word on.
/// The second kernel is the ramdisk's own, so its init says so.
pub fn deploy_kexec_ramdisk_kexecs_into_the_fetched_kernel() -> Result<(), Failed> {
    let b = Build::new();
    let (kernel, initrd) = build_ramdisk(&b, "deploy", &["deploy-kexec", "kexec-probe"])?;
    // The TFTP root as a PXE boot server lays it out: the node's config
    // boots the deploy kernel first, the image's kernel last.
    let root = b.f.path("tftp");
    let node = root.join("tftpboot/node-1");
    fs::create_dir_all(root.join("tftpboot/pxelinux.cfg"))?;
    fs::create_dir_all(&node)?;
    fs::copy(&kernel, node.join("kernel"))?;
    fs::copy(&initrd, node.join("ramdisk"))?;
    let args = "dib-kexec-marker=yes console=ttyS0";
    fs::write(
        root.join("tftpboot/pxelinux.cfg")
            .join(format!("01-{}", KEXEC_MAC.replace(':', "-"))),
        format!(
            "default deploy\n\nlabel deploy\nkernel /tftpboot/node-1/deploy_kernel\n\
             append initrd=/tftpboot/node-1/deploy_ramdisk boot_server=10.0.2.2\nipappend 3\n\n\
             label boot\nkernel /tftpboot/node-1/kernel\n\
             append initrd=/tftpboot/node-1/ramdisk {args}\n"
        ),
    )?;
    // The disk deploy-iscsi-target exports on the way.
    let disk = b.f.path("target.raw");
    fs::File::create(&disk)?.set_len(8 << 20)?;
    let first = "console=ttyS0 boot_server=10.0.2.2 BOOT_IMAGE=/tftpboot/node-1/deploy_kernel \
                 iscsi_target_iqn=iqn.2008-10.org.openstack:dib-kexec";
    let booting = std::time::Instant::now();
    let console = qemu::converse(
        &qemu::DirectBoot {
            arch: "amd64",
            kernel: &kernel,
            initrd: &initrd,
            append: first,
            disk: Some(&disk),
            nic: Some(format!(
                "user,model=virtio-net-pci,mac={KEXEC_MAC},tftp={}",
                root.display()
            )),
        },
        &[
            ("dib-kexec-probe: the network is up", ""),
            (
                "deploy-kexec: fetching /tftpboot/node-1/kernel and /tftpboot/node-1/ramdisk \
                 from 10.0.2.2",
                "",
            ),
            (
                &format!("deploy-kexec: booting /tftpboot/node-1/kernel with: {args}"),
                "",
            ),
            // The jump, the kexec'd kernel's first words, then its init's.
            ("kexec_core: Starting new kernel", ""),
            (&format!("Command line: {args}"), ""),
            ("dib-kexec-probe: booted by kexec with: ", ""),
        ],
        BOOT_TIMEOUT,
    )?;
    let booted = console
        .lines()
        .find_map(|l| l.split_once("dib-kexec-probe: booted by kexec with: "))
        .map(|(_, cmdline)| cmdline.trim())
        .unwrap_or_default();
    eq(booted, args, "the kexec'd kernel's /proc/cmdline").map_err(|e| {
        format!(
            "{}\n--- console ---\n{console}",
            e.message().map_or("", |m| m)
        )
    })?;
    eprintln!(
        "  booted, fetched and kexec'd into in {:.1}s",
        booting.elapsed().as_secs_f64()
    );
    b.assert_clean()
}
