//! The oci-base element: an OCI image layout made here unpacked as a
//! build's tree (owners, modes, links, xattrs, whiteouts), and bad images
//! and sources failing clearly with nothing left behind.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::Path;

use libtest_mimic::Failed;
use serde_json::json;
use tar::EntryType;

use crate::common::tier::{check, eq, succeeded, Build};
use crate::support::{images_left, tar_entries};

/// One entry of a test layer.
struct E {
    path: String,
    kind: EntryType,
    data: Vec<u8>,
    link: Option<String>,
    mode: u32,
    owner: (u64, u64),
    xattrs: Vec<(String, Vec<u8>)>,
}

fn entry(path: &str, kind: EntryType, mode: u32) -> E {
    E {
        path: path.into(),
        kind,
        data: Vec::new(),
        link: None,
        mode,
        owner: (0, 0),
        xattrs: Vec::new(),
    }
}

fn dir(path: &str) -> E {
    entry(path, EntryType::Directory, 0o755)
}

fn file(path: &str, data: &[u8]) -> E {
    E {
        data: data.to_vec(),
        ..entry(path, EntryType::Regular, 0o644)
    }
}

fn link(kind: EntryType, path: &str, target: &str) -> E {
    E {
        link: Some(target.into()),
        ..entry(path, kind, 0o777)
    }
}

/// A tar stream of `entries`, names written as they are (the tar crate's
/// setters refuse the escaping paths these tests need).
fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let keys: Vec<String> = e
                .xattrs
                .iter()
                .map(|(k, _)| format!("SCHILY.xattr.{k}"))
                .collect();
            b.append_pax_extensions(
                keys.iter()
                    .map(String::as_str)
                    .zip(e.xattrs.iter().map(|(_, v)| v.as_slice())),
            )
            .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.owner.0);
        h.set_gid(e.owner.1);
        h.set_mtime(1_700_000_000);
        h.set_size(e.data.len() as u64);
        let old = h.as_old_mut();
        old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        if let Some(l) = &e.link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(bytes).unwrap();
    g.finish().unwrap()
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Write an OCI image layout at `dir`: one image of `layers` for `arch`,
/// named `base`.
fn layout(dir: &Path, arch: &str, layers: &[(&str, Vec<u8>)]) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let blob = |media: &str, bytes: &[u8]| {
        let digest = dib::oci::digest_of(bytes);
        fs::write(
            dir.join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
            bytes,
        )
        .unwrap();
        json!({"mediaType": media, "digest": digest, "size": bytes.len()})
    };
    let layers: Vec<serde_json::Value> = layers.iter().map(|(m, b)| blob(m, b)).collect();
    let config = json!({"architecture": arch, "os": "linux",
                        "rootfs": {"type": "layers", "diff_ids": []}});
    let config = blob(
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = json!({"schemaVersion": 2,
                          "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": config, "layers": layers});
    let mut m = blob(
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    m["annotations"] = json!({"org.opencontainers.image.ref.name": "base"});
    let index = json!({"schemaVersion": 2, "manifests": [m]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// The OCI names of this host's architecture and of another one.
fn host_and_other_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

/// (path, type, link target) of every entry of a tar file.
fn kinds(tar_file: &Path) -> Result<Vec<(String, EntryType, String)>, Failed> {
    let mut a = tar::Archive::new(fs::File::open(tar_file)?);
    let mut out = Vec::new();
    for e in a.entries()? {
        let e = e?;
        let link = e
            .link_name()?
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        out.push((
            e.path()?.display().to_string(),
            e.header().entry_type(),
            link,
        ));
    }
    Ok(out)
}

pub fn oci_base_unpacks_a_layout_into_the_tree() -> Result<(), Failed> {
    let b = Build::new();
    let (arch, _) = host_and_other_arch();
    let mut busybox = Vec::new();
    fs::File::open("/bin/busybox")?.read_to_end(&mut busybox)?;
    let lower = tar_of(&[
        dir("bin"),
        E {
            mode: 0o755,
            ..file("bin/busybox", &busybox)
        },
        link(EntryType::Symlink, "bin/sh", "busybox"),
        dir("etc"),
        link(
            EntryType::Symlink,
            "etc/os-release",
            "../usr/lib/os-release",
        ),
        file("etc/hostname", b"container\n"),
        file("etc/resolv.conf", b"nameserver 192.0.2.53\n"),
        E {
            mode: 0o700,
            ..dir("root")
        },
        E {
            mode: 0o4750,
            owner: (1234, 4321),
            xattrs: vec![("user.dib".into(), b"kept".to_vec())],
            ..file("root/owned", b"owned\n")
        },
        E {
            mode: 0o1777,
            ..dir("tmp")
        },
        dir("usr"),
        dir("usr/bin"),
        dir("usr/lib"),
        file(
            "usr/lib/os-release",
            b"PRETTY_NAME=\"Test\"\nID=debian\nVERSION_CODENAME=trixie\n",
        ),
        file("usr/lib/gone", b"whited out\n"),
        link(EntryType::Symlink, "lib", "usr/lib"),
        dir("opq"),
        file("opq/old", b"hidden by the opaque directory\n"),
        entry("run/fifo", EntryType::Fifo, 0o600),
    ]);
    let upper = tar_of(&[
        file("usr/lib/.wh.gone", b""),
        file("opq/.wh..wh..opq", b""),
        file("opq/new", b"new\n"),
        file("lib/added", b"through the lib symlink\n"),
        link(EntryType::Link, "usr/bin/hard", "root/owned"),
    ]);
    let dir = b.f.path("layout");
    layout(&dir, arch, &[(GZ, gzip(&lower)), (TAR, upper)]);
    b.f.file(
        "e/probe/cleanup.d/10-distro",
        "#!/bin/sh\necho \"$DISTRO_NAME $DIB_RELEASE\" > \"$DIB_TEST_OUT/distro\"\n",
        0o755,
    );
    let out = b.f.path("images/img").display().to_string();
    let base = format!("oci:{}:base", dir.display());
    let o = b
        .dib(
            &["create", "-n", "-t", "tar", "-o", &out, "oci-base", "probe"],
            &[("DIB_OCI_BASE", &base)],
        )
        .output()?;
    succeeded(&o)?;
    let log = String::from_utf8_lossy(&o.stderr);
    check(
        log.contains("dib-oci-unpack: unpacked the image sha256:")
            && log.contains("(2 layers, 24 entries)")
            && log.contains("oci-base: the image is debian trixie"),
        format!("no summary lines:\n{log}"),
    )?;
    eq(&b.out("distro"), "debian trixie", "DISTRO_NAME DIB_RELEASE")?;
    let tar_file = b.f.path("images/img.tar");
    let entries = tar_entries(fs::File::open(&tar_file)?)?;
    let find = |p: &str| entries.iter().find(|e| e.0 == p);
    let owned = find("./root/owned").ok_or("no ./root/owned")?;
    eq(
        &format!("{} {} {:o} {:?}", owned.1, owned.2, owned.3, owned.4),
        "1234 4321 4750 [\"user.dib=kept\"]",
        "uid gid mode xattrs of /root/owned",
    )?;
    let tmp = find("./tmp/").or_else(|| find("./tmp")).ok_or("no ./tmp")?;
    eq(&format!("{:o}", tmp.3), "1777", "the mode of /tmp")?;
    for gone in [
        "./usr/lib/gone",
        "./usr/lib/.wh.gone",
        "./opq/old",
        "./opq/.wh..wh..opq",
        "./etc/hostname",
    ] {
        check(find(gone).is_none(), format!("{gone} is in the tar"))?;
    }
    for kept in ["./opq/new", "./usr/lib/added", "./bin/busybox"] {
        check(find(kept).is_some(), format!("{kept} is not in the tar"))?;
    }
    let kinds = kinds(&tar_file)?;
    let kind = |p: &str| kinds.iter().find(|k| k.0 == p);
    let hard = kind("./usr/bin/hard").ok_or("no ./usr/bin/hard")?;
    check(
        hard.1 == EntryType::Link && hard.2.trim_start_matches("./") == "root/owned",
        format!("./usr/bin/hard is not a hard link to root/owned: {hard:?}"),
    )?;
    let lib = kind("./lib").ok_or("no ./lib")?;
    check(
        lib.1 == EntryType::Symlink && lib.2 == "usr/lib",
        format!("./lib is not the symlink to usr/lib: {lib:?}"),
    )?;
    let fifo = kind("./run/fifo").ok_or("no ./run/fifo")?;
    check(fifo.1 == EntryType::Fifo, format!("./run/fifo: {fifo:?}"))?;
    b.assert_clean()
}

pub fn bad_oci_bases_fail_clearly_and_leave_nothing() -> Result<(), Failed> {
    let b = Build::new();
    let (arch, other) = host_and_other_arch();
    let device = b.f.path("device");
    layout(
        &device,
        arch,
        &[(
            TAR,
            tar_of(&[dir("dev"), entry("dev/sda", EntryType::Block, 0o660)]),
        )],
    );
    let escaping = b.f.path("escaping");
    layout(&escaping, arch, &[(TAR, tar_of(&[file("../x", b"x")]))]);
    let foreign = b.f.path("foreign");
    layout(&foreign, other, &[(TAR, tar_of(&[file("x", b"x")]))]);
    let deb = |oci: &str| if oci == "amd64" { "amd64" } else { "arm64" };
    let arch_error = format!(
        "is for {other} (linux), this build is for {}: build with -a {}, or use the image's \
         {arch} variant",
        deb(arch),
        deb(other)
    );
    let cases: Vec<(Option<String>, String)> = vec![
        (
            Some(format!("oci:{}", device.display())),
            "holds the device node dev/sda: a container image's layers may not hold devices, \
             which a rootless build cannot create"
                .into(),
        ),
        (
            Some(escaping.display().to_string()),
            "has the entry ../x, which leads outside the image's root".into(),
        ),
        (Some(format!("oci:{}", foreign.display())), arch_error),
        (None, "oci-base: DIB_OCI_BASE is not set".into()),
        (
            Some(format!("oci:{}", b.f.path("nothing").display())),
            format!(
                "the OCI image layout {} does not exist",
                b.f.path("nothing").display()
            ),
        ),
        (
            Some("docker://bad_host.example/x:1".into()),
            "the image reference \"docker://bad_host.example/x:1\" has a bad registry host".into(),
        ),
        (
            Some("127.0.0.1:1/x:1".into()),
            "cannot reach the registry 127.0.0.1:1".into(),
        ),
    ];
    let out = b.f.path("images/img").display().to_string();
    for (base, want) in cases {
        let mut cmd = b.dib(&["create", "-n", "-t", "tar", "-o", &out, "oci-base"], &[]);
        if let Some(base) = &base {
            cmd.env("DIB_OCI_BASE", base);
        }
        let o = cmd.output()?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        check(
            !o.status.success() && stderr.contains(&want),
            format!("DIB_OCI_BASE={base:?}: want an error with {want:?}, got:\n{stderr}"),
        )?;
        let left = images_left(&b)?;
        check(
            left.is_empty(),
            format!("DIB_OCI_BASE={base:?}: left in the output directory: {left:?}"),
        )?;
        b.assert_clean()?;
    }
    // No partial fetch is left in the cache.
    let cache = b.f.path("home/.cache/image-create/oci-base");
    let partial: Vec<_> = fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("partial"))
        .collect();
    check(
        partial.is_empty(),
        format!("left in the cache: {partial:?}"),
    )
}
