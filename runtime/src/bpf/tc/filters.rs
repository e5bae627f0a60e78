//! sonde's own TC filters: how they are told apart from everybody else's, and how the
//! ones a killed sonde left behind are found and removed.
//!
//! A `cls_bpf` filter stays on its interface after the process that added it dies:
//! the kernel holds the program for it. A sonde killed with SIGKILL (or crashed, or
//! OOM-killed) therefore leaves its filters and the clsact qdisc it added, and the
//! next start would attach a second set beside them. TCX links do not have this
//! problem: sonde never pins them, so they go with the process's descriptors (checked
//! on 6.18: after `kill -9`, `bpftool link` lists no TCX link and the programs are
//! unloaded). Tracepoints and kprobes are perf-event or link descriptors: the same.
//!
//! # The convention
//!
//! Every filter sonde adds, on ingress and egress alike, is a direct-action `bpf`
//! filter, protocol `all`, chain 0, at priority [`PRIORITY`] (`pref 23808` in
//! `tc filter show`), with a handle laid out as (see [`Handle`]):
//!
//! ```text
//!   0x5d  F  SSS  QQ      tc prints it as e.g. `handle 0x5d100301`
//!   tag   |  |    +-- seq: one process's filters on one hook, 0..=255
//!         |  +------- slot: the sonde process that added it, 1..=4095
//!         +---------- flags: 1 = the clsact qdisc under it was created by sonde
//! ```
//!
//! The priority and the tag byte together are what makes a filter sonde's; its name
//! (the program's function name, `tc_ingress`) is only shown in the logs. Another
//! tool's filter (any other priority, handle or kind) is never touched.
//!
//! # Who is alive: the owner slot
//!
//! Removing every sonde filter at start would also remove the filters of a sonde that
//! is still running (the daemon, while someone tries `sonde run`). Each process
//! therefore claims a slot: it binds the abstract Unix socket `@sonde/tc/slot/N`
//! for as long as it lives, and the kernel releases that name the moment the process
//! dies, `kill -9` included. A filter whose slot can be bound by someone else is
//! an orphan. The test holds the name while it removes the orphans, so a sonde
//! starting at the same moment cannot claim that slot and attach in between.
//! Abstract socket names belong to the network namespace: all sondes that attach
//! to one namespace's interfaces see the same names, whatever their pid namespace,
//! container or user (a DaemonSet pod on the host network and a `sonde run` on the
//! node agree). A slot freshly claimed may still have filters of the dead process
//! that had it: they are removed before the slot is used.
//!
//! # Who created the clsact qdisc
//!
//! That fact must outlive the process, and a state file would not: systemd removes a
//! unit's `RuntimeDirectory` when it stops, a restarted container gets a new `/run`.
//! So it is kept where the filters are, in the kernel: the `F` flag of the handle.
//! A sonde that creates the qdisc sets it on its filters; a sonde attaching to a
//! qdisc where a sonde filter already has it sets it too (the fact is about the
//! qdisc). Whoever removes the last filter of a qdisc flagged so removes the qdisc,
//! and only if no filter at all is left on it: a qdisc that another tool's filters
//! use stays. A qdisc that existed before sonde is never flagged, never removed.
//!
//! # Filters of sonde builds that predate the convention
//!
//! They sit at a kernel-chosen priority with a kernel-chosen handle. One is taken
//! for sonde's when its name *and* its program tag (a hash of the instructions, the
//! same for the same object on the same kernel) equal those of the program this
//! sonde has just loaded, and it is an orphan when no process holds a descriptor of
//! its program (`/proc/*/fdinfo`). When some process cannot be inspected (not root),
//! they are left alone. Their qdisc is kept: who created it was never recorded.
//!
//! Only the calling thread's network namespace is looked at: sonde attaches to the
//! interfaces of its own namespace only (a pod's veth is reached by its host end).
//!
//! ```no_run
//! use sonde::bpf::tc::filters;
//! // At start, before attaching: remove what a killed sonde left on any interface.
//! let swept = filters::sweep(&[], None).unwrap();
//! println!("{} filters and {} qdiscs removed", swept.filters, swept.qdiscs);
//! ```

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

use thiserror::Error;

use crate::netlink::{names, route, Socket};

pub use crate::netlink::route::{parse_filter, Filter, EGRESS, INGRESS};

/// Priority (`pref`) of every filter sonde adds. Below the priorities the kernel picks
/// for filters added without one (49152 and down), so sonde, which never changes,
/// drops or redirects a packet (`TC_ACT_UNSPEC`), sees packets before them.
pub const PRIORITY: u16 = 0x5d00;
/// Top byte of the handle of every filter sonde adds.
pub const HANDLE_TAG: u8 = 0x5d;
/// Highest owner slot (12 bits).
pub const MAX_SLOT: u16 = 0xfff;
const FLAG_CREATED: u32 = 1;

const ETH_P_ALL: u16 = 0x0003;

/// What went wrong while listing or removing filters.
#[derive(Debug, Error)]
pub enum FilterError {
    #[error("cannot open an rtnetlink socket")]
    Socket(#[source] io::Error),
    #[error("cannot {what} of interface {ifindex}")]
    Netlink {
        what: &'static str,
        ifindex: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the clsact qdiscs")]
    Qdiscs(#[source] io::Error),
    #[error("no owner slot for sonde's filters: all {MAX_SLOT} abstract sockets `@sonde/tc/slot/N` are bound")]
    NoSlot,
    #[error("cannot bind the owner socket `@sonde/tc/slot/{slot}`")]
    Slot {
        slot: u16,
        #[source]
        source: io::Error,
    },
}

/// The handle of a sonde filter, decoded; see the module docs for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    /// The clsact qdisc under the filter was created by sonde.
    pub created: bool,
    /// The owner slot of the process that added it.
    pub slot: u16,
    /// Tells apart one process's filters on one hook.
    pub seq: u8,
}

impl Handle {
    pub fn encode(self) -> u32 {
        (u32::from(HANDLE_TAG) << 24)
            | (u32::from(self.created) * FLAG_CREATED) << 20
            | (u32::from(self.slot & MAX_SLOT) << 8)
            | u32::from(self.seq)
    }

    /// The handle's fields when it follows the convention: the tag byte, no unknown
    /// flag, a slot in 1..=[`MAX_SLOT`].
    pub fn decode(handle: u32) -> Option<Handle> {
        let flags = (handle >> 20) & 0xf;
        let slot = ((handle >> 8) & u32::from(MAX_SLOT)) as u16;
        ((handle >> 24) as u8 == HANDLE_TAG && flags & !FLAG_CREATED == 0 && slot != 0).then_some(
            Handle {
                created: flags & FLAG_CREATED != 0,
                slot,
                seq: handle as u8,
            },
        )
    }
}

fn direction(f: &Filter) -> &'static str {
    match f.parent {
        INGRESS => "ingress",
        EGRESS => "egress",
        _ => "other",
    }
}

/// Whose a filter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Follows sonde's convention.
    Sonde(Handle),
    /// Added by a sonde build from before the convention (same name and tag as a
    /// program sonde has loaded now).
    Legacy,
    /// Anybody else's, or no filter at all (`handle` 0).
    Foreign,
}

/// Sorts a filter. `legacy` holds the name and tag of each TC program this sonde has
/// loaded, to recognise filters of builds that predate the convention.
pub fn classify(f: &Filter, legacy: &[(String, [u8; 8])]) -> Owner {
    if f.kind != "bpf" || f.handle == 0 {
        return Owner::Foreign;
    }
    if f.priority == PRIORITY && f.protocol == ETH_P_ALL && f.chain == 0 {
        if let Some(h) = Handle::decode(f.handle) {
            return Owner::Sonde(h);
        }
    }
    let is_legacy = match (&f.bpf_name, &f.bpf_tag) {
        (Some(name), Some(tag)) => legacy.iter().any(|(n, t)| n == name && t == tag),
        _ => false,
    };
    if is_legacy {
        Owner::Legacy
    } else {
        Owner::Foreign
    }
}

fn route_socket() -> Result<Socket, FilterError> {
    Socket::open(libc::NETLINK_ROUTE).map_err(FilterError::Socket)
}

/// Every filter on the clsact `parent` ([`INGRESS`] or [`EGRESS`]) of `ifindex`,
/// every chain, with the per-priority entries (`handle` 0). No clsact qdisc: none.
fn list(sock: &mut Socket, ifindex: u32, parent: u32) -> Result<Vec<Filter>, FilterError> {
    match route::filters(sock, ifindex, parent) {
        Ok(out) => Ok(out),
        // No such qdisc (or interface): nothing on it.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            Ok(Vec::new())
        }
        Err(source) => Err(FilterError::Netlink {
            what: "list the TC filters",
            ifindex,
            source,
        }),
    }
}

/// Every filter on the clsact qdisc of `ifindex`, ingress then egress.
pub fn clsact_filters(ifindex: u32) -> Result<Vec<Filter>, FilterError> {
    let mut sock = route_socket()?;
    let mut all = list(&mut sock, ifindex, INGRESS)?;
    all.extend(list(&mut sock, ifindex, EGRESS)?);
    Ok(all)
}

fn delete(sock: &mut Socket, f: &Filter) -> io::Result<()> {
    match route::delete_filter(sock, f) {
        // Gone already (another sonde cleaning up at the same time).
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// Deletes the clsact qdisc of `ifindex` (and with it any filter left on it).
pub fn delete_clsact(ifindex: u32) -> Result<(), FilterError> {
    let mut sock = route_socket()?;
    delete_clsact_with(&mut sock, ifindex)
}

fn delete_clsact_with(sock: &mut Socket, ifindex: u32) -> Result<(), FilterError> {
    route::delete_clsact(sock, ifindex).map_err(|source| FilterError::Netlink {
        what: "delete the clsact qdisc",
        ifindex,
        source,
    })
}

/// Interfaces of this namespace with a clsact qdisc.
fn clsact_interfaces(sock: &mut Socket) -> Result<Vec<u32>, FilterError> {
    route::clsact_interfaces(sock).map_err(FilterError::Qdiscs)
}

/// The interface's name for the logs.
fn interface_name(ifindex: u32) -> String {
    match names::own(ifindex) {
        Some(n) => n.to_string(),
        None => format!("ifindex {ifindex}"),
    }
}

/// Binds the owner socket `@sonde/tc/slot/N` of `slot`; `Ok(None)` when a live
/// process has it. While the descriptor is open, no sonde takes the filters of that
/// slot for orphans (a test keeps a killed sonde's leftovers in place so).
pub fn bind_slot(slot: u16) -> io::Result<Option<OwnedFd>> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned nowhere else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = format!("sonde/tc/slot/{slot}");
    // SAFETY: sockaddr_un is plain data; zeroed is valid (and starts the abstract name).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: addr is a valid sockaddr_un; len covers the family and the name.
    let rc = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(Some(fd));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EADDRINUSE) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// This process's slot, held until it exits.
struct Slot {
    slot: u16,
    _socket: OwnedFd,
}

static SLOT: Mutex<Option<Slot>> = Mutex::new(None);

/// This process's owner slot, claimed on first use: the first free one, after the
/// filters of the dead process that had it are removed.
pub fn owner_slot() -> Result<u16, FilterError> {
    let mut held = SLOT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = held.as_ref() {
        return Ok(s.slot);
    }
    for slot in 1..=MAX_SLOT {
        let Some(socket) = bind_slot(slot).map_err(|source| FilterError::Slot { slot, source })?
        else {
            continue;
        };
        // Nothing of this process is attached yet: every filter with this slot is
        // the dead previous owner's.
        let swept = sweep_with(None, &mut |f| match classify(f, &[]) {
            Owner::Sonde(h) => h.slot == slot,
            _ => false,
        })?;
        swept.log();
        *held = Some(Slot {
            slot,
            _socket: socket,
        });
        return Ok(slot);
    }
    Err(FilterError::NoSlot)
}

/// Program ids some process holds a descriptor of, or `None` when a process could
/// not be inspected (then nobody's program may be called an orphan).
fn held_programs() -> Option<HashSet<u32>> {
    let mut ids = HashSet::new();
    let procs = std::fs::read_dir("/proc").ok()?;
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        let fds = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // exited
            Err(_) => return None,
        };
        for fd in fds.flatten() {
            let is_prog =
                std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog");
            if !is_prog {
                continue;
            }
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            if let Ok(text) = std::fs::read_to_string(info) {
                ids.extend(
                    text.lines()
                        .filter_map(|l| l.strip_prefix("prog_id:"))
                        .filter_map(|v| v.trim().parse::<u32>().ok()),
                );
            }
        }
    }
    Some(ids)
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Interfaces looked at (with a clsact qdisc, or the one asked for).
    pub interfaces: usize,
    /// Filters removed.
    pub filters: usize,
    /// clsact qdiscs removed.
    pub qdiscs: usize,
    /// Interfaces left with a sonde-created clsact qdisc because others' filters use it.
    pub kept_qdiscs: usize,
}

impl Swept {
    fn log(&self) {
        if self.filters > 0 || self.qdiscs > 0 {
            tracing::info!(
                filters = self.filters,
                qdiscs = self.qdiscs,
                "removed what a killed sonde left on the interfaces"
            );
        }
    }
}

/// Removes the filters (and clsact qdiscs) that sonde processes no longer running
/// left, on `only` or on every interface of this network namespace. `legacy`: name
/// and tag of each TC program this sonde has loaded, to recognise the filters of
/// sonde builds that predate the convention.
pub fn sweep(legacy: &[(String, [u8; 8])], only: Option<u32>) -> Result<Swept, FilterError> {
    let mine = owner_slot()?;
    // A slot found free is held (`Some`) until the sweep ends: nobody can claim it and
    // attach while its orphans are removed.
    let mut probed: HashMap<u16, Option<OwnedFd>> = HashMap::new();
    let mut held: Option<Option<HashSet<u32>>> = None;
    let started = std::time::Instant::now();
    let swept = sweep_with(only, &mut |f| match classify(f, legacy) {
        Owner::Sonde(h) if h.slot == mine => false,
        Owner::Sonde(h) => slot_is_free(&mut probed, h.slot),
        Owner::Legacy => match (f.bpf_id, held.get_or_insert_with(held_programs)) {
            (Some(id), Some(ids)) => !ids.contains(&id),
            _ => false,
        },
        Owner::Foreign => false,
    })?;
    if held == Some(None) {
        tracing::warn!(
            "filters of an older sonde build kept: cannot inspect every process's descriptors (not root?)"
        );
    }
    tracing::debug!(
        interfaces = swept.interfaces,
        took_us = started.elapsed().as_micros() as u64,
        "looked for TC filters of sondes no longer running"
    );
    swept.log();
    Ok(swept)
}

/// Whether no live process holds `slot`; a slot found free stays bound in `probed`.
fn slot_is_free(probed: &mut HashMap<u16, Option<OwnedFd>>, slot: u16) -> bool {
    probed
        .entry(slot)
        .or_insert_with(|| {
            bind_slot(slot).unwrap_or_else(|e| {
                tracing::warn!(slot, error = %e, "cannot tell whether a sonde filter's owner is alive; kept");
                None
            })
        })
        .is_some()
}

/// Removes every filter `orphan` says is one, then each clsact qdisc a removed
/// filter says sonde created, if nothing is left on it.
fn sweep_with(
    only: Option<u32>,
    orphan: &mut dyn FnMut(&Filter) -> bool,
) -> Result<Swept, FilterError> {
    let mut sock = route_socket()?;
    let interfaces = match only {
        Some(i) => vec![i],
        None => clsact_interfaces(&mut sock)?,
    };
    let mut swept = Swept {
        interfaces: interfaces.len(),
        ..Swept::default()
    };
    for ifindex in interfaces {
        let mut all = list(&mut sock, ifindex, INGRESS)?;
        all.extend(list(&mut sock, ifindex, EGRESS)?);
        let mut created = false;
        let mut removed = 0;
        for f in all.iter().filter(|f| orphan(f)) {
            delete(&mut sock, f).map_err(|source| FilterError::Netlink {
                what: "delete a TC filter",
                ifindex,
                source,
            })?;
            tracing::info!(
                interface = %interface_name(ifindex),
                direction = direction(f),
                pref = f.priority,
                handle = %format_args!("{:#x}", f.handle),
                program = f.bpf_name.as_deref().unwrap_or(""),
                "removed a TC filter a sonde no longer running left"
            );
            created |= matches!(Handle::decode(f.handle), Some(h) if h.created);
            removed += 1;
        }
        swept.filters += removed;
        if !created {
            continue;
        }
        let mut left = list(&mut sock, ifindex, INGRESS)?;
        left.extend(list(&mut sock, ifindex, EGRESS)?);
        if left.is_empty() {
            delete_clsact_with(&mut sock, ifindex)?;
            tracing::info!(interface = %interface_name(ifindex), "removed the clsact qdisc a sonde no longer running added");
            swept.qdiscs += 1;
        } else if left
            .iter()
            .all(|f| !matches!(classify(f, &[]), Owner::Sonde(_)))
        {
            tracing::info!(interface = %interface_name(ifindex), filters = left.len(), "clsact qdisc added by sonde kept: other filters use it");
            swept.kept_qdiscs += 1;
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles() {
        let h = Handle {
            created: true,
            slot: 3,
            seq: 1,
        };
        assert_eq!(h.encode(), 0x5d10_0301);
        assert_eq!(Handle::decode(0x5d10_0301), Some(h));
        let h = Handle {
            created: false,
            slot: MAX_SLOT,
            seq: 255,
        };
        assert_eq!(h.encode(), 0x5d0f_ffff);
        assert_eq!(Handle::decode(h.encode()), Some(h));
        // Not sonde's: another tag, slot 0, an unknown flag, kernel-chosen handles.
        for other in [
            0x1,
            0x800,
            0x8000_0800,
            0x5d00_0001,
            0x5d20_0101,
            0x5c00_0101,
        ] {
            assert_eq!(Handle::decode(other), None, "{other:#x}");
        }
    }

    use crate::netlink::route::tests::bpf_filter_message as message;

    #[test]
    fn parses_and_classifies() {
        let tag = [0x48, 0xc2, 0xf5, 0x6e, 0x5c, 0x83, 0x07, 0xce];
        let f = parse_filter(&message(PRIORITY, 0x5d10_0301, "tc_ingress", tag, 354)).unwrap();
        assert_eq!(
            (f.ifindex, f.parent, f.priority, f.protocol, f.handle),
            (7, INGRESS, PRIORITY, ETH_P_ALL, 0x5d10_0301)
        );
        assert_eq!(f.kind, "bpf");
        assert_eq!(f.bpf_name.as_deref(), Some("tc_ingress"));
        assert_eq!((f.bpf_id, f.bpf_tag), (Some(354), Some(tag)));
        assert_eq!(
            classify(&f, &[]),
            Owner::Sonde(Handle {
                created: true,
                slot: 3,
                seq: 1
            })
        );

        // A sonde handle at another priority is not sonde's (nor is the reverse).
        let f = parse_filter(&message(1, 0x5d10_0301, "tc_ingress", tag, 1)).unwrap();
        assert_eq!(classify(&f, &[]), Owner::Foreign);
        let f = parse_filter(&message(PRIORITY, 1, "x", tag, 1)).unwrap();
        assert_eq!(classify(&f, &[]), Owner::Foreign);

        // Before the convention: the name alone is not enough, name and tag are.
        let legacy = vec![("tc_ingress".to_string(), tag)];
        let old = parse_filter(&message(49152, 1, "tc_ingress", tag, 296)).unwrap();
        assert_eq!(classify(&old, &legacy), Owner::Legacy);
        assert_eq!(classify(&old, &[]), Owner::Foreign);
        let same_name = parse_filter(&message(49152, 1, "tc_ingress", [0; 8], 5)).unwrap();
        assert_eq!(classify(&same_name, &legacy), Owner::Foreign);

        // The per-priority entry (handle 0) is nobody's filter.
        let tp = parse_filter(&message(PRIORITY, 0, "", tag, 0)).unwrap();
        assert_eq!(classify(&tp, &legacy), Owner::Foreign);
        assert!(parse_filter(&[0; 10]).is_none());
    }
}
