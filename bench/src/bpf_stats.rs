//! Kernel-side cost of a tool's BPF programs, from the kernel's own run statistics
//! (`kernel.bpf_stats_enabled`: run count and nanoseconds per program).
//!
//! ```no_run
//! let _on = StatsSwitch::enable();         // restored when dropped
//! let before = prog_ids();                 // programs that are not the tool's
//! // ... start the tool, run the workload ...
//! let cost = tracepoint_cost(&before);     // the tool's tracepoint programs
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The same path NUL-terminated, for the signal handler.
const SYSCTL_C: &[u8] = b"/proc/sys/kernel/bpf_stats_enabled\0";
/// The setting to restore if the benchmark is interrupted (an ASCII digit).
static RESTORE_ON_SIGNAL: AtomicU8 = AtomicU8::new(b'0');

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;

/// Offsets in `struct bpf_prog_info` (include/uapi/linux/bpf.h), stable uAPI.
const INFO_TYPE: usize = 0;
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
const INFO_LEN: usize = 256;

/// Turns run statistics on, and back to their previous setting when dropped.
pub struct StatsSwitch {
    previous: Option<String>,
}

impl StatsSwitch {
    /// None when the sysctl cannot be written (the cost column then shows `-`).
    pub fn enable() -> Option<StatsSwitch> {
        let previous = std::fs::read_to_string(SYSCTL).ok()?;
        RESTORE_ON_SIGNAL.store(
            previous.trim().bytes().next().unwrap_or(b'0'),
            Ordering::Relaxed,
        );
        let handler: extern "C" fn(libc::c_int) = restore_and_die;
        // SAFETY: installs a handler that only makes async-signal-safe calls.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
            libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        }
        std::fs::write(SYSCTL, "1").ok()?;
        Some(StatsSwitch {
            previous: Some(previous),
        })
    }
}

impl Drop for StatsSwitch {
    fn drop(&mut self) {
        if let Some(p) = self.previous.take() {
            let _ = std::fs::write(SYSCTL, p.trim());
        }
        // SAFETY: back to the default dispositions.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}

/// On Ctrl-C or SIGTERM: put the sysctl back, then die of the signal as usual
/// (the tools, in the same process group, get the Ctrl-C themselves).
extern "C" fn restore_and_die(sig: libc::c_int) {
    let value = [RESTORE_ON_SIGNAL.load(Ordering::Relaxed)];
    // SAFETY: open, write, close, signal and raise are async-signal-safe; the
    // path is NUL-terminated and the buffer outlives the write.
    unsafe {
        let fd = libc::open(SYSCTL_C.as_ptr().cast(), libc::O_WRONLY);
        if fd >= 0 {
            libc::write(fd, value.as_ptr().cast(), 1);
            libc::close(fd);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Runs and time in the kernel of a set of programs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub runs: u64,
    pub nanos: u64,
}

impl Cost {
    pub fn nanos_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.nanos as f64 / self.runs as f64)
    }
}

/// Every loaded program's id.
pub fn prog_ids() -> HashSet<u32> {
    let mut ids = HashSet::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u32; 8];
        attr[0] = id;
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr) != 0 {
            break;
        }
        id = attr[1];
        ids.insert(id);
    }
    ids
}

/// Summed statistics of the tracepoint programs loaded since `before` was taken.
pub fn tracepoint_cost(before: &HashSet<u32>) -> Cost {
    let mut cost = Cost::default();
    for id in prog_ids().difference(before) {
        let Some(info) = prog_info(*id) else { continue };
        if u32_at(&info, INFO_TYPE) != BPF_PROG_TYPE_TRACEPOINT {
            continue;
        }
        cost.nanos += u64_at(&info, INFO_RUN_TIME_NS);
        cost.runs += u64_at(&info, INFO_RUN_CNT);
    }
    cost
}

fn prog_info(id: u32) -> Option<[u8; INFO_LEN]> {
    let mut attr = [0u32; 8];
    attr[0] = id;
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr);
    if fd < 0 {
        return None;
    }
    let mut info = [0u8; INFO_LEN];
    let mut attr = [0u32; 8];
    attr[0] = fd as u32;
    attr[1] = INFO_LEN as u32;
    let ptr = info.as_mut_ptr() as u64;
    attr[2] = ptr as u32;
    attr[3] = (ptr >> 32) as u32;
    let r = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr);
    // SAFETY: closing the descriptor BPF_PROG_GET_FD_BY_ID just returned.
    unsafe { libc::close(fd as i32) };
    (r == 0).then_some(info)
}

fn bpf(cmd: libc::c_long, attr: &mut [u32; 8]) -> libc::c_long {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size passed; the commands used
    // read it and write at most its first words (and the info buffer it points to,
    // which outlives the call).
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]))
}

/// The tracepoint programs a process holds open (`prog_id` in
/// `/proc/PID/fdinfo/*`): a tool's own programs, whatever else is being loaded on
/// the machine meanwhile.
pub fn tracepoint_ids_of(pid: i32) -> HashSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_type:"))
                .any(|v| v.trim().parse() == Ok(BPF_PROG_TYPE_TRACEPOINT))
        })
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// Summed statistics of these programs (those still loaded).
pub fn cost_of(ids: &HashSet<u32>) -> Cost {
    let mut cost = Cost::default();
    for id in ids {
        let Some(info) = prog_info(*id) else { continue };
        cost.nanos += u64_at(&info, INFO_RUN_TIME_NS);
        cost.runs += u64_at(&info, INFO_RUN_CNT);
    }
    cost
}
