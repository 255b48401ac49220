//! Writing a build's container images, in pid 1: the tree as an OCI image
//! layout (`-t oci`), the same layout in one tar file (`-t oci-archive`)
//! and a docker-archive (`-t docker`), all from one layer; and the disk
//! image as a KubeVirt containerDisk (`-t containerdisk`).
//!
//! Every file is written unnamed (see `pipeline::outputs`) and named with
//! the build's other outputs at the end.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use oci_spec::image::MediaType;
use tar::EntryType;

use std::collections::BTreeMap;

use super::image::{
    config_json, index_json, manifest_json, source_date_epoch, Blob, ImageConfig, OCI_LAYOUT,
};
use super::layer::{LayerWriter, Meta};
use super::Hashing;
use crate::config::{Arch, OutputType};
use crate::pipeline::outputs::{Finished, Output, Unnamed, UnnamedDir};

/// What the images say about themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub arch: Arch,
    /// Creation time, seconds since 1970.
    pub created: u64,
    /// `SOURCE_DATE_EPOCH`: no mtime in a layer is later.
    pub clamp: Option<u64>,
    pub config: ImageConfig,
    /// The name of the image in a layout's index (the tag).
    pub ref_name: String,
    /// `REPO:TAG` of a docker-archive.
    pub docker_tag: String,
    /// The history entry's `created_by`.
    pub created_by: String,
}

impl Spec {
    /// From the hooks' environment once environment.d is sourced (ARCH,
    /// `SOURCE_DATE_EPOCH`, the `DIB_OCI_*` variables), the image's
    /// `REPO:TAG` and the time now.
    pub fn new(env: &BTreeMap<String, String>, docker_target: &str, now: u64) -> Result<Spec> {
        let arch = env
            .get("ARCH")
            .and_then(|a| Arch::parse(a))
            .context("the build's ARCH is not set (internal error)")?;
        let clamp = source_date_epoch(env)?;
        let ref_name = docker_target
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or("latest", |(_, t)| t);
        Ok(Spec {
            arch,
            created: clamp.unwrap_or(now),
            clamp,
            config: ImageConfig::from_env(env)?,
            ref_name: ref_name.to_string(),
            docker_tag: docker_target.to_string(),
            created_by: format!("dib {} create", env!("CARGO_PKG_VERSION")),
        })
    }
}

/// The owner KubeVirt's containerDisk expects of its disk (qemu's user).
const CONTAINER_DISK_ID: u64 = 107;

/// oci, oci-archive and docker outputs of `tree`, from one layer.
pub fn tree_images(outputs: &[&Output], tree: &Path, spec: &Spec) -> Result<Finished> {
    let anchor = &outputs[0].path;
    let tar = Unnamed::new(anchor)?;
    let mut lw = LayerWriter::new(Hashing::new(BufWriter::new(&tar.file)), spec.clamp);
    lw.tree(tree)
        .with_context(|| format!("writing the layer of {}", anchor.display()))?;
    let (w, written) = lw.finish()?;
    let (diff_id, tar_size) = flush(w)?;
    let config = config_json(
        spec.arch,
        spec.created,
        &spec.config,
        &diff_id,
        &spec.created_by,
    )?;
    let config_blob = blob(MediaType::ImageConfig, &config);
    let mut done = Finished::default();
    if !written.skipped.is_empty() {
        let n = written.skipped.len();
        let shown: Vec<&str> = written.skipped.iter().take(5).map(String::as_str).collect();
        done.notes.push(format!(
            "warning: the container image leaves out {n} device node{} or socket{} of the \
             tree (a container's runtime makes its own): {}{}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "" } else { "s" },
            shown.join(", "),
            if n > shown.len() { ", ..." } else { "" }
        ));
    }
    let wants = |k: OutputType| outputs.iter().find(|o| o.kind == k);

    if let Some(out) = wants(OutputType::Docker) {
        let f = Unnamed::new(&out.path)?;
        let mut b = LayerWriter::new(BufWriter::new(&f.file), None);
        let cfg_name = format!("{}.json", hex_of(&config_blob.digest));
        let layer_name = format!("{}/layer.tar", hex_of(&diff_id));
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": cfg_name,
            "RepoTags": [spec.docker_tag],
            "Layers": [layer_name],
        }]))?;
        member(
            &mut b,
            &format!("{}/", hex_of(&diff_id)),
            0,
            io::empty(),
            spec,
        )?;
        member(&mut b, &layer_name, tar_size, reopen(&tar)?, spec)?;
        member(&mut b, &cfg_name, config.len() as u64, &config[..], spec)?;
        let size = manifest.len() as u64;
        member(&mut b, "manifest.json", size, &manifest[..], spec)?;
        end(b, &out.path)?;
        done.files.push(f);
    }

    let oci = wants(OutputType::Oci);
    let archive_out = wants(OutputType::OciArchive);
    if oci.is_none() && archive_out.is_none() {
        return Ok(done);
    }
    let gz = Unnamed::new(anchor)?;
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Hashing::new(BufWriter::new(&gz.file)),
        flate2::Compression::fast(),
    );
    io::copy(&mut reopen(&tar)?, &mut enc).context("compressing the layer")?;
    let (digest, size) = flush(enc.finish().context("compressing the layer")?)?;
    let layer = Blob {
        media_type: MediaType::ImageLayerGzip,
        digest,
        size,
    };
    let layout = Layout::new(config, config_blob, layer, spec)?;
    if let Some(out) = archive_out {
        let f = Unnamed::new(&out.path)?;
        let mut b = LayerWriter::new(BufWriter::new(&f.file), None);
        // The directories too: skopeo, unpacking as a plain user, cannot
        // give directories it had to make up root's owner.
        for dir in ["blobs/", "blobs/sha256/"] {
            member(&mut b, dir, 0, io::empty(), spec)?;
        }
        for (path, bytes) in layout.small() {
            member(&mut b, &path, bytes.len() as u64, bytes, spec)?;
        }
        let path = layout.layer_path();
        member(&mut b, &path, layout.layer.size, reopen(&gz)?, spec)?;
        end(b, &out.path)?;
        done.files.push(f);
    }
    if let Some(out) = oci {
        done.push_dir(layout.into_dir(&out.path, gz));
    }
    Ok(done)
}

/// The disk image (qcow2, in `qcow2`) as a KubeVirt containerDisk: one
/// uncompressed layer holding `/disk/NAME.qcow2`, owned 107:107.
pub fn container_disk(out: &Output, qcow2: &Unnamed, spec: &Spec) -> Result<Finished> {
    let size = qcow2
        .file
        .metadata()
        .context("measuring the converted disk")?
        .len();
    let name = out
        .path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let layer_file = Unnamed::new(&out.path)?;
    let mut lw = LayerWriter::new(Hashing::new(BufWriter::new(&layer_file.file)), None);
    let owned = |mode| Meta {
        uid: CONTAINER_DISK_ID,
        gid: CONTAINER_DISK_ID,
        mode,
        mtime: spec.created,
    };
    lw.append(
        b"disk/",
        EntryType::Directory,
        &owned(0o555),
        0,
        None,
        &[],
        io::empty(),
    )?;
    lw.append(
        format!("disk/{name}.qcow2").as_bytes(),
        EntryType::Regular,
        &owned(0o440),
        size,
        None,
        &[],
        reopen(qcow2)?,
    )
    .with_context(|| format!("writing the layer of {}", out.path.display()))?;
    let (w, _) = lw.finish()?;
    let (diff_id, layer_size) = flush(w)?;
    let image = ImageConfig::default();
    let config = config_json(spec.arch, spec.created, &image, &diff_id, &spec.created_by)?;
    let config_blob = blob(MediaType::ImageConfig, &config);
    let layer = Blob {
        media_type: MediaType::ImageLayer,
        digest: diff_id,
        size: layer_size,
    };
    let layout = Layout::new(config, config_blob, layer, spec)?;
    let mut done = Finished::default();
    done.push_dir(layout.into_dir(&out.path, layer_file));
    Ok(done)
}

/// An image layout of one layer: every document, and where its files go.
struct Layout {
    config: Vec<u8>,
    config_blob: Blob,
    manifest: Vec<u8>,
    manifest_blob: Blob,
    index: Vec<u8>,
    layer: Blob,
}

impl Layout {
    fn new(config: Vec<u8>, config_blob: Blob, layer: Blob, spec: &Spec) -> Result<Layout> {
        let manifest = manifest_json(&config_blob, &layer)?;
        let manifest_blob = blob(MediaType::ImageManifest, &manifest);
        let index = index_json(&manifest_blob, &spec.ref_name, spec.arch)?;
        Ok(Layout {
            config,
            config_blob,
            manifest,
            manifest_blob,
            index,
            layer,
        })
    }

    /// The small files, in the order an archive holds them.
    fn small(&self) -> Vec<(String, &[u8])> {
        vec![
            ("oci-layout".into(), OCI_LAYOUT),
            ("index.json".into(), &self.index[..]),
            (blob_path(&self.config_blob.digest), &self.config[..]),
            (blob_path(&self.manifest_blob.digest), &self.manifest[..]),
        ]
    }

    fn layer_path(&self) -> String {
        blob_path(&self.layer.digest)
    }

    fn into_dir(self, path: &Path, layer: Unnamed) -> UnnamedDir {
        let small = self
            .small()
            .into_iter()
            .map(|(p, b)| (PathBuf::from(p), b.to_vec()))
            .collect();
        UnnamedDir {
            path: path.to_path_buf(),
            files: vec![(PathBuf::from(self.layer_path()), layer)],
            small,
        }
    }
}

fn blob(media_type: MediaType, bytes: &[u8]) -> Blob {
    Blob {
        media_type,
        digest: super::digest_of(bytes),
        size: bytes.len() as u64,
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", hex_of(digest))
}

/// The unnamed file read from its start, by a descriptor of its own.
fn reopen(f: &Unnamed) -> Result<File> {
    let mut file = File::open(f.proc_path()).with_context(|| format!("reading {:?}", f.path))?;
    file.rewind()?;
    Ok(file)
}

/// The digest and size of what went through `w`, once all of it is in
/// the file.
fn flush(w: Hashing<BufWriter<&File>>) -> Result<(String, u64)> {
    let (buf, digest, size) = w.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .context("writing the layer")?;
    Ok((digest, size))
}

/// One member of an archive: root's, 0644 (0755 for a directory, whose
/// name ends in `/`), at the image's time.
fn member(
    b: &mut LayerWriter<BufWriter<&File>>,
    path: &str,
    size: u64,
    data: impl Read,
    spec: &Spec,
) -> Result<()> {
    let dir = path.ends_with('/');
    let (kind, mode) = if dir {
        (EntryType::Directory, 0o755)
    } else {
        (EntryType::Regular, 0o644)
    };
    let meta = Meta {
        uid: 0,
        gid: 0,
        mode,
        mtime: spec.created,
    };
    b.append(path.as_bytes(), kind, &meta, size, None, &[], data)
        .with_context(|| format!("writing {path} into the archive"))
}

fn end(b: LayerWriter<BufWriter<&File>>, path: &Path) -> Result<()> {
    let (w, _) = b.finish()?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
