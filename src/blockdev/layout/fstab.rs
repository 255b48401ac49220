//! The image's `/etc/fstab`.

use super::{FsType, Layout, PlacedFs};

impl Layout {
    /// `/etc/fstab` of the image: one line per filesystem with an fstab
    /// node, by label when it has one (as DIB), else by UUID.
    pub fn fstab(&self) -> String {
        let mut out = String::from("# Written by dib from the block-device configuration.\n");
        let mut fss: Vec<&PlacedFs> = self
            .filesystems
            .iter()
            .filter(|f| f.fstab.is_some())
            .collect();
        // Parents before children, as mount order needs.
        fss.sort_by_key(|f| {
            f.mount_point.as_deref().map_or(usize::MAX, |p| {
                p.matches('/').count() + usize::from(p != "/")
            })
        });
        for f in fss {
            let t = f.fstab.as_ref().expect("filtered");
            let spec = match (&f.label, f.kind) {
                (Some(l), k) if k != FsType::Vfat => format!("LABEL={l}"),
                _ => format!("UUID={}", f.uuid),
            };
            let point = f
                .mount_point
                .as_deref()
                .map_or_else(|| "none".to_string(), fstab_escape);
            out.push_str(&format!(
                "{spec} {point} {} {} {} {}\n",
                f.kind, t.options, t.dump_freq, t.fsck_passno
            ));
        }
        out
    }
}

/// fstab's octal escapes for the characters that separate its fields.
fn fstab_escape(p: &str) -> String {
    p.replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012")
}
