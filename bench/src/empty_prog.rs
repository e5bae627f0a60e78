//! The floor: a BPF program that does nothing (`r0 = 0; exit`), attached to a
//! classic tracepoint (perf event + PERF_EVENT_IOC_SET_BPF, as sonde's loader and
//! bpftrace attach) or a raw tracepoint, so the `kernel` benchmark can say what the
//! hook itself costs per event here, before any program logic. Its run time in the
//! kernel's statistics is the statistics' own overhead (two clock reads).
//!
//! ```no_run
//! let p = EmptyProg::attach(Attach::Classic("skb", "kfree_skb"))?;
//! // ... the program runs on every kfree_skb; dropping it detaches ...
//! ```

use anyhow::{anyhow, bail, Context};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// At most 15 bytes (the kernel keeps 16 with the NUL).
const PROG_NAME: &[u8] = b"bench_empty";

/// Where the empty program goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A classic tracepoint: category and name.
    Classic(&'static str, &'static str),
    /// A raw tracepoint by name.
    Raw(&'static str),
}

impl Attach {
    pub fn describe(self) -> String {
        match self {
            Attach::Classic(c, n) => format!("tp {c}:{n}"),
            Attach::Raw(n) => format!("raw_tp {n}"),
        }
    }
}

/// An attached empty program; detached and unloaded when dropped.
pub struct EmptyProg {
    prog: i32,
    link: i32,
    id: u32,
}

impl Drop for EmptyProg {
    fn drop(&mut self) {
        // SAFETY: closing descriptors this value owns.
        unsafe {
            libc::close(self.link);
            libc::close(self.prog);
        }
    }
}

impl EmptyProg {
    pub fn attach(at: Attach) -> anyhow::Result<EmptyProg> {
        let prog_type = match at {
            Attach::Classic(..) => BPF_PROG_TYPE_TRACEPOINT,
            Attach::Raw(_) => BPF_PROG_TYPE_RAW_TRACEPOINT,
        };
        // mov r0, 0; exit
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut attr = [0u8; 128];
        put32(&mut attr, 0, prog_type);
        put32(&mut attr, 4, insns.len() as u32);
        put64(&mut attr, 8, insns.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        // prog_name, so that `bpftool prog` says whose it is.
        attr[48..48 + PROG_NAME.len()].copy_from_slice(PROG_NAME);
        let prog = bpf(BPF_PROG_LOAD, &mut attr);
        if prog < 0 {
            return Err(anyhow!(
                "BPF_PROG_LOAD (empty program): {}",
                std::io::Error::last_os_error()
            ));
        }
        let prog = prog as i32;
        let link = match at {
            Attach::Classic(category, name) => attach_perf(prog, category, name),
            Attach::Raw(name) => attach_raw(prog, name),
        };
        let link = match link {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: our descriptor.
                unsafe { libc::close(prog) };
                return Err(e);
            }
        };
        let mut info = [0u8; 256];
        let mut attr = [0u8; 128];
        put32(&mut attr, 0, prog as u32);
        put32(&mut attr, 4, info.len() as u32);
        put64(&mut attr, 8, info.as_mut_ptr() as u64);
        let id = if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) == 0 {
            u32::from_ne_bytes([info[4], info[5], info[6], info[7]])
        } else {
            0
        };
        Ok(EmptyProg { prog, link, id })
    }

    /// The program's id, for its run statistics.
    pub fn id(&self) -> u32 {
        self.id
    }
}

fn attach_perf(prog: i32, category: &str, name: &str) -> anyhow::Result<i32> {
    let path = format!("/sys/kernel/tracing/events/{category}/{name}/id");
    let id: u64 = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("{path}: not a number"))?;
    // struct perf_event_attr: type, size, config, sample_period, ..., wakeup_events.
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, PERF_TYPE_TRACEPOINT);
    put32(&mut attr, 4, 128); // size
    put64(&mut attr, 8, id);
    put64(&mut attr, 16, 1);
    put32(&mut attr, 48, 1);
    // SAFETY: perf_event_open with a zero-padded perf_event_attr of the size given;
    // the ioctls act on the descriptor it returned.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            8 as libc::c_ulong, // PERF_FLAG_FD_CLOEXEC
        ) as i32;
        if fd < 0 {
            bail!(
                "perf_event_open({category}:{name}): {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog) != 0
            || libc::ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            bail!("attach to {category}:{name}: {e}");
        }
        Ok(fd)
    }
}

fn attach_raw(prog: i32, name: &str) -> anyhow::Result<i32> {
    let cname = std::ffi::CString::new(name)?;
    let mut attr = [0u8; 128];
    put64(&mut attr, 0, cname.as_ptr() as u64);
    put32(&mut attr, 8, prog as u32);
    let fd = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr);
    if fd < 0 {
        bail!("raw tracepoint {name}: {}", std::io::Error::last_os_error());
    }
    Ok(fd as i32)
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size passed; the pointers in
    // it (instructions, license, name, info buffer) outlive the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}
