//! Container images: OCI image layouts, docker archives and KubeVirt
//! containerDisks written from a build, images unpacked into a build's
//! tree (the `oci-base` element), and pushes to a registry.
//!
//! What the pieces share is here: digests and the platform names of a
//! target architecture.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::config::Arch;

pub mod fetch;
pub mod image;
pub mod layer;
pub mod push;
pub mod reference;
pub mod unpack;
pub mod write;

/// The OCI platform of a Debian architecture: (architecture, variant).
pub fn platform(arch: Arch) -> (&'static str, Option<&'static str>) {
    match arch {
        Arch::Amd64 => ("amd64", None),
        Arch::Arm64 => ("arm64", Some("v8")),
        Arch::Armhf => ("arm", Some("v7")),
        Arch::I386 => ("386", None),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that passes everything on and keeps the SHA-256 and the count
/// of what went through.
#[derive(Debug)]
pub struct Hashing<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex(&self.sha.finalize()));
        (self.inner, digest, self.len)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_counts_and_digests_what_passes() {
        let mut h = Hashing::new(Vec::new());
        h.write_all(b"abc").unwrap();
        let (out, digest, len) = h.finish();
        assert_eq!(out, b"abc");
        assert_eq!(len, 3);
        assert_eq!(digest, digest_of(b"abc"));
        assert_eq!(
            digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
