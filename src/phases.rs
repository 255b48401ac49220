//! The build phases (docs/elements.md): the one list every part of dib
//! (the runner, `break=`, lint) takes them from.

/// One phase: its name, whether it runs chrooted into the tree, and whether
/// hooks get `TARGET_ROOT`.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub name: &'static str,
    pub chroot: bool,
    pub target_root: bool,
}

const fn phase(name: &'static str, chroot: bool, target_root: bool) -> Phase {
    Phase {
        name,
        chroot,
        target_root,
    }
}

/// The phases, in order.
pub const PHASES: [Phase; 10] = [
    phase("root", false, true),
    phase("extra-data", false, false),
    phase("pre-install", true, false),
    phase("install", true, false),
    phase("post-install", true, false),
    phase("post-root", false, false),
    phase("block-device", false, false),
    phase("pre-finalise", false, false),
    phase("finalise", true, false),
    phase("cleanup", false, true),
];

impl Phase {
    /// The phase's directory in an element and the hook tree (`install.d`).
    pub fn dir(self) -> String {
        format!("{}.d", self.name)
    }
}

/// A phase by name (`install`).
pub fn by_name(name: &str) -> Option<Phase> {
    PHASES.iter().copied().find(|p| p.name == name)
}

/// The phase names, comma-separated, for messages.
pub fn names() -> String {
    PHASES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}
