//! Privileges: the capabilities sonde runs with, and how it gives up the rest.
//!
//! The daemon needs a few capabilities for as long as it runs (a hot reload loads
//! and attaches programs, the sources enter pods' network namespaces at every
//! tick), and a few only to start. [`RUNNING`] is the whole set a running daemon
//! keeps, each with the reason; [`drop_to_running`] is called once, before the
//! daemon starts any thread, after the one-time privileged steps (mounting tracefs,
//! raising RLIMIT_MEMLOCK). It
//!
//! 1. drops every capability but [`RUNNING`] from the bounding set (when it holds
//!    CAP_SETPCAP, as root does), so nothing executed later can get one back;
//! 2. sets the securebits that keep a root process from regaining capabilities
//!    at `execve` (`SECBIT_NOROOT`, locked);
//! 3. clears the ambient and inheritable sets and lowers the permitted and
//!    effective sets to [`RUNNING`] (what it held of it);
//! 4. sets `no_new_privs`;
//! 5. installs a seccomp filter that refuses dangerous system calls ([`seccomp`]).
//!
//! Capabilities are per thread in Linux: doing all this while the process has one
//! thread is what makes it hold for every thread started later.
//!
//! ```no_run
//! use sonde::privileges::{self, Cap};
//! let report = privileges::drop_to_running(&[]).unwrap();
//! assert!(!report.effective.has(Cap::SYS_MODULE));
//! println!("{}", report.summary());
//! ```

pub mod seccomp;

use std::fmt;

/// One Linux capability, by number (`include/uapi/linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cap(pub u8);

impl Cap {
    pub const CHOWN: Cap = Cap(0);
    pub const DAC_OVERRIDE: Cap = Cap(1);
    pub const DAC_READ_SEARCH: Cap = Cap(2);
    pub const SETUID: Cap = Cap(7);
    pub const SETPCAP: Cap = Cap(8);
    pub const NET_BIND_SERVICE: Cap = Cap(10);
    pub const NET_ADMIN: Cap = Cap(12);
    pub const SYS_MODULE: Cap = Cap(16);
    pub const SYS_PTRACE: Cap = Cap(19);
    pub const SYS_ADMIN: Cap = Cap(21);
    pub const SYS_RESOURCE: Cap = Cap(24);
    pub const SYSLOG: Cap = Cap(34);
    pub const PERFMON: Cap = Cap(38);
    pub const BPF: Cap = Cap(39);

    /// The name without `CAP_`, as systemd and Kubernetes write it.
    pub fn name(self) -> String {
        const NAMES: [&str; 41] = [
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "LINUX_IMMUTABLE",
            "NET_BIND_SERVICE",
            "NET_BROADCAST",
            "NET_ADMIN",
            "NET_RAW",
            "IPC_LOCK",
            "IPC_OWNER",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_CHROOT",
            "SYS_PTRACE",
            "SYS_PACCT",
            "SYS_ADMIN",
            "SYS_BOOT",
            "SYS_NICE",
            "SYS_RESOURCE",
            "SYS_TIME",
            "SYS_TTY_CONFIG",
            "MKNOD",
            "LEASE",
            "AUDIT_WRITE",
            "AUDIT_CONTROL",
            "SETFCAP",
            "MAC_OVERRIDE",
            "MAC_ADMIN",
            "SYSLOG",
            "WAKE_ALARM",
            "BLOCK_SUSPEND",
            "AUDIT_READ",
            "PERFMON",
            "BPF",
            "CHECKPOINT_RESTORE",
        ];
        NAMES
            .get(self.0 as usize)
            .map_or_else(|| format!("{}", self.0), |n| n.to_string())
    }
}

/// What the running daemon keeps, and why. The systemd unit
/// (`packaging/sonde.service`) and the Helm chart grant exactly these.
pub const RUNNING: &[(Cap, &str)] = &[
    (Cap::BPF, "load programs, create and read maps (bpf())"),
    (
        Cap::PERFMON,
        "attach to tracepoints, raw tracepoints and kprobes (perf_event_open), tracing program types",
    ),
    (
        Cap::NET_ADMIN,
        "attach TC programs (flow), conntrack statistics over ctnetlink",
    ),
    (
        Cap::SYS_ADMIN,
        "setns() into pods' network namespaces for the netlink sources (sock_diag, qdiscs, conntrack); mount tracefs when missing; bpf() on kernels before 5.8",
    ),
    (
        Cap::SYS_PTRACE,
        "read /proc/<pid>/ns/net, /proc/<pid>/net/*, io and fd of other users' processes",
    ),
    (
        Cap::DAC_READ_SEARCH,
        "read tracefs (mode 0700) for tracepoint ids, list /proc/<pid>/fd of other users",
    ),
    (
        Cap::SYSLOG,
        "real addresses in /proc/kallsyms (stack traces, drop locations)",
    ),
];

/// A set of capabilities (bit `n` is capability `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn of(caps: impl IntoIterator<Item = Cap>) -> Self {
        CapSet(caps.into_iter().fold(0, |s, c| s | 1 << c.0))
    }

    /// [`RUNNING`] as a set.
    pub fn running() -> Self {
        CapSet::of(RUNNING.iter().map(|(c, _)| *c))
    }

    pub fn has(self, c: Cap) -> bool {
        self.0 & (1 << c.0) != 0
    }

    pub fn caps(self) -> impl Iterator<Item = Cap> {
        (0..64u8).filter(move |i| self.0 & (1 << i) != 0).map(Cap)
    }

    pub fn names(self) -> Vec<String> {
        self.caps().map(Cap::name).collect()
    }
}

impl fmt::Display for CapSet {
    /// `/proc/<pid>/status` style: 16 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error("seccomp filter: {0}")]
    Seccomp(String),
}

fn sys(what: impl Into<String>) -> PrivilegeError {
    PrivilegeError::Sys {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// The calling thread's effective, permitted and inheritable sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
}

impl Caps {
    /// The calling thread's capabilities.
    pub fn current() -> Result<Caps, PrivilegeError> {
        let mut hdr = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget with a v3 header and two data structs, as the ABI wants.
        if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
            return Err(sys("capget"));
        }
        let join = |lo: u32, hi: u32| CapSet(u64::from(lo) | u64::from(hi) << 32);
        Ok(Caps {
            effective: join(data[0].effective, data[1].effective),
            permitted: join(data[0].permitted, data[1].permitted),
            inheritable: join(data[0].inheritable, data[1].inheritable),
        })
    }

    fn set(&self) -> Result<(), PrivilegeError> {
        let mut hdr = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let split = |s: CapSet| (s.0 as u32, (s.0 >> 32) as u32);
        let (e0, e1) = split(self.effective);
        let (p0, p1) = split(self.permitted);
        let (i0, i1) = split(self.inheritable);
        let data = [
            CapData {
                effective: e0,
                permitted: p0,
                inheritable: i0,
            },
            CapData {
                effective: e1,
                permitted: p1,
                inheritable: i1,
            },
        ];
        // SAFETY: capset with a v3 header and two data structs.
        if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
            return Err(sys("capset"));
        }
        Ok(())
    }
}

/// Whether the calling thread has `cap` in its effective set.
pub fn has_effective(cap: Cap) -> bool {
    Caps::current().is_ok_and(|c| c.effective.has(cap))
}

/// The highest capability number this kernel knows.
fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The bounding set, probed with `PR_CAPBSET_READ`.
pub fn bounding() -> CapSet {
    CapSet::of((0..=last_cap()).map(Cap).filter(|c| {
        // SAFETY: prctl PR_CAPBSET_READ takes a capability number.
        unsafe { libc::prctl(libc::PR_CAPBSET_READ, c.0 as libc::c_ulong, 0, 0, 0) == 1 }
    }))
}

/// What [`drop_to_running`] did, for the log and `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub uid: u32,
    #[serde(serialize_with = "names")]
    pub effective: CapSet,
    #[serde(serialize_with = "names")]
    pub permitted: CapSet,
    #[serde(serialize_with = "names")]
    pub bounding: CapSet,
    /// Capabilities that were effective before and are gone now.
    #[serde(serialize_with = "names")]
    pub dropped: CapSet,
    /// Of [`RUNNING`], those that were not there to begin with: what needs them
    /// will not work (each says so when it tries).
    #[serde(serialize_with = "names")]
    pub missing: CapSet,
    pub no_new_privs: bool,
    /// System calls the seccomp filter refuses (empty: no filter).
    pub seccomp_denied: Vec<&'static str>,
}

fn names<S: serde::Serializer>(s: &CapSet, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(s.names())
}

impl Report {
    /// One line: what is kept, dropped and missing.
    pub fn summary(&self) -> String {
        format!(
            "uid {}, effective [{}], dropped [{}], missing [{}], no_new_privs {}, seccomp {} calls denied",
            self.uid,
            self.effective.names().join(" "),
            self.dropped.names().join(" "),
            self.missing.names().join(" "),
            self.no_new_privs,
            self.seccomp_denied.len()
        )
    }
}

/// Number of threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// Lowers the process to [`RUNNING`] plus `extra`; see the [module docs](self).
/// Must be called while the process has a single thread.
pub fn drop_to_running(extra: &[Cap]) -> Result<Report, PrivilegeError> {
    let n = threads();
    if n > 1 {
        tracing::warn!(
            threads = n,
            "dropping capabilities with threads running: those threads keep theirs"
        );
    }
    let before = Caps::current()?;
    let keep = CapSet(CapSet::running().0 | CapSet::of(extra.iter().copied()).0);
    let held = CapSet(before.permitted.0 & keep.0);
    // 1. The bounding set, while CAP_SETPCAP is still effective.
    if before.effective.has(Cap::SETPCAP) {
        for c in (0..=last_cap()).map(Cap).filter(|c| !keep.has(*c)) {
            // SAFETY: prctl PR_CAPBSET_DROP takes a capability number.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c.0 as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(sys(format!(
                    "dropping CAP_{} from the bounding set",
                    c.name()
                )));
            }
        }
        // 2. A root process gets no capabilities back from an execve.
        const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
        const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
        // SAFETY: prctl PR_GET/SET_SECUREBITS take plain integers.
        let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
        if bits >= 0 {
            let want = bits as libc::c_ulong | SECBIT_NOROOT | SECBIT_NOROOT_LOCKED;
            // SAFETY: as above.
            if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, want, 0, 0, 0) } != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "cannot set SECBIT_NOROOT");
            }
        }
    }
    // 3. Ambient and inheritable cleared, permitted and effective lowered.
    // SAFETY: prctl PR_CAP_AMBIENT_CLEAR_ALL takes no pointer.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(sys("clearing the ambient capabilities"));
    }
    Caps {
        effective: held,
        permitted: held,
        inheritable: CapSet(0),
    }
    .set()?;
    // 4. no_new_privs: no setuid binary or file capability can raise anything again.
    // SAFETY: prctl PR_SET_NO_NEW_PRIVS takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(sys("setting no_new_privs"));
    }
    // 5. Seccomp; a kernel without it (CONFIG_SECCOMP_FILTER off) only warns.
    let seccomp_denied = match seccomp::install() {
        Ok(calls) => calls,
        Err(e) => {
            tracing::warn!(error = %e, "no seccomp filter: the kernel refused it");
            Vec::new()
        }
    };
    let after = Caps::current()?;
    // SAFETY: getuid and prctl PR_GET_NO_NEW_PRIVS have no preconditions.
    let (uid, nnp) = unsafe {
        (
            libc::getuid(),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1,
        )
    };
    Ok(Report {
        uid,
        effective: after.effective,
        permitted: after.permitted,
        bounding: bounding(),
        dropped: CapSet(before.effective.0 & !after.effective.0),
        missing: CapSet(CapSet::running().0 & !after.effective.0),
        no_new_privs: nnp,
        seccomp_denied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_names() {
        let s = CapSet::running();
        assert_eq!(
            s.names(),
            [
                "DAC_READ_SEARCH",
                "NET_ADMIN",
                "SYS_PTRACE",
                "SYS_ADMIN",
                "SYSLOG",
                "PERFMON",
                "BPF"
            ]
        );
        assert_eq!(s.to_string(), "000000c400281004");
        assert!(s.has(Cap::BPF) && !s.has(Cap::SYS_MODULE));
        assert_eq!(Cap(99).name(), "99");
    }

    #[test]
    fn the_systemd_unit_grants_the_running_set() {
        let unit = include_str!("../../../packaging/sonde.service");
        let mut want: Vec<String> = CapSet::running()
            .names()
            .into_iter()
            .map(|n| format!("CAP_{n}"))
            .collect();
        want.sort();
        for key in ["AmbientCapabilities=", "CapabilityBoundingSet="] {
            let line = unit
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no {key} in packaging/sonde.service"));
            let mut got: Vec<String> = line[key.len()..]
                .split_whitespace()
                .map(String::from)
                .collect();
            got.sort();
            assert_eq!(got, want, "packaging/sonde.service {key}");
        }
    }

    #[test]
    fn the_current_thread_can_be_read() {
        let c = Caps::current().unwrap();
        // The effective set is within the permitted one, whoever runs this.
        assert_eq!(c.effective.0 & !c.permitted.0, 0);
        // The bounding set has at least what is permitted.
        assert_eq!(c.permitted.0 & !bounding().0, 0);
    }

    /// Dropping, in a thread of its own: capabilities are per thread, so the test
    /// process keeps its own (the seccomp filter and no_new_privs are per thread
    /// too without TSYNC).
    #[test]
    fn a_thread_drops_to_the_running_set() {
        let r = std::thread::spawn(|| {
            let r = drop_to_running(&[]).unwrap();
            // Gone for good: capset cannot raise it again.
            let mut c = Caps::current().unwrap();
            c.effective.0 |= 1 << Cap::SYS_MODULE.0;
            let again = c.set();
            // A denied system call answers EPERM.
            // SAFETY: kexec_load with null arguments is refused before use.
            let rc = unsafe { libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            (r, again.is_err(), rc, errno)
        })
        .join()
        .unwrap();
        let (r, refused, rc, errno) = r;
        assert!(refused);
        assert_eq!((rc, errno), (-1, Some(libc::EPERM)));
        assert!(r.no_new_privs);
        assert_eq!(r.effective.0 & !CapSet::running().0, 0, "{}", r.summary());
        assert!(!r.effective.has(Cap::SYS_MODULE));
        assert!(!r.effective.has(Cap::DAC_OVERRIDE));
        assert!(r.seccomp_denied.contains(&"kexec_load"));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(r.effective, CapSet::running(), "{}", r.summary());
            assert!(r.dropped.has(Cap::SYS_MODULE) && r.dropped.has(Cap::SETUID));
            assert_eq!(r.bounding, CapSet::running());
            assert_eq!(r.missing, CapSet(0));
        }
        // This thread kept everything it had.
        assert!(threads() >= 1);
    }
}
