//! Output types (`-t`): parsed and checked once here; the build works from
//! [`OutputType`] values, never from the names.

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Writable `qemu-img` formats accepted as output types besides the ones
/// dib names itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QemuFormat {
    Vmdk,
    Vdi,
    Vhdx,
    Vpc,
    Qed,
    Parallels,
    Qcow,
}

impl QemuFormat {
    /// Every format, in the order messages list them.
    pub const ALL: [QemuFormat; 7] = [
        QemuFormat::Vmdk,
        QemuFormat::Vdi,
        QemuFormat::Vhdx,
        QemuFormat::Vpc,
        QemuFormat::Qed,
        QemuFormat::Parallels,
        QemuFormat::Qcow,
    ];

    /// qemu-img's name (`-O`), which is also the `-t` name.
    pub fn name(self) -> &'static str {
        match self {
            QemuFormat::Vmdk => "vmdk",
            QemuFormat::Vdi => "vdi",
            QemuFormat::Vhdx => "vhdx",
            QemuFormat::Vpc => "vpc",
            QemuFormat::Qed => "qed",
            QemuFormat::Parallels => "parallels",
            QemuFormat::Qcow => "qcow",
        }
    }
}

/// One output type of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputType {
    /// The disk image in qcow2 (compressed unless `-u`): the default.
    Qcow2,
    /// The disk image as is.
    Raw,
    /// The final tree as a tar archive.
    Tar,
    /// The final tree as a gzipped tar archive.
    Tgz,
    /// The final tree as a squashfs filesystem.
    Squashfs,
    /// VHD (qemu-img's `vpc`, with the image's exact size).
    Vhd,
    /// The final tree as a container image: an OCI image layout directory.
    Oci,
    /// The same image as one file: the layout in a tar archive.
    OciArchive,
    /// The same image as a docker-archive (what `docker load` reads).
    Docker,
    /// The disk image in qcow2 as a KubeVirt containerDisk: an OCI image
    /// layout whose one layer holds it under `/disk/`.
    ContainerDisk,
    /// Any other format `qemu-img convert -O` writes.
    Qemu(QemuFormat),
}

impl OutputType {
    /// The types dib names itself, in the order messages list them.
    pub const OWN: [OutputType; 10] = [
        OutputType::Qcow2,
        OutputType::Raw,
        OutputType::Tar,
        OutputType::Tgz,
        OutputType::Squashfs,
        OutputType::Vhd,
        OutputType::Oci,
        OutputType::OciArchive,
        OutputType::Docker,
        OutputType::ContainerDisk,
    ];

    /// The `-t` name.
    pub fn extension(self) -> &'static str {
        match self {
            OutputType::Qcow2 => "qcow2",
            OutputType::Raw => "raw",
            OutputType::Tar => "tar",
            OutputType::Tgz => "tgz",
            OutputType::Squashfs => "squashfs",
            OutputType::Vhd => "vhd",
            OutputType::Oci => "oci",
            OutputType::OciArchive => "oci-archive",
            OutputType::Docker => "docker",
            OutputType::ContainerDisk => "containerdisk",
            OutputType::Qemu(f) => f.name(),
        }
    }

    /// What the output's name ends with after `IMAGE_NAME.`.
    pub fn suffix(self) -> &'static str {
        match self {
            OutputType::OciArchive => "oci.tar",
            OutputType::Docker => "docker.tar",
            t => t.extension(),
        }
    }

    /// Whether the output is a directory (an OCI image layout), not a file.
    pub fn is_dir(self) -> bool {
        matches!(self, OutputType::Oci | OutputType::ContainerDisk)
    }

    /// Whether the output is a container image (pushable to a registry).
    pub fn is_container(self) -> bool {
        matches!(
            self,
            OutputType::Oci
                | OutputType::OciArchive
                | OutputType::Docker
                | OutputType::ContainerDisk
        )
    }

    /// The type a `-t` name gives.
    pub fn parse(name: &str) -> Option<OutputType> {
        OutputType::OWN
            .into_iter()
            .chain(QemuFormat::ALL.map(OutputType::Qemu))
            .find(|t| t.extension() == name)
    }

    /// Whether it is converted from the disk image (else made from the
    /// final tree).
    pub fn from_disk(self) -> bool {
        matches!(
            self,
            OutputType::Raw
                | OutputType::Qcow2
                | OutputType::Vhd
                | OutputType::ContainerDisk
                | OutputType::Qemu(_)
        )
    }

    /// The `qemu-img convert -O` format that writes it (`None`: not
    /// written by qemu-img).
    pub fn qemu_format(self) -> Option<&'static str> {
        match self {
            OutputType::Qcow2 | OutputType::ContainerDisk => Some("qcow2"),
            OutputType::Vhd => Some("vpc"),
            OutputType::Qemu(f) => Some(f.name()),
            _ => None,
        }
    }

    /// The host tool that writes it (`None`: dib writes it itself).
    pub fn tool(self) -> Option<&'static str> {
        match self {
            OutputType::Tar | OutputType::Tgz => Some("tar"),
            OutputType::Squashfs => Some("mksquashfs"),
            OutputType::Raw => Some("cp"),
            OutputType::Oci | OutputType::OciArchive | OutputType::Docker => None,
            OutputType::Qcow2
            | OutputType::Vhd
            | OutputType::ContainerDisk
            | OutputType::Qemu(_) => Some("qemu-img"),
        }
    }
}

impl fmt::Display for OutputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// `-t`'s values, each once, in the order given; qcow2 when none is given.
pub fn parse_output_types(given: &[String]) -> Result<Vec<OutputType>> {
    if given.is_empty() {
        return Ok(vec![OutputType::Qcow2]);
    }
    let mut types = Vec::new();
    for t in given {
        let t = t.trim();
        let Some(t) = OutputType::parse(t) else {
            bail!(
                "invalid value {t:?} for '-t <TYPES>': use {} or a qemu-img format ({})",
                OutputType::OWN.map(OutputType::extension).join(", "),
                QemuFormat::ALL.map(QemuFormat::name).join(", ")
            );
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

/// `-o` without the one output type's extension (`-o foo.qcow2` is `foo`),
/// unless that would leave no file name.
pub fn strip_type_suffix(image_name: &str, types: &[OutputType]) -> String {
    if let [only] = types {
        if let Some(stripped) = image_name.strip_suffix(&format!(".{}", only.suffix())) {
            // `-o .qcow2` or `-o dir/.qcow2` would leave no file name.
            if !stripped.is_empty() && !stripped.ends_with('/') {
                return stripped.to_string();
            }
        }
    }
    image_name.to_string()
}

/// `--docker-target` checked (lower-case repository parts, an optional
/// registry, a valid tag), `:latest` added when it has no tag; without it,
/// the output's file name, made a valid repository name.
pub fn docker_target(given: Option<&str>, image_name: &str) -> Result<String> {
    let Some(t) = given else {
        let base = std::path::Path::new(image_name)
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let mut repo: String = base
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        repo = repo.trim_matches('-').to_string();
        if repo.is_empty() {
            repo = "image".into();
        }
        return Ok(format!("{repo}:latest"));
    };
    // Checked as a reference with a stand-in registry when it names none.
    let first = t.split('/').next().unwrap_or("");
    let names_registry =
        t.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if names_registry {
        t.to_string()
    } else {
        format!("registry.example/{t}")
    };
    let r = crate::oci::reference::Reference::parse(&full).map_err(|e| {
        anyhow::anyhow!(
            "invalid value {t:?} for '--docker-target <REPO[:TAG]>': {}",
            e.to_string()
                .replace(&format!("{full:?}"), &format!("{t:?}"))
        )
    })?;
    if r.digest.is_some() {
        bail!("invalid value {t:?} for '--docker-target <REPO[:TAG]>': a digest cannot be a target; give a tag");
    }
    Ok(if r.tag.is_some() {
        t.to_string()
    } else {
        format!("{t}:latest")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_from_its_name_and_knows_how_it_is_written() {
        // (name, from the disk image, qemu-img -O format, tool)
        let cases: &[(&str, bool, Option<&str>, Option<&str>)] = &[
            ("qcow2", true, Some("qcow2"), Some("qemu-img")),
            ("raw", true, None, Some("cp")),
            ("tar", false, None, Some("tar")),
            ("tgz", false, None, Some("tar")),
            ("squashfs", false, None, Some("mksquashfs")),
            ("vhd", true, Some("vpc"), Some("qemu-img")),
            ("oci", false, None, None),
            ("oci-archive", false, None, None),
            ("docker", false, None, None),
            ("containerdisk", true, Some("qcow2"), Some("qemu-img")),
            ("vpc", true, Some("vpc"), Some("qemu-img")),
            ("vmdk", true, Some("vmdk"), Some("qemu-img")),
        ];
        for &(name, disk, format, tool) in cases {
            let t = OutputType::parse(name).unwrap();
            assert_eq!(
                (t.extension(), t.from_disk(), t.qemu_format(), t.tool()),
                (name, disk, format, tool),
                "{name}"
            );
        }
        assert_eq!(OutputType::parse("iso"), None);
    }

    #[test]
    fn docker_targets_get_a_tag_and_default_to_the_output_name() {
        assert_eq!(
            docker_target(None, "out/My_Image").unwrap(),
            "my-image:latest"
        );
        assert_eq!(docker_target(None, "/").unwrap(), "image:latest");
        assert_eq!(docker_target(Some("dib/vm"), "x").unwrap(), "dib/vm:latest");
        assert_eq!(
            docker_target(Some("dib/vm:1.0"), "x").unwrap(),
            "dib/vm:1.0"
        );
        assert_eq!(
            docker_target(Some("localhost:5000/vm:2"), "x").unwrap(),
            "localhost:5000/vm:2"
        );
        let e = docker_target(Some("Dib/VM"), "x").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid value \"Dib/VM\" for '--docker-target <REPO[:TAG]>': "),
            "{e}"
        );
        assert!(e.contains("bad repository"), "{e}");
    }

    #[test]
    fn types_are_kept_once_in_the_order_given() {
        let given: Vec<String> = ["tar", " qcow2", "tar", "vdi"].map(String::from).to_vec();
        assert_eq!(
            parse_output_types(&given).unwrap(),
            [
                OutputType::Tar,
                OutputType::Qcow2,
                OutputType::Qemu(QemuFormat::Vdi)
            ]
        );
        assert_eq!(
            format!("{:#}", parse_output_types(&["iso".into()]).unwrap_err()),
            "invalid value \"iso\" for '-t <TYPES>': use qcow2, raw, tar, tgz, squashfs, vhd, \
             oci, oci-archive, docker, containerdisk or a qemu-img format (vmdk, vdi, vhdx, vpc, \
             qed, parallels, qcow)"
        );
    }
}
