//! Whether this host runs a target architecture's binaries: natively (an
//! amd64 kernel runs i386 code), or through a binfmt_misc handler such as
//! qemu-user-static's, registered with the F flag so the kernel opens the
//! interpreter once, at registration, and it works inside a chroot and a
//! user namespace where its path does not exist.
//!
//! [`check`] reads the registrations the kernel uses for this process and
//! then runs a tiny program of the target (exit code 42, made here: an ELF
//! header, one segment and three instructions) from a memfd. Both steps
//! happen before a build starts, so a host that cannot run the target's
//! binaries fails before anything is downloaded, with what to install or
//! enable.

use std::fmt;
use std::fs;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binfmt_misc mount the kernel uses for this process's user namespace.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// What identifies a target's executables: the first 20 bytes of an ELF
/// header (ident, type, machine) and the code of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The architecture's name in messages (`arm64`).
    pub name: &'static str,
    /// qemu-user's name of it (`aarch64`): its handler is `qemu-NAME`.
    pub qemu: &'static str,
    /// 64-bit (ELFCLASS64) or 32-bit.
    pub class64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `e_flags` (the ARM EABI version and float ABI).
    pub flags: u32,
    /// Machine code: exit_group(42), little-endian.
    pub code: &'static [u8],
}

pub const AMD64: Target = Target {
    name: "amd64",
    qemu: "x86_64",
    class64: true,
    machine: 62,
    flags: 0,
    // mov edi, 42; mov eax, 231 (exit_group); syscall
    code: &[0xbf, 0x2a, 0, 0, 0, 0xb8, 0xe7, 0, 0, 0, 0x0f, 0x05],
};

pub const I386: Target = Target {
    name: "i386",
    qemu: "i386",
    class64: false,
    machine: 3,
    flags: 0,
    // mov ebx, 42; mov eax, 252 (exit_group); int 0x80
    code: &[0xbb, 0x2a, 0, 0, 0, 0xb8, 0xfc, 0, 0, 0, 0xcd, 0x80],
};

pub const ARM64: Target = Target {
    name: "arm64",
    qemu: "aarch64",
    class64: true,
    machine: 183,
    flags: 0,
    // mov x0, #42; mov x8, #94 (exit_group); svc #0
    code: &[
        0x40, 0x05, 0x80, 0xd2, 0xc8, 0x0b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4,
    ],
};

pub const ARMHF: Target = Target {
    name: "armhf",
    qemu: "arm",
    class64: false,
    machine: 40,
    // EF_ARM_EABI_VER5 | EF_ARM_ABI_FLOAT_HARD
    flags: 0x0500_0400,
    // mov r0, #42; mov r7, #248 (exit_group); svc #0
    code: &[
        0x2a, 0x00, 0xa0, 0xe3, 0xf8, 0x70, 0xa0, 0xe3, 0x00, 0x00, 0x00, 0xef,
    ],
};

/// Where the probe is loaded.
const BASE: u64 = 0x40_0000;

impl Target {
    /// A whole static executable: the ELF header, one loadable segment
    /// (the file itself, read and execute), the code after them.
    pub fn probe(&self) -> Vec<u8> {
        let (ehsize, phsize): (u16, u16) = if self.class64 { (64, 56) } else { (52, 32) };
        let code_at = u64::from(ehsize + phsize);
        let size = code_at + self.code.len() as u64;
        let entry = BASE + code_at;
        let mut f = Vec::with_capacity(size as usize);
        let word = |f: &mut Vec<u8>, v: u64| {
            if self.class64 {
                f.extend_from_slice(&v.to_le_bytes());
            } else {
                f.extend_from_slice(&(v as u32).to_le_bytes());
            }
        };
        f.extend_from_slice(&self.ident());
        f.extend_from_slice(&1u32.to_le_bytes()); // e_version
        word(&mut f, entry);
        word(&mut f, u64::from(ehsize)); // e_phoff
        word(&mut f, 0); // e_shoff
        f.extend_from_slice(&self.flags.to_le_bytes());
        for v in [ehsize, phsize, 1, 0, 0, 0] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        // The program header: PT_LOAD, PF_R | PF_X.
        f.extend_from_slice(&1u32.to_le_bytes());
        if self.class64 {
            f.extend_from_slice(&5u32.to_le_bytes());
        }
        word(&mut f, 0); // p_offset
        word(&mut f, BASE); // p_vaddr
        word(&mut f, BASE); // p_paddr
        word(&mut f, size); // p_filesz
        word(&mut f, size); // p_memsz
        if !self.class64 {
            f.extend_from_slice(&5u32.to_le_bytes());
        }
        word(&mut f, 0x1000); // p_align
        f.extend_from_slice(self.code);
        f
    }

    /// The first 20 bytes of the target's executables, which binfmt_misc
    /// handlers match.
    pub fn ident(&self) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if self.class64 { 2 } else { 1 };
        h[5] = 1; // little-endian
        h[6] = 1; // EV_CURRENT
        h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        h[18..20].copy_from_slice(&self.machine.to_le_bytes());
        h
    }
}

/// One registered handler, as `/proc/sys/fs/binfmt_misc/NAME` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: PathBuf,
    pub flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Handler {
    /// Parse a handler's file; `None` for an extension handler or text
    /// that is not a handler.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut lines = text.lines();
        let enabled = lines.next()? == "enabled";
        let (mut interpreter, mut flags, mut offset, mut magic, mut mask) =
            (None, String::new(), 0, None, None);
        for line in lines {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "interpreter" => interpreter = Some(PathBuf::from(v)),
                "flags:" => flags = v.trim().to_string(),
                "offset" => offset = v.trim().parse().ok()?,
                "magic" => magic = Some(hex(v.trim())?),
                "mask" => mask = Some(hex(v.trim())?),
                _ => {}
            }
        }
        let magic = magic?;
        let mask = mask.unwrap_or_else(|| vec![0xff; magic.len()]);
        Some(Handler {
            name: name.to_string(),
            enabled,
            interpreter: interpreter?,
            flags,
            offset,
            magic,
            mask,
        })
    }

    /// Whether the kernel would hand `header` (a file's first bytes) to it.
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(data) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        data.iter()
            .zip(&self.magic)
            .zip(self.mask.iter().chain(std::iter::repeat(&0xff)))
            .all(|((d, m), k)| d & k == m & k)
    }

    /// Registered with the F flag: the interpreter is open already, so it
    /// works inside a chroot.
    pub fn fixed(&self) -> bool {
        self.flags.contains('F')
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Every magic handler registered in `dir`, and whether binfmt_misc is
/// enabled there. `None` when `dir` is not a binfmt_misc mount.
pub fn handlers(dir: &Path) -> Option<(bool, Vec<Handler>)> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let mut out = Vec::new();
    for e in fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "status" || name == "register" {
            continue;
        }
        if let Ok(text) = fs::read_to_string(e.path()) {
            out.extend(Handler::parse(&name, &text));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some((status.trim() == "enabled", out))
}

/// How the host runs a target's binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    /// The CPU and kernel run them (`host` is this host's architecture).
    Natively,
    /// Through this handler's interpreter.
    Through(Handler),
}

/// Why the host cannot run a target's binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cannot {
    /// binfmt_misc is not mounted (hosts without systemd).
    NotMounted(Target),
    /// binfmt_misc is mounted but switched off as a whole.
    BinfmtDisabled(Target),
    /// No handler matches the target's executables.
    NoHandler(Target),
    /// The handler is registered but disabled.
    HandlerDisabled(Target, Handler),
    /// Registered without the F flag: its interpreter is looked up by path
    /// at each exec, which fails inside the image's chroot.
    NotFixed(Target, Handler),
    /// The probe did not run (or did not exit 42).
    ProbeFailed(Target, Option<Handler>, String),
}

impl fmt::Display for Cannot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let install = "install the Debian packages qemu-user-static and binfmt-support \
                       (sudo apt-get install qemu-user-static binfmt-support, or sudo \
                       scripts/prepare-host)";
        match self {
            Cannot::NotMounted(t) => write!(
                f,
                "this host cannot run {} binaries: binfmt_misc is not mounted at {BINFMT_DIR}; \
                 {install}, then mount it and register the handlers: sudo mount -t binfmt_misc \
                 binfmt_misc {BINFMT_DIR} && sudo update-binfmts --enable",
                t.name
            ),
            Cannot::BinfmtDisabled(t) => write!(
                f,
                "this host cannot run {} binaries: binfmt_misc is switched off; switch it on \
                 with: echo 1 | sudo tee {BINFMT_DIR}/status",
                t.name
            ),
            Cannot::NoHandler(t) => write!(
                f,
                "this host cannot run {} binaries: no binfmt_misc handler is registered for \
                 them; {install}, then register them: sudo update-binfmts --enable qemu-{}",
                t.name, t.qemu
            ),
            Cannot::HandlerDisabled(t, h) => write!(
                f,
                "this host cannot run {} binaries: the binfmt_misc handler {} is disabled; \
                 enable it: sudo update-binfmts --enable {}",
                t.name, h.name, h.name
            ),
            Cannot::NotFixed(t, h) => write!(
                f,
                "the binfmt_misc handler {} for {} binaries is registered without the F flag \
                 (flags '{}'), so its interpreter {} cannot be found inside the image: \
                 register qemu-user-static's handler, which has it: sudo update-binfmts \
                 --disable {} && sudo update-binfmts --enable qemu-{}",
                h.name,
                t.name,
                h.flags,
                h.interpreter.display(),
                h.name,
                t.qemu
            ),
            Cannot::ProbeFailed(t, h, why) => match h {
                Some(h) => write!(
                    f,
                    "this host cannot run {} binaries through {} ({}): {why}; reinstall \
                     qemu-user-static and register it again: sudo update-binfmts --enable {}",
                    t.name,
                    h.name,
                    h.interpreter.display(),
                    h.name
                ),
                None => write!(
                    f,
                    "this kernel does not run {} binaries itself: {why}; a kernel with \
                     32-bit support (CONFIG_IA32_EMULATION, not ia32_emulation=0 on its \
                     command line) runs them, or {install}",
                    t.name
                ),
            },
        }
    }
}

impl std::error::Error for Cannot {}

/// Whether this host runs `target`'s binaries, `native` telling whether
/// the kernel runs them without a handler (the host's own architecture, or
/// i386 on amd64). A native target is probed only; a foreign one needs an
/// enabled handler with the F flag in `dir`, and then the probe.
pub fn check(target: Target, native: bool, dir: &Path) -> Result<Runs, Box<Cannot>> {
    let found = if native {
        None
    } else {
        let Some((on, all)) = handlers(dir) else {
            return Err(Box::new(Cannot::NotMounted(target)));
        };
        if !on {
            return Err(Box::new(Cannot::BinfmtDisabled(target)));
        }
        let ident = target.ident();
        let matching: Vec<&Handler> = all.iter().filter(|h| h.matches(&ident)).collect();
        // The kernel takes the first enabled match; with none enabled, say
        // which one is there.
        match matching.iter().find(|h| h.enabled) {
            Some(h) if !h.fixed() => return Err(Box::new(Cannot::NotFixed(target, (*h).clone()))),
            Some(h) => Some((*h).clone()),
            None => match matching.first() {
                Some(h) => return Err(Box::new(Cannot::HandlerDisabled(target, (*h).clone()))),
                None => return Err(Box::new(Cannot::NoHandler(target))),
            },
        }
    };
    match run_probe(&target) {
        Ok(()) => Ok(found.map_or(Runs::Natively, Runs::Through)),
        Err(why) => Err(Box::new(Cannot::ProbeFailed(target, found, why))),
    }
}

/// Run the target's probe from a memfd. The fd is inherited (no
/// close-on-exec), so an interpreter that binfmt_misc hands the path
/// `/proc/self/fd/N` can open it.
fn run_probe(target: &Target) -> Result<(), String> {
    use std::io::Write as _;
    let fd = rustix::fs::memfd_create("dib-arch-probe", rustix::fs::MemfdFlags::empty())
        .map_err(|e| format!("making the probe: {e}"))?;
    let mut file = fs::File::from(fd);
    file.write_all(&target.probe())
        .map_err(|e| format!("writing the probe: {e}"))?;
    rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(0o500))
        .map_err(|e| format!("making the probe executable: {e}"))?;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let status = Command::new(&path)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("running a {} program: {e}", target.name))?;
    match status.code() {
        Some(42) => Ok(()),
        _ => Err(format!("a {} program ended with {status}", target.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const QEMU_ARM: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c4601010100000000000000000002002800\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn qemu_handlers_match_their_targets_only() {
        let a64 = Handler::parse("qemu-aarch64", QEMU_AARCH64).unwrap();
        let arm = Handler::parse("qemu-arm", QEMU_ARM).unwrap();
        assert!(a64.enabled && a64.fixed());
        assert!(a64.matches(&ARM64.ident()) && !a64.matches(&ARMHF.ident()));
        assert!(arm.matches(&ARMHF.ident()) && !arm.matches(&ARM64.ident()));
        for h in [&a64, &arm] {
            assert!(!h.matches(&AMD64.ident()) && !h.matches(&I386.ident()));
            // The probe's own header is what the handler sees.
        }
        assert!(a64.matches(&ARM64.probe()[..20]));
        // Shared objects (ET_DYN) match too: the mask clears the low bit.
        let mut dyn_ = ARM64.ident();
        dyn_[16] = 3;
        assert!(a64.matches(&dyn_));
        // Extension handlers and disabled ones.
        assert_eq!(
            Handler::parse("jar", "enabled\ninterpreter /x\nflags: \nextension .jar\n"),
            None
        );
        let off = Handler::parse("qemu-arm", &QEMU_ARM.replacen("enabled", "disabled", 1)).unwrap();
        assert!(!off.enabled);
    }

    #[test]
    fn probes_are_well_formed_elf() {
        for t in [AMD64, I386, ARM64, ARMHF] {
            let p = t.probe();
            assert_eq!(&p[..20], &t.ident());
            let (ehsize, phsize) = if t.class64 { (64, 56) } else { (52, 32) };
            assert_eq!(p.len(), ehsize + phsize + t.code.len(), "{}", t.name);
            assert!(p.ends_with(t.code));
        }
    }

    #[test]
    fn the_hosts_own_probe_runs() {
        #[cfg(target_arch = "x86_64")]
        let t = AMD64;
        #[cfg(target_arch = "aarch64")]
        let t = ARM64;
        assert_eq!(
            check(t, true, Path::new("/nonexistent")),
            Ok(Runs::Natively)
        );
    }

    #[test]
    fn a_foreign_target_without_binfmt_names_the_package_and_command() {
        let t = if cfg!(target_arch = "aarch64") {
            AMD64
        } else {
            ARM64
        };
        let e = check(t, false, Path::new("/nonexistent")).unwrap_err();
        assert_eq!(*e, Cannot::NotMounted(t));
        let msg = e.to_string();
        assert!(
            msg.contains("qemu-user-static") && msg.contains("update-binfmts --enable"),
            "{msg}"
        );
        // An empty binfmt_misc: no handler.
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("status"), "enabled\n").unwrap();
        fs::write(d.path().join("register"), "").unwrap();
        let e = check(t, false, d.path()).unwrap_err();
        assert_eq!(*e, Cannot::NoHandler(t));
        assert!(e
            .to_string()
            .contains(&format!("update-binfmts --enable qemu-{}", t.qemu)));
        // A handler without F: refused by name.
        let text = if t.name == "arm64" {
            QEMU_AARCH64
        } else {
            QEMU_ARM
        };
        fs::write(d.path().join("qemu-x"), text.replace("PF", "P")).unwrap();
        if t.name == "arm64" {
            match *check(t, false, d.path()).unwrap_err() {
                Cannot::NotFixed(_, h) => assert_eq!(h.name, "qemu-x"),
                other => panic!("{other:?}"),
            }
            fs::write(
                d.path().join("qemu-x"),
                text.replacen("enabled", "disabled", 1),
            )
            .unwrap();
            assert!(matches!(
                *check(t, false, d.path()).unwrap_err(),
                Cannot::HandlerDisabled(..)
            ));
            fs::write(d.path().join("status"), "disabled\n").unwrap();
            assert_eq!(
                *check(t, false, d.path()).unwrap_err(),
                Cannot::BinfmtDisabled(t)
            );
        }
    }
}
