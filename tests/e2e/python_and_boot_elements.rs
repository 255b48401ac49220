//! The python and boot-kernel elements in one Debian build: dib-python,
//! pypi (a wheel from a mirror served on the host's loopback, an sdist from
//! the image cache's mirror) with pip-cache (the wheel pip built lands in
//! the host's cache), dib-run-parts, dkms (a module built for the image's
//! kernel), dracut-regenerate with dracut-network and iscsi-boot (the
//! modules in the initrd, a dracut.conf.d file honoured),
//! select-boot-kernel-initrd, cleanup-kernel-initrd and growvols; and what
//! each leaves out of the image.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{cache, create_cmd, extract, members, stderr, Dpkg};

/// Writes a package of one module NAME whose VALUE is VALUE into OUT, with
/// an index.html linking it (what pip reads from a simple index): KIND
/// `wheel` (pure python) or `sdist` (setup.py, built by pip in the image).
const MAKE_PACKAGE: &str = r#"
import base64, hashlib, io, os, sys, tarfile, zipfile
kind, out, name, value = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
code = f"VALUE = {value!r}\n"
if kind == "wheel":
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": code,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: dib-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for p, c in files.items():
        d = base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b"=").decode()
        record += f"{p},sha256={d},{len(c.encode())}\n"
    files[f"{dist}/RECORD"] = record + f"{dist}/RECORD,,\n"
    archive = f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(out, archive), "w") as z:
        for p, c in files.items():
            z.writestr(p, c)
else:
    top = f"{name}-1.0"
    files = {
        f"{top}/PKG-INFO": f"Metadata-Version: 1.1\nName: {name}\nVersion: 1.0\n",
        f"{top}/setup.py": f"from setuptools import setup\nsetup(name={name!r}, version='1.0', packages=[{name!r}])\n",
        f"{top}/{name}/__init__.py": code,
    }
    archive = f"{top}.tar.gz"
    with tarfile.open(os.path.join(out, archive), "w:gz") as t:
        for p, c in files.items():
            data = c.encode()
            info = tarfile.TarInfo(p)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
with open(os.path.join(out, "index.html"), "w") as f:
    f.write(f'<html><body><a href="{archive}">{archive}</a></body></html>\n')
"#;

fn make_package(kind: &str, out: &Path, name: &str, value: &str) -> Result<(), Failed> {
    let o = Command::new("python3")
        .args(["-c", MAKE_PACKAGE, kind])
        .arg(out)
        .args([name, value])
        .output()?;
    check(
        o.status.success(),
        format!("making the {kind} of {name}: {}", stderr(&o)),
    )
}

/// python3's static HTTP server for `dir` on a free loopback port.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Result<Server, Failed> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            check(
                Instant::now() < deadline,
                "the mirror's HTTP server did not start",
            )?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir` whose name is `name`.
fn find(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                found.extend(find(&p, name));
            } else if e.file_name() == name {
                found.push(p);
            }
        }
    }
    found
}

fn probe(b: &Build) {
    b.f.file("e/probe/README.md", "probe\n", 0o644);
    b.f.file(
        "e/probe/package-installs.yaml",
        "python3-pip:\nlinux-headers-amd64:\n",
        0o644,
    );
    // Read by dracut in both of its runs (the package's and
    // dracut-regenerate's); uncompressed is quick to write.
    b.f.file(
        "e/probe/dracut.conf.d/50-dib-probe.conf",
        "compress=\"cat\"\n",
        0o644,
    );
    b.f.file(
        "e/probe/install.d/60-probe-pip",
        "#!/bin/bash\nset -eu\nmkdir -p /etc/dib-probe\n\
         cp ~/.pip/pip.conf /etc/dib-probe/pip.conf\n\
         echo \"PIP_CACHE_DIR=${PIP_CACHE_DIR:-} PIP_DOWNLOAD_CACHE=${PIP_DOWNLOAD_CACHE:-}\" > /etc/dib-probe/pip-env\n\
         PIP_DISABLE_PIP_VERSION_CHECK=1 pip install --break-system-packages --no-input dibprobe dibcached\n\
         python3 -c 'import dibprobe, dibcached; print(dibprobe.VALUE, dibcached.VALUE)' > /etc/dib-probe/imported\n",
        0o755,
    );
    b.f.file(
        "e/probe/install.d/61-probe-python",
        "#!/bin/bash\nset -eu\nmkdir -p /etc/dib-probe\n{\n\
         readlink /usr/local/bin/dib-python\n\
         dib-python -c 'import sys; print(sys.version_info[0])'\n\
         echo \"$DIB_PYTHON $DIB_PYTHON_VERSION\"\n\
         } > /etc/dib-probe/dib-python\n",
        0o755,
    );
    b.f.file(
        "e/probe/install.d/62-probe-run-parts",
        "#!/bin/bash\nset -eu\nd=/tmp/rp\nmkdir -p /etc/dib-probe $d/run.d $d/environment.d\n\
         echo 'export RP_WORD=sourced' > $d/environment.d/10-word\n\
         printf '#!/bin/sh\\necho \"second $RP_WORD\"\\n' > $d/run.d/10-second\n\
         printf '#!/bin/sh\\necho first\\n' > $d/run.d/5-first\n\
         printf '#!/bin/sh\\necho never\\n' > $d/run.d/20-dotted.sh\n\
         printf '#!/bin/sh\\necho never\\n' > $d/run.d/30-not-executable\n\
         chmod +x $d/run.d/10-second $d/run.d/5-first $d/run.d/20-dotted.sh\n\
         {\n\
         command -v dib-run-parts\n\
         dib-run-parts $d/run.d 2> /dev/null\n\
         dib-run-parts --list $d/run.d\n\
         printf '#!/bin/sh\\nexit 7\\n' > $d/run.d/7-fails\n\
         chmod +x $d/run.d/7-fails\n\
         dib-run-parts $d/run.d 2> /dev/null || echo \"status $?\"\n\
         } > /etc/dib-probe/run-parts\nrm -rf $d\n",
        0o755,
    );
    // A DKMS module the dkms element builds for the image's kernel.
    b.f.file(
        "e/probe/install.d/64-probe-dkms",
        "#!/bin/bash\nset -eu\nsrc=/usr/src/dibprobe-1.0\nmkdir -p $src\n\
         cat > $src/dibprobe.c <<'C'\n\
         #include <linux/module.h>\n\
         MODULE_LICENSE(\"GPL\");\n\
         static int __init dibprobe_init(void) { return 0; }\n\
         static void __exit dibprobe_exit(void) { }\n\
         module_init(dibprobe_init);\n\
         module_exit(dibprobe_exit);\n\
         C\n\
         echo 'obj-m := dibprobe.o' > $src/Makefile\n\
         printf '%s\\n' 'PACKAGE_NAME=\"dibprobe\"' 'PACKAGE_VERSION=\"1.0\"' \
         'BUILT_MODULE_NAME[0]=\"dibprobe\"' 'DEST_MODULE_LOCATION[0]=\"/updates/dkms\"' > $src/dkms.conf\n\
         dkms add -m dibprobe -v 1.0\n",
        0o755,
    );
    b.f.file(
        "e/probe/finalise.d/60-probe",
        "#!/bin/bash\nset -eu\nmkdir -p /etc/dib-probe\n\
         select-boot-kernel-initrd > /etc/dib-probe/select\n\
         lsinitrd -m /boot/$(cut -d: -f2 /etc/dib-probe/select) > /etc/dib-probe/initrd-modules\n\
         ls /lib/modules/*/updates/dkms/ > /etc/dib-probe/dkms\n\
         growvols --help > /etc/dib-probe/growvols-help\n",
        0o755,
    );
    // An older kernel's files, for cleanup-kernel-initrd (made this late so
    // that dracut's package triggers never try to build an initrd for it).
    b.f.file(
        "e/probe/cleanup.d/10-probe-old-kernel",
        "#!/bin/bash\nset -eu\nfor f in vmlinuz initrd.img config System.map; do\n\
         \x20   echo old > \"$TARGET_ROOT/boot/$f-5.10.0-1-amd64\"\ndone\n",
        0o755,
    );
}

pub fn python_and_boot_elements_do_their_job() -> Result<(), Failed> {
    let b = Build::new();
    probe(&b);
    let cache = cache();
    // The image cache's mirror (file:///tmp/pypi in the image) holds an
    // sdist; pip's cache starts without the wheel pip builds from it.
    let mirror = cache.join("pypi/mirror");
    let _ = fs::remove_dir_all(mirror.join("dibcached"));
    let _ = fs::remove_dir_all(cache.join("pip"));
    make_package("sdist", &mirror.join("dibcached"), "dibcached", "cached")?;
    let served = b.f.path("srv");
    make_package(
        "wheel",
        &served.join("simple/dibprobe"),
        "dibprobe",
        "served",
    )?;
    let server = Server::start(&served)?;
    let index = format!("http://127.0.0.1:{}/simple/", server.port);

    let out = b.f.path("img").display().to_string();
    let o = create_cmd(
        &b,
        &cache,
        &[
            "-t",
            "tar",
            "-o",
            &out,
            "debian-minimal",
            "dib-python",
            "pypi",
            "pip-cache",
            "dib-run-parts",
            "dkms",
            "dracut-regenerate",
            "dracut-network",
            "iscsi-boot",
            "select-boot-kernel-initrd",
            "cleanup-kernel-initrd",
            "growvols",
            "probe",
        ],
        &[
            ("DIB_PYPI_MIRROR_URL", &index),
            ("DIB_PYPI_MIRROR_URL_1", "file:///tmp/pypi"),
            // The public index may not be reachable from here.
            ("DIB_NO_PYPI_PIP", "1"),
            ("DIB_GROWVOLS_TRIGGER", "systemd"),
            ("DIB_GROWVOLS_ARGS", "/var=50%"),
        ],
    )
    .output()?;
    drop(server);
    succeeded(&o)?;

    let tarball = b.f.path("img.tar");
    eq(
        &members(
            &tarball,
            &[
                "./usr/local/bin/dib-run-parts",
                "./usr/local/bin/select-boot-kernel-initrd",
                "./usr/local/sbin/growvols",
                "./usr/lib/systemd/system/growvols.service",
                "./etc/default/growvols",
                "./etc/dracut.conf.d/50-dib-probe.conf",
                "./etc/iscsi/iscsi.initramfs",
            ],
        )?
        .join("\n"),
        "./etc/default/growvols 0/0 644\n\
         ./etc/dracut.conf.d/50-dib-probe.conf 0/0 644\n\
         ./etc/iscsi/iscsi.initramfs 0/0 644\n\
         ./usr/lib/systemd/system/growvols.service 0/0 644\n\
         ./usr/local/bin/dib-run-parts 0/0 755\n\
         ./usr/local/bin/select-boot-kernel-initrd 0/0 755\n\
         ./usr/local/sbin/growvols 0/0 755",
        "files the elements installed",
    )?;
    // Build-time only: dib-python, pip's configuration, the mounted cache
    // and mirror, the copy of dib's img-functions, the older kernel.
    let mut names = Vec::new();
    for entry in tar::Archive::new(fs::File::open(&tarball)?).entries()? {
        names.push(entry?.path()?.display().to_string());
    }
    let left: Vec<&String> = names
        .iter()
        .filter(|n| {
            n.as_str() == "./usr/local/bin/dib-python"
                || n.starts_with("./root/.pip")
                || n.starts_with("./tmp/pip")
                || n.starts_with("./tmp/pypi")
                || n.contains("lib/diskimage-builder")
                || n.contains("5.10.0-1-amd64")
        })
        .collect();
    check(
        left.is_empty(),
        format!("build-time files left in the image: {left:?}"),
    )?;
    check(
        names
            .iter()
            .any(|n| n == "./etc/systemd/system/multi-user.target.wants/growvols.service"),
        "growvols.service is not enabled",
    )?;

    let x = b.f.path("x");
    extract(
        &tarball,
        &x,
        &[
            "./etc/dib-probe",
            "./etc/default/growvols",
            "./boot",
            "./var/lib/dpkg",
        ],
    )?;
    let read = |p: &str| -> Result<String, Failed> {
        fs::read_to_string(x.join(p)).map_err(|e| format!("reading {p}: {e}").into())
    };
    eq(
        read("etc/dib-probe/dib-python")?.trim_end(),
        "/usr/bin/python3\n3\npython3 3",
        "dib-python's target, what it runs, DIB_PYTHON and DIB_PYTHON_VERSION",
    )?;
    eq(
        &read("etc/dib-probe/pip.conf")?,
        &format!(
            "# Written by dib's pypi element for the build; removed after post-install.d.\n\
             [global]\nindex-url = {index}\nextra-index-url =\n    file:///tmp/pypi\n\
             trusted-host =\n    127.0.0.1\n"
        ),
        "pip.conf during the build",
    )?;
    eq(
        read("etc/dib-probe/pip-env")?.trim_end(),
        "PIP_CACHE_DIR=/tmp/pip PIP_DOWNLOAD_CACHE=/tmp/pip",
        "pip-cache's variables in the chroot",
    )?;
    eq(
        read("etc/dib-probe/imported")?.trim_end(),
        "served cached",
        "the packages pip installed from the two mirrors",
    )?;
    let built = find(&cache.join("pip/wheels"), "dibcached-1.0-py3-none-any.whl");
    check(
        built.len() == 1,
        format!(
            "pip's cache on the host ({:?}) has {} wheels of dibcached",
            cache.join("pip"),
            built.len()
        ),
    )?;
    eq(
        read("etc/dib-probe/run-parts")?.trim_end(),
        "/usr/local/bin/dib-run-parts\nfirst\nsecond sourced\n\
         /tmp/rp/run.d/5-first\n/tmp/rp/run.d/10-second\nfirst\nstatus 7",
        "dib-run-parts: order, environment.d, --list, a failing script",
    )?;
    let mut boot: Vec<String> = fs::read_dir(x.join("boot"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    boot.sort();
    let version = boot
        .iter()
        .find_map(|n| n.strip_prefix("vmlinuz-"))
        .ok_or("no kernel in /boot")?
        .to_string();
    eq(
        &boot.join(" "),
        &format!("System.map-{version} config-{version} initrd.img-{version} vmlinuz-{version}"),
        "/boot after cleanup-kernel-initrd",
    )?;
    eq(
        read("etc/dib-probe/select")?.trim_end(),
        &format!("vmlinuz-{version}:initrd.img-{version}"),
        "select-boot-kernel-initrd",
    )?;
    let modules = read("etc/dib-probe/initrd-modules")?;
    for m in ["crypt", "lvm", "network-legacy", "network", "iscsi"] {
        check(
            modules.lines().any(|l| l == m),
            format!("dracut module {m} not in the initrd:\n{modules}"),
        )?;
    }
    eq(
        read("etc/dib-probe/dkms")?.trim_end(),
        "dibprobe.ko",
        "the DKMS module built for the image's kernel",
    )?;
    check(
        read("etc/dib-probe/growvols-help")?.starts_with("usage: growvols"),
        "growvols --help in the image",
    )?;
    eq(
        &read("etc/default/growvols")?,
        "# growvols.service's arguments, from the image build (DIB_GROWVOLS_*).\n\
         GROWVOLS_ARGS=\"/var=50%\"\nGROWVOLS_GROUP=\"\"\nGROWVOLS_DEVICE=\"\"\n",
        "/etc/default/growvols",
    )?;
    let dpkg = Dpkg::of(&x);
    for pkg in [
        "dracut",
        "dracut-network",
        "cryptsetup",
        "lvm2",
        "open-iscsi",
        "dkms",
        "python3-yaml",
        "gdisk",
    ] {
        eq(dpkg.state(pkg)?, "installed", pkg)?;
    }
    eq(
        dpkg.state("initramfs-tools")?,
        "absent",
        "initramfs-tools (dracut replaces it)",
    )?;
    check(
        stderr(&o).contains("dkms: building dibprobe/1.0 for"),
        format!("the dkms element built nothing:\n{}", stderr(&o)),
    )?;
    b.assert_clean()
}
