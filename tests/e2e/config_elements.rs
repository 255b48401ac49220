//! The system-configuration elements in one real Debian build (`-t tar`):
//! their packages in the dpkg database, their units installed and
//! enabled, sshd's configuration, first-boot host keys (and none in the
//! image), sysctl settings, the development user, cloud-init's data
//! source, and the tools they put in the image working there.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::Path;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, passwd_entry, succeeded, Build};
use crate::support::{build_ramdisk, cache, create_cmd, extract, Dpkg};

/// What of the image's tar the checks read: (uid, gid, mode, content or
/// symlink target) by path, contents kept for text under these roots only.
struct Tree(BTreeMap<String, (u64, u64, u32, String)>);

const KEEP: &[&str] = &[
    "etc/",
    "usr/lib/systemd/system/",
    "usr/local/",
    "var/lib/cloud/",
    "home/",
    "root/",
];

impl Tree {
    fn read(tarball: &Path) -> Result<Tree, Failed> {
        let mut members = BTreeMap::new();
        let mut archive = tar::Archive::new(fs::File::open(tarball)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.display().to_string();
            let path = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let h = entry.header();
            let (uid, gid, mode) = (h.uid()?, h.gid()?, h.mode()?);
            let data = if h.entry_type().is_symlink() {
                entry
                    .link_name()?
                    .map(|l| format!("-> {}", l.display()))
                    .unwrap_or_default()
            } else if KEEP.iter().any(|k| path.starts_with(k)) && h.size()? < (1 << 20) {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                String::new()
            };
            members.insert(path, (uid, gid, mode, data));
        }
        Ok(Tree(members))
    }

    fn get(&self, path: &str) -> Result<&(u64, u64, u32, String), Failed> {
        self.0
            .get(path)
            .ok_or_else(|| format!("/{path} is not in the image").into())
    }

    fn text(&self, path: &str) -> Result<&str, Failed> {
        Ok(&self.get(path)?.3)
    }

    fn mode(&self, path: &str, mode: u32) -> Result<(), Failed> {
        eq(
            &format!("{:o}", self.get(path)?.2 & 0o7777),
            &format!("{mode:o}"),
            &format!("/{path}'s mode"),
        )
    }

    fn contains(&self, path: &str, needle: &str) -> Result<(), Failed> {
        let text = self.text(path)?;
        check(
            text.contains(needle),
            format!("/{path} lacks {needle:?}:\n{text}"),
        )
    }

    /// The unit `name` is enabled: a link to it under `/etc/systemd/system/`
    /// (in `target.wants/`, or as an alias).
    fn enabled(&self, wants: &str, name: &str) -> Result<(), Failed> {
        let link = format!("etc/systemd/system/{wants}/{name}");
        let target = &self.get(&link)?.3;
        check(
            target.ends_with(&format!("/systemd/system/{name}")),
            format!("/{link} {target}"),
        )
    }
}

pub fn config_elements_in_a_debian_image() -> Result<(), Failed> {
    let b = Build::new();
    let keys = b.f.file(
        "devuser.keys",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEe2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2 e2e@dib\n",
        0o644,
    );
    // Uses the elements' commands in the image, and leaves their answers
    // there: sysctl-set-value against the build's /proc, growroot's and
    // svc-map's answers on a tree that has their packages.
    b.f.file("e/probe/element-deps", "sysctl\nsvc-map\n", 0o644);
    b.f.file(
        "e/probe/post-install.d/50-use",
        "#!/bin/bash\nset -eu -o pipefail\n\
         sysctl-set-value net.ipv4.ip_forward 1 'routing on'\n\
         sysctl-set-value vm.swappiness 10\n\
         svc-map ssh growroot > /root/svc-map.out\n\
         bash -n /usr/local/sbin/growroot\n\
         command -v resize2fs findmnt growpart > /root/growroot-tools\n",
        0o755,
    );
    let out = b.f.path("conf").display().to_string();
    let keys_s = keys.display().to_string();
    let o = create_cmd(
        &b,
        &cache(),
        &[
            "-t",
            "tar",
            "-o",
            &out,
            "debian-systemd",
            "probe",
            "growroot",
            "devuser",
            "cloud-init",
            "cloud-init-nocloud",
            "dhcp-all-interfaces",
            "enable-serial-console",
            "journal-to-console",
            "stable-interface-names",
            "modprobe",
        ],
        &[
            ("DIB_DEV_USER_PASSWORD", "e2e-secret"),
            ("DIB_DEV_USER_PWDLESS_SUDO", "1"),
            ("DIB_DEV_USER_SHELL", "/bin/bash"),
            ("DIB_DEV_USER_AUTHORIZED_KEYS", &keys_s),
            ("DIB_MODPROBE_BLACKLIST", "floppy"),
        ],
    )
    .output()?;
    succeeded(&o)?;
    let tarball = b.f.path("conf.tar");
    let x = b.f.path("x");
    extract(&tarball, &x, &["./var/lib/dpkg"])?;
    let dpkg = Dpkg::of(&x);
    for pkg in [
        "openssh-server",
        "openssh-client",
        "systemd-sysv",
        "cloud-init",
        "cloud-guest-utils",
        "e2fsprogs",
        "sudo",
        "isc-dhcp-client",
        "ifupdown",
        "ndisc6",
    ] {
        eq(dpkg.state(pkg)?, "installed", pkg)?;
    }
    // Debian has no biosdevname: stable-interface-names' map skips it.
    eq(dpkg.state("biosdevname")?, "absent", "biosdevname")?;
    dpkg.audit_is_clean()?;

    let tree = Tree::read(&tarball)?;
    // No host key of the build; the first boot makes them.
    let host_keys: Vec<&String> = tree
        .0
        .keys()
        .filter(|p| p.starts_with("etc/ssh/ssh_host_"))
        .collect();
    check(
        host_keys.is_empty(),
        format!("build-time ssh host keys in the image: {host_keys:?}"),
    )?;
    for unit in ["ssh-keygen.service", "growroot.service"] {
        tree.mode(&format!("usr/lib/systemd/system/{unit}"), 0o644)?;
        tree.enabled("multi-user.target.wants", unit)?;
    }
    tree.contains(
        "usr/lib/systemd/system/ssh-keygen.service",
        "ExecStart=/usr/local/sbin/runtime-ssh-host-keys.sh\n",
    )?;
    tree.mode("usr/local/sbin/runtime-ssh-host-keys.sh", 0o755)?;
    tree.mode("usr/local/sbin/growroot", 0o755)?;
    tree.enabled("multi-user.target.wants", "ssh.service")?;
    for unit in [
        "cloud-init-local.service",
        "cloud-init.service",
        "cloud-config.service",
        "cloud-final.service",
    ] {
        tree.enabled("cloud-init.target.wants", unit)?;
    }
    let sshd = tree.text("etc/ssh/sshd_config")?;
    for line in [
        "KexAlgorithms curve25519-sha256,",
        "Ciphers chacha20-poly1305@openssh.com,",
        "MACs hmac-sha2-512-etm@openssh.com,",
    ] {
        check(
            sshd.lines().any(|l| l.starts_with(line)),
            format!("sshd_config has no {line:?} line"),
        )?;
    }

    tree.contains(
        "etc/sysctl.d/net.ipv4.ip_forward.conf",
        "# routing on\nnet.ipv4.ip_forward = 1\n",
    )?;
    tree.contains("etc/sysctl.d/vm.swappiness.conf", "vm.swappiness = 10\n")?;
    eq(
        tree.text("root/svc-map.out")?,
        "ssh\ngrowroot\n",
        "svc-map's answers (a unit of the name exists, or the name itself)",
    )?;
    let tools: Vec<&str> = tree.text("root/growroot-tools")?.lines().collect();
    eq(
        &tools.len().to_string(),
        "3",
        &format!("growroot's tools (resize2fs, findmnt, growpart): {tools:?}"),
    )?;

    let passwd = tree.text("etc/passwd")?;
    let entry = passwd_entry(passwd, "devuser")?;
    eq(
        &format!("{} {}", entry[5], entry[6]),
        "/home/devuser /bin/bash",
        "devuser's home and shell",
    )?;
    let shadow = tree.text("etc/shadow")?;
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("devuser:"))
        .and_then(|r| r.split(':').next())
        .unwrap_or_default();
    check(
        hash.starts_with('$') && !shadow.contains("e2e-secret"),
        format!("devuser's password is not a hash: {hash:?}"),
    )?;
    eq(
        tree.text("etc/sudoers.d/devuser")?,
        "devuser ALL=(ALL) NOPASSWD:ALL\n",
        "/etc/sudoers.d/devuser",
    )?;
    tree.mode("etc/sudoers.d/devuser", 0o440)?;
    let ak = tree.get("home/devuser/.ssh/authorized_keys")?;
    eq(
        &format!("{} {} {:o} {}", ak.0, ak.1, ak.2 & 0o7777, ak.3),
        &format!(
            "{} {} 600 {}",
            entry[2],
            entry[3],
            fs::read_to_string(&keys)?
        ),
        "devuser's authorized_keys: owner, mode, content",
    )?;

    eq(
        tree.text("etc/cloud/cloud.cfg.d/91-dib-cloud-init-datasources.cfg")?,
        "datasource_list: [NoCloud, None]\n",
        "cloud-init's data sources",
    )?;
    tree.get("var/lib/cloud/seed/nocloud/meta-data")?;
    tree.contains(
        "etc/cloud/cloud.cfg",
        "ssh_genkeytypes: ['rsa', 'ecdsa', 'ed25519']\n",
    )?;
    eq(
        tree.text("etc/machine-id")?,
        "uninitialized\n",
        "/etc/machine-id (sysprep)",
    )?;
    tree.contains(
        "usr/lib/systemd/system/dhcp-interface@.service",
        "TimeoutStartSec=60s\n",
    )?;
    tree.contains(
        "etc/network/interfaces",
        "auto lo\niface lo inet loopback\n",
    )?;
    tree.contains(
        "etc/udev/rules.d/99-serial-console.rules",
        "serial-getty@$name.service",
    )?;
    tree.contains(
        "etc/systemd/journald.conf.d/log-to-console.conf",
        "ForwardToConsole=yes\n",
    )?;
    eq(
        tree.text("etc/modprobe.d/blacklist.conf")?,
        "blacklist floppy\n",
        "/etc/modprobe.d/blacklist.conf",
    )?;
    b.assert_clean()
}

/// The form body of one HTTP POST accepted on `listener` (answered 200),
/// or an error once `gone()` or the timeout.
fn one_post(listener: &std::net::TcpListener, gone: &dyn Fn() -> bool) -> Result<String, Failed> {
    let (request, body) =
        crate::support::one_http_request(listener, crate::support::BOOT_TIMEOUT, gone, "200 OK")?;
    check(
        request.starts_with("POST "),
        format!("not a POST: {request}"),
    )?;
    Ok(body)
}

/// `%XX` decoded.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64_decode(s: &str) -> Result<String, Failed> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(s.as_bytes())?;
    let o = child.wait_with_output()?;
    check(o.status.success(), "base64 -d failed")?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A hardware ramdisk (hwdiscovery, hwburnin) booted with user networking:
/// its report reaches an HTTP server on the host with the machine's CPUs,
/// memory and MAC, then memtester and the disk test (of the attached disk) pass.
pub fn hardware_ramdisk_reports_and_burns_in() -> Result<(), Failed> {
    let b = Build::new();
    let (kernel, initrd) = build_ramdisk(&b, "hw", &["hwdiscovery", "hwburnin"])?;
    let disk = b.f.path("disk.raw");
    fs::File::create(&disk)?.set_len(8 << 20)?;
    let api = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = api.local_addr()?.port();
    let append = format!(
        "console=ttyS0 HW_DISCOVERY_URL=http://10.0.2.2:{port}/hw \
         hwburnin_memory=16M hwburnin_disks=vda"
    );
    let machine = std::thread::spawn(move || {
        crate::common::qemu::converse(
            &crate::common::qemu::DirectBoot {
                arch: "amd64",
                kernel: &kernel,
                initrd: &initrd,
                append: &append,
                disk: Some(&disk),
                nic: Some("user,model=virtio-net-pci,mac=52:54:00:12:34:56".into()),
            },
            &[
                ("dib ramdisk: hardware report sent", ""),
                ("write and read back 8 MiB of /dev/vda", ""),
                ("dib ramdisk: hwburnin passed", ""),
            ],
            crate::support::BOOT_TIMEOUT,
        )
    });
    let report = (|| -> Result<serde_json::Value, Failed> {
        let body = one_post(&api, &|| machine.is_finished())?;
        let data = body
            .strip_prefix("hwdiscovery=true&hwdiscovery_data=")
            .ok_or_else(|| format!("the form: {body}"))?;
        let json = base64_decode(&url_decode(data))?;
        serde_json::from_str(&json)
            .map_err(|e| format!("the report is not JSON ({e}):\n{json}").into())
    })();
    let console = machine.join().map_err(|_| "the QEMU thread panicked")??;
    let report =
        report.map_err(|e| format!("{}\n--- console ---\n{console}", e.message().unwrap_or("")))?;
    eq(&report["cpu cores"].to_string(), "\"2\"", "cpu cores")?;
    eq(
        &report["pxe mac"].to_string(),
        "\"52:54:00:12:34:56\"",
        "the NIC with a link",
    )?;
    let ram = report["ram size"].as_str().unwrap_or_default();
    let bytes: u64 = ram.trim_end_matches(" bytes").parse().unwrap_or(0);
    check(
        bytes > 900 << 20 && bytes <= 1 << 30,
        format!("ram size of a 1 GiB machine: {ram:?}"),
    )?;
    for raw in ["raw disk", "raw network"] {
        let text = base64_decode(report["extra data"][raw].as_str().unwrap_or_default())?;
        check(
            text.contains("virtio"),
            format!("{raw}: hwinfo's listing names no virtio device:\n{text}"),
        )?;
    }
    b.assert_clean()
}
