//! A seccomp filter that refuses the system calls a running sonde never makes and
//! an attacker who took it over would want: loading kernel code (modules, kexec),
//! mounting (tracefs is mounted before the filter goes in), reading or writing other
//! processes (ptrace, process_vm_*, pidfd_getfd), opening files by handle (the
//! CAP_DAC_READ_SEARCH escape), changing the clock, the host name, swap, keys,
//! accounting, raw I/O ports, reboot. Each answers `EPERM`; everything else is
//! allowed.
//!
//! A deny-list, not an allow-list: tokio, hyper, jemalloc, rustls and aya together
//! make a set of calls that changes with their versions, the kernel (ring buffer vs
//! perf buffer, TCX vs clsact) and the libc, and a call missing from an allow-list
//! would kill the daemon on some node in the middle of a reload. The calls sonde
//! does need and that are dangerous (`bpf`, `perf_event_open`, `setns`) are
//! limited by capabilities instead.
//!
//! The filter is checked against the architecture it was built for; a call made
//! through another ABI (32-bit `int 0x80` on x86_64) ends the process.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use super::PrivilegeError;

/// The refused calls, by name and number on this architecture.
pub fn denied() -> Vec<(&'static str, libc::c_long)> {
    let mut calls = vec![
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("reboot", libc::SYS_reboot),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("acct", libc::SYS_acct),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("sethostname", libc::SYS_sethostname),
        ("setdomainname", libc::SYS_setdomainname),
        ("quotactl", libc::SYS_quotactl),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("syslog", libc::SYS_syslog),
        ("vhangup", libc::SYS_vhangup),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
    ]);
    calls
}

fn arch() -> Result<TargetArch, PrivilegeError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| PrivilegeError::Seccomp(format!("{}: {e:?}", std::env::consts::ARCH)))
}

/// Builds and installs the filter for the calling thread and every thread it starts
/// later; returns the names of the refused calls. Needs `no_new_privs` (or
/// CAP_SYS_ADMIN).
pub fn install() -> Result<Vec<&'static str>, PrivilegeError> {
    let calls = denied();
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        calls.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| PrivilegeError::Seccomp(e.to_string()))?;
    seccompiler::apply_filter(&program).map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
    Ok(calls.into_iter().map(|(n, _)| n).collect())
}
