//! Fixture element trees for the integration tests, built in temp dirs.
#![allow(dead_code)]

pub mod image;
pub mod qemu;
pub mod registry;
pub mod rpm_repo;
pub mod ssh;
pub mod tier;
pub mod trees;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub use tempfile::TempDir;

/// A temp directory holding element trees.
pub struct Fixture {
    pub dir: TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            dir: tempfile::Builder::new()
                .prefix("dib-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An element `name` under `entry` with these deps and provides.
    pub fn element(&self, entry: &str, name: &str, deps: &[&str], provides: &[&str]) -> PathBuf {
        let dir = self.path(entry).join(name);
        fs::create_dir_all(&dir).unwrap();
        if !deps.is_empty() {
            fs::write(dir.join("element-deps"), lines(deps)).unwrap();
        }
        if !provides.is_empty() {
            fs::write(dir.join("element-provides"), lines(provides)).unwrap();
        }
        dir
    }

    /// A file at `rel` with `content` and `mode`.
    pub fn file(&self, rel: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

fn lines(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n}\n")).collect()
}

/// An empty directory standing in for the shipped tree.
pub fn empty_dir(f: &Fixture) -> PathBuf {
    let p = f.path("shipped-empty");
    fs::create_dir_all(&p).unwrap();
    p
}

pub fn real(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap()
}

/// A well-formed phase script.
pub const GOOD_SCRIPT: &str = "#!/bin/bash\n\nif [ ${DIB_DEBUG_TRACE:-0} -gt 0 ]; then\n    set -x\nfi\nset -eu\nset -o pipefail\n\necho hello\n";

/// A GPT layout with every filesystem kind the offline backend builds,
/// and fixed identifiers.
const FULL_LAYOUT: &str = "
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 40MiB
        mkfs:
          type: vfat
          label: EFI
          uuid: 1234-ABCD
          mount:
            mount_point: /boot/efi
            fstab:
              options: umask=0077
              fsck-passno: 2
      - name: BSP
        type: 'EF02'
        size: 1MiB
      - name: swap
        type: '8200'
        size: 8MiB
        mkfs:
          type: swap
          uuid: 5d0c5f2e-8a55-4f6e-9b52-6f1f4e0c1a11
- mkfs:
    name: root_fs
    base: root
    type: ext4
    label: myroot
    uuid: 0b9d8a7c-3e2f-4d1a-8b6c-5a4f3e2d1c0b
    mount:
      mount_point: /
      fstab:
        options: defaults,noatime
        fsck-passno: 1
";

/// [`FULL_LAYOUT`] with its root partition added by a flat node, after the
/// nested ones.
pub fn full_gpt_layout() -> String {
    FULL_LAYOUT.replace(
        "          uuid: 5d0c5f2e-8a55-4f6e-9b52-6f1f4e0c1a11\n",
        "          uuid: 5d0c5f2e-8a55-4f6e-9b52-6f1f4e0c1a11\n      - name: root\n        size: 100%\n",
    )
}
