//! The hooks' seccomp filter (tier 1, no privilege needed): its program run
//! by a small classic-BPF interpreter on synthetic `seccomp_data`, then the
//! real thing installed in a python3 child, whose refused system calls must
//! fail with EPERM. The expectations are x86_64's.
#![cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
#![allow(unsafe_code)] // Command::pre_exec is unsafe; the block says why it is sound

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Command;

use dib_sandbox::seccomp::Filter;

/// linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// linux/audit.h: EM_386 | __AUDIT_ARCH_LE.
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// linux/audit.h: EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE, an
/// architecture an x86_64 kernel never reports.
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// asm/unistd.h (x86): `__X32_SYSCALL_BIT`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

/// What the filter must refuse on x86_64, with libc's numbers.
const X86_64_REFUSED: &[(&str, libc::c_long)] = &[
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("syslog", libc::SYS_syslog),
    ("uselib", libc::SYS_uselib),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
];

/// What a build needs, on x86_64.
const X86_64_ALLOWED: &[(&str, libc::c_long)] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("openat", libc::SYS_openat),
    ("mount", libc::SYS_mount),
    ("unshare", libc::SYS_unshare),
    ("chroot", libc::SYS_chroot),
    ("setns", libc::SYS_setns),
    ("ptrace", libc::SYS_ptrace),
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("execve", libc::SYS_execve),
    ("getpid", libc::SYS_getpid),
    ("process_vm_readv", libc::SYS_process_vm_readv),
];

/// i386 numbers, from asm/unistd_32.h.
const I386_REFUSED: &[(&str, u32)] = &[
    ("init_module", 128),
    ("kexec_load", 283),
    ("bpf", 357),
    ("keyctl", 288),
    ("vm86", 166),
    ("vm86old", 113),
    ("clock_settime64", 404),
];
const I386_ALLOWED: &[(&str, u32)] = &[
    ("read", 3),
    ("write", 4),
    ("open", 5),
    ("mount", 21),
    ("clone", 120),
];

/// Runs a classic-BPF program on `data` as the kernel's seccomp does, for
/// the instructions the filter uses; panics on anything else, on a load
/// outside `seccomp_data` and on running off the end.
fn run(prog: &[libc::sock_filter], data: &libc::seccomp_data) -> u32 {
    // SAFETY (test): seccomp_data is plain old data with no padding.
    let bytes: &[u8] = unsafe {
        std::slice::from_raw_parts(
            (data as *const libc::seccomp_data).cast::<u8>(),
            std::mem::size_of::<libc::seccomp_data>(),
        )
    };
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq_k = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let jset_k = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    let ret_k = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = prog.get(pc).expect("the program ran off its end");
        let jump = |taken: bool| pc + 1 + usize::from(if taken { insn.jt } else { insn.jf });
        pc = match insn.code {
            c if c == ld_w_abs => {
                let k = insn.k as usize;
                assert!(k.is_multiple_of(4) && k + 4 <= bytes.len(), "load at {k}");
                a = u32::from_ne_bytes(bytes[k..k + 4].try_into().unwrap());
                pc + 1
            }
            c if c == jeq_k => jump(a == insn.k),
            c if c == jset_k => jump(a & insn.k != 0),
            c if c == ret_k => return insn.k,
            c => panic!("instruction {pc}: opcode {c:#x} not expected"),
        };
    }
}

fn data(arch: u32, nr: u32) -> libc::seccomp_data {
    libc::seccomp_data {
        nr: nr as libc::c_int,
        arch,
        instruction_pointer: 0x7fff_1234_5678,
        args: [0; 6],
    }
}

fn verdict(arch: u32, nr: u32) -> u32 {
    run(Filter::for_hooks().instructions(), &data(arch, nr))
}

#[test]
fn every_refused_x86_64_call_gets_eperm() {
    for &(name, nr) in X86_64_REFUSED {
        assert_eq!(
            verdict(AUDIT_ARCH_X86_64, nr as u32),
            EPERM,
            "{name} ({nr})"
        );
    }
}

#[test]
fn what_a_build_needs_is_allowed_on_x86_64() {
    for &(name, nr) in X86_64_ALLOWED {
        assert_eq!(
            verdict(AUDIT_ARCH_X86_64, nr as u32),
            ALLOW,
            "{name} ({nr})"
        );
    }
}

#[test]
fn no_number_below_500_is_refused_that_is_not_listed() {
    let refused: BTreeSet<u32> = X86_64_REFUSED.iter().map(|&(_, nr)| nr as u32).collect();
    for nr in 0..500 {
        let want = if refused.contains(&nr) { EPERM } else { ALLOW };
        assert_eq!(verdict(AUDIT_ARCH_X86_64, nr), want, "x86_64 number {nr}");
    }
}

#[test]
fn x32_numbers_are_refused() {
    for nr in [libc::SYS_read, libc::SYS_write, libc::SYS_bpf, 512, 547] {
        let x32 = X32_SYSCALL_BIT | nr as u32;
        assert_eq!(
            verdict(AUDIT_ARCH_X86_64, x32),
            EPERM,
            "x32 number {x32:#x}"
        );
    }
}

#[test]
fn i386_uses_the_i386_numbers() {
    for &(name, nr) in I386_REFUSED {
        assert_eq!(verdict(AUDIT_ARCH_I386, nr), EPERM, "i386 {name} ({nr})");
    }
    for &(name, nr) in I386_ALLOWED {
        assert_eq!(verdict(AUDIT_ARCH_I386, nr), ALLOW, "i386 {name} ({nr})");
    }
    // x86_64's bpf (321) is i386's inotify_rm_watch: not refused there.
    assert_eq!(verdict(AUDIT_ARCH_I386, libc::SYS_bpf as u32), ALLOW);
    // The x32 bit means nothing to i386.
    assert_eq!(verdict(AUDIT_ARCH_I386, X32_SYSCALL_BIT | 3), ALLOW);
}

#[test]
fn an_unknown_architecture_is_allowed() {
    for nr in [libc::SYS_read, libc::SYS_bpf, libc::SYS_init_module] {
        assert_eq!(verdict(AUDIT_ARCH_AARCH64, nr as u32), ALLOW);
        assert_eq!(verdict(0, nr as u32), ALLOW);
    }
}

#[test]
fn refused_names_are_the_x86_64_list_and_the_i386_extras() {
    let names: BTreeSet<&str> = Filter::refused_names().iter().copied().collect();
    let mut want: BTreeSet<&str> = X86_64_REFUSED.iter().map(|&(n, _)| n).collect();
    want.extend([
        "vm86",
        "vm86old",
        "stime",
        "clock_settime64",
        "clock_adjtime64",
    ]);
    assert_eq!(names, want);
}

/// Runs python3 with the filter installed (or not), making each call of
/// `calls` with zero arguments; returns its output.
fn python(calls: &[(&str, libc::c_long)], filtered: bool) -> String {
    let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
getpid_nr = int(sys.argv[1])
out = []
for arg in sys.argv[2:]:
    name, nr = arg.split("=")
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(int(nr)), 0, 0, 0, 0, 0)
    out.append(f"{name}={ctypes.get_errno() if r < 0 else 'ran'}")
print(" ".join(out))
print("getpid=" + ("ok" if libc.syscall(ctypes.c_long(getpid_nr)) == os.getpid() else "failed"))
for line in open("/proc/self/status"):
    if line.startswith(("NoNewPrivs:", "Seccomp:", "Seccomp_filters:")):
        print(line, end="")
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(libc::SYS_getpid.to_string());
    for (name, nr) in calls {
        cmd.arg(format!("{name}={nr}"));
    }
    if filtered {
        let filter = Filter::for_hooks();
        // SAFETY: the closure only calls Filter::install, which is
        // async-signal-safe (prctl and seccomp on a program built here,
        // before the fork).
        unsafe {
            cmd.pre_exec(move || filter.install());
        }
    }
    let out = cmd.output().expect("running python3");
    assert!(
        out.status.success(),
        "python3: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn status_field<'a>(out: &'a str, field: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(":\t"))
}

#[test]
fn installed_filter_refuses_with_eperm() {
    let calls = [
        ("keyctl", libc::SYS_keyctl),
        ("bpf", libc::SYS_bpf),
        ("init_module", libc::SYS_init_module),
        ("kexec_load", libc::SYS_kexec_load),
        ("perf_event_open", libc::SYS_perf_event_open),
    ];
    let plain = python(&calls, false);
    let out = python(&calls, true);
    eprintln!("without the filter:\n{plain}with it:\n{out}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("keyctl=1 bpf=1 init_module=1 kexec_load=1 perf_event_open=1"),
        "errno of each refused call (1 = EPERM)"
    );
    assert_eq!(lines.next(), Some("getpid=ok"));
    assert!(out.contains("NoNewPrivs:\t1\n"), "{out}");
    assert!(out.contains("Seccomp:\t2\n"), "{out}");
    // Exactly one filter more than the test itself runs under (the field
    // exists since Linux 5.9).
    if let (Some(before), Some(after)) = (
        status_field(&plain, "Seccomp_filters"),
        status_field(&out, "Seccomp_filters"),
    ) {
        let n = |s: &str| s.trim().parse::<u32>().unwrap();
        assert_eq!(n(after), n(before) + 1, "Seccomp_filters");
    }
}
