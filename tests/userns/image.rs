//! Inspecting a built image: the filesystems in it.

use std::path::Path;
use std::process::Command;

use libtest_mimic::Failed;

/// (type, label, uuid) of the filesystem at byte `offset` of `image`.
pub fn probe_fs(image: &Path, offset: u64) -> Result<String, Failed> {
    let o = Command::new("blkid")
        .args(["-p", "-o", "export", "-O", &offset.to_string()])
        .arg(image)
        .output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("-")
            .to_string()
    };
    Ok(format!("{} {} {}", get("TYPE"), get("LABEL"), get("UUID")))
}
