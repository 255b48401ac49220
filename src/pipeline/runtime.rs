//! What DIB's hooks expect of their runtime besides the environment: the
//! shell library `_LIB` (`die`, `common-functions`, `img-functions`, the
//! defaults), `dib-run-parts` (`DIB_RUN_PARTS`), and the outside phases'
//! `sudo` and `mknod`. The files are dib's own, built into the binary and
//! written into each build: the library and `dib-run-parts` into the hook
//! tree's `.dib/` (so chroot phases see them at the same place under
//! `/tmp/in_target.d`), the commands into the outside phases' `bin/`,
//! with the commands that are dib itself (`dib-oci-unpack`) as symlinks
//! to its executable.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use dib_sandbox::mounts::IN_TARGET;

/// The runtime's directory in the hook tree.
pub const DIR: &str = ".dib";

/// `_LIB`'s files.
const LIB: [(&str, &str); 8] = [
    ("rpm-bootstrap", include_str!("runtime/lib/rpm-bootstrap")),
    ("cloud-image", include_str!("runtime/lib/cloud-image")),
    ("base-tree", include_str!("runtime/lib/base-tree")),
    ("die", include_str!("runtime/lib/die")),
    (
        "common-defaults",
        include_str!("runtime/lib/common-defaults"),
    ),
    ("img-defaults", include_str!("runtime/lib/img-defaults")),
    (
        "common-functions",
        include_str!("runtime/lib/common-functions"),
    ),
    ("img-functions", include_str!("runtime/lib/img-functions")),
];

const RUN_PARTS: &str = include_str!("runtime/dib-run-parts");

/// Commands first on the outside phases' `PATH`.
const OUTSIDE_BIN: [(&str, &str); 3] = [
    ("sudo", include_str!("runtime/sudo")),
    ("mknod", include_str!("runtime/mknod")),
    ("dib-run-parts", RUN_PARTS),
];

/// Commands of the outside phases that are dib itself, by its argv[0].
pub const OUTSIDE_DIB: [&str; 2] = ["dib-oci-unpack", "dib-helper-copy"];

/// The host's CA bundle's copy in the hook tree (`--trust-host-ca`).
const HOST_CA: &str = "host-ca.crt";
/// apt's configuration naming it, for chroot phases (`APT_CONFIG`).
const APT_HOST_CA: &str = "apt-host-ca.conf";

/// The variables that make TLS clients trust only the host's CA bundle,
/// for a hook tree seen at `hooks`: OpenSSL and Python (`SSL_CERT_FILE`),
/// requests and pip, curl, git, node; apt in chroot phases.
pub fn host_ca_env(hooks: &str, chroot: bool) -> Vec<(&'static str, String)> {
    let ca = format!("{hooks}/{DIR}/{HOST_CA}");
    let mut env: Vec<(&str, String)> = [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "NODE_EXTRA_CA_CERTS",
    ]
    .into_iter()
    .map(|k| (k, ca.clone()))
    .collect();
    if chroot {
        env.push(("APT_CONFIG", format!("{hooks}/{DIR}/{APT_HOST_CA}")));
    }
    env
}

/// Copy the CA bundle `ca` into the hook tree `hooks`, with apt's
/// configuration for it as chroot phases see it.
pub fn install_host_ca(ca: &Path, hooks: &Path) -> Result<()> {
    let dir = hooks.join(DIR);
    let to = dir.join(HOST_CA);
    fs::copy(ca, &to).with_context(|| format!("copying the CA bundle {ca:?}"))?;
    let apt = format!("Acquire::https::CaInfo \"/{IN_TARGET}/{DIR}/{HOST_CA}\";\n");
    write(&dir.join(APT_HOST_CA), &apt, 0o644)
}

/// `_LIB` under a hook tree seen at `hooks`.
pub fn lib_dir(hooks: &str) -> String {
    format!("{hooks}/{DIR}/lib")
}

/// `DIB_RUN_PARTS` under a hook tree seen at `hooks`.
pub fn run_parts(hooks: &str) -> String {
    format!("{hooks}/{DIR}/dib-run-parts")
}

/// Write the runtime into the hook tree `hooks` and the commands into
/// `bin`, those that are dib as symlinks to `exe`.
pub fn install(hooks: &Path, bin: &Path, exe: &Path) -> Result<()> {
    let dir = hooks.join(DIR);
    let lib = dir.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {lib:?}"))?;
    for (name, text) in LIB {
        write(&lib.join(name), text, 0o644)?;
    }
    write(&dir.join("dib-run-parts"), RUN_PARTS, 0o755)?;
    for (name, text) in OUTSIDE_BIN {
        write(&bin.join(name), text, 0o755)?;
    }
    for name in OUTSIDE_DIB {
        let link = bin.join(name);
        std::os::unix::fs::symlink(exe, &link)
            .with_context(|| format!("linking {link:?} to {exe:?}"))?;
    }
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {path:?}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {path:?}"))
}
