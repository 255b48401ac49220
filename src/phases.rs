//! The build phases (docs/elements.md): the one list every part of dib
//! (the build's plan, `break=`, lint) takes them from.

use serde::{Deserialize, Serialize};

/// One phase of a build, in DIB's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Root,
    ExtraData,
    PreInstall,
    Install,
    PostInstall,
    PostRoot,
    BlockDevice,
    PreFinalise,
    Finalise,
    Cleanup,
}

/// The phases, in order.
pub const PHASES: [Phase; 10] = [
    Phase::Root,
    Phase::ExtraData,
    Phase::PreInstall,
    Phase::Install,
    Phase::PostInstall,
    Phase::PostRoot,
    Phase::BlockDevice,
    Phase::PreFinalise,
    Phase::Finalise,
    Phase::Cleanup,
];

impl Phase {
    /// The phase's name (`pre-install`), as in `break=` and messages.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Root => "root",
            Phase::ExtraData => "extra-data",
            Phase::PreInstall => "pre-install",
            Phase::Install => "install",
            Phase::PostInstall => "post-install",
            Phase::PostRoot => "post-root",
            Phase::BlockDevice => "block-device",
            Phase::PreFinalise => "pre-finalise",
            Phase::Finalise => "finalise",
            Phase::Cleanup => "cleanup",
        }
    }

    /// The phase's directory in an element and the hook tree (`install.d`).
    pub const fn dir(self) -> &'static str {
        match self {
            Phase::Root => "root.d",
            Phase::ExtraData => "extra-data.d",
            Phase::PreInstall => "pre-install.d",
            Phase::Install => "install.d",
            Phase::PostInstall => "post-install.d",
            Phase::PostRoot => "post-root.d",
            Phase::BlockDevice => "block-device.d",
            Phase::PreFinalise => "pre-finalise.d",
            Phase::Finalise => "finalise.d",
            Phase::Cleanup => "cleanup.d",
        }
    }

    /// Whether the phase's hooks run chrooted into the tree.
    pub const fn chroot(self) -> bool {
        matches!(
            self,
            Phase::PreInstall | Phase::Install | Phase::PostInstall | Phase::Finalise
        )
    }

    /// Whether the phase's hooks get `TARGET_ROOT` (the tree from outside).
    pub const fn target_root(self) -> bool {
        matches!(self, Phase::Root | Phase::Cleanup)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A phase by name (`install`).
pub fn by_name(name: &str) -> Option<Phase> {
    PHASES.iter().copied().find(|p| p.name() == name)
}

/// The phase names, comma-separated, for messages.
pub fn names() -> String {
    PHASES.map(Phase::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_has_its_dir_and_place() {
        for p in PHASES {
            assert_eq!(p.dir(), format!("{}.d", p.name()));
            assert_eq!(by_name(p.name()), Some(p));
        }
        assert!(PHASES.is_sorted());
        let chroot: Vec<_> = PHASES.into_iter().filter(|p| p.chroot()).collect();
        assert_eq!(
            chroot,
            [
                Phase::PreInstall,
                Phase::Install,
                Phase::PostInstall,
                Phase::Finalise
            ]
        );
        assert_eq!(by_name("install.d"), None);
    }
}
