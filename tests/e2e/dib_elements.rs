//! DIB's own elements under dib: diskimage-builder's released package,
//! at a pinned version, downloaded with pip when the trials run (never
//! kept in the repository). Those of its elements that dib does not ship
//! (decided at run time, against the shipped tree dib searches) are put on
//! `ELEMENTS_PATH` as symlinks; the names dib ships resolve to dib's own
//! elements, which must do what DIB's do. Two builds on `debian-minimal`,
//! many elements each: a tar whose tree is checked element by element,
//! and a `vm` image booted in QEMU, logged into on its serial console as
//! the user DIB's `devuser` made, and checked from inside.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::qemu::{Drive, Firmware, Machine};
use crate::common::tier::{check, dib_bin, fixtures, succeeded, Build};
use crate::support::{cache, create_cmd, extract, members, stderr, Dpkg};

/// The DIB release the trials run the elements of.
pub const DIB_VERSION: &str = "3.39.0";

/// The wheel, downloaded once by [`skip_reason`] for all trials.
static WHEEL: OnceLock<Vec<u8>> = OnceLock::new();

/// Download DIB's wheel (`python3 -m pip download`) for the trials of
/// this module; why they cannot run here when pip cannot get it.
pub fn skip_reason() -> Option<String> {
    let dir = match tempfile::Builder::new().prefix("dib-upstream-").tempdir() {
        Ok(d) => d,
        Err(e) => return Some(format!("no temp dir for DIB's package: {e}")),
    };
    let o = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
        ])
        .args(["--disable-pip-version-check", "--no-input"])
        .args(["--timeout", "30", "--retries", "2", "-d"])
        .arg(dir.path())
        .arg(format!("diskimage-builder=={DIB_VERSION}"))
        .output();
    let o = match o {
        Ok(o) => o,
        Err(e) => return Some(format!("python3 -m pip cannot run: {e}")),
    };
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        return Some(format!(
            "pip cannot download diskimage-builder {DIB_VERSION}: {}",
            last.unwrap_or("no message").trim()
        ));
    }
    let wheel = dir
        .path()
        .join(format!("diskimage_builder-{DIB_VERSION}-py3-none-any.whl"));
    match fs::read(&wheel) {
        Ok(bytes) => {
            let _ = WHEEL.set(bytes);
            None
        }
        Err(e) => Some(format!("pip downloaded no {}: {e}", wheel.display())),
    }
}

/// The shipped element tree the staged or built dib searches (as dib
/// finds it: `share/dib/elements` beside an installed binary, else the
/// source tree).
fn shipped_elements() -> PathBuf {
    let installed = dib_bin()
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("share/dib/elements"));
    match installed {
        Some(p) if p.is_dir() => p,
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("elements"),
    }
}

/// The element names of an elements directory.
fn element_names(dir: &Path) -> Result<BTreeSet<String>, Failed> {
    let mut names = BTreeSet::new();
    for e in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(['.', '_']) && e.path().is_dir() {
            names.insert(name);
        }
    }
    Ok(names)
}

/// DIB's elements unpacked in a build's scratch space.
struct Upstream {
    /// The directory of symlinks to the elements dib does not ship.
    path: PathBuf,
    /// Their names.
    linked: BTreeSet<String>,
}

impl Upstream {
    /// Unpack the wheel into `b`'s scratch space, keeping the files'
    /// modes (hooks are executables), and link the elements dib lacks.
    fn unpack(b: &Build) -> Result<Upstream, Failed> {
        let bytes = WHEEL
            .get()
            .ok_or("DIB's package was not downloaded (skip_reason runs first)")?;
        let wheel = b.f.path("dib.whl");
        fs::write(&wheel, bytes)?;
        let unpacked = b.f.path("dib");
        let o = Command::new("python3")
            .arg("-c")
            .arg(
                "import os, sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1])\n\
                 for i in z.infolist():\n\
                 \x20   p = z.extract(i, sys.argv[2])\n\
                 \x20   mode = (i.external_attr >> 16) & 0o777\n\
                 \x20   if mode and not i.is_dir():\n\
                 \x20       os.chmod(p, mode)\n",
            )
            .arg(&wheel)
            .arg(&unpacked)
            .output()?;
        check(
            o.status.success(),
            format!("unpacking DIB's wheel: {}", stderr(&o)),
        )?;
        let elements = unpacked.join("diskimage_builder/elements");
        let theirs = element_names(&elements)?;
        let ours = element_names(&shipped_elements())?;
        let fixture_names = element_names(&fixtures())?;
        let path = b.f.path("dib-elements");
        fs::create_dir_all(&path)?;
        let mut linked = BTreeSet::new();
        for name in theirs.difference(&ours) {
            if fixture_names.contains(name) {
                continue;
            }
            std::os::unix::fs::symlink(elements.join(name), path.join(name))?;
            linked.insert(name.clone());
        }
        check(
            !linked.is_empty(),
            "dib ships every element of DIB: nothing to test",
        )?;
        Ok(Upstream { path, linked })
    }

    /// `ELEMENTS_PATH` with the fixtures, then DIB's elements.
    fn elements_path(&self) -> String {
        format!("{}:{}", fixtures().display(), self.path.display())
    }

    /// Say which of `requested` are DIB's and which dib's own.
    fn report(&self, requested: &[&str]) {
        let (dib, own): (Vec<&str>, Vec<&str>) =
            requested.iter().partition(|n| self.linked.contains(**n));
        eprintln!(
            "  DIB {DIB_VERSION}'s elements: {}\n  dib's own: {}",
            dib.join(" "),
            own.join(" ")
        );
    }
}

/// The failed checks of a trial, by element, reported together.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, element: &str, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(format!("{element}: {}", what.into()));
        }
    }

    /// `got` equals `want`, else a finding showing both.
    fn eq(&mut self, element: &str, got: &str, want: &str, what: &str) {
        self.check(
            element,
            got == want,
            format!("{what}: got {got:?}, want {want:?}"),
        );
    }

    fn done(self) -> Result<(), Failed> {
        check(
            self.0.is_empty(),
            format!(
                "{} check(s) failed:\n  {}",
                self.0.len(),
                self.0.join("\n  ")
            ),
        )
    }
}

/// An extracted tree, read without following its symlinks out of it.
struct Tree(PathBuf);

impl Tree {
    /// A regular file's text, or what is there instead.
    fn read(&self, rel: &str) -> String {
        let p = self.0.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => {
                fs::read_to_string(&p).unwrap_or_else(|e| format!("<unreadable: {e}>"))
            }
            Ok(_) => "<not a regular file>".into(),
            Err(_) => "<absent>".into(),
        }
    }

    fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.0.join(rel)).is_ok()
    }

    /// Whether systemd unit `unit` is enabled: linked in a `.wants`
    /// directory of /etc/systemd/system.
    fn enabled(&self, unit: &str) -> bool {
        let Ok(dirs) = fs::read_dir(self.0.join("etc/systemd/system")) else {
            return false;
        };
        dirs.flatten().any(|d| {
            d.file_name().to_string_lossy().ends_with(".wants")
                && fs::symlink_metadata(d.path().join(unit)).is_ok()
        })
    }

    /// Paths directly in `rel` whose names start with `prefix`.
    fn entries(&self, rel: &str, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.0.join(rel))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        v.sort();
        v
    }
}

/// `text` without white space.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect()
}

/// The settings of a configuration file: its lines that are not comments
/// or blank, without white space, joined by one space.
fn settings(text: &str) -> String {
    text.lines()
        .map(squeeze)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The paths a tarball holds.
fn listing(tarball: &Path) -> Result<BTreeSet<String>, Failed> {
    let mut out = BTreeSet::new();
    let mut archive = tar::Archive::new(fs::File::open(tarball)?);
    for entry in archive.entries()? {
        out.insert(entry?.path()?.display().to_string());
    }
    Ok(out)
}

/// A git repository with one commit on `main`: its `file://` URL and the
/// commit.
fn git_repo(dir: &Path) -> Result<(String, String), Failed> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("README"), "dib-compat-probe source\n")?;
    let git = |args: &[&str]| -> Result<String, Failed> {
        let o = Command::new("git")
            .args([
                "-c",
                "user.name=dib e2e",
                "-c",
                "user.email=e2e@dib.invalid",
            ])
            .args(args)
            .current_dir(dir)
            .output()?;
        check(o.status.success(), format!("git {args:?}: {}", stderr(&o)))?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "README"])?;
    git(&["commit", "-q", "-m", "dib-compat-probe"])?;
    let sha = git(&["rev-parse", "HEAD"])?;
    Ok((format!("file://{}", dir.display()), sha))
}

/// source-repositories caches a git repository under the image cache by
/// the SHA-1 of its type and location; drop this trial's.
fn forget_cached_repo(location: &str) {
    let Ok(o) = Command::new("sh")
        .arg("-c")
        .arg("printf 'git_%s\\n' \"$1\" | sha1sum | cut -d' ' -f1")
        .arg("sh")
        .arg(location)
        .output()
    else {
        return;
    };
    let sha = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !sha.is_empty() {
        let _ = fs::remove_dir_all(
            cache()
                .join("source-repositories")
                .join(format!("dib_compat_probe_{sha}")),
        );
    }
}

/// A password for the build's user, different each run.
fn password() -> Result<String, Failed> {
    let mut bytes = [0u8; 9];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The elements of the tree build, beside `debian-minimal` and the probe.
const TREE_ELEMENTS: &[&str] = &[
    "sysctl",
    "modprobe",
    "disable-nouveau",
    "journal-to-console",
    "devuser",
    "local-config",
    "openssh-server",
    "runtime-ssh-host-keys",
    "dynamic-login",
    "growroot",
    "cloud-init",
    "cloud-init-nocloud",
    "cloud-init-datasources",
    "cloud-init-growpart",
    "cloud-init-disable-resizefs",
    "svc-map",
    "dib-python",
    "element-manifest",
    "source-repositories",
    "pip-and-virtualenv",
    "ensure-venv",
    "select-boot-kernel-initrd",
    "sysprep",
    "autoupdates",
    "enable-serial-console",
    "dhcp-all-interfaces",
    "fail2ban",
    "ibft-interfaces",
    "nm-dhcp-ib-interfaces",
    "grub2",
];

const USER: &str = "dibcompat";

/// A `debian-minimal` tar with most of DIB's elements that apply to
/// Debian, each one's effect checked in the tree.
pub fn dib_elements_shape_a_debian_tree() -> Result<(), Failed> {
    let b = Build::new();
    let up = Upstream::unpack(&b)?;
    up.report(TREE_ELEMENTS);
    // What the elements take from the host: devuser's and local-config's
    // keys, autoupdates' configuration, source-repositories' repository.
    let (_, devuser_key) = crate::common::ssh::keygen(&b.f.path("keys/devuser"))?;
    let devuser_keys = b.f.file("devuser-keys", &format!("{devuser_key}\n"), 0o644);
    let (_, root_key) = crate::common::ssh::keygen(&b.f.path("keys/root"))?;
    let root_keys = format!("{root_key}\n");
    b.f.file("home/.ssh/authorized_keys", &root_keys, 0o600);
    let updates = "// dib-compat autoupdates\nUnattended-Upgrade::Origins-Pattern { \"origin=Debian,codename=${distro_codename},label=Debian-Security\"; };\n";
    let updates_conf = b.f.file("50unattended-upgrades", updates, 0o644);
    let jail = "[sshd]\nenabled = true\n";
    let jail_conf = b.f.file("jail.local", jail, 0o644).display().to_string();
    let (repo, repo_sha) = git_repo(&b.f.path("repo"))?;
    let password = password()?;
    let out = b.f.path("img").display().to_string();
    let mut args = vec![
        "-t",
        "tar",
        "-o",
        &out,
        "debian-minimal",
        "dib-compat-probe",
    ];
    args.extend_from_slice(TREE_ELEMENTS);
    let (devuser_keys, updates_conf) = (
        devuser_keys.display().to_string(),
        updates_conf.display().to_string(),
    );
    let started = Instant::now();
    let o = create_cmd(
        &b,
        &cache(),
        &args,
        &[
            ("ELEMENTS_PATH", &up.elements_path()),
            // DIB's dib-python picks Python 2 on Debian unless told.
            ("DIB_PYTHON_VERSION", "3"),
            ("DIB_MODPROBE_BLACKLIST", "floppy pcspkr"),
            ("DIB_DEV_USER_USERNAME", USER),
            ("DIB_DEV_USER_PASSWORD", &password),
            ("DIB_DEV_USER_PWDLESS_SUDO", "yes"),
            ("DIB_DEV_USER_SHELL", "/bin/bash"),
            ("DIB_DEV_USER_AUTHORIZED_KEYS", &devuser_keys),
            ("DIB_CLOUD_INIT_GROWPART_DEVICES", "['/']"),
            ("DIB_CLOUD_INIT_ALLOW_SSH_PWAUTH", "1"),
            ("DIB_REPOLOCATION_dib_compat_probe", &repo),
            ("DIB_INSTALLTYPE_pip_and_virtualenv", "package"),
            ("DIB_DEB_UPDATES_CONF", &updates_conf),
            ("DIB_FAIL2BAN_CONF", &jail_conf),
        ],
    )
    .output()?;
    forget_cached_repo(&repo);
    succeeded(&o)?;
    eprintln!("  built in {:.0}s", started.elapsed().as_secs_f64());
    let tarball = b.f.path("img.tar");
    let all = listing(&tarball)?;
    let wanted: Vec<&str> = [
        "./etc",
        "./usr/local",
        "./usr/share/svc-map",
        "./usr/lib/systemd/system",
        "./opt",
        "./var/lib/dpkg",
        "./var/lib/cloud",
        "./home",
        "./root",
        "./boot",
    ]
    .into_iter()
    .filter(|p| all.contains(*p) || all.contains(&format!("{p}/")))
    .collect();
    let x = b.f.path("x");
    extract(&tarball, &x, &wanted)?;
    let t = Tree(x.clone());
    let dpkg = Dpkg::of(&x);
    let mut f = Findings::default();
    let installed = |f: &mut Findings, element: &str, pkg: &str| -> Result<(), Failed> {
        let state = dpkg.state(pkg)?;
        f.eq(element, state, "installed", &format!("package {pkg}"));
        Ok(())
    };

    // sysctl: the probe's sysctl-write-value call.
    f.eq(
        "sysctl",
        &settings(&t.read("etc/sysctl.d/vm.swappiness.conf")),
        "vm.swappiness=10",
        "the setting in /etc/sysctl.d/vm.swappiness.conf",
    );
    // modprobe: DIB_MODPROBE_BLACKLIST and every element's modprobe.d.
    f.eq(
        "modprobe",
        &t.read("etc/modprobe.d/blacklist.conf"),
        "blacklist floppy\nblacklist pcspkr\n",
        "/etc/modprobe.d/blacklist.conf",
    );
    f.check(
        "modprobe",
        t.read("etc/modprobe.d/dib-compat-probe.conf")
            .contains("options dib_compat_probe answer=42"),
        "the probe's modprobe.d/dib-compat-probe.conf is not in /etc/modprobe.d",
    );
    f.check(
        "disable-nouveau",
        t.read("etc/modprobe.d/disable-nouveau.conf")
            .contains("blacklist nouveau"),
        "no /etc/modprobe.d/disable-nouveau.conf blacklisting nouveau",
    );
    let journald = settings(&t.read("etc/systemd/journald.conf.d/log-to-console.conf"));
    f.check(
        "journal-to-console",
        [
            "[Journal] ForwardToConsole=true",
            "[Journal] ForwardToConsole=yes",
        ]
        .contains(&journald.as_str()),
        format!("journald's drop-in does not forward to the console: {journald:?}"),
    );

    // devuser: the user with its shell, password, sudo rule and key.
    let passwd = t.read("etc/passwd");
    let entry = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{USER}:")))
        .unwrap_or_default()
        .to_string();
    let fields: Vec<&str> = entry.split(':').collect();
    f.check(
        "devuser",
        fields.len() == 7 && fields[5] == format!("/home/{USER}") && fields[6] == "/bin/bash",
        format!("/etc/passwd has no {USER} with /home/{USER} and /bin/bash: {entry:?}"),
    );
    let uid = fields.get(2).copied().unwrap_or("?");
    let shadow = t.read("etc/shadow");
    f.check(
        "devuser",
        shadow.lines().any(|l| l.starts_with(&format!("{USER}:$"))),
        format!("{USER} has no password hash in /etc/shadow"),
    );
    f.eq(
        "devuser",
        &t.read(&format!("etc/sudoers.d/{USER}")),
        &format!("{USER} ALL=(ALL) NOPASSWD:ALL\n"),
        "the sudoers rule",
    );
    f.eq(
        "devuser",
        &t.read(&format!("home/{USER}/.ssh/authorized_keys")),
        &format!("{devuser_key}\n"),
        "the user's authorized_keys",
    );
    installed(&mut f, "devuser", "sudo")?;
    let sudoers = format!("./etc/sudoers.d/{USER}");
    let keys = format!("./home/{USER}/.ssh/authorized_keys");
    let facts = members(&tarball, &[&sudoers, &keys])?;
    f.check(
        "devuser",
        matches!(&facts[..], [s, k] if s == &format!("{sudoers} 0/0 440")
            && k.starts_with(&format!("{keys} {uid}/{uid} "))
            && u32::from_str_radix(k.rsplit(' ').next().unwrap_or("777"), 8)
                .is_ok_and(|mode| mode & 0o022 == 0)),
        format!(
            "want the sudoers rule root's with mode 440, the keys the user's and not \
             writable by others: {facts:?}"
        ),
    );

    // local-config: the host user's authorized_keys for root.
    f.eq(
        "local-config",
        &t.read("root/.ssh/authorized_keys"),
        &root_keys,
        "/root/.ssh/authorized_keys",
    );
    let facts = members(&tarball, &["./root/.ssh/", "./root/.ssh/authorized_keys"])?;
    f.eq(
        "local-config",
        &facts.join("\n"),
        "./root/.ssh/ 0/0 700\n./root/.ssh/authorized_keys 0/0 600",
        "owners and modes",
    );

    // openssh-server and runtime-ssh-host-keys: sshd enabled and
    // hardened, no host key in the image, keys made on first boot.
    installed(&mut f, "openssh-server", "openssh-server")?;
    f.check(
        "openssh-server",
        t.enabled("ssh.service"),
        "ssh.service is not enabled",
    );
    f.check(
        "openssh-server",
        t.read("etc/ssh/sshd_config")
            .lines()
            .any(|l| l.starts_with("MACs hmac-sha2-512-etm@openssh.com,")),
        "sshd_config has no hardened MACs line",
    );
    let host_keys = t.entries("etc/ssh", "ssh_host_");
    f.check(
        "runtime-ssh-host-keys",
        host_keys.is_empty(),
        format!("host keys made at build time are in the image: {host_keys:?}"),
    );
    f.check(
        "runtime-ssh-host-keys",
        t.exists("usr/lib/systemd/system/ssh-keygen.service") && t.enabled("ssh-keygen.service"),
        "ssh-keygen.service is not installed in /usr/lib/systemd/system and enabled",
    );
    f.check(
        "runtime-ssh-host-keys",
        t.read("usr/local/sbin/runtime-ssh-host-keys.sh")
            .contains("ssh-keygen"),
        "no /usr/local/sbin/runtime-ssh-host-keys.sh",
    );
    installed(&mut f, "runtime-ssh-host-keys", "openssh-client")?;
    f.check(
        "dynamic-login",
        t.exists("usr/local/bin/dynamic-login") && t.enabled("dynamic-login.service"),
        "no /usr/local/bin/dynamic-login with dynamic-login.service enabled",
    );

    // growroot: the unit and script, growpart mapped to cloud-utils by
    // the element's pkg-map for the Debian family.
    f.check(
        "growroot",
        t.exists("usr/local/sbin/growroot") && t.enabled("growroot.service"),
        "no /usr/local/sbin/growroot with growroot.service enabled",
    );
    f.check(
        "growroot",
        all.contains("./usr/bin/growpart") && all.contains("./usr/sbin/resize2fs"),
        "growpart or resize2fs is not in the image",
    );

    // cloud-init and its configuration elements.
    installed(&mut f, "cloud-init", "cloud-init")?;
    let cloud_cfg = t.read("etc/cloud/cloud.cfg");
    for unit in ["cloud-init.service", "cloud-final.service"] {
        f.check(
            "cloud-init",
            t.enabled(unit),
            format!("{unit} is not enabled"),
        );
    }
    f.check(
        "cloud-init",
        cloud_cfg
            .lines()
            .any(|l| squeeze(l) == "ssh_genkeytypes:['rsa','ecdsa','ed25519']"),
        "cloud.cfg does not set ssh_genkeytypes",
    );
    f.check(
        "cloud-init",
        cloud_cfg
            .lines()
            .any(|l| l.trim() == "ssh_pwauth: true" || l.trim() == "ssh_pwauth: 1"),
        "cloud.cfg does not allow ssh password logins (DIB_CLOUD_INIT_ALLOW_SSH_PWAUTH)",
    );
    f.eq(
        "cloud-init-datasources",
        &squeeze(&t.read("etc/cloud/cloud.cfg.d/91-dib-cloud-init-datasources.cfg")),
        "datasource_list:[NoCloud,None]",
        "the datasource list (NoCloud from cloud-init-nocloud)",
    );
    f.check(
        "cloud-init-nocloud",
        t.exists("var/lib/cloud/seed/nocloud/user-data")
            && t.exists("var/lib/cloud/seed/nocloud/meta-data"),
        "no empty seed in /var/lib/cloud/seed/nocloud",
    );
    f.check(
        "cloud-init-growpart",
        t.read("etc/cloud/cloud.cfg.d/55-growpart.cfg")
            .contains("devices: ['/']"),
        "no /etc/cloud/cloud.cfg.d/55-growpart.cfg with the devices",
    );
    installed(&mut f, "cloud-init-growpart", "cloud-guest-utils")?;
    f.check(
        "cloud-init-disable-resizefs",
        !cloud_cfg
            .lines()
            .any(|l| l == " - resizefs" || l == " - growpart"),
        "cloud.cfg still runs resizefs or growpart",
    );

    // svc-map over the probe's map, dib-python, select-boot-kernel-initrd:
    // what the commands answered in the chroot.
    f.check(
        "svc-map",
        t.read("usr/share/svc-map/services")
            .contains("dib-compat-svc: dib-compat-on-debian"),
        format!(
            "/usr/share/svc-map/services lacks the probe's mapping: {:?}",
            t.read("usr/share/svc-map/services")
        ),
    );
    f.eq(
        "svc-map",
        &t.read("etc/dib-compat-probe/svc-map"),
        "dib-compat-on-debian\n",
        "svc-map dib-compat-svc",
    );
    installed(&mut f, "svc-map", "python3-yaml")?;
    f.eq(
        "dib-python",
        &t.read("etc/dib-compat-probe/dib-python"),
        "3\n",
        "the Python dib-python ran",
    );
    f.check(
        "dib-python",
        !all.contains("./usr/local/bin/dib-python"),
        "/usr/local/bin/dib-python is left in the image",
    );
    let kernels = t.entries("boot", "vmlinuz-");
    let initrds = t.entries("boot", "initrd.img-");
    f.eq(
        "select-boot-kernel-initrd",
        &t.read("etc/dib-compat-probe/boot-kernel-initrd"),
        &format!(
            "{}:{}\n",
            kernels.last().map(String::as_str).unwrap_or("?"),
            initrds.last().map(String::as_str).unwrap_or("?")
        ),
        "the kernel and initrd it selected",
    );
    f.check(
        "select-boot-kernel-initrd",
        !all.iter().any(|p| p.contains("lib/diskimage-builder")),
        "DIB's img-functions are left in the image",
    );

    // element-manifest, source-repositories: manifests in the image.
    let manifest = t.read("etc/dib-manifests/dib-element-manifest");
    let listed: BTreeSet<&str> = manifest.lines().collect();
    let missing: Vec<&&str> = TREE_ELEMENTS
        .iter()
        .chain(&["debian-minimal", "dib-compat-probe", "base"])
        .filter(|e| !listed.contains(**e))
        .collect();
    f.check(
        "element-manifest",
        missing.is_empty(),
        format!("/etc/dib-manifests/dib-element-manifest lacks {missing:?}: {manifest:?}"),
    );
    f.eq(
        "source-repositories",
        &t.read("opt/dib-compat-probe/README"),
        "dib-compat-probe source\n",
        "the checkout in /opt/dib-compat-probe",
    );
    f.check(
        "source-repositories",
        t.read("etc/dib-source-repositories")
            .lines()
            .any(|l| l == "/opt/dib-compat-probe"),
        "/etc/dib-source-repositories does not list /opt/dib-compat-probe",
    );
    f.eq(
        "source-repositories",
        &t.read("etc/dib-manifests/dib-manifest-git-img"),
        &format!("dib-compat-probe git /opt/dib-compat-probe {repo} {repo_sha}\n"),
        "the git manifest",
    );
    installed(&mut f, "source-repositories", "git")?;

    // pip-and-virtualenv (package install type) and ensure-venv.
    for pkg in ["python3-pip", "python3-virtualenv", "python3-venv"] {
        installed(&mut f, "pip-and-virtualenv", pkg)?;
    }
    installed(&mut f, "ensure-venv", "python3-venv")?;

    // sysprep, autoupdates, enable-serial-console, dhcp-all-interfaces.
    f.eq(
        "sysprep",
        &t.read("etc/machine-id"),
        "uninitialized\n",
        "/etc/machine-id",
    );
    installed(&mut f, "autoupdates", "unattended-upgrades")?;
    f.eq(
        "autoupdates",
        &t.read("etc/apt/apt.conf.d/50unattended-upgrades"),
        updates,
        "DIB_DEB_UPDATES_CONF in the image",
    );
    f.check(
        "autoupdates",
        t.enabled("unattended-upgrades.service"),
        "unattended-upgrades.service is not enabled",
    );
    f.check(
        "enable-serial-console",
        t.read("etc/udev/rules.d/99-serial-console.rules")
            .contains("getty@$name.service"),
        "no udev rule starting gettys on serial consoles",
    );
    f.check(
        "dhcp-all-interfaces",
        t.exists("usr/local/sbin/dhcp-all-interfaces.sh")
            && t.exists("usr/lib/systemd/system/dhcp-interface@.service")
            && t.exists("etc/udev/rules.d/99-dhcp-all-interfaces.rules"),
        "the DHCP script, unit and udev rule are not all installed",
    );
    f.check(
        "dhcp-all-interfaces",
        t.read("usr/lib/systemd/system/dhcp-interface@.service")
            .contains("TimeoutStartSec=60s"),
        "dhcp-interface@.service has no timeout from DIB_DHCP_TIMEOUT",
    );
    for pkg in ["ifupdown", "isc-dhcp-client", "ndisc6"] {
        installed(&mut f, "dhcp-all-interfaces", pkg)?;
    }

    // fail2ban, ibft-interfaces, nm-dhcp-ib-interfaces, grub2.
    installed(&mut f, "fail2ban", "fail2ban")?;
    f.eq(
        "fail2ban",
        &t.read("etc/fail2ban/jail.local"),
        jail,
        "DIB_FAIL2BAN_CONF as /etc/fail2ban/jail.local",
    );
    f.check(
        "fail2ban",
        t.enabled("fail2ban.service"),
        "fail2ban.service is not enabled",
    );
    installed(&mut f, "ibft-interfaces", "open-iscsi")?;
    f.check(
        "ibft-interfaces",
        t.exists("usr/local/sbin/init-ibft-interfaces.sh")
            && t.exists("etc/modules-load.d/ibft.conf")
            && t.enabled("init-ibft-interfaces.service"),
        "the iBFT script, module list and enabled unit are not all there",
    );
    let nm = "./etc/NetworkManager/system-connections/infiniband.nmconnection";
    f.check(
        "nm-dhcp-ib-interfaces",
        t.read(&nm[2..]).contains("type=infiniband"),
        "no infiniband connection profile for NetworkManager",
    );
    f.eq(
        "nm-dhcp-ib-interfaces",
        &members(&tarball, &[nm])?.join("\n"),
        &format!("{nm} 0/0 600"),
        "the profile's owner and mode",
    );
    for pkg in ["grub-pc-bin", "grub-efi-amd64-signed", "shim-signed"] {
        installed(&mut f, "grub2", pkg)?;
    }
    dpkg.audit_is_clean()?;
    f.done()?;
    b.assert_clean()
}

/// The elements of the booted build, beside `debian-minimal`, `vm` and
/// the probe.
const VM_ELEMENTS: &[&str] = &[
    "devuser",
    "openssh-server",
    "runtime-ssh-host-keys",
    "growroot",
    "sysctl",
    "dynamic-login",
    "enable-serial-console",
    "sysprep",
];

/// Run `command` on the console; without the warning sudo prints on a
/// system whose host name does not resolve (a tree without /etc/hosts).
fn run(m: &mut Machine, command: &str, deadline: Instant) -> Result<String, Failed> {
    let out = m.run(command, deadline)?;
    Ok(out
        .lines()
        .filter(|l| !l.starts_with("sudo: unable to resolve host"))
        .map(|l| format!("{l}\n"))
        .collect())
}

/// Seconds the booted image may take to its login prompt and its checks
/// (TCG).
const BOOT_DEADLINE: Duration = Duration::from_secs(420);

/// A `debian-minimal vm` image with DIB's boot-time elements, booted on a
/// disk larger than the image: log in on the serial console as devuser's
/// user, then nothing failed, sudo works without a password, the root
/// filesystem grew, host keys were made at this boot, sysctl's value is
/// applied.
pub fn dib_elements_boot_in_a_vm() -> Result<(), Failed> {
    let b = Build::new();
    let up = Upstream::unpack(&b)?;
    up.report(VM_ELEMENTS);
    let password = password()?;
    let out = b.f.path("vm").display().to_string();
    let mut args = vec![
        "-t",
        "qcow2",
        "-o",
        &out,
        "debian-minimal",
        "vm",
        "dib-compat-probe",
    ];
    args.extend_from_slice(VM_ELEMENTS);
    let started = Instant::now();
    let o = create_cmd(
        &b,
        &cache(),
        &args,
        &[
            ("ELEMENTS_PATH", &up.elements_path()),
            ("DIB_DEV_USER_USERNAME", USER),
            ("DIB_DEV_USER_PASSWORD", &password),
            ("DIB_DEV_USER_PWDLESS_SUDO", "yes"),
            ("DIB_DEV_USER_SHELL", "/bin/bash"),
        ],
    )
    .output()?;
    succeeded(&o)?;
    eprintln!("  built in {:.0}s", started.elapsed().as_secs_f64());
    // The machine's disk: an overlay on the image, 4 GiB, so that growroot
    // has room to grow into; the image itself is never written.
    let image = b.f.path("vm.qcow2");
    let disk = b.f.path("disk.qcow2");
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image)
        .arg(&disk)
        .arg("4G")
        .output()?;
    check(
        o.status.success(),
        format!("qemu-img create: {}", stderr(&o)),
    )?;
    let deadline = Instant::now() + BOOT_DEADLINE;
    let mut m = Machine::boot(
        &[Drive {
            path: &disk,
            format: "qcow2",
            snapshot: false,
        }],
        Firmware::Bios,
        None,
    )?;
    m.login(USER, &password, deadline)?;
    eprintln!("  logged in on the console after {:.0}s", m.seconds());
    let mut f = Findings::default();
    let state = run(
        &mut m,
        "sudo -n systemctl is-system-running --wait",
        deadline,
    )?;
    let failed = run(
        &mut m,
        "sudo -n systemctl --failed --no-legend --plain",
        deadline,
    )?;
    f.check(
        "boot",
        state.trim() == "running" && failed.trim().is_empty(),
        format!("the system is {:?}, failed units: {failed:?}", state.trim()),
    );
    f.eq(
        "devuser",
        &run(&mut m, "id -un", deadline)?,
        &format!("{USER}\n"),
        "the user logged in",
    );
    f.eq(
        "devuser",
        &run(&mut m, "sudo -n true && echo sudo-works", deadline)?,
        "sudo-works\n",
        "sudo -n true",
    );
    f.eq(
        "sysctl",
        &run(&mut m, "/sbin/sysctl -n vm.swappiness", deadline)?,
        "10\n",
        "vm.swappiness at run time",
    );
    f.eq(
        "growroot",
        &run(
            &mut m,
            "sudo -n systemctl is-active growroot.service",
            deadline,
        )?,
        "active\n",
        "growroot.service",
    );
    // Sizes in bytes: the disk, and the root filesystem on it.
    let sizes = run(
        &mut m,
        "lsblk -bdno SIZE /dev/vda; df -B1 --output=size / | tail -n 1",
        deadline,
    )?;
    let sizes: Vec<u64> = sizes
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    f.check(
        "growroot",
        matches!(sizes[..], [disk, root] if disk == 4 << 30 && root * 10 > disk * 9),
        format!("the root filesystem did not grow to fill the 4 GiB disk: disk, root = {sizes:?}"),
    );
    // Host keys: made at this boot by ssh-keygen.service, none shipped.
    let keys = run(
        &mut m,
        "sudo -n systemctl is-active ssh-keygen.service ssh.service; \
         btime=$(awk '/^btime/ {print $2}' /proc/stat); \
         for k in /etc/ssh/ssh_host_*_key; do \
         [ $(stat -c %Y $k) -ge $btime ] && echo new || echo old; done | sort | uniq -c",
        deadline,
    )?;
    f.check(
        "runtime-ssh-host-keys",
        keys.starts_with("active\nactive\n") && keys.contains(" new\n") && !keys.contains(" old\n"),
        format!("the units, and the host keys by whether they are newer than the boot: {keys:?}"),
    );
    f.eq(
        "dynamic-login",
        &run(
            &mut m,
            "sudo -n systemctl show -p Result --value dynamic-login.service",
            deadline,
        )?,
        "success\n",
        "dynamic-login.service's result",
    );
    f.check(
        "sysprep",
        {
            let id = run(&mut m, "cat /etc/machine-id", deadline)?;
            id.trim().len() == 32 && id.trim() != "uninitialized"
        },
        "/etc/machine-id was not made at first boot",
    );
    f.check(
        "enable-serial-console",
        run(
            &mut m,
            "sudo -n systemctl is-active serial-getty@ttyS0.service",
            deadline,
        )? == "active\n",
        "no getty on ttyS0",
    );
    eprintln!("  checked after {:.0}s", m.seconds());
    if !f.0.is_empty() {
        let console = m.console();
        f.0.push(format!("--- console ---\n{console}\n--- end ---"));
    }
    drop(m);
    f.done()?;
    b.assert_clean()
}
