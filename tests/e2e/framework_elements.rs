//! The framework elements in a Debian build: apt-conf, apt-preferences
//! (from a dpkg manifest), install-bin, install-static, pkg-map,
//! package-installs.yaml's `when:`, install-packages from hooks, and the
//! manifests saved beside the output.

use std::fs;

use libtest_mimic::Failed;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{cache, create_cmd, extract, members, stderr, Dpkg};

pub fn framework_elements_do_their_job() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/README.md", "probe\n", 0o644);
    b.f.file(
        "e/probe/bin/dib-probe-tool",
        "#!/bin/sh\necho tool\n",
        0o700,
    );
    b.f.file("e/probe/static/etc/dib-probe/secret.conf", "s=1\n", 0o600);
    b.f.file(
        "e/probe/element-deps",
        "apt-conf\napt-preferences\ninstall-bin\ninstall-static\n",
        0o644,
    );
    b.f.file(
        "e/probe/pkg-map",
        r#"{"family": {"debian": {"editor": "nano"}}, "default": {"editor": "vi", "none": ""}}"#,
        0o644,
    );
    b.f.file(
        "e/probe/post-install.d/50-report",
        "#!/bin/bash\nset -eu\n{\n\
         echo \"pkg-map: $(pkg-map --element probe editor none)\"\n\
         echo \"missing: $(pkg-map --element probe --missing-ok other)\"\n\
         echo \"init: ${DIB_INIT_SYSTEM:-none}\"\n\
         } > /etc/dib-probe-report\n",
        0o755,
    );
    // install-static follows the image's symlinked /lib (merged /usr) and
    // leaves existing directories' modes alone.
    b.f.file("e/probe/static/lib/dib-probe/data", "d\n", 0o644);
    std::fs::set_permissions(
        b.f.path("e/probe/static/etc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    // environment.d sees the tree when package lists are made (as DIB's
    // squash in extra-data.d), and package-installs.yaml's when: uses it.
    b.f.file(
        "e/probe/environment.d/10-probe.bash",
        "if [ -e \"${TMP_MOUNT_PATH:-/nonexistent}/etc/debian_version\" ] || [ -e /tmp/in_target.d ]; then\n\
         \x20   export DIB_E2E_HAS_TREE=yes\nelse\n    export DIB_E2E_HAS_TREE=no\nfi\n",
        0o644,
    );
    b.f.file(
        "e/probe/package-installs.yaml",
        "ed:\n  when: DIB_E2E_HAS_TREE = yes\n  colour: red\n",
        0o644,
    );
    // apt used directly by a hook, install-packages -m mapping through
    // pkg-map, and install-packages in finalise.d.
    b.f.file(
        "e/probe/install.d/60-apt",
        "#!/bin/bash\nset -eu\napt-get install -y -q --no-install-recommends bc\n",
        0o755,
    );
    b.f.file(
        "e/probe/install.d/61-mapped",
        "#!/bin/bash\nset -eu\ninstall-packages -m probe editor\n",
        0o755,
    );
    b.f.file(
        "e/probe/finalise.d/50-late",
        "#!/bin/bash\nset -eu\ninstall-packages dc\n",
        0o755,
    );
    let apt_conf =
        b.f.file("apt.conf", "APT::Get::Assume-Yes \"true\";\n", 0o644);
    let manifest = b.f.file("manifest", "less 590-2.1~deb12u2\n", 0o644);
    let out = b.f.path("img").display().to_string();
    let (apt_conf, manifest) = (
        apt_conf.display().to_string(),
        manifest.display().to_string(),
    );
    let o = create_cmd(
        &b,
        &cache(),
        &["-t", "tar", "-o", &out, "debian-minimal", "probe"],
        &[
            ("DIB_APT_CONF", &apt_conf),
            ("DIB_DPKG_MANIFEST", &manifest),
        ],
    )
    .output()?;
    succeeded(&o)?;
    let tarball = b.f.path("img.tar");
    eq(
        &members(
            &tarball,
            &[
                "./usr/local/bin/dib-probe-tool",
                "./etc/dib-probe/secret.conf",
                "./etc/apt/apt.conf",
                "./etc/apt/preferences",
                "./etc/dib-manifests/dib_environment",
            ],
        )?
        .join("\n"),
        "./etc/apt/apt.conf 0/0 644\n\
         ./etc/apt/preferences 0/0 644\n\
         ./etc/dib-manifests/dib_environment 0/0 644\n\
         ./etc/dib-probe/secret.conf 0/0 600\n\
         ./usr/local/bin/dib-probe-tool 0/0 755",
        "files the framework elements installed",
    )?;
    let x = b.f.path("x");
    extract(
        &tarball,
        &x,
        &[
            "./etc/dib-probe-report",
            "./etc/apt/preferences",
            "./var/lib/dpkg",
        ],
    )?;
    check(
        stderr(&o).contains("unknown key 'colour' ignored"),
        format!("no warning about the unknown key:\n{}", stderr(&o)),
    )?;
    let dpkg = Dpkg::of(&x);
    for pkg in ["ed", "bc", "nano", "dc"] {
        eq(dpkg.state(pkg)?, "installed", pkg)?;
    }
    let modes = members(&tarball, &["./etc/", "./usr/lib/dib-probe/data"])?;
    eq(
        &modes.join("\n"),
        "./etc/ 0/0 755\n./usr/lib/dib-probe/data 0/0 644",
        "install-static: /etc's mode, and a file under the symlinked /lib",
    )?;
    eq(
        fs::read_to_string(x.join("etc/dib-probe-report"))?.trim_end(),
        "pkg-map: nano\nmissing: other\ninit: systemd",
        "what the hooks saw",
    )?;
    eq(
        fs::read_to_string(x.join("etc/apt/preferences"))?.trim_end(),
        "Package: less\nPin: version 590-2.1~deb12u2\nPin-Priority: 1001",
        "apt preferences from the manifest",
    )?;
    // manifests: a copy beside the output, with the dpkg manifest.
    let saved = b.f.path("img.d/dib-manifests");
    check(
        saved.join("dib_environment").is_file(),
        "no img.d/dib-manifests/dib_environment",
    )?;
    let dpkg_manifest = fs::read_to_string(saved.join("dib-manifest-dpkg-img"))?;
    check(
        dpkg_manifest.lines().any(|l| l.starts_with("dpkg ")),
        format!("the dpkg manifest lists no dpkg: {dpkg_manifest}"),
    )?;
    b.assert_clean()
}
