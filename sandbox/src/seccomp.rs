//! The seccomp filter every hook runs under: a classic-BPF program, built
//! once before any fork, that refuses (EPERM) the system calls no build
//! needs (loading kernel modules, kexec, eBPF, the keyring, perf, setting
//! the clock, raw I/O ports, ...) and allows everything else.
//!
//! The program checks `seccomp_data.arch` first, then the number:
//!
//! - x86_64 hosts: x86_64 binaries are checked against the x86_64 numbers,
//!   and every x32 number (`__X32_SYSCALL_BIT` set) is refused outright;
//!   i386 binaries (the 32-bit tools of an i386 build) are checked against
//!   the i386 numbers, hard-coded below from the kernel's header since libc
//!   only has the host's.
//! - aarch64 hosts: aarch64 binaries, against the aarch64 numbers.
//! - Any other architecture value is allowed: the kernel runs no other.
//!
//! [`Filter::install`] runs between fork and exec (in a `pre_exec`
//! closure), so it allocates nothing and takes no lock: it only calls
//! prctl(2) and seccomp(2) on the program built earlier.
#![allow(unsafe_code)] // prctl(2) and seccomp(2) have no safe wrapper taking our program; each block says why it is sound

use std::io;
use std::mem::offset_of;

use libc::{c_long, sock_filter};

// linux/audit.h: AUDIT_ARCH_* = EM_* | __AUDIT_ARCH_64BIT (0x80000000) |
// __AUDIT_ARCH_LE (0x40000000); libc has the EM_* values but not these.
/// `AUDIT_ARCH_X86_64` (linux/audit.h): EM_X86_64 (62), 64-bit, little-endian.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386` (linux/audit.h): EM_386 (3), little-endian.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_AARCH64` (linux/audit.h): EM_AARCH64 (183), 64-bit, little-endian.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

/// `__X32_SYSCALL_BIT` (asm/unistd.h, x86): set in every x32 system call number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a refused call returns: `SECCOMP_RET_ERRNO` with EPERM in the data bits.
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);

/// The kernel's limit on a classic-BPF program (`BPF_MAXINSNS`, linux/bpf_common.h).
const MAX_INSNS: usize = 4096;

/// One system-call convention the filter checks: the `seccomp_data.arch`
/// value that selects it and the numbers it refuses there.
struct Abi {
    arch: u32,
    /// Refuse every number with `__X32_SYSCALL_BIT` set (x86_64 only).
    refuse_x32: bool,
    refused: &'static [(&'static str, c_long)],
}

#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
const ABIS: &[Abi] = &[
    Abi {
        arch: AUDIT_ARCH_X86_64,
        refuse_x32: true,
        refused: X86_64_REFUSED,
    },
    Abi {
        arch: AUDIT_ARCH_I386,
        refuse_x32: false,
        refused: I386_REFUSED,
    },
];

#[cfg(target_arch = "aarch64")]
const ABIS: &[Abi] = &[Abi {
    arch: AUDIT_ARCH_AARCH64,
    refuse_x32: false,
    refused: AARCH64_REFUSED,
}];

#[cfg(not(any(
    all(target_arch = "x86_64", target_pointer_width = "64"),
    target_arch = "aarch64"
)))]
compile_error!(
    "dib's seccomp filter knows x86_64 and aarch64 only: add this architecture's table to sandbox/src/seccomp.rs"
);

/// The x86_64 numbers of the refused calls (libc's, which are this host's).
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
const X86_64_REFUSED: &[(&str, c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("adjtimex", libc::SYS_adjtimex),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("finit_module", libc::SYS_finit_module),
    ("init_module", libc::SYS_init_module),
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("syslog", libc::SYS_syslog),
    ("uselib", libc::SYS_uselib),
    ("userfaultfd", libc::SYS_userfaultfd),
];

/// The i386 numbers of the refused calls, from
/// /usr/include/x86_64-linux-gnu/asm/unistd_32.h (linux-libc-dev; the
/// kernel's arch/x86/entry/syscalls/syscall_32.tbl). i386 has no
/// kexec_file_load. Besides the x86_64 list: vm86 and vm86old (i386 only),
/// stime (the old way to set the clock) and the time64 variants of
/// clock_settime and clock_adjtime, which 32-bit glibc calls first.
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
const I386_REFUSED: &[(&str, c_long)] = &[
    ("acct", 51),
    ("add_key", 286),
    ("adjtimex", 124),
    ("bpf", 357),
    ("clock_adjtime", 343),
    ("clock_adjtime64", 405),
    ("clock_settime", 264),
    ("clock_settime64", 404),
    ("delete_module", 129),
    ("fanotify_init", 338),
    ("finit_module", 350),
    ("init_module", 128),
    ("ioperm", 101),
    ("iopl", 110),
    ("kexec_load", 283),
    ("keyctl", 288),
    ("lookup_dcookie", 253),
    ("open_by_handle_at", 342),
    ("perf_event_open", 336),
    ("pidfd_getfd", 438),
    ("process_vm_writev", 348),
    ("quotactl", 131),
    ("quotactl_fd", 443),
    ("reboot", 88),
    ("request_key", 287),
    ("settimeofday", 79),
    ("stime", 25),
    ("swapoff", 115),
    ("swapon", 87),
    ("syslog", 103),
    ("uselib", 86),
    ("userfaultfd", 374),
    ("vm86", 166),
    ("vm86old", 113),
];

/// `__NR_kexec_file_load` (include/uapi/asm-generic/unistd.h, which aarch64
/// uses): libc's musl targets lack it.
#[cfg(target_arch = "aarch64")]
const AARCH64_SYS_KEXEC_FILE_LOAD: c_long = 294;

/// The aarch64 numbers of the refused calls (libc's). aarch64 has no iopl,
/// ioperm or uselib.
#[cfg(target_arch = "aarch64")]
const AARCH64_REFUSED: &[(&str, c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("adjtimex", libc::SYS_adjtimex),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("finit_module", libc::SYS_finit_module),
    ("init_module", libc::SYS_init_module),
    ("kexec_file_load", AARCH64_SYS_KEXEC_FILE_LOAD),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("syslog", libc::SYS_syslog),
    ("userfaultfd", libc::SYS_userfaultfd),
];

/// Every name some table above refuses, sorted (a unit test checks it
/// matches the tables).
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
const REFUSED_NAMES: &[&str] = &[
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_settime",
    "clock_settime64",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "open_by_handle_at",
    "perf_event_open",
    "pidfd_getfd",
    "process_vm_writev",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "uselib",
    "userfaultfd",
    "vm86",
    "vm86old",
];

#[cfg(target_arch = "aarch64")]
const REFUSED_NAMES: &[&str] = &[
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "open_by_handle_at",
    "perf_event_open",
    "pidfd_getfd",
    "process_vm_writev",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "userfaultfd",
];

/// The build's seccomp filter, built once before any fork.
pub struct Filter {
    program: Vec<sock_filter>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .finish()
    }
}

impl Filter {
    /// The filter for hooks: refuses (EPERM) what no build needs.
    pub fn for_hooks() -> Filter {
        Filter {
            program: assemble(ABIS),
        }
    }

    /// The syscall names it refuses on this host's architecture, for docs and
    /// messages: sorted, and on x86_64 including those refused only to i386
    /// binaries (vm86, vm86old, stime, clock_settime64, clock_adjtime64).
    pub fn refused_names() -> &'static [&'static str] {
        REFUSED_NAMES
    }

    /// The program, as the kernel gets it (for tests and audits).
    pub fn instructions(&self) -> &[sock_filter] {
        &self.program
    }

    /// Set no_new_privs, then install the filter on the calling thread
    /// (SECCOMP_SET_MODE_FILTER, with SECCOMP_FILTER_FLAG_TSYNC not needed).
    /// Async-signal-safe: only prctl/syscall on data built earlier.
    pub fn install(&self) -> io::Result<()> {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes plain integers and touches
        // no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let prog = libc::sock_fprog {
            // assemble() keeps the program under 4096 instructions.
            len: self.program.len() as libc::c_ushort,
            // The kernel only reads the program (the field is `*mut` in C).
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call;
        // the kernel copies the program and reads nothing else of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: usize, jf: usize) -> sock_filter {
    let offset = |n: usize| u8::try_from(n).expect("a seccomp jump within 255 instructions");
    sock_filter {
        code: code as u16,
        jt: offset(jt),
        jf: offset(jf),
        k,
    }
}

/// The program for `abis`:
///
/// ```text
///       ld  [arch]
///       jeq ABI_0, section_0       ; one per ABI
///       ...
///       ret ALLOW                  ; any other architecture
/// section_i:
///       ld  [nr]
///       jset X32_BIT, deny_i       ; x86_64 only
///       jeq NR, deny_i             ; one per refused call
///       ...
///       ret ALLOW
/// deny_i:
///       ret ERRNO|EPERM
/// ```
fn assemble(abis: &[Abi]) -> Vec<sock_filter> {
    let ld_w_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq_k = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jset_k = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
    let ret_k = libc::BPF_RET | libc::BPF_K;
    let arch_offset = offset_of!(libc::seccomp_data, arch) as u32;
    let nr_offset = offset_of!(libc::seccomp_data, nr) as u32;
    let section_len = |abi: &Abi| 1 + usize::from(abi.refuse_x32) + abi.refused.len() + 2;

    let mut prog = Vec::new();
    prog.push(stmt(ld_w_abs, arch_offset));
    // The dispatch: from the jeq of ABI i, the sections of ABIs 0..i lie
    // between it and section i, after the rest of the dispatch.
    let dispatch_left = abis.len() + 1;
    let mut before = 0;
    for (i, abi) in abis.iter().enumerate() {
        let after_this = dispatch_left - i - 1;
        prog.push(jump(jeq_k, abi.arch, after_this + before, 0));
        before += section_len(abi);
    }
    prog.push(stmt(ret_k, libc::SECCOMP_RET_ALLOW));
    for abi in abis {
        let start = prog.len();
        let deny = start + section_len(abi) - 1;
        prog.push(stmt(ld_w_abs, nr_offset));
        if abi.refuse_x32 {
            prog.push(jump(jset_k, X32_SYSCALL_BIT, deny - prog.len() - 1, 0));
        }
        for &(_, nr) in abi.refused {
            let nr = u32::try_from(nr).expect("system call numbers are small");
            prog.push(jump(jeq_k, nr, deny - prog.len() - 1, 0));
        }
        prog.push(stmt(ret_k, libc::SECCOMP_RET_ALLOW));
        prog.push(stmt(ret_k, RET_EPERM));
        debug_assert_eq!(prog.len(), deny + 1);
    }
    assert!(prog.len() < MAX_INSNS, "seccomp program too long");
    prog
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn program_fits_the_kernel_limit() {
        let f = Filter::for_hooks();
        assert!(f.instructions().len() < MAX_INSNS);
        assert!(!f.instructions().is_empty());
    }

    #[test]
    fn refused_names_are_sorted_unique_and_match_the_tables() {
        let names = Filter::refused_names();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "sorted and unique: {names:?}"
        );
        let listed: BTreeSet<&str> = names.iter().copied().collect();
        let tables: BTreeSet<&str> = ABIS
            .iter()
            .flat_map(|abi| abi.refused.iter().map(|&(name, _)| name))
            .collect();
        assert_eq!(listed, tables);
    }

    #[test]
    fn each_table_is_sorted_by_name_with_distinct_numbers() {
        for abi in ABIS {
            assert!(abi.refused.windows(2).all(|w| w[0].0 < w[1].0));
            let nrs: BTreeSet<c_long> = abi.refused.iter().map(|&(_, nr)| nr).collect();
            assert_eq!(nrs.len(), abi.refused.len());
        }
    }
}
