//! Layouts made in temp dirs, unpacked into temp dirs.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};

use serde_json::json;
use tar::EntryType;

use super::*;
use crate::oci::digest_of;

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

fn file(path: &str, data: &str) -> E {
    E {
        data: data.as_bytes().to_vec(),
        ..entry(path, EntryType::Regular, 0o644)
    }
}

fn sym(path: &str, target: &str) -> E {
    E {
        link: Some(target.into()),
        ..entry(path, EntryType::Symlink, 0o777)
    }
}

fn hard(path: &str, target: &str) -> E {
    E {
        link: Some(target.into()),
        ..entry(path, EntryType::Link, 0o644)
    }
}

impl E {
    fn mode(self, mode: u32) -> E {
        E { mode, ..self }
    }
    fn owner(self, uid: u64, gid: u64) -> E {
        E {
            owner: (uid, gid),
            ..self
        }
    }
    fn xattr(mut self, name: &str, value: &str) -> E {
        self.xattrs.push((name.into(), value.as_bytes().to_vec()));
        self
    }
}

const MTIME: u64 = 1_000_000;

/// A tar stream of `entries`, names written as they are (the tar crate's
/// own setters refuse `..` and absolute paths, which these tests need).
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
        h.set_mtime(MTIME);
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
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image layout being written.
struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Store `bytes`: its descriptor.
    fn blob(&self, media: &str, bytes: &[u8]) -> serde_json::Value {
        let digest = digest_of(bytes);
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::write(self.path().join("blobs/sha256").join(hex), bytes).unwrap();
        json!({"mediaType": media, "digest": digest, "size": bytes.len()})
    }

    /// An image of `layers` (media type, bytes) for `arch`: its manifest's
    /// descriptor.
    fn image(&self, arch: &str, layers: &[(&str, Vec<u8>)]) -> serde_json::Value {
        let layers: Vec<serde_json::Value> = layers.iter().map(|(m, b)| self.blob(m, b)).collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config,
            "layers": layers,
        });
        self.blob(MANIFEST, manifest.to_string().as_bytes())
    }

    fn index(&self, manifests: Vec<serde_json::Value>) {
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
        fs::write(self.path().join("index.json"), index.to_string()).unwrap();
    }

    /// A layout of one amd64 image of `layers`.
    fn single(layers: &[(&str, Vec<u8>)]) -> Layout {
        let l = Layout::new();
        let m = l.image("amd64", layers);
        l.index(vec![m]);
        l
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn unpack_into(l: &Layout, name: Option<&str>, arch: Arch) -> (tempfile::TempDir, Result<Summary>) {
    let out = tempfile::tempdir().unwrap();
    fs::create_dir(out.path().join("root")).unwrap();
    let r = unpack_as(
        l.path(),
        name,
        "test-image",
        arch,
        &out.path().join("root"),
        is_root(),
    );
    (out, r)
}

fn err_of(l: &Layout) -> String {
    let (_out, r) = unpack_into(l, None, Arch::Amd64);
    format!("{:#}", r.expect_err("the unpack should fail"))
}

#[test]
fn two_layers_with_whiteouts_links_owners_and_xattrs() {
    let lower = tar_of(&[
        dir("etc"),
        file("etc/a", "1"),
        hard("etc/b", "etc/a"),
        dir("usr"),
        dir("usr/bin"),
        dir("usr/lib"),
        file("usr/lib/gone", "x"),
        sym("bin", "usr/bin"),
        sym("lib", "/usr/lib"),
        dir("opq"),
        file("opq/old", "x"),
        dir("opq/sub"),
        file("opq/sub/old2", "x"),
        dir("root").mode(0o700),
        file("root/owned", "o")
            .mode(0o4750)
            .owner(1234, 4321)
            .xattr("user.dib", "kept"),
        entry("run/fifo", EntryType::Fifo, 0o640),
    ]);
    let upper = tar_of(&[
        file("usr/lib/.wh.gone", ""),
        file("opq/.wh..wh..opq", ""),
        file("opq/new", "n"),
        file("opq/sub/new2", "n"),
        file("bin/x", "via the symlinked parent"),
        file("lib/y", "via an absolute symlink"),
        hard("usr/bin/hard", "root/owned"),
    ]);
    let l = Layout::single(&[(GZ, gzip(&lower)), (TAR, upper)]);
    let (out, r) = unpack_into(&l, None, Arch::Amd64);
    let s = r.unwrap();
    let root = out.path().join("root");
    assert_eq!(s.layers, 2);
    assert_eq!(s.entries, 23);
    assert!(s.manifest.starts_with("sha256:"));
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    let exists = |p: &str| fs::symlink_metadata(root.join(p)).is_ok();
    assert_eq!(read("etc/a"), "1");
    assert_eq!(
        fs::metadata(root.join("etc/a")).unwrap().ino(),
        fs::metadata(root.join("etc/b")).unwrap().ino()
    );
    assert!(!exists("usr/lib/gone"));
    assert!(!exists("usr/lib/.wh.gone"));
    assert!(!exists("opq/old") && !exists("opq/sub/old2"));
    assert!(!exists("opq/.wh..wh..opq"));
    assert_eq!(read("opq/new"), "n");
    assert_eq!(read("opq/sub/new2"), "n");
    assert_eq!(read("usr/bin/x"), "via the symlinked parent");
    assert_eq!(read("usr/lib/y"), "via an absolute symlink");
    assert!(fs::symlink_metadata(root.join("bin"))
        .unwrap()
        .file_type()
        .is_symlink());
    let owned = fs::metadata(root.join("root/owned")).unwrap();
    assert_eq!(owned.permissions().mode() & 0o7777, 0o4750);
    if is_root() {
        assert_eq!((owned.uid(), owned.gid()), (1234, 4321));
    }
    assert_eq!(
        fs::metadata(root.join("usr/bin/hard")).unwrap().ino(),
        owned.ino()
    );
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(root.join("root/owned"), "user.dib", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"kept");
    assert!(fs::symlink_metadata(root.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let etc = fs::metadata(root.join("etc")).unwrap();
    assert_eq!(etc.mtime(), MTIME as i64);
    assert_eq!(
        fs::metadata(root.join("root"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(owned.mtime(), MTIME as i64);
}

#[test]
fn escaping_paths_are_refused_or_stay_inside() {
    for (entries, want) in [
        (
            vec![file("../x", "x")],
            "has the entry ../x, which leads outside",
        ),
        (
            vec![file("/abs", "x")],
            "has the entry /abs, an absolute path",
        ),
        (
            vec![sym("l", "/"), file("l/../../etc/x", "x")],
            "has the entry l/../../etc/x, which leads outside",
        ),
        (
            vec![file("a", "x"), hard("h", "../../a")],
            "a hard link to ../../a, which is outside the image's root",
        ),
        (
            vec![hard("h", "nothing")],
            "a hard link to nothing, which the image does not hold",
        ),
        (
            vec![file("f", "x"), file("f/g", "x")],
            "has the entry f/g, but f on its way is not a directory",
        ),
        (
            vec![sym("loop", "loop"), file("loop/x", "x")],
            "more than 40 symlinks",
        ),
    ] {
        let l = Layout::single(&[(TAR, tar_of(&entries))]);
        let (out, r) = unpack_into(&l, None, Arch::Amd64);
        let e = format!("{:#}", r.expect_err(want));
        assert!(e.contains(want), "{e}");
        assert!(e.starts_with("layer sha256:"), "{e}");
        assert!(!e.contains("unpacking"), "{e}");
        assert!(!out.path().join("x").exists() && !out.path().join("etc").exists());
    }
    // Symlinks met on the way resolve as if the root were /.
    let l = Layout::single(&[(
        TAR,
        tar_of(&[
            sym("l", "/"),
            file("l/etc/y", "y"),
            sym("up", "../../.."),
            file("up/z", "z"),
            sym("abs", "/etc"),
            file("abs/w", "w"),
        ]),
    )]);
    let (out, r) = unpack_into(&l, None, Arch::Amd64);
    r.unwrap();
    let root = out.path().join("root");
    assert_eq!(fs::read_to_string(root.join("etc/y")).unwrap(), "y");
    assert_eq!(fs::read_to_string(root.join("z")).unwrap(), "z");
    assert_eq!(fs::read_to_string(root.join("etc/w")).unwrap(), "w");
    assert!(!out.path().join("z").exists());
}

#[test]
fn a_final_symlink_is_replaced_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "host").unwrap();
    let l = Layout::single(&[
        (TAR, tar_of(&[sym("f", victim.to_str().unwrap())])),
        (TAR, tar_of(&[file("f", "image")])),
    ]);
    let (out, r) = unpack_into(&l, None, Arch::Amd64);
    r.unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "host");
    assert_eq!(
        fs::read_to_string(out.path().join("root/f")).unwrap(),
        "image"
    );
}

#[test]
fn device_nodes_are_refused() {
    let l = Layout::single(&[(
        TAR,
        tar_of(&[dir("dev"), entry("dev/sda", EntryType::Char, 0o660)]),
    )]);
    let e = err_of(&l);
    assert!(
        e.contains("holds the device node dev/sda: a container image's layers may not hold devices, which a rootless build cannot create"),
        "{e}"
    );
    let layer = &digest_of(&tar_of(&[
        dir("dev"),
        entry("dev/sda", EntryType::Char, 0o660),
    ]));
    assert!(e.starts_with(&format!("layer {layer} holds")), "{e}");
}

#[test]
fn a_damaged_blob_is_named() {
    let bytes = tar_of(&[file("a", "x")]);
    let l = Layout::single(&[(TAR, bytes.clone())]);
    let digest = digest_of(&bytes);
    let path = l
        .path()
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let mut damaged = bytes;
    damaged[600] ^= 1;
    fs::write(path, damaged).unwrap();
    let e = err_of(&l);
    assert!(e.contains(&format!("the blob {digest} is damaged")), "{e}");
}

#[test]
fn another_architecture_is_refused_with_the_fix() {
    let l = Layout::new();
    let m = l.image("arm64", &[(TAR, tar_of(&[file("a", "x")]))]);
    l.index(vec![m]);
    let (_out, r) = unpack_into(&l, None, Arch::Amd64);
    assert_eq!(
        format!("{:#}", r.unwrap_err()),
        "the image test-image is for arm64 (linux), this build is for amd64: build with -a \
         arm64, or use the image's amd64 variant"
    );
    let (_out, r) = unpack_into(&l, None, Arch::Arm64);
    r.unwrap();
}

#[test]
fn zstd_layers_are_refused_naming_the_media_type() {
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    let l = Layout::single(&[(zstd, vec![0x28, 0xb5, 0x2f, 0xfd, 0])]);
    let e = err_of(&l);
    assert!(
        e.contains(&format!(
            "has the media type {zstd}, which dib cannot unpack"
        )),
        "{e}"
    );
}

#[test]
fn an_index_of_platforms_gives_the_builds_one() {
    let l = Layout::new();
    let amd = l.image("amd64", &[(TAR, tar_of(&[file("which", "amd64")]))]);
    let arm = l.image("arm64", &[(TAR, tar_of(&[file("which", "arm64")]))]);
    let with = |mut d: serde_json::Value, arch: &str, variant: Option<&str>| {
        let mut p = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            p["variant"] = json!(v);
        }
        d["platform"] = p;
        d
    };
    let nested = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [with(arm, "arm64", Some("v8")), with(amd, "amd64", None)],
    });
    let mut top = l.blob(INDEX, nested.to_string().as_bytes());
    top["annotations"] = json!({REF_NAME: "base"});
    l.index(vec![top]);
    for (arch, want) in [(Arch::Amd64, "amd64"), (Arch::Arm64, "arm64")] {
        let (out, r) = unpack_into(&l, Some("base"), arch);
        r.unwrap();
        assert_eq!(
            fs::read_to_string(out.path().join("root/which")).unwrap(),
            want
        );
    }
    let (_out, r) = unpack_into(&l, None, Arch::Armhf);
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("has no linux/arm variant for this armhf build (it has linux/arm64/v8, linux/amd64): build with -a arm64"),
        "{e}"
    );
    let (_out, r) = unpack_into(&l, Some("other"), Arch::Amd64);
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("has no image named \"other\" (its names: base)"),
        "{e}"
    );
}

#[test]
fn a_layout_of_several_images_needs_a_name() {
    let l = Layout::new();
    let mut a = l.image("amd64", &[(TAR, tar_of(&[file("which", "a")]))]);
    let mut b = l.image("amd64", &[(TAR, tar_of(&[file("which", "b")]))]);
    a["annotations"] = json!({REF_NAME: "a"});
    b["annotations"] = json!({REF_NAME: "b"});
    l.index(vec![a, b]);
    let e = err_of(&l);
    assert!(
        e.contains("holds 2 images (its names: a, b): name one"),
        "{e}"
    );
    let (out, r) = unpack_into(&l, Some("b"), Arch::Amd64);
    r.unwrap();
    assert_eq!(
        fs::read_to_string(out.path().join("root/which")).unwrap(),
        "b"
    );
    let not = tempfile::tempdir().unwrap();
    let e = unpack(not.path(), None, Arch::Amd64, not.path()).unwrap_err();
    assert!(e.to_string().contains("is not an OCI image layout"), "{e}");
}

#[test]
fn a_blob_that_is_not_a_file_of_its_size_is_refused_at_once() {
    let bytes = tar_of(&[file("a", "x")]);
    let digest = digest_of(&bytes);
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    // A symlink to an endless device, a longer file: refused before any
    // read past the descriptor's size.
    for swap in ["symlink", "longer"] {
        let l = Layout::single(&[(TAR, bytes.clone())]);
        let path = l.path().join("blobs/sha256").join(&hex);
        fs::remove_file(&path).unwrap();
        match swap {
            "symlink" => std::os::unix::fs::symlink("/dev/zero", &path).unwrap(),
            _ => fs::write(&path, [bytes.as_slice(), b"more"].concat()).unwrap(),
        }
        let e = err_of(&l);
        assert!(
            e.contains(&format!("the blob {digest}")) && e.contains("fetch the image again")
                || e.contains("lacks the blob"),
            "{swap}: {e}"
        );
    }
}

#[test]
fn a_whiteout_of_dot_is_refused_and_global_headers_are_skipped() {
    let l = Layout::single(&[(
        TAR,
        tar_of(&[dir("d"), file("d/a", "x"), file("d/.wh..", "")]),
    )]);
    let e = err_of(&l);
    assert!(e.contains("a whiteout that names no file"), "{e}");

    let mut global = entry("pax_global_header", EntryType::XGlobalHeader, 0o644);
    global.data = b"52 comment=a git archive's commit, of no file\n".to_vec();
    let l = Layout::single(&[(TAR, tar_of(&[global, file("a", "kept")]))]);
    let (out, r) = unpack_into(&l, None, Arch::Amd64);
    r.unwrap();
    let root = out.path().join("root");
    assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "kept");
    assert!(!root.join("pax_global_header").exists());
}

#[test]
fn deep_paths_cost_no_more_than_their_entries() {
    // 400 directories deep, 400 files along the way: quadratic work per
    // entry would take minutes, this takes well under a second.
    let mut entries = Vec::new();
    let mut path = String::new();
    for i in 0..400 {
        if !path.is_empty() {
            path.push('/');
        }
        path.push('d');
        entries.push(dir(&path));
        entries.push(file(&format!("{path}/f{i}"), "x"));
    }
    let mut b = tar::Builder::new(Vec::new());
    for e in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(e.data.len() as u64);
        b.append_data(&mut h, &e.path, e.data.as_slice()).unwrap();
    }
    let l = Layout::single(&[(TAR, b.into_inner().unwrap())]);
    let started = std::time::Instant::now();
    let (_out, r) = unpack_into(&l, None, Arch::Amd64);
    let s = r.unwrap();
    assert_eq!(s.entries, 800);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
