//! Debian trees as tar outputs: a sound dpkg database with the packages
//! asked for (`-p`, package-installs.yaml), build-time files and .debs
//! gone; the `debian` element's cloud packages; `apt-sources` replacing
//! the image's sources.

use std::fs;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{cache, create, create_cmd, extract, members, Dpkg};

pub fn debian_minimal_tar_is_a_sound_debian_tree() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file(
        "e/probe/install.d/50-marker",
        "#!/bin/bash\nset -eu\necho e2e > /etc/dib-e2e-marker\n",
        0o755,
    );
    b.f.file(
        "e/probe/package-installs.yaml",
        "file:\n  phase: post-install.d\ntree:\n  build-only: true\nnano:\n  when: DIB_E2E_NANO = yes\n",
        0o644,
    );
    // when: needs its variable set (DIB errors otherwise): environment.d does.
    b.f.file(
        "e/probe/environment.d/10-probe.bash",
        "export DIB_E2E_NANO=${DIB_E2E_NANO:-no}\n",
        0o644,
    );
    // Between the installs and the build-only removals of post-install.d.
    b.f.file(
        "e/probe/post-install.d/50-saw-tree",
        "#!/bin/bash\nset -eu\ncommand -v tree > /etc/dib-e2e-saw-tree\n",
        0o755,
    );
    let out = b.f.path("deb");
    let o = create(
        &b,
        &cache(),
        &[
            "-t",
            "tar",
            "-o",
            &out.display().to_string(),
            "-p",
            "less",
            "debian-minimal",
            "probe",
        ],
    )?;
    succeeded(&o)?;
    let tarball = b.f.path("deb.tar");
    let got = members(
        &tarball,
        &[
            "./etc/shadow",
            "./var/cache/apt/archives/partial/",
            "./etc/dib_environment",
            "./etc/dib-e2e-marker",
            "./usr/bin/less",
        ],
    )?;
    eq(
        &got.join("\n"),
        "./etc/dib-e2e-marker 0/0 644\n\
         ./etc/dib_environment 0/0 644\n\
         ./etc/shadow 0/42 640\n\
         ./usr/bin/less 0/0 755\n\
         ./var/cache/apt/archives/partial/ 42/0 700",
        "owners and modes in the tar",
    )?;
    // dpkg's view of the tree: nothing half-installed, less (from -p) in;
    // package-installs.yaml: file installed in post-install.d, tree only
    // while building, nano not at all (its when: does not hold).
    let x = b.f.path("x");
    extract(&tarball, &x, &["./var/lib/dpkg"])?;
    let dpkg = Dpkg::of(&x);
    dpkg.audit_is_clean()?;
    for (pkg, want) in [
        ("less", "installed"),
        ("file", "installed"),
        ("tree", "absent"),
        ("nano", "absent"),
    ] {
        eq(dpkg.state(pkg)?, want, &format!("package {pkg}"))?;
    }
    let saw = members(&tarball, &["./etc/dib-e2e-saw-tree"])?;
    check(
        saw.len() == 1,
        "the build-only package was not there during post-install.d",
    )?;
    // The .deb of less stays in the image cache for the next build, and
    // not in the image.
    let cached: Vec<String> = fs::read_dir(cache().join("apt"))?
        .flatten()
        .flat_map(|d| {
            fs::read_dir(d.path().join("archives"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    check(
        cached
            .iter()
            .any(|n| n.starts_with("less_") && n.ends_with(".deb")),
        format!("no less .deb in the image cache's apt archives: {cached:?}"),
    )?;
    let mut archive = tar::Archive::new(fs::File::open(&tarball)?);
    for entry in archive.entries()? {
        let path = entry?.path()?.display().to_string();
        check(
            !(path.starts_with("./var/cache/apt/archives/") && path.ends_with(".deb")),
            format!("a .deb was left in the image: {path}"),
        )?;
    }
    // The build's own settings are gone from the image.
    let leftovers = members(
        &tarball,
        &[
            "./usr/sbin/policy-rc.d",
            "./etc/dpkg/dpkg.cfg.d/dib-unsafe-io",
            "./usr/local/sbin/apt-get",
            "./var/cache/apt/archives/.dib-lock",
        ],
    )?;
    check(
        leftovers.is_empty(),
        format!("build-time files left in the image: {leftovers:?}"),
    )?;
    b.assert_clean()
}
pub fn the_debian_element_is_cloud_ready() -> Result<(), Failed> {
    let b = Build::new();
    let out = b.f.path("cloud");
    let o = create(
        &b,
        &cache(),
        &["-t", "tar", "-o", &out.display().to_string(), "debian"],
    )?;
    succeeded(&o)?;
    let tarball = b.f.path("cloud.tar");
    let x = b.f.path("x");
    extract(&tarball, &x, &["./var/lib/dpkg"])?;
    let dpkg = Dpkg::of(&x);
    for pkg in ["openssh-server", "cloud-init", "cloud-guest-utils", "sudo"] {
        eq(dpkg.state(pkg)?, "installed", pkg)?;
    }
    dpkg.audit_is_clean()?;
    let mut archive = tar::Archive::new(fs::File::open(&tarball)?);
    for entry in archive.entries()? {
        let path = entry?.path()?.display().to_string();
        check(
            !path.starts_with("./etc/ssh/ssh_host_"),
            format!("a build-time ssh host key is in the image: {path}"),
        )?;
    }
    b.assert_clean()
}
pub fn apt_sources_replaces_the_images_sources() -> Result<(), Failed> {
    let b = Build::new();
    // The sources the bootstrap used (from a first build's tree), plus a
    // marker: still valid for installing, and recognisable afterwards.
    let first = b.f.path("first").display().to_string();
    succeeded(&create(
        &b,
        &cache(),
        &["-t", "tar", "-o", &first, "debian-minimal"],
    )?)?;
    let x = b.f.path("x");
    extract(&b.f.path("first.tar"), &x, &["./etc/apt/sources.list"])?;
    let sources = format!(
        "# dib-e2e apt-sources\n{}",
        fs::read_to_string(x.join("etc/apt/sources.list"))?
    );
    let file =
        b.f.file("sources.list", &sources, 0o644)
            .display()
            .to_string();
    b.f.file("e/probe/element-deps", "apt-sources\n", 0o644);
    let second = b.f.path("second").display().to_string();
    let o = create_cmd(
        &b,
        &cache(),
        &[
            "-t",
            "tar",
            "-o",
            &second,
            "-p",
            "less",
            "debian-minimal",
            "probe",
        ],
        &[("DIB_APT_SOURCES", &file)],
    )
    .output()?;
    succeeded(&o)?;
    let y = b.f.path("y");
    extract(&b.f.path("second.tar"), &y, &["./etc/apt/sources.list"])?;
    eq(
        &fs::read_to_string(y.join("etc/apt/sources.list"))?,
        &sources,
        "the image's sources.list",
    )?;
    b.assert_clean()
}
