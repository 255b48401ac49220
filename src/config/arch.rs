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
