//! What this kernel can hook: tracefs, tracepoints, kprobes, kernel functions.
//!
//! Each check answers with a reason a person can act on, since `sonde probes` prints it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::bpf::catalog::{Hook, Require};
use crate::bpf::error::Unavailable;
use crate::btf::KernelBtf;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it at `/sys/kernel/tracing` when it is missing (needs
/// root). `None` when it cannot be had.
pub fn tracefs() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        for root in [TRACEFS, DEBUGFS_TRACING] {
            if Path::new(root).join("events").is_dir() {
                return Some(PathBuf::from(root));
            }
        }
        if !crate::privileges::has_effective(crate::privileges::Cap::SYS_ADMIN) {
            tracing::debug!("no CAP_SYS_ADMIN: tracefs is not readable or not mounted, and cannot be mounted");
            return None;
        }
        match mount_tracefs() {
            Ok(()) => {
                tracing::info!(path = TRACEFS, "mounted tracefs");
                Some(PathBuf::from(TRACEFS))
            }
            Err(e) => {
                tracing::warn!(path = TRACEFS, error = %e, "tracefs is not mounted and cannot be mounted");
                None
            }
        }
    })
    .as_deref()
}

fn mount_tracefs() -> std::io::Result<()> {
    let target = std::ffi::CString::new(TRACEFS).map_err(std::io::Error::other)?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 && Path::new(TRACEFS).join("events").is_dir() {
        Ok(())
    } else if rc == 0 {
        Err(std::io::Error::other("mounted but has no events directory"))
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the kernel can attach kprobes (perf kprobe PMU or kprobe_events).
pub fn kprobes_supported() -> Result<(), Unavailable> {
    if Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        return Ok(());
    }
    if let Some(root) = tracefs() {
        if root.join("kprobe_events").exists() {
            return Ok(());
        }
    }
    Err(Unavailable::NoKprobes)
}

fn kernel_function_exists(name: &str) -> bool {
    // `.isra`/`.constprop` clones attach under their full name only; the plain name
    // is what kprobes need.
    crate::bpf::ksyms::Ksyms::shared().has_function(name)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Why a hook cannot be used here, or `Ok`.
pub fn check_hook(hook: &Hook) -> Result<(), Unavailable> {
    match *hook {
        Hook::Tracepoint { category, name } => {
            let Some(root) = tracefs() else {
                use crate::privileges::{has_effective, Cap};
                // SAFETY: geteuid has no preconditions.
                let root = unsafe { libc::geteuid() } == 0;
                return Err(if !root && !has_effective(Cap::DAC_READ_SEARCH) {
                    Unavailable::TracefsUnreadable
                } else if !has_effective(Cap::SYS_ADMIN) {
                    Unavailable::TracefsNotMounted
                } else {
                    Unavailable::TracefsMountFailed
                });
            };
            if root
                .join("events")
                .join(category)
                .join(name)
                .join("id")
                .exists()
            {
                Ok(())
            } else {
                Err(Unavailable::NoTracepoint { category, name })
            }
        }
        Hook::RawTracepoint { name } | Hook::BtfTracepoint { name } => {
            // Raw tracepoints are found by name in the kernel, not in tracefs; the
            // tracefs entry (any category) is how to know one exists beforehand.
            let Some(root) = tracefs() else {
                return Ok(()); // let the attach say it
            };
            let found = std::fs::read_dir(root.join("events"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|cat| cat.path().join(name).join("id").exists());
            if found {
                Ok(())
            } else {
                Err(Unavailable::NoRawTracepoint { name })
            }
        }
        Hook::Tc { .. } => {
            // Which interfaces, and whether they take the program, is only known when
            // attaching (the loader reports it); attaching needs CAP_NET_ADMIN.
            if !crate::privileges::has_effective(crate::privileges::Cap::NET_ADMIN) {
                Err(Unavailable::NoNetAdmin)
            } else {
                Ok(())
            }
        }
        Hook::Kprobe { function } | Hook::Kretprobe { function } => {
            kprobes_supported()?;
            if kernel_function_exists(function) {
                Ok(())
            } else {
                Err(Unavailable::NoKernelFunction { function })
            }
        }
    }
}

/// Why a kernel requirement is not met, or `Ok`.
pub fn check_require(req: &Require, btf: &KernelBtf) -> Result<(), Unavailable> {
    match *req {
        Require::KernelStruct(name, why) => {
            if btf.has_struct(name) {
                Ok(())
            } else {
                Err(Unavailable::MissingStruct { name, why })
            }
        }
        Require::NoKernelStruct(name, why) => {
            if btf.has_struct(name) {
                Err(Unavailable::StructPresent { name, why })
            } else {
                Ok(())
            }
        }
        Require::KernelField(name, field, why) => {
            if btf.has_member(name, field) {
                Ok(())
            } else {
                Err(Unavailable::MissingField { name, field, why })
            }
        }
    }
}
