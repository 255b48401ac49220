//! Unpacking a container image's OCI image layout into a build's tree, as
//! root of the build's user namespace (the `oci-base` element).
//!
//! The manifest is picked from `index.json` (by `org.opencontainers.image.ref.name`,
//! or the only one), through nested image indexes by the build's platform;
//! every blob is checked against its digest while it is read. The layers'
//! entries are read with the `tar` crate and made here, each through file
//! descriptors of its parent directory: parents are resolved component by
//! component inside the root (a symlink on the way is followed as if the
//! root were `/`, `..` stops at the root), a final component is never
//! followed, and nothing a layer says can lead out of the root. Device
//! nodes are refused (a rootless build cannot make them); whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) remove what lower layers put there.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::config::Arch;

/// The annotation naming an image in a layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The most symlinks followed while resolving one path (Linux's limit).
const MAX_SYMLINKS: usize = 40;
/// The largest index, manifest or configuration read.
const MAX_JSON: u64 = 4 << 20;
/// How deep image indexes may nest.
const MAX_NESTING: usize = 4;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_LAYERS: [&str; 3] = [
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// What was unpacked, for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The image manifest's digest.
    pub manifest: String,
    pub layers: usize,
    /// Entries made (whiteouts included).
    pub entries: u64,
    /// Extended attributes that could not be set (`security.*`,
    /// `trusted.*`): "NAME on N files (ERROR)".
    pub skipped_xattrs: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the image {} ({} layer{}, {} entries)",
            self.manifest,
            self.layers,
            if self.layers == 1 { "" } else { "s" },
            self.entries
        )
    }
}

/// Unpack the image `name` (or the layout's only image) of the OCI image
/// layout `layout` for `arch` into the directory `target`.
pub fn unpack(layout: &Path, name: Option<&str>, arch: Arch, target: &Path) -> Result<Summary> {
    let what = match name {
        Some(n) => format!("oci:{}:{n}", layout.display()),
        None => format!("oci:{}", layout.display()),
    };
    unpack_as(layout, name, &what, arch, target, true)
}

/// [`unpack`], the image called `what` in errors; owners set when `chown`.
pub fn unpack_as(
    layout: &Path,
    name: Option<&str>,
    what: &str,
    arch: Arch,
    target: &Path,
    chown: bool,
) -> Result<Summary> {
    let l = Layout { dir: layout, what };
    let (digest, manifest) = l.pick(name, arch)?;
    let config: ImageConfiguration = l.json(manifest.config(), "configuration")?;
    check_platform(what, &config, arch)?;
    let mut tree = Tree::open(target, chown)?;
    for layer in manifest.layers() {
        tree.apply_layer(&l, layer)?;
    }
    tree.finish()?;
    let skipped_xattrs = tree
        .skipped
        .iter()
        .map(|(name, (n, err))| format!("{name} on {n} file{} ({err})", plural(*n)))
        .collect();
    Ok(Summary {
        manifest: digest,
        layers: manifest.layers().len(),
        entries: tree.entries,
        skipped_xattrs,
    })
}

/// One plain tar layer read from `r` applied to the tree at `target` as
/// an image's layer is (whiteouts, owners, no path out of the tree), `what`
/// naming it in errors; the number of entries.
pub fn apply_tar(target: &Path, r: impl Read, what: &str) -> Result<u64> {
    let mut tree = Tree::open(target, true)?;
    tree.digest = what.to_string();
    let mut a = tar::Archive::new(r);
    tree.entries_of(&mut a)?;
    tree.finish()?;
    Ok(tree.entries)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The Debian name of an OCI architecture dib builds for.
fn debian_arch(oci: &str) -> Option<&'static str> {
    [Arch::Amd64, Arch::Arm64, Arch::Armhf, Arch::I386]
        .into_iter()
        .find(|a| super::platform(*a).0 == oci)
        .map(Arch::as_str)
}

fn check_platform(what: &str, config: &ImageConfiguration, arch: Arch) -> Result<()> {
    let (want, _) = super::platform(arch);
    let (got, os) = (config.architecture().to_string(), config.os().to_string());
    if got == want && os == "linux" {
        return Ok(());
    }
    if os != "linux" {
        bail!(
            "the image {what} is for {got} ({os}), this build is for {} (linux): use a Linux image",
            arch.as_str()
        );
    }
    match debian_arch(&got) {
        Some(deb) => bail!(
            "the image {what} is for {got} ({os}), this build is for {}: build with -a {deb}, \
             or use the image's {want} variant",
            arch.as_str()
        ),
        None => bail!(
            "the image {what} is for {got} ({os}), which dib does not build for; this build is \
             for {}: use the image's {want} variant",
            arch.as_str()
        ),
    }
}

/// What a descriptor points at.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
    Unknown,
}

fn kind(media: &MediaType) -> Kind {
    match media {
        MediaType::ImageIndex => Kind::Index,
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::Other(m) if m == DOCKER_LIST => Kind::Index,
        MediaType::Other(m) if m == DOCKER_MANIFEST => Kind::Manifest,
        _ => Kind::Unknown,
    }
}

/// `os/arch[/variant]` of a descriptor's platform.
fn platform_name(d: &Descriptor) -> String {
    match d.platform() {
        Some(p) => {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        }
        None => "unknown".into(),
    }
}

/// The descriptor of `manifests` for `arch` on Linux: the variant dib's
/// platform names first, then one with no variant, then any (an arm64
/// image's variants all run).
pub fn choose_platform<'a>(
    what: &str,
    manifests: &'a [Descriptor],
    arch: Arch,
) -> Result<&'a Descriptor> {
    let (want, variant) = super::platform(arch);
    let fits: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.architecture().to_string() == want && p.os().to_string() == "linux"
            })
        })
        .collect();
    let variant_of = |d: &Descriptor| d.platform().as_ref().and_then(|p| p.variant().clone());
    let best = fits
        .iter()
        .find(|d| variant_of(d).as_deref() == variant)
        .or_else(|| fits.iter().find(|d| variant_of(d).is_none()))
        .or_else(|| fits.iter().find(|_| arch == Arch::Arm64));
    if let Some(d) = best {
        return Ok(d);
    }
    if manifests.len() == 1 && manifests[0].platform().is_none() {
        return Ok(&manifests[0]);
    }
    let have: Vec<String> = manifests.iter().map(platform_name).collect();
    let builds: Vec<&str> = manifests
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .filter(|p| p.os().to_string() == "linux")
        .filter_map(|p| debian_arch(&p.architecture().to_string()))
        .collect();
    let hint = match builds.first() {
        Some(a) => format!("build with -a {a}, or use an image that has linux/{want}"),
        None => format!("use an image that has linux/{want}"),
    };
    bail!(
        "the image {what} has no linux/{want} variant for this {} build (it has {}): {hint}",
        arch.as_str(),
        have.join(", ")
    )
}

/// An OCI image layout directory.
struct Layout<'a> {
    dir: &'a Path,
    what: &'a str,
}

impl Layout<'_> {
    /// The image manifest to unpack, and its digest.
    fn pick(&self, name: Option<&str>, arch: Arch) -> Result<(String, ImageManifest)> {
        let layout_file = self.dir.join("oci-layout");
        if !layout_file.is_file() {
            bail!(
                "{} is not an OCI image layout (it has no oci-layout file): give a directory \
                 written by skopeo copy ... oci:DIR, or an archive with oci-archive:FILE",
                self.dir.display()
            );
        }
        let index_file = self.dir.join("index.json");
        let bytes = read_limited(&index_file)?;
        let index: ImageIndex = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the image layout's {} is not an OCI image index",
                index_file.display()
            )
        })?;
        let names: Vec<&str> = index
            .manifests()
            .iter()
            .filter_map(|d| d.annotations().as_ref()?.get(REF_NAME).map(String::as_str))
            .collect();
        let list = if names.is_empty() {
            "no image has a name".to_string()
        } else {
            format!("its names: {}", names.join(", "))
        };
        let top = match name {
            Some(n) => {
                let found: Vec<&Descriptor> = index
                    .manifests()
                    .iter()
                    .filter(|d| {
                        d.annotations()
                            .as_ref()
                            .and_then(|a| a.get(REF_NAME))
                            .is_some_and(|v| v == n)
                    })
                    .collect();
                match found[..] {
                    [d] => d,
                    [] => bail!(
                        "the image layout {} has no image named {n:?} ({list}): name one of them",
                        self.dir.display()
                    ),
                    _ => bail!(
                        "the image layout {} has {} images named {n:?}: keep one of them",
                        self.dir.display(),
                        found.len()
                    ),
                }
            }
            None => match index.manifests()[..] {
                [] => bail!("the image layout {} holds no image", self.dir.display()),
                [ref d] => d,
                ref all if all.iter().all(|d| d.platform().is_some()) => {
                    choose_platform(self.what, all, arch)?
                }
                ref all => bail!(
                    "the image layout {} holds {} images ({list}): name one, as oci:DIR:NAME",
                    self.dir.display(),
                    all.len()
                ),
            },
        };
        self.resolve(top, arch, 0)
    }

    /// Follow `d` through image indexes to an image manifest.
    fn resolve(&self, d: &Descriptor, arch: Arch, depth: usize) -> Result<(String, ImageManifest)> {
        if depth > MAX_NESTING {
            bail!(
                "the image {} nests image indexes more than {MAX_NESTING} deep",
                self.what
            );
        }
        let bytes = self.read_json(d)?;
        let mut k = kind(d.media_type());
        if k == Kind::Unknown {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("the blob {} is not JSON", d.digest()))?;
            k = if v.get("manifests").is_some() {
                Kind::Index
            } else if v.get("layers").is_some() {
                Kind::Manifest
            } else {
                bail!(
                    "the blob {} ({}) is neither an image index nor an image manifest",
                    d.digest(),
                    d.media_type()
                );
            };
        }
        if k == Kind::Index {
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .with_context(|| format!("the image index {} does not parse", d.digest()))?;
            let chosen = choose_platform(self.what, index.manifests(), arch)?;
            return self.resolve(chosen, arch, depth + 1);
        }
        let m: ImageManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("the image manifest {} does not parse", d.digest()))?;
        Ok((d.digest().to_string(), m))
    }

    /// The blob's path, its digest checked to be `sha256:` and 64 hex digits.
    fn blob_path(&self, d: &Descriptor) -> Result<PathBuf> {
        let hex = d.as_digest_sha256().ok_or_else(|| {
            anyhow!(
                "the blob {} is not named by a sha256 digest, the one kind dib checks",
                d.digest()
            )
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("the blob digest {} is not valid", d.digest());
        }
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    fn open(&self, d: &Descriptor) -> Result<Verified<io::Take<File>>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.blob_path(d)?;
        // Not a symlink, a fifo or a device: a regular file of the size
        // its descriptor says, read no further than that (and one byte
        // more, to tell a longer one).
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::NOFOLLOW_NONBLOCK)
            .open(&path)
            .with_context(|| {
                format!(
                    "the image layout {} lacks the blob {} (expected at {} as a file)",
                    self.dir.display(),
                    d.digest(),
                    path.display()
                )
            })?;
        let md = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if !md.is_file() || md.len() != d.size() {
            bail!(
                "the blob {} of the image layout {} is not a file of the {} bytes its descriptor \
                 says: fetch the image again",
                d.digest(),
                self.dir.display(),
                d.size()
            );
        }
        Ok(Verified::new(f.take(d.size().saturating_add(1)), d))
    }

    fn read_json(&self, d: &Descriptor) -> Result<Vec<u8>> {
        if d.size() > MAX_JSON {
            bail!(
                "the blob {} is {} bytes, too large for an index, manifest or configuration",
                d.digest(),
                d.size()
            );
        }
        let mut r = self.open(d)?;
        let mut bytes = Vec::new();
        (&mut r)
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading the blob {}", d.digest()))?;
        r.finish()?;
        Ok(bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, d: &Descriptor, what: &str) -> Result<T> {
        let bytes = self.read_json(d)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("the image {what} {} does not parse", d.digest()))
    }
}

/// `path`'s bytes, at most [`MAX_JSON`].
fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut v = Vec::new();
    f.take(MAX_JSON + 1)
        .read_to_end(&mut v)
        .with_context(|| format!("reading {}", path.display()))?;
    if v.len() as u64 > MAX_JSON {
        bail!("{} is too large for an image index", path.display());
    }
    Ok(v)
}

/// A blob's reader that hashes and counts what it reads; [`Verified::finish`]
/// reads the rest and compares with the descriptor.
struct Verified<R> {
    inner: R,
    sha: Sha256,
    len: u64,
    digest: String,
    size: u64,
}

impl<R: Read> Verified<R> {
    fn new(inner: R, d: &Descriptor) -> Verified<R> {
        Verified {
            inner,
            sha: Sha256::new(),
            len: 0,
            digest: d.digest().to_string(),
            size: d.size(),
        }
    }

    fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink())
            .with_context(|| format!("reading the blob {}", self.digest))?;
        let got = format!("sha256:{}", super::hex(&self.sha.finalize()));
        if got != self.digest {
            bail!(
                "the blob {} is damaged: its content's digest is {got}; fetch the image again",
                self.digest
            );
        }
        if self.len != self.size {
            bail!(
                "the blob {} is {} bytes, its descriptor says {}: fetch the image again",
                self.digest,
                self.len,
                self.size
            );
        }
        Ok(())
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// open(2) flags of a blob: no symlink followed, no wait on a fifo.
mod libc_flags {
    pub const NOFOLLOW_NONBLOCK: i32 =
        rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32;
}

/// A layer's entry refused: the message names the layer and the entry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// A path inside the root, as the names of its components (no symlinks).
type Key = Vec<OsString>;

/// A layer's entry's extra fields from its PAX header.
#[derive(Debug, Default)]
struct Pax {
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Timespec>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// The tree being unpacked.
struct Tree {
    root: OwnedFd,
    chown: bool,
    /// Directories' modes and mtimes, set at the end (after their contents).
    dirs: BTreeMap<Key, (u32, Timespec)>,
    /// What the current layer wrote (and the directories above), which its
    /// opaque whiteouts keep.
    layer: HashSet<Key>,
    /// The layer's digest, for errors.
    digest: String,
    entries: u64,
    skipped: BTreeMap<String, (u64, String)>,
}

/// Where a layer's entry goes: its parent directory and its name.
struct Place {
    parent: OwnedFd,
    key: Key,
    name: OsString,
}

fn is_missing(e: Errno) -> bool {
    e == Errno::NOENT
}

impl Tree {
    fn open(target: &Path, chown: bool) -> Result<Tree> {
        let root = rustix::fs::open(
            target,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the tree {}", target.display()))?;
        Ok(Tree {
            root,
            chown,
            dirs: BTreeMap::new(),
            layer: HashSet::new(),
            digest: String::new(),
            entries: 0,
            skipped: BTreeMap::new(),
        })
    }

    fn apply_layer(&mut self, l: &Layout, d: &Descriptor) -> Result<()> {
        self.digest = d.digest().to_string();
        self.layer.clear();
        let media = d.media_type().to_string();
        let tar_like = matches!(
            d.media_type(),
            MediaType::ImageLayer
                | MediaType::ImageLayerGzip
                | MediaType::ImageLayerNonDistributable
                | MediaType::ImageLayerNonDistributableGzip
        ) || DOCKER_LAYERS.contains(&media.as_str());
        if !tar_like {
            bail!(
                "layer {} has the media type {media}, which dib cannot unpack: it reads tar \
                 layers, plain or gzip-compressed (convert the image with skopeo copy \
                 --dest-compress-format gzip)",
                self.digest
            );
        }
        let mut r = BufReader::with_capacity(1 << 16, l.open(d)?);
        let head = r
            .fill_buf()
            .with_context(|| format!("reading the layer {}", self.digest))?;
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            bail!(
                "layer {} ({media}) is zstd-compressed, which dib cannot unpack: convert the \
                 image with skopeo copy --dest-compress-format gzip",
                self.digest
            );
        }
        let r = if head.starts_with(&[0x1f, 0x8b]) {
            let mut a = tar::Archive::new(flate2::bufread::MultiGzDecoder::new(r));
            self.entries_of(&mut a)?;
            a.into_inner().into_inner()
        } else {
            let mut a = tar::Archive::new(r);
            self.entries_of(&mut a)?;
            a.into_inner()
        };
        r.into_inner().finish()
    }

    fn entries_of<R: Read>(&mut self, a: &mut tar::Archive<R>) -> Result<()> {
        let digest = self.digest.clone();
        let entries = a
            .entries()
            .with_context(|| format!("reading the layer {digest}"))?;
        for e in entries {
            let mut e = e.with_context(|| format!("reading the layer {digest}"))?;
            let path = e
                .path()
                .with_context(|| format!("layer {digest}: an entry's path"))?
                .into_owned();
            self.entry(&mut e, &path).map_err(|err| {
                if err.is::<Refused>() {
                    err
                } else {
                    err.context(format!("layer {digest}: unpacking {}", path.display()))
                }
            })?;
        }
        Ok(())
    }

    fn refuse(&self, path: &Path, why: &str) -> anyhow::Error {
        Refused(format!(
            "layer {} has the entry {}, {why}",
            self.digest,
            path.display()
        ))
        .into()
    }

    /// Resolve `parts` (a directory relative to the root) inside the root:
    /// missing directories made when `create`, `None` when missing
    /// otherwise. `..` of the entry's own path may not climb above the root.
    fn resolve(
        &mut self,
        entry: &Path,
        parts: &[Component],
        create: bool,
    ) -> Result<Option<(OwnedFd, Key)>> {
        enum Part {
            Name(OsString),
            /// `..`; `strict` when the entry's path says it (not a symlink).
            Up {
                strict: bool,
            },
        }
        let mut todo: std::collections::VecDeque<Part> = std::collections::VecDeque::new();
        for c in parts {
            match c {
                Component::Normal(n) => todo.push_back(Part::Name(n.to_os_string())),
                Component::ParentDir => todo.push_back(Part::Up { strict: true }),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refuse(
                        entry,
                        "an absolute path: a layer's paths are relative to its root",
                    ))
                }
            }
        }
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            let name = match part {
                Part::Up { strict } => {
                    if stack.pop().is_none() && strict {
                        return Err(self.refuse(entry, "which leads outside the image's root"));
                    }
                    continue;
                }
                Part::Name(n) => n,
            };
            let cur = stack.last().map_or(self.root.as_fd(), |(fd, _)| fd.as_fd());
            let st = match rustix::fs::statat(cur, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
                Err(e) if is_missing(e) => None,
                Err(e) => return Err(e).context(format!("reading {}", name.to_string_lossy())),
            };
            match st {
                None if !create => return Ok(None),
                None => {
                    rustix::fs::mkdirat(cur, &name, Mode::from_raw_mode(0o755))
                        .with_context(|| format!("creating {}", name.to_string_lossy()))?;
                }
                Some(FileType::Directory) => {}
                Some(FileType::Symlink) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(self.refuse(
                            entry,
                            &format!(
                                "whose parent has more than {MAX_SYMLINKS} symlinks on the way"
                            ),
                        ));
                    }
                    let target = rustix::fs::readlinkat(cur, &name, Vec::new())
                        .with_context(|| format!("reading the link {}", name.to_string_lossy()))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    let mut front = Vec::new();
                    for c in target.components() {
                        match c {
                            Component::RootDir => {
                                stack.clear();
                                front.clear();
                            }
                            Component::Normal(n) => front.push(Part::Name(n.to_os_string())),
                            Component::ParentDir => front.push(Part::Up { strict: false }),
                            Component::CurDir | Component::Prefix(_) => {}
                        }
                    }
                    for p in front.into_iter().rev() {
                        todo.push_front(p);
                    }
                    continue;
                }
                Some(_) => {
                    return Err(self.refuse(
                        entry,
                        &format!(
                            "but {} on its way is not a directory",
                            name.to_string_lossy()
                        ),
                    ))
                }
            }
            let fd = rustix::fs::openat(
                cur,
                &name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening {}", name.to_string_lossy()))?;
            stack.push((fd, name));
        }
        let key: Key = stack.iter().map(|(_, n)| n.clone()).collect();
        let fd = match stack.pop() {
            Some((fd, _)) => fd,
            None => self.root.try_clone().context("opening the tree")?,
        };
        Ok(Some((fd, key)))
    }

    /// Where `path` goes: `None` for the root itself.
    fn place(&mut self, path: &Path, create: bool) -> Result<Option<Place>> {
        let mut comps: Vec<Component> = path
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        let name = match comps.pop() {
            None => return Ok(None),
            Some(Component::Normal(n)) => n.to_os_string(),
            Some(Component::ParentDir) => {
                return Err(self.refuse(path, "which does not end in a name"));
            }
            Some(_) => {
                return Err(self.refuse(
                    path,
                    "an absolute path: a layer's paths are relative to its root",
                ))
            }
        };
        let Some((parent, key)) = self.resolve(path, &comps, create)? else {
            bail!("its directory is not in the image");
        };
        Ok(Some(Place { parent, key, name }))
    }

    /// Mark `key` and every directory above it as the layer's: from the
    /// longest down, stopping at the first already marked (its parents
    /// are), so a layer of deep paths costs no more than its entries.
    fn mark(&mut self, key: &[OsString]) {
        for i in (0..=key.len()).rev() {
            if !self.layer.insert(key[..i].to_vec()) {
                break;
            }
        }
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>, path: &Path) -> Result<()> {
        let kind = e.header().entry_type();
        // A PAX global header (git archive writes one) says nothing about
        // any file of the tree.
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        use tar::EntryType as T;
        let known = matches!(
            kind,
            T::Regular
                | T::Continuous
                | T::GNUSparse
                | T::Directory
                | T::Symlink
                | T::Link
                | T::Fifo
                | T::Char
                | T::Block
        );
        // Refused before anything is made for it.
        if !known {
            return Err(self.refuse(
                path,
                &format!("of the tar type {kind:?}, which a container image does not hold"),
            ));
        }
        if kind.is_character_special() || kind.is_block_special() {
            return Err(Refused(format!(
                "layer {} holds the device node {}: a container image's layers may not hold \
                 devices, which a rootless build cannot create",
                self.digest,
                path.display()
            ))
            .into());
        }
        let file_name = path.file_name().map(OsStr::as_bytes).unwrap_or_default();
        if let Some(rest) = file_name.strip_prefix(b".wh.") {
            self.entries += 1;
            return self.whiteout(path, rest);
        }
        let Some(place) = self.place(path, true)? else {
            // The root itself: its attributes are the build's.
            return Ok(());
        };
        let mut key = place.key.clone();
        key.push(place.name.clone());
        self.mark(&key);
        self.entries += 1;
        let pax = pax_of(e)?;
        let h = e.header();
        let uid = pax.uid.map_or_else(|| h.uid(), Ok)?;
        let gid = pax.gid.map_or_else(|| h.gid(), Ok)?;
        let mode = h.mode()? & 0o7777;
        let mtime = pax.mtime.unwrap_or(Timespec {
            tv_sec: i64::try_from(h.mtime()?).unwrap_or(i64::MAX),
            tv_nsec: 0,
        });
        let owner = (uid, gid);
        let (dirfd, name) = (place.parent.as_fd(), place.name.as_os_str());
        let existing = match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            Err(e) if is_missing(e) => None,
            Err(e) => return Err(e).context("reading what is there"),
        };
        match kind {
            T::Directory => {
                if existing.is_some_and(|t| t != FileType::Directory) {
                    remove_all(dirfd, name)?;
                }
                if existing != Some(FileType::Directory) {
                    rustix::fs::mkdirat(dirfd, name, Mode::from_raw_mode(0o700))
                        .context("creating the directory")?;
                }
                let fd = rustix::fs::openat(
                    dirfd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .context("opening the directory")?;
                self.chown_fd(&fd, owner)?;
                self.xattrs(&fd, &pax.xattrs, path)?;
                self.dirs.insert(key, (mode, mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                if existing.is_some() {
                    remove_all(dirfd, name)?;
                }
                let fd = rustix::fs::openat(
                    dirfd,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .context("creating the file")?;
                let mut f = File::from(fd);
                io::copy(e, &mut f).context("writing the file")?;
                self.chown_fd(&f, owner)?;
                rustix::fs::fchmod(&f, Mode::from_raw_mode(mode)).context("setting the mode")?;
                self.xattrs(&f, &pax.xattrs, path)?;
                rustix::fs::futimens(&f, &times(mtime)).context("setting the mtime")?;
            }
            T::Symlink => {
                let target = e
                    .link_name()
                    .context("reading the link's target")?
                    .ok_or_else(|| anyhow!("a symlink without a target"))?
                    .into_owned();
                if existing.is_some() {
                    remove_all(dirfd, name)?;
                }
                rustix::fs::symlinkat(&target, dirfd, name).context("creating the symlink")?;
                self.chown_at(dirfd, name, owner)?;
                rustix::fs::utimensat(dirfd, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .context("setting the mtime")?;
            }
            T::Link => {
                let target = e
                    .link_name()
                    .context("reading the link's target")?
                    .ok_or_else(|| anyhow!("a hard link without a target"))?
                    .into_owned();
                self.hard_link(path, &target, dirfd, name, existing.is_some())?;
            }
            T::Fifo => {
                if existing.is_some() {
                    remove_all(dirfd, name)?;
                }
                rustix::fs::mknodat(dirfd, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .context("creating the fifo")?;
                self.chown_at(dirfd, name, owner)?;
                rustix::fs::chmodat(dirfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .context("setting the mode")?;
                rustix::fs::utimensat(dirfd, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .context("setting the mtime")?;
            }
            other => {
                return Err(self.refuse(
                    path,
                    &format!("of the tar type {other:?}, which a container image does not hold"),
                ))
            }
        }
        Ok(())
    }

    fn hard_link(
        &mut self,
        path: &Path,
        target: &Path,
        dirfd: std::os::fd::BorrowedFd,
        name: &OsStr,
        existing: bool,
    ) -> Result<()> {
        // A link's target is a path of the layer's root (a leading / too).
        let rel: PathBuf = target
            .components()
            .filter(|c| !matches!(c, Component::RootDir))
            .collect();
        let mut comps: Vec<Component> = rel
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        let tname = match comps.pop() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => {
                return Err(self.refuse(
                    path,
                    &format!(
                        "a hard link to {}, which is not a file in the image",
                        target.display()
                    ),
                ))
            }
        };
        let outside = |s: &Self| {
            s.refuse(
                path,
                &format!(
                    "a hard link to {}, which is outside the image's root",
                    target.display()
                ),
            )
        };
        let resolved = match self.resolve(path, &comps, false) {
            Ok(r) => r,
            Err(e) if e.is::<Refused>() => return Err(outside(self)),
            Err(e) => return Err(e),
        };
        let missing = || {
            self.refuse(
                path,
                &format!(
                    "a hard link to {}, which the image does not hold",
                    target.display()
                ),
            )
        };
        let Some((tdir, _)) = resolved else {
            return Err(missing());
        };
        let st = match rustix::fs::statat(&tdir, &tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if is_missing(e) => return Err(missing()),
            Err(e) => return Err(e).context("reading the link's target"),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(self.refuse(
                path,
                &format!("a hard link to the directory {}", target.display()),
            ));
        }
        if existing {
            if let Ok(here) = rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
                if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino) {
                    return Ok(());
                }
            }
            remove_all(dirfd, name)?;
        }
        rustix::fs::linkat(&tdir, &tname, dirfd, name, AtFlags::empty())
            .context("creating the hard link")?;
        Ok(())
    }

    /// `.wh.NAME` removes NAME; `.wh..wh..opq` what lower layers put in
    /// its directory.
    fn whiteout(&mut self, path: &Path, rest: &[u8]) -> Result<()> {
        let parent = path.parent().unwrap_or(Path::new(""));
        let comps: Vec<Component> = parent.components().collect();
        let Some((dir, key)) = self.resolve(path, &comps, false)? else {
            return Ok(());
        };
        if rest == b".wh..opq" {
            return self.opaque(&dir, key);
        }
        if rest.starts_with(b".wh.") || rest.is_empty() {
            // Other AUFS metadata: not part of the image.
            return Ok(());
        }
        let name = OsStr::from_bytes(rest);
        if name == "." || name == ".." || name.as_bytes().contains(&b'/') {
            return Err(self.refuse(path, "a whiteout that names no file"));
        }
        remove_all(dir.as_fd(), name).with_context(|| format!("removing {}", name.display()))
    }

    /// Remove everything under `dir` (at `key`) that this layer did not write.
    fn opaque(&mut self, dir: &OwnedFd, key: Key) -> Result<()> {
        for (name, t) in list(dir)? {
            let mut k = key.clone();
            k.push(name.clone());
            if !self.layer.contains(&k) {
                remove_all(dir.as_fd(), &name)
                    .with_context(|| format!("removing {}", name.display()))?;
            } else if t == FileType::Directory {
                let sub = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.opaque(&sub, k)?;
            }
        }
        Ok(())
    }

    fn chown_ids(&self, owner: (u64, u64)) -> Result<Option<(Uid, Gid)>> {
        if !self.chown {
            return Ok(None);
        }
        let (Ok(u), Ok(g)) = (u32::try_from(owner.0), u32::try_from(owner.1)) else {
            bail!("the owner {}:{} is not a valid id", owner.0, owner.1);
        };
        Ok(Some((Uid::from_raw(u), Gid::from_raw(g))))
    }

    fn chown_error(owner: (u64, u64), e: Errno) -> anyhow::Error {
        if e == Errno::INVAL {
            anyhow!(
                "cannot give it the owner {}:{}, outside this build's id range: the build maps \
                 the ids of /etc/subuid and /etc/subgid (give the user a larger range)",
                owner.0,
                owner.1
            )
        } else {
            anyhow!(e).context(format!("giving it the owner {}:{}", owner.0, owner.1))
        }
    }

    fn chown_fd(&self, fd: impl AsFd, owner: (u64, u64)) -> Result<()> {
        if let Some((u, g)) = self.chown_ids(owner)? {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| Self::chown_error(owner, e))?;
        }
        Ok(())
    }

    fn chown_at(&self, dirfd: impl AsFd, name: &OsStr, owner: (u64, u64)) -> Result<()> {
        if let Some((u, g)) = self.chown_ids(owner)? {
            rustix::fs::chownat(dirfd, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Self::chown_error(owner, e))?;
        }
        Ok(())
    }

    fn xattrs(&mut self, fd: impl AsFd, xattrs: &[(String, Vec<u8>)], path: &Path) -> Result<()> {
        for (name, value) in xattrs {
            if let Err(e) = rustix::fs::fsetxattr(&fd, name.as_str(), value, XattrFlags::empty()) {
                if name.starts_with("security.") || name.starts_with("trusted.") {
                    let s = self
                        .skipped
                        .entry(name.clone())
                        .or_insert((0, String::new()));
                    s.0 += 1;
                    if s.1.is_empty() {
                        s.1 = format!("{e}, first on {}", path.display());
                    }
                } else {
                    return Err(anyhow!(e).context(format!("setting the xattr {name}")));
                }
            }
        }
        Ok(())
    }

    /// Directories' modes and mtimes, deepest first.
    fn finish(&mut self) -> Result<()> {
        let mut dirs: Vec<(&Key, &(u32, Timespec))> = self.dirs.iter().collect();
        dirs.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (key, (mode, mtime)) in dirs {
            let Some((parent, name)) = key.split_last().map(|(n, p)| (p, n)) else {
                continue;
            };
            // A later layer may have removed or replaced it: only what is
            // still a real directory at a real path is set.
            let Ok(Some(fd)) = self.walk(parent) else {
                continue;
            };
            let Ok(dir) = rustix::fs::openat(
                &fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(*mode))
                .with_context(|| format!("setting the mode of {}", display(key)))?;
            rustix::fs::futimens(&dir, &times(*mtime))
                .with_context(|| format!("setting the mtime of {}", display(key)))?;
        }
        Ok(())
    }

    /// The directory at `key`, following no symlink.
    fn walk(&self, key: &[OsString]) -> Result<Option<OwnedFd>> {
        let mut fd = self.root.try_clone()?;
        for n in key {
            match rustix::fs::openat(
                &fd,
                n,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(next) => fd = next,
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(fd))
    }
}

fn display(key: &[OsString]) -> String {
    key.iter()
        .map(|n| n.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn pax_of<R: Read>(e: &mut tar::Entry<R>) -> Result<Pax> {
    let mut pax = Pax::default();
    let Some(exts) = e.pax_extensions().context("reading the PAX header")? else {
        return Ok(pax);
    };
    for ext in exts {
        let ext = ext.context("reading the PAX header")?;
        let Ok(key) = ext.key() else { continue };
        let value = ext.value_bytes();
        let text = || std::str::from_utf8(value).unwrap_or("").trim();
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            pax.xattrs.push((name.to_string(), value.to_vec()));
        } else if key == "uid" {
            pax.uid = text().parse().ok();
        } else if key == "gid" {
            pax.gid = text().parse().ok();
        } else if key == "mtime" {
            let t = text();
            let (s, frac) = t.split_once('.').unwrap_or((t, ""));
            if let Ok(sec) = s.parse::<i64>() {
                let digits: String = frac.chars().take(9).collect();
                let nsec = if digits.is_empty() {
                    0
                } else {
                    format!("{digits:0<9}").parse().unwrap_or(0)
                };
                pax.mtime = Some(Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                });
            }
        }
    }
    Ok(pax)
}

/// The entries of the directory `dir` (not `.` or `..`) with their types.
fn list(dir: impl AsFd) -> Result<Vec<(OsString, FileType)>> {
    let mut out = Vec::new();
    // `dir` may be an O_PATH descriptor, which cannot be read.
    let readable = rustix::fs::openat(
        &dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("opening a directory")?;
    for e in rustix::fs::Dir::new(readable).context("listing a directory")? {
        let e = e.context("listing a directory")?;
        let name = OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let t = match e.file_type() {
            FileType::Unknown => match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => FileType::Unknown,
            },
            t => t,
        };
        out.push((name.to_os_string(), t));
    }
    Ok(out)
}

/// Remove `name` in `dir`, a directory with everything in it; nothing
/// when it is not there. Never follows a symlink.
fn remove_all(dir: std::os::fd::BorrowedFd, name: &OsStr) -> Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) if is_missing(e) => return Ok(()),
        Err(e) => return Err(e).context(format!("reading {}", name.display())),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", name.display()))?;
        for (child, _) in list(&sub)? {
            remove_all(sub.as_fd(), &child)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
            .with_context(|| format!("removing {}", name.display()))?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())
            .with_context(|| format!("removing {}", name.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
