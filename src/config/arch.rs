//! The target architecture (`-a`, `ARCH`).

use std::fmt;

use anyhow::{Context as _, Result};

use super::Env;

/// Target architectures (Debian names, as DIB's `ARCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
    Armhf,
    I386,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::I386 => "i386",
        }
    }

    /// Debian names plus the kernel's spellings users type by habit.
    pub fn parse(s: &str) -> Option<Arch> {
        Some(match s {
            "amd64" | "x86_64" => Arch::Amd64,
            "arm64" | "aarch64" => Arch::Arm64,
            "armhf" | "armv7l" => Arch::Armhf,
            "i386" | "i686" => Arch::I386,
            _ => return None,
        })
    }

    /// `ARCH` from the environment (as DIB reads it), else the host's.
    pub fn from_env(env: &Env) -> Result<Arch> {
        match env.get("ARCH").filter(|a| !a.is_empty()) {
            Some(a) => Arch::parse(a).with_context(|| {
                format!("ARCH={a:?} is not valid: use one of amd64, arm64, armhf, i386")
            }),
            None => Ok(Arch::host()),
        }
    }

    /// How the target's executables look, for the check that this host
    /// runs them.
    pub fn binfmt(self) -> dib_sandbox::binfmt::Target {
        use dib_sandbox::binfmt::{AMD64, ARM64, ARMHF, I386};
        match self {
            Arch::Amd64 => AMD64,
            Arch::Arm64 => ARM64,
            Arch::Armhf => ARMHF,
            Arch::I386 => I386,
        }
    }

    /// Whether the host's kernel runs the target's binaries itself: its own
    /// architecture, and the 32-bit one beside it (i386 on amd64, armhf on
    /// arm64, when the CPU has it).
    pub fn native_on(self, host: Arch) -> bool {
        self == host
            || matches!(
                (host, self),
                (Arch::Amd64, Arch::I386) | (Arch::Arm64, Arch::Armhf)
            )
    }

    /// Whether the target is the 32-bit architecture that `host`'s kernel
    /// runs itself, so its chroot gets the 32-bit personality.
    pub fn runs_as_linux32_on(self, host: Arch) -> bool {
        self != host && self.native_on(host)
    }

    /// Fail unless this host runs the target's binaries (natively or
    /// through a registered qemu-user handler), saying what to install or
    /// enable. Checked before a build starts.
    pub fn check_runnable(self) -> Result<()> {
        let host = Arch::host();
        let native = self.native_on(host);
        match dib_sandbox::binfmt::check(
            self.binfmt(),
            native,
            std::path::Path::new(dib_sandbox::binfmt::BINFMT_DIR),
        ) {
            Ok(how) => {
                if let dib_sandbox::binfmt::Runs::Through(h) = how {
                    tracing::debug!(
                        "{self} binaries run through {} ({})",
                        h.name,
                        h.interpreter.display()
                    );
                }
                Ok(())
            }
            // armhf on an arm64 CPU without 32-bit support: qemu-arm then.
            Err(first) if native && self != host => dib_sandbox::binfmt::check(
                self.binfmt(),
                false,
                std::path::Path::new(dib_sandbox::binfmt::BINFMT_DIR),
            )
            .map(|_| ())
            .map_err(|_| first.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// The architecture this binary was built for.
    pub fn host() -> Arch {
        Arch::parse(std::env::consts::ARCH).unwrap_or(Arch::Amd64)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
