//! The shipped system-configuration elements on a busybox tree (`tiny-os`
//! with `tiny-tools`' bash): what each writes into the image, read back
//! from the build's tar, and the builds they refuse at once.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::Path;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, passwd_entry, succeeded, Build};

/// One member of the image's tar.
#[derive(Debug)]
struct Member {
    uid: u64,
    gid: u64,
    mode: u32,
    /// A regular file's content, a symlink's target.
    data: String,
    link: bool,
}

/// The image's tar, by path (`etc/hostname`, no leading `./`).
struct Tree(BTreeMap<String, Member>);

impl Tree {
    fn read(tarball: &Path) -> Result<Tree, Failed> {
        let mut members = BTreeMap::new();
        let mut archive = tar::Archive::new(fs::File::open(tarball)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.display().to_string();
            let path = path.trim_start_matches("./").trim_end_matches('/');
            let h = entry.header();
            let (uid, gid, mode) = (h.uid()?, h.gid()?, h.mode()?);
            let link = h.entry_type().is_symlink();
            let data = if link {
                entry
                    .link_name()?
                    .map(|l| l.display().to_string())
                    .unwrap_or_default()
            } else {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                String::from_utf8_lossy(&bytes).into_owned()
            };
            members.insert(
                path.to_string(),
                Member {
                    uid,
                    gid,
                    mode,
                    data,
                    link,
                },
            );
        }
        Ok(Tree(members))
    }

    fn get(&self, path: &str) -> Result<&Member, Failed> {
        self.0
            .get(path)
            .ok_or_else(|| format!("/{path} is not in the image").into())
    }

    /// A regular file's content.
    fn file(&self, path: &str) -> Result<&str, Failed> {
        let m = self.get(path)?;
        check(!m.link, format!("/{path} is a symlink to {}", m.data))?;
        Ok(&m.data)
    }

    /// `/path` is `want`, with mode `mode`.
    fn has(&self, path: &str, mode: u32, want: &str) -> Result<(), Failed> {
        eq(self.file(path)?, want, &format!("/{path}"))?;
        self.mode(path, mode)
    }

    fn mode(&self, path: &str, mode: u32) -> Result<(), Failed> {
        eq(
            &format!("{:o}", self.get(path)?.mode & 0o7777),
            &format!("{mode:o}"),
            &format!("/{path}'s mode"),
        )
    }

    fn contains(&self, path: &str, needle: &str) -> Result<(), Failed> {
        let text = self.file(path)?;
        check(
            text.contains(needle),
            format!("/{path} lacks {needle:?}:\n{text}"),
        )
    }

    fn absent(&self, path: &str) -> Result<(), Failed> {
        check(
            !self.0.contains_key(path),
            format!("/{path} should not be in the image"),
        )
    }

    /// Paths under `dir/`.
    fn under(&self, dir: &str) -> Vec<&str> {
        let prefix = format!("{dir}/");
        self.0
            .keys()
            .filter(|p| p.starts_with(&prefix))
            .map(String::as_str)
            .collect()
    }
}

/// `dib create -n -t tar tiny-os tiny-tools ELEMENTS...`; the tree.
fn build(b: &Build, elements: &[&str], env: &[(&str, &str)]) -> Result<Tree, Failed> {
    let out = b.f.path("images/img").display().to_string();
    let mut args = vec![
        "create",
        "-n",
        "-t",
        "tar",
        "-o",
        &out,
        "tiny-os",
        "tiny-tools",
    ];
    args.extend_from_slice(elements);
    let o = b.dib(&args, env).output()?;
    succeeded(&o)?;
    let tree = Tree::read(&b.f.path("images/img.tar"))?;
    b.assert_clean()?;
    Ok(tree)
}

/// dib's stderr for a build of `elements` that must fail.
fn refused(b: &Build, elements: &[&str], env: &[(&str, &str)]) -> Result<String, Failed> {
    let mut args = vec!["create", "-n", "-t", "tar", "-o"];
    let out = b.f.path("images/img").display().to_string();
    args.push(&out);
    args.extend_from_slice(elements);
    let o = b.dib(&args, env).output()?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    check(
        !o.status.success(),
        format!("the build of {elements:?} should fail:\n{err}"),
    )?;
    Ok(err)
}

const SHEBANG: &str = "#!/bin/bash\nset -eu -o pipefail\n";

/// Serial console, journal, interface names, modprobe (with an element's
/// modprobe.d), sysctl's commands, cloud-init's data sources,
/// dhcp-all-interfaces, sysprep and mellanox, in one build of a tree that
/// has what a Debian tree would have for them to change.
pub fn configuration_elements_write_their_files() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/root.d/20-state",
        &format!(
            "{SHEBANG}cd \"$TARGET_ROOT\"\n\
             mkdir -p etc/udev/rules.d etc/systemd/network etc/network/interfaces.d etc/dhcp\n\
             ln -s /dev/null etc/udev/rules.d/80-net-setup-link.rules\n\
             ln -s /dev/null etc/systemd/network/99-default.link\n\
             echo '# mine' > etc/udev/rules.d/80-net-name-slot.rules\n\
             printf 'auto lo\\niface lo inet loopback\\nauto eth0\\niface eth0 inet dhcp\\n' > etc/network/interfaces\n\
             echo 'auto ens3' > etc/network/interfaces.d/50-cloud-init\n\
             printf 'timeout 300;\\nretry 60;\\n' > etc/dhcp/dhclient.conf\n\
             echo 0123456789abcdef0123456789abcdef > etc/machine-id\n"
        ),
        0o755,
    );
    b.f.file(
        "e/probe/modprobe.d/probe.conf",
        "options probe debug=1\n",
        0o644,
    );
    b.f.file("e/probe/modprobe.d/ignored.txt", "not a .conf\n", 0o644);
    b.f.file(
        "e/probe/post-install.d/50-sysctl",
        &format!(
            "{SHEBANG}out=/root/sysctl-probe\n\
             sysctl-write-value net.ipv4.ip_forward 1\n\
             sysctl-write-value net.ipv4.ip_forward 1\n\
             sysctl-set-value kernel.pid_max 65536 'pid limit'\n\
             if sysctl-write-value net.ipv4.ip_forward 0; then echo conflict=written >> $out; else echo conflict=refused >> $out; fi\n\
             if sysctl-set-value no.such.key 1; then echo invalid=written >> $out; else echo invalid=refused >> $out; fi\n"
        ),
        0o755,
    );
    let tree = build(
        &b,
        &[
            "probe",
            "serial-console",
            "journal-to-console",
            "stable-interface-names",
            "modprobe-blacklist",
            "sysctl",
            "cloud-init-datasources",
            "dhcp-all-interfaces",
            "sysprep",
            "mellanox",
        ],
        &[
            ("DIB_INIT_SYSTEM", "systemd"),
            ("DIB_MODPROBE_BLACKLIST", "igb nouveau"),
            ("DIB_CLOUD_INIT_DATASOURCES", "Ec2, ConfigDrive,OpenStack"),
            ("DIB_DHCP_TIMEOUT", "45"),
        ],
    )?;

    // serial-console is enable-serial-console's old name.
    let rule = "etc/udev/rules.d/99-serial-console.rules";
    tree.contains(
        rule,
        "SUBSYSTEM==\"tty\", ACTION==\"add\", ATTRS{type}==\"4\", TAG+=\"systemd\", \
         ENV{SYSTEMD_WANTS}+=\"serial-getty@$name.service\"",
    )?;
    tree.mode(rule, 0o644)?;
    tree.contains(
        "etc/systemd/journald.conf.d/log-to-console.conf",
        "[Journal]\nForwardToConsole=yes\n",
    )?;

    // udev's naming switched back on; a real rules file stays.
    tree.absent("etc/udev/rules.d/80-net-setup-link.rules")?;
    tree.absent("etc/systemd/network/99-default.link")?;
    tree.has("etc/udev/rules.d/80-net-name-slot.rules", 0o644, "# mine\n")?;

    tree.has(
        "etc/modprobe.d/blacklist.conf",
        0o644,
        "blacklist igb\nblacklist nouveau\n",
    )?;
    tree.has(
        "etc/modprobe.d/probe.conf",
        0o644,
        "options probe debug=1\n",
    )?;
    tree.absent("etc/modprobe.d/ignored.txt")?;

    tree.has(
        "etc/sysctl.d/net.ipv4.ip_forward.conf",
        0o644,
        "# This file was created by diskimage-builder.\nnet.ipv4.ip_forward = 1\n",
    )?;
    tree.has(
        "etc/sysctl.d/kernel.pid_max.conf",
        0o644,
        "# pid limit\nkernel.pid_max = 65536\n",
    )?;
    tree.absent("etc/sysctl.d/no.such.key.conf")?;
    eq(
        tree.file("root/sysctl-probe")?,
        "conflict=refused\ninvalid=refused\n",
        "sysctl-write-value with another value, sysctl-set-value of a key the kernel lacks",
    )?;
    tree.mode("usr/local/bin/sysctl-set-value", 0o755)?;
    tree.mode("usr/local/bin/sysctl-write-value", 0o755)?;

    let cfg = "etc/cloud/cloud.cfg.d";
    tree.has(
        &format!("{cfg}/91-dib-cloud-init-datasources.cfg"),
        0o644,
        "datasource_list: [Ec2, ConfigDrive, OpenStack, None]\n",
    )?;
    tree.contains(
        &format!("{cfg}/92-ec2-datasource.cfg"),
        "datasource:\n  Ec2:\n    strict_id: false\n",
    )?;
    tree.contains(
        &format!("{cfg}/93-dib-cloud-init-disable-datasource-network-activation.cfg"),
        "disable_network_activation: true\n",
    )?;

    let unit = "usr/lib/systemd/system/dhcp-interface@.service";
    tree.contains(
        unit,
        "ExecStartPre=/usr/local/sbin/dhcp-all-interfaces.sh %i\n",
    )?;
    tree.contains(unit, "ExecStart=/sbin/ifup %i\n")?;
    tree.contains(unit, "TimeoutStartSec=90s\n")?;
    tree.mode(unit, 0o644)?;
    tree.has(
        "etc/udev/rules.d/99-dhcp-all-interfaces.rules",
        0o644,
        "SUBSYSTEM==\"net\", KERNEL!=\"lo\", ACTION==\"add|move\", TAG+=\"systemd\", \
         ENV{SYSTEMD_WANTS}+=\"dhcp-interface@$name.service\"\n",
    )?;
    let script = "usr/local/sbin/dhcp-all-interfaces.sh";
    tree.contains(script, "\ntimeout=45\n")?;
    tree.mode(script, 0o755)?;
    tree.has(
        "etc/network/interfaces",
        0o644,
        "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n\n",
    )?;
    eq(
        &format!("{:?}", tree.under("etc/network/interfaces.d")),
        "[]",
        "/etc/network/interfaces.d",
    )?;
    let dhclient = tree.file("etc/dhcp/dhclient.conf")?;
    check(
        dhclient.contains("timeout 45;\n")
            && !dhclient.contains("timeout 300")
            && !dhclient.lines().any(|l| l.starts_with("retry")),
        format!("dhclient.conf: timeout 45, retry commented out:\n{dhclient}"),
    )?;

    eq(
        tree.file("etc/machine-id")?,
        "uninitialized\n",
        "/etc/machine-id",
    )?;

    tree.has(
        "etc/modules",
        0o644,
        "mlx4_en\nmlx4_ib\nib_ipoib\nmlx5_ib\nib_umad\nib_uverbs\n",
    )?;
    tree.contains(
        "etc/udev/rules.d/81-mellanox.rules",
        "SUBSYSTEM==\"net\", RUN+=\"/sbin/modprobe -b mlx5_ib\"",
    )?;

    // Their packages were asked for (installing them is tier 4's).
    let asked = tree.file("var/log/dib-test-install-packages")?;
    for pkg in ["biosdevname", "isc-dhcp-client", "ndisc6", "mstflint"] {
        check(
            asked.split_whitespace().any(|w| w == pkg),
            format!("{pkg} was not asked for: {asked}"),
        )?;
    }
    Ok(())
}

/// devuser's account (no password), sudo rule and keys; local-config's keys
/// and proxies; cloud-init's cloud.cfg changes and cloud-init-nocloud's
/// seed and data source.
pub fn users_keys_proxies_and_cloud_init() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "home/.ssh/id_ed25519.pub",
        "ssh-ed25519 AAAAdevkey builder@host\n",
        0o644,
    );
    b.f.file(
        "home/.ssh/authorized_keys",
        "ssh-ed25519 AAAAlocalkey someone@else\n",
        0o600,
    );
    b.f.file(
        "e/probe/root.d/20-state",
        &format!(
            "{SHEBANG}cd \"$TARGET_ROOT\"\n\
             mkdir -p etc/apt/apt.conf.d etc/cloud home/stack\n\
             echo 'stack:x:1500:1500::/home/stack:/bin/sh' >> etc/passwd\n\
             printf 'users:\\n - default\\nssh_pwauth: false\\nssh_genkeytypes:\\n  - dsa\\n  - rsa\\ndisable_root: true\\n' > etc/cloud/cloud.cfg\n"
        ),
        0o755,
    );
    let tree = build(
        &b,
        &[
            "probe",
            "devuser",
            "local-config",
            "cloud-init",
            "cloud-init-nocloud",
        ],
        &[
            ("DIB_INIT_SYSTEM", "systemd"),
            ("DIB_DEV_USER_PWDLESS_SUDO", "yes"),
            ("DIB_DEV_USER_SHELL", "/bin/bash"),
            ("DIB_LOCAL_CONFIG_USERNAME", "devuser"),
            ("DIB_CLOUD_INIT_ALLOW_SSH_PWAUTH", "1"),
            ("DIB_CLOUD_INIT_ETC_HOSTS", "localhost"),
            // cloud-init-nocloud replaces it.
            ("DIB_CLOUD_INIT_DATASOURCES", "Ec2"),
            ("http_proxy", "http://proxy.test:3128"),
            ("https_proxy", "http://proxy.test:3129"),
            ("no_proxy", "localhost,.internal"),
        ],
    )?;

    let passwd = tree.file("etc/passwd")?;
    let entry = passwd_entry(passwd, "devuser")?;
    eq(
        &format!("{} {}", entry[5], entry[6]),
        "/home/devuser /bin/bash",
        "devuser's home and shell",
    )?;
    let (uid, gid): (u64, u64) = (entry[2].parse()?, entry[3].parse()?);
    let shadow = tree.file("etc/shadow")?;
    check(
        shadow.lines().any(|l| l.starts_with("devuser:!")),
        format!("devuser has a password, or no shadow entry:\n{shadow}"),
    )?;
    tree.has(
        "etc/sudoers.d/devuser",
        0o440,
        "devuser ALL=(ALL) NOPASSWD:ALL\n",
    )?;
    let ssh = tree.get("home/devuser/.ssh")?;
    eq(
        &format!("{} {} {:o}", ssh.uid, ssh.gid, ssh.mode & 0o7777),
        &format!("{uid} {gid} 700"),
        "devuser's ~/.ssh",
    )?;
    // devuser's key (the building user's public key), then local-config's
    // (the building user's authorized_keys), appended.
    let keys = "home/devuser/.ssh/authorized_keys";
    tree.has(
        keys,
        0o600,
        "ssh-ed25519 AAAAdevkey builder@host\nssh-ed25519 AAAAlocalkey someone@else\n",
    )?;
    let k = tree.get(keys)?;
    eq(
        &format!("{} {}", k.uid, k.gid),
        &format!("{uid} {gid}"),
        "authorized_keys' owner",
    )?;

    let apt = "etc/apt/apt.conf.d";
    tree.has(
        &format!("{apt}/02-use-http-proxy"),
        0o644,
        "Acquire::http::Proxy \"http://proxy.test:3128\";\n",
    )?;
    tree.has(
        &format!("{apt}/02-use-https-proxy"),
        0o644,
        "Acquire::https::Proxy \"http://proxy.test:3129\";\n",
    )?;
    tree.has(
        &format!("{apt}/02-no-proxy"),
        0o644,
        "Acquire::http::Proxy::localhost \"DIRECT\";\nAcquire::http::Proxy::.internal \"DIRECT\";\n",
    )?;
    eq(
        tree.file("home/stack/.profile")?,
        "export http_proxy=http://proxy.test:3128\nexport https_proxy=http://proxy.test:3129\n\
         export no_proxy=localhost,.internal\n",
        "the stack user's ~/.profile",
    )?;

    tree.has("var/lib/cloud/seed/nocloud/user-data", 0o644, "")?;
    tree.has("var/lib/cloud/seed/nocloud/meta-data", 0o644, "")?;
    tree.has(
        "etc/cloud/cloud.cfg.d/91-dib-cloud-init-datasources.cfg",
        0o644,
        "datasource_list: [NoCloud, None]\n",
    )?;
    tree.absent("etc/cloud/cloud.cfg.d/92-ec2-datasource.cfg")?;
    eq(
        tree.file("etc/cloud/cloud.cfg")?,
        "users:\n - default\nssh_pwauth: true\ndisable_root: true\n\
         ssh_genkeytypes: ['rsa', 'ecdsa', 'ed25519']\n",
        "/etc/cloud/cloud.cfg",
    )?;
    tree.has(
        "etc/cloud/cloud.cfg.d/10_etc_hosts.cfg",
        0o644,
        "manage_etc_hosts: localhost\n",
    )?;
    let asked = tree.file("var/log/dib-test-install-packages")?;
    for pkg in ["sudo", "cloud-init"] {
        check(
            asked.split_whitespace().any(|w| w == pkg),
            format!("{pkg} was not asked for: {asked}"),
        )?;
    }
    Ok(())
}

/// svc-map: every element's map merged for the distribution into
/// /usr/share/svc-map/services (flow and block YAML alike), the command in
/// the image answering from it (a unit of the service's own name wins); a
/// service two elements map fails the build naming the second.
pub fn svc_map_merges_the_elements_maps() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/svc-a/svc-map",
        "nova-api:\n  default: openstack-nova-api\n  debian: nova-api\n\
         glance-api: {default: openstack-glance-api, ubuntu: glance-api-ubuntu}\n",
        0o644,
    );
    b.f.file(
        "e/svc-b/svc-map",
        "'yes':\n  default: 'no'\nown-unit:\n  default: mapped-away\nplain:\n  redhat: rh-only\n",
        0o644,
    );
    b.f.file(
        "e/svc-b/root.d/20-unit",
        &format!(
            "{SHEBANG}mkdir -p \"$TARGET_ROOT/lib/systemd/system\"\n\
             touch \"$TARGET_ROOT/lib/systemd/system/own-unit.service\"\n"
        ),
        0o755,
    );
    b.f.file(
        "e/svc-b/post-install.d/50-ask",
        &format!(
            "{SHEBANG}svc-map nova-api glance-api yes own-unit plain unknown > /root/svc-map.out\n"
        ),
        0o755,
    );
    let tree = build(
        &b,
        &["svc-a", "svc-b", "svc-map"],
        &[("DISTRO_NAME", "ubuntu")],
    )?;
    // PyYAML's dump of the merged map: sorted keys, quoted where needed.
    tree.has(
        "usr/share/svc-map/services",
        0o644,
        "glance-api: glance-api-ubuntu\nnova-api: nova-api\nown-unit: mapped-away\n\
         plain: plain\n'yes': 'no'\n",
    )?;
    eq(
        tree.file("root/svc-map.out")?,
        "nova-api\nglance-api-ubuntu\nno\nown-unit\nplain\nunknown\n",
        "svc-map's answers in the image",
    )?;
    tree.mode("usr/local/bin/svc-map", 0o755)?;

    let b = Build::new();
    b.f.file("e/svc-a/svc-map", "httpd:\n  debian: apache2\n", 0o644);
    b.f.file("e/svc-b/svc-map", "httpd:\n  default: httpd\n", 0o644);
    let err = refused(
        &b,
        &["tiny-os", "tiny-tools", "svc-a", "svc-b", "svc-map"],
        &[],
    )?;
    check(
        err.contains("svc-map: httpd already found in services list. Check svc-b for duplicate service name."),
        format!("the duplicate service's error:\n{err}"),
    )?;
    b.assert_clean()
}

/// Builds these elements cannot make stop in root.d, before any tree, with
/// one line saying why: debian-upstart, modprobe-blacklist without modules,
/// cloud-init-datasources without sources.
pub fn impossible_builds_fail_at_once() -> Result<(), Failed> {
    for (elements, says) in [
        (
            &["tiny-os", "debian-upstart"][..],
            "debian-upstart: Debian has no upstart package any more",
        ),
        (
            &["tiny-os", "modprobe-blacklist"][..],
            "modprobe-blacklist: set DIB_MODPROBE_BLACKLIST",
        ),
        (
            &["tiny-os", "cloud-init-datasources"][..],
            "cloud-init-datasources: set DIB_CLOUD_INIT_DATASOURCES",
        ),
    ] {
        let b = Build::new();
        b.f.file(
            "e/late/root.d/99-late",
            "#!/bin/sh\necho ran > \"$DIB_TEST_OUT/late\"\n",
            0o755,
        );
        let mut all = elements.to_vec();
        all.push("late");
        let err = refused(&b, &all, &[])?;
        check(
            err.contains(says) && err.contains("root.d/"),
            format!("{elements:?}: wanted {says:?} from root.d:\n{err}"),
        )?;
        check(
            !b.out.join("late").exists(),
            format!("{elements:?}: root.d went on after the refusal"),
        )?;
        b.assert_clean()?;
    }
    Ok(())
}

/// sysprep's extract-image: a disk image dib made (qcow2, GPT with a BIOS
/// boot partition before the root) becomes the next build's tree, owners,
/// setuid modes and links kept, repacked once into the image cache.
pub fn extract_image_unpacks_a_disk_images_root() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/base-probe/root.d/20-files",
        &format!(
            "{SHEBANG}cd \"$TARGET_ROOT\"\n\
             echo kept > root/owned\nchown 1234:4321 root/owned\nchmod 4750 root/owned\n\
             ln -s ../root/owned etc/owned-link\n"
        ),
        0o755,
    );
    let base = b.f.path("images/base").display().to_string();
    succeeded(
        &b.dib(
            &[
                "create",
                "-n",
                "-o",
                &base,
                "tiny-os",
                "tiny-tools",
                "block-device-gpt",
                "base-probe",
            ],
            &[],
        )
        .output()?,
    )?;
    b.f.file("e/from-image/element-provides", "operating-system\n", 0o644);
    b.f.file("e/from-image/element-deps", "sysprep\n", 0o644);
    // Its hook writes the cache's top directory: a copy of its own.
    b.f.file("e/from-image/cache-dirs", ".\n", 0o644);
    b.f.file(
        "e/from-image/root.d/10-from-image",
        &format!(
            "{SHEBANG}\"$TMP_HOOKS_PATH/bin/extract-image\" base.qcow2 tiny-base.tgz \
             file:///nonexistent \"$DIB_LOCAL_IMAGE\"\n"
        ),
        0o755,
    );
    let local = b.f.path("images/base.qcow2").display().to_string();
    let cache = b.f.path("cache").display().to_string();
    let out = b.f.path("images/img").display().to_string();
    let o = b
        .dib(
            &[
                "create",
                "-n",
                "--image-cache",
                &cache,
                "-t",
                "tar",
                "-o",
                &out,
                "from-image",
            ],
            &[("DIB_LOCAL_IMAGE", &local)],
        )
        .output()?;
    succeeded(&o)?;
    let tree = Tree::read(&b.f.path("images/img.tar"))?;
    let owned = tree.get("root/owned")?;
    eq(
        &format!(
            "{} {} {:o} {}",
            owned.uid,
            owned.gid,
            owned.mode & 0o7777,
            owned.data
        ),
        "1234 4321 4750 kept\n",
        "/root/owned from the image: owner, mode, content",
    )?;
    let link = tree.get("etc/owned-link")?;
    check(
        link.link && link.data == "../root/owned",
        format!("/etc/owned-link: {link:?}"),
    )?;
    tree.get("bin/busybox")?;
    tree.absent("lost+found")?;
    let private: Vec<_> = fs::read_dir(b.f.path("cache/.elements"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    check(
        private.len() == 1
            && private[0]
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("from-image-"))
            && private[0].join("tiny-base.tgz").is_file(),
        format!("the repacked tree is not in the element's own cache: {private:?}"),
    )?;
    check(
        !b.f.path("cache/tiny-base.tgz").exists(),
        "an element's cache write reached the shared image cache",
    )?;
    b.assert_clean()
}
