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
    /// An OCI image layout: accepted, not written by this version.
    Oci,
    /// Any other format `qemu-img convert -O` writes.
    Qemu(QemuFormat),
}

impl OutputType {
    /// The types dib names itself, in the order messages list them.
    pub const OWN: [OutputType; 7] = [
        OutputType::Qcow2,
        OutputType::Raw,
        OutputType::Tar,
        OutputType::Tgz,
        OutputType::Squashfs,
        OutputType::Vhd,
        OutputType::Oci,
    ];

    /// The `-t` name, which is also the file extension.
    pub fn extension(self) -> &'static str {
        match self {
            OutputType::Qcow2 => "qcow2",
            OutputType::Raw => "raw",
            OutputType::Tar => "tar",
            OutputType::Tgz => "tgz",
            OutputType::Squashfs => "squashfs",
            OutputType::Vhd => "vhd",
            OutputType::Oci => "oci",
            OutputType::Qemu(f) => f.name(),
        }
    }

    /// The type a `-t` name gives.
    pub fn parse(name: &str) -> Option<OutputType> {
        OutputType::OWN
            .into_iter()
            .chain(QemuFormat::ALL.map(OutputType::Qemu))
            .find(|t| t.extension() == name)
    }

    /// Whether this version of dib writes it.
    pub fn is_written(self) -> bool {
        self != OutputType::Oci
    }

    /// Whether it is converted from the disk image (else made from the
    /// final tree).
    pub fn from_disk(self) -> bool {
        matches!(
            self,
            OutputType::Raw | OutputType::Qcow2 | OutputType::Vhd | OutputType::Qemu(_)
        )
    }

    /// The `qemu-img convert -O` format that writes it (`None`: not
    /// written by qemu-img).
    pub fn qemu_format(self) -> Option<&'static str> {
        match self {
            OutputType::Qcow2 => Some("qcow2"),
            OutputType::Vhd => Some("vpc"),
            OutputType::Qemu(f) => Some(f.name()),
            _ => None,
        }
    }

    /// The host tool that writes it (`None`: not written yet).
    pub fn tool(self) -> Option<&'static str> {
        match self {
            OutputType::Tar | OutputType::Tgz => Some("tar"),
            OutputType::Squashfs => Some("mksquashfs"),
            OutputType::Raw => Some("cp"),
            OutputType::Oci => None,
            OutputType::Qcow2 | OutputType::Vhd | OutputType::Qemu(_) => Some("qemu-img"),
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
        if let Some(stripped) = image_name.strip_suffix(&format!(".{}", only.extension())) {
            // `-o .qcow2` or `-o dir/.qcow2` would leave no file name.
            if !stripped.is_empty() && !stripped.ends_with('/') {
                return stripped.to_string();
            }
        }
    }
    image_name.to_string()
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
             oci or a qemu-img format (vmdk, vdi, vhdx, vpc, qed, parallels, qcow)"
        );
    }
}
