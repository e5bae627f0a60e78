//! Netlink readers, per network namespace: TCP sockets by state (`sock_diag`),
//! qdisc statistics with interface names (rtnetlink), conntrack statistics
//! (ctnetlink).
//!
//! A netlink socket answers for the namespace it was created in. [`in_netns`] runs a
//! closure on a short-lived thread that `setns`es into a namespace first (the
//! tokio workers never change namespace); sockets made that way are cached per
//! namespace and closed by [`forget_except`] when the namespace leaves the scan (a
//! socket keeps its namespace alive, so they must not outlive it).
//!
//! The protocol is written by hand over `libc`: a request is one header and a fixed
//! struct, the answers are parsed in place from one receive buffer per socket, so a
//! scrape allocates almost nothing. The `netlink-packet-*` crates would bring a
//! typed model of every message for the three we send.
//!
//! ```no_run
//! use sonde::sources::{netlink, netns_list};
//! for ns in netns_list().iter() {
//!     let tcp = netlink::tcp_summary(ns).unwrap();
//!     println!("{}: {} established", ns.inode, tcp.states[1]);
//! }
//! ```

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Netns, SourceError};

/// Runs `f` on a new thread that first joins the network namespace at `path`
/// (checked to be `inode`). The thread ends with `f`; nothing else changes
/// namespace.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    inode: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SourceError> {
    let path = path.to_path_buf();
    let gone = SourceError::Gone { inode };
    let join = std::thread::Builder::new()
        .name("sonde-netns".into())
        .spawn(move || -> Result<T, SourceError> {
            let file = std::fs::File::open(&path).map_err(|_| SourceError::Gone { inode })?;
            let meta = file.metadata().map_err(|_| SourceError::Gone { inode })?;
            if meta.ino() != inode {
                // The pid was reused by a process of another namespace.
                return Err(SourceError::Gone { inode });
            }
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(SourceError::Io {
                    what: format!("setns {}", path.display()),
                    source: io::Error::last_os_error(),
                });
            }
            Ok(f())
        })
        .map_err(|e| SourceError::Io {
            what: "spawn a netns thread".into(),
            source: e,
        })?;
    join.join().unwrap_or(Err(gone))
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;

/// One netlink socket and its receive buffer.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    req: Vec<u8>,
}

impl Socket {
    /// A netlink socket of `protocol` in the calling thread's namespace.
    pub fn open(protocol: libc::c_int) -> io::Result<Socket> {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A kernel that never answers must not hang a script's tick.
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: valid fd, option struct of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let one: libc::c_int = 1;
            // Dumps bigger than the buffer are split by the kernel; ask it to say
            // so through errors rather than truncate silently.
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                4,
            );
        }
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
            req: Vec::with_capacity(128),
        })
    }

    /// Sends one request (`kind`, `flags`, `payload`) and calls `on_msg(kind,
    /// payload)` for every answer until the dump is done or the request is
    /// acknowledged. A negative error from the kernel is returned as an
    /// `io::Error`.
    pub fn request(
        &mut self,
        kind: u16,
        flags: u16,
        payload: &[u8],
        mut on_msg: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDRLEN + payload.len();
        self.req.clear();
        self.req.extend_from_slice(&(len as u32).to_ne_bytes());
        self.req.extend_from_slice(&kind.to_ne_bytes());
        self.req
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.req.extend_from_slice(&seq.to_ne_bytes());
        self.req.extend_from_slice(&0u32.to_ne_bytes());
        self.req.extend_from_slice(payload);
        // SAFETY: a zeroed sockaddr_nl addressed to the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid fd, buffer and address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.req.as_ptr().cast(),
                self.req.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            // SAFETY: valid fd and buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &self.buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let mkind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if mlen < NLMSG_HDRLEN || mlen > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let body = &rest[NLMSG_HDRLEN..mlen];
                rest = &rest[align4(mlen).min(rest.len())..];
                if mseq != seq {
                    continue; // a late answer to an earlier, abandoned request
                }
                match mkind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let err = body
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                            .unwrap_or(0);
                        if err == 0 {
                            return Ok(()); // the acknowledgement
                        }
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                    _ => {
                        on_msg(mkind, body);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes (`type`, `payload`) of a netlink message body from `offset`.
/// The nested and byte-order flags are masked off the type.
pub fn attrs(body: &[u8], offset: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body.get(offset..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[align4(len).min(rest.len())..];
        Some((kind, payload))
    })
}

fn u32_ne(b: &[u8]) -> u32 {
    b.get(0..4)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

fn u64_ne(b: &[u8]) -> u64 {
    b.get(0..8)
        .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

fn u32_be(b: &[u8]) -> u32 {
    b.get(0..4)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

/// The sockets of one namespace, opened on first use.
#[derive(Default)]
struct NsSockets {
    diag: Option<Socket>,
    route: Option<Socket>,
    netfilter: Option<Socket>,
}

type SocketCache = Mutex<HashMap<u64, Arc<Mutex<NsSockets>>>>;

fn cache() -> &'static SocketCache {
    static CACHE: std::sync::OnceLock<SocketCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Closes the sockets of namespaces not in `live` (they would keep a dead
/// namespace alive).
pub fn forget_except(live: &[Netns]) {
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    c.retain(|inode, _| live.iter().any(|n| n.inode == *inode));
}

/// Number of namespaces with cached sockets.
pub fn cached_namespaces() -> usize {
    cache().lock().unwrap_or_else(|e| e.into_inner()).len()
}

#[derive(Clone, Copy)]
enum Proto {
    Diag,
    Route,
    Netfilter,
}

fn with_socket<T>(
    ns: &Netns,
    proto: Proto,
    f: impl FnOnce(&mut Socket) -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    let entry = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(ns.inode)
        .or_default()
        .clone();
    let mut socks = entry.lock().unwrap_or_else(|e| e.into_inner());
    let slot = match proto {
        Proto::Diag => &mut socks.diag,
        Proto::Route => &mut socks.route,
        Proto::Netfilter => &mut socks.netfilter,
    };
    if slot.is_none() {
        let number = match proto {
            Proto::Diag => libc::NETLINK_SOCK_DIAG,
            Proto::Route => libc::NETLINK_ROUTE,
            Proto::Netfilter => libc::NETLINK_NETFILTER,
        };
        let sock = if ns.inode == super::Netns::own_inode() {
            Socket::open(number)
        } else {
            in_netns(&ns.ns_path(), ns.inode, move || Socket::open(number))?
        };
        let sock = sock.map_err(|e| match proto {
            Proto::Netfilter if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
                SourceError::Missing {
                    what: "conntrack",
                    reason: "no nfnetlink in this kernel (module nfnetlink not loaded)".into(),
                }
            }
            _ => SourceError::Io {
                what: "netlink socket".into(),
                source: e,
            },
        })?;
        *slot = Some(sock);
    }
    f(slot.as_mut().expect("opened above"))
}

fn io_err(what: &str) -> impl Fn(io::Error) -> SourceError + '_ {
    move |e| SourceError::Io {
        what: what.to_string(),
        source: e,
    }
}

/// TCP state names, by number (`include/net/tcp_states.h`); index 0 is unused.
pub use crate::bpf::decode::TCP_STATE_NAMES as TCP_STATES;

const TCP_LISTEN: usize = 10;

/// TCP sockets of a namespace (IPv4 and IPv6) by state, and their queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSummary {
    /// Sockets per state, indexed as [`TCP_STATES`]. Connection requests (SYN
    /// received, no socket yet) count as `SYN_RECV`, as `ss` shows them.
    pub states: [u64; TCP_STATES.len()],
    /// Bytes received and not yet read by the application, over every socket that
    /// is not listening.
    pub rx_queue: u64,
    /// Bytes sent and not yet acknowledged, over every socket that is not
    /// listening.
    pub tx_queue: u64,
    /// Connections waiting in listeners' accept queues.
    pub accept_queue: u64,
}

/// `struct inet_diag_req_v2` for every TCP socket of `family`.
fn inet_diag_req(family: u8) -> [u8; 56] {
    let mut r = [0u8; 56];
    r[0] = family;
    r[1] = libc::IPPROTO_TCP as u8;
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    r
}

/// Adds one `struct inet_diag_msg` to `sum`.
pub fn add_inet_diag_msg(body: &[u8], sum: &mut TcpSummary) {
    // family, state, timer, retrans; sockid (48 bytes); expires, rqueue, wqueue...
    if body.len() < 72 {
        return;
    }
    let state = body[1] as usize;
    let rq = u32_ne(&body[56..60]) as u64;
    let wq = u32_ne(&body[60..64]) as u64;
    if state < sum.states.len() {
        sum.states[state] += 1;
    }
    if state == TCP_LISTEN {
        sum.accept_queue += rq;
    } else {
        sum.rx_queue += rq;
        sum.tx_queue += wq;
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// Every TCP socket of `ns`, counted by state (`sock_diag`, one dump per family that
/// has sockets).
///
/// A dump walks every bucket of the node-wide TCP hash table to find the
/// namespace's sockets (2-3 ms with 262144 buckets, the size on a machine of 16 GiB
/// and more), whether the namespace has sockets or not. `sockstat` says which
/// families have any, for two small file reads: `TCP: inuse` counts the hashed
/// sockets (listening, connecting, connected, closing) of family AF_INET, `TCP6:
/// inuse` those of AF_INET6 (a v4-mapped socket stays AF_INET6 and is counted
/// there), and `tw` the TIME_WAIT sockets of both. A family with no hashed socket
/// and no TIME_WAIT one has nothing a dump would list, with one exception: a
/// connection request from IPv4 to a dual-stack IPv6 listener is an AF_INET
/// request socket until it is accepted, so any IPv6 socket means an IPv4 dump too.
/// What is left out: the IPv6 dump of a namespace with IPv4 sockets only, and both
/// dumps of one without TCP sockets.
pub fn tcp_summary(ns: &Netns) -> Result<TcpSummary, SourceError> {
    let (mut v4, mut v6, mut tw) = (0, 0, 0);
    let families = match super::procfs::sockstat(ns, |sec, name, v| match (sec, name) {
        ("TCP", "inuse") => v4 = v,
        ("TCP", "tw") => tw = v,
        ("TCP6", "inuse") => v6 = v,
        _ => {}
    }) {
        Ok(()) => [v4 > 0 || v6 > 0 || tw > 0, v6 > 0 || tw > 0],
        Err(_) => [true, true],
    };
    if families == [false, false] {
        return Ok(TcpSummary::default());
    }
    with_socket(ns, Proto::Diag, |s| {
        let mut sum = TcpSummary::default();
        for (family, _) in [libc::AF_INET as u8, libc::AF_INET6 as u8]
            .into_iter()
            .zip(families)
            .filter(|(_, has)| *has)
        {
            let req = inet_diag_req(family);
            s.request(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, &req, |_, body| {
                add_inet_diag_msg(body, &mut sum)
            })
            .or_else(|e| {
                // A kernel without IPv6 has no AF_INET6 diag handler.
                if family == libc::AF_INET6 as u8 && e.raw_os_error() == Some(libc::ENOENT) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(io_err("sock_diag tcp"))?;
        }
        Ok(sum)
    })
}

/// One qdisc with its statistics, as `tc -s qdisc` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Qdisc {
    pub ifindex: i32,
    /// The interface name in the qdisc's own namespace.
    pub ifname: String,
    pub kind: String,
    /// `"8001:"`, as tc prints it.
    pub handle: String,
    /// `"root"`, `"ingress"` or `"1:2"`.
    pub parent: String,
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub requeues: u64,
    pub overlimits: u64,
    pub qlen: u64,
    pub backlog: u64,
}

const RTM_GETLINK: u16 = 18;
const RTM_GETQDISC: u16 = 38;
const IFLA_IFNAME: u16 = 3;
const TCA_KIND: u16 = 1;
const TCA_STATS: u16 = 3;
const TCA_STATS2: u16 = 7;
const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_QUEUE: u16 = 3;
const TCA_STATS_PKT64: u16 = 8;

fn tc_handle(h: u32) -> String {
    format!("{:x}:", h >> 16)
}

fn tc_parent(p: u32) -> String {
    match p {
        0xffff_ffff => "root".into(),
        0xffff_fff1 => "ingress".into(),
        0 => "none".into(),
        p => format!("{:x}:{:x}", p >> 16, p & 0xffff),
    }
}

/// Parses one `RTM_NEWQDISC` message body (`struct tcmsg` then attributes). The
/// interface name is left empty.
pub fn parse_qdisc(body: &[u8]) -> Option<Qdisc> {
    if body.len() < 20 {
        return None;
    }
    let mut q = Qdisc {
        ifindex: u32_ne(&body[4..8]) as i32,
        handle: tc_handle(u32_ne(&body[8..12])),
        parent: tc_parent(u32_ne(&body[12..16])),
        ..Qdisc::default()
    };
    let mut have_stats2 = false;
    let mut pkt64 = None;
    for (kind, payload) in attrs(body, 20) {
        match kind {
            TCA_KIND => {
                q.kind = String::from_utf8_lossy(payload.split(|b| *b == 0).next().unwrap_or(&[]))
                    .into_owned();
            }
            TCA_STATS2 => {
                have_stats2 = true;
                for (k, p) in attrs(payload, 0) {
                    match k {
                        // struct gnet_stats_basic { u64 bytes; u32 packets; }
                        TCA_STATS_BASIC => {
                            q.bytes = u64_ne(p);
                            q.packets = u32_ne(p.get(8..).unwrap_or(&[])) as u64;
                        }
                        // struct gnet_stats_queue { qlen, backlog, drops, requeues, overlimits }
                        TCA_STATS_QUEUE => {
                            q.qlen = u32_ne(p) as u64;
                            q.backlog = u32_ne(p.get(4..).unwrap_or(&[])) as u64;
                            q.drops = u32_ne(p.get(8..).unwrap_or(&[])) as u64;
                            q.requeues = u32_ne(p.get(12..).unwrap_or(&[])) as u64;
                            q.overlimits = u32_ne(p.get(16..).unwrap_or(&[])) as u64;
                        }
                        TCA_STATS_PKT64 => pkt64 = Some(u64_ne(p)),
                        _ => {}
                    }
                }
            }
            // struct tc_stats (old kernels): bytes u64, packets, drops, overlimits,
            // bps, pps, qlen, backlog (u32).
            TCA_STATS if !have_stats2 => {
                q.bytes = u64_ne(payload);
                let u = |i: usize| u32_ne(payload.get(8 + 4 * i..).unwrap_or(&[])) as u64;
                q.packets = u(0);
                q.drops = u(1);
                q.overlimits = u(2);
                q.qlen = u(5);
                q.backlog = u(6);
            }
            _ => {}
        }
    }
    if let Some(p) = pkt64 {
        q.packets = p;
    }
    Some(q)
}

/// Every qdisc of `ns` with its statistics, interface names resolved in `ns`.
pub fn qdiscs(ns: &Netns) -> Result<Vec<Qdisc>, SourceError> {
    with_socket(ns, Proto::Route, |s| {
        let mut out = Vec::new();
        // struct tcmsg, all zero: every qdisc of every interface.
        s.request(RTM_GETQDISC, NLM_F_DUMP, &[0u8; 20], |_, body| {
            if let Some(q) = parse_qdisc(body) {
                out.push(q);
            }
        })
        .map_err(io_err("rtnetlink qdisc dump"))?;
        // struct ifinfomsg, all zero: every link.
        let mut names: Vec<(i32, String)> = Vec::new();
        s.request(RTM_GETLINK, NLM_F_DUMP, &[0u8; 16], |_, body| {
            if body.len() < 16 {
                return;
            }
            let index = u32_ne(&body[4..8]) as i32;
            if let Some((_, name)) = attrs(body, 16).find(|(k, _)| *k == IFLA_IFNAME) {
                let name = name.split(|b| *b == 0).next().unwrap_or(&[]);
                names.push((index, String::from_utf8_lossy(name).into_owned()));
            }
        })
        .map_err(io_err("rtnetlink link dump"))?;
        for q in &mut out {
            if let Some((_, n)) = names.iter().find(|(i, _)| *i == q.ifindex) {
                q.ifname.clone_from(n);
            }
        }
        Ok(out)
    })
}

/// Names of the per-CPU conntrack statistics (`enum ctattr_stats_cpu`), by
/// attribute number; empty names are attributes the kernel no longer fills.
pub const CONNTRACK_STATS: [&str; 16] = [
    "",
    "",
    "found",
    "",
    "invalid",
    "",
    "",
    "",
    "insert",
    "insert_failed",
    "drop",
    "early_drop",
    "error",
    "search_restart",
    "clash_resolve",
    "chaintoolong",
];

/// Conntrack statistics of a namespace: the per-CPU counters summed, and the
/// table's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conntrack {
    /// Summed over CPUs, indexed as [`CONNTRACK_STATS`].
    pub stats: [u64; 16],
    /// Entries in the table now.
    pub entries: u64,
    /// The table's limit (`nf_conntrack_max`); 0 on kernels that do not report it.
    pub max: u64,
    pub cpus: u32,
}

/// Adds one `IPCTNL_MSG_CT_GET_STATS_CPU` answer (`struct nfgenmsg` then big-endian
/// u32 attributes) to `sum`.
pub fn add_conntrack_cpu(body: &[u8], sum: &mut Conntrack) {
    for (kind, p) in attrs(body, 4) {
        if let Some(slot) = sum.stats.get_mut(kind as usize) {
            *slot += u32_be(p) as u64;
        }
    }
    sum.cpus += 1;
}

/// Reads one `IPCTNL_MSG_CT_GET_STATS` answer into `sum`.
pub fn add_conntrack_global(body: &[u8], sum: &mut Conntrack) {
    for (kind, p) in attrs(body, 4) {
        match kind {
            1 => sum.entries = u32_be(p) as u64,
            2 => sum.max = u32_be(p) as u64,
            _ => {}
        }
    }
}

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET_STATS_CPU: u16 = 4;
const IPCTNL_MSG_CT_GET_STATS: u16 = 5;

/// Conntrack statistics of `ns` (what `conntrack -S` and `conntrack -C` show);
/// [`SourceError::Missing`] when the kernel has no conntrack.
pub fn conntrack(ns: &Netns) -> Result<Conntrack, SourceError> {
    let missing = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOENT) | Some(libc::EPROTONOSUPPORT)
        )
    };
    with_socket(ns, Proto::Netfilter, |s| {
        let mut sum = Conntrack::default();
        // struct nfgenmsg: family AF_UNSPEC, version 0, res_id 0.
        let req = [0u8; 4];
        let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS_CPU;
        s.request(kind, NLM_F_DUMP, &req, |_, body| {
            add_conntrack_cpu(body, &mut sum)
        })
        .map_err(|e| {
            if missing(&e) {
                SourceError::Missing {
                    what: "conntrack",
                    reason: format!(
                        "ctnetlink does not answer ({e}): module nf_conntrack_netlink not loaded"
                    ),
                }
            } else {
                io_err("ctnetlink stats")(e)
            }
        })?;
        let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS;
        s.request(kind, NLM_F_ACK, &req, |_, body| {
            add_conntrack_global(body, &mut sum)
        })
        .map_err(io_err("ctnetlink global stats"))?;
        Ok(sum)
    })
}

/// How long a request may wait for the kernel (the socket's receive timeout).
pub const TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Netns {
        let inode = Netns::own_inode();
        Netns {
            inode,
            pid: std::process::id(),
            pids: vec![std::process::id()],
            bind_mount: None,
        }
    }

    #[test]
    fn attrs_walk_aligned_and_stop_at_garbage() {
        // len 5 (padded to 8), len 8, then a bogus length.
        let b = [
            5, 0, 1, 0, 0xaa, 0, 0, 0, 8, 0, 2, 0x80, 1, 2, 3, 4, 0xff, 0,
        ];
        let v: Vec<_> = attrs(&b, 0).collect();
        assert_eq!(v, [(1, &[0xaa][..]), (2, &[1, 2, 3, 4][..])]);
    }

    #[test]
    fn qdisc_message_parses() {
        // Messages captured from a 6.18 kernel: `lo`'s noqueue and eth0's pfifo_fast,
        // which `tc -s qdisc` showed as "Sent 1438437 bytes 17761 pkt (dropped 0,
        // overlimits 0 requeues 0) backlog 0b 0p".
        let eth0 = parse_qdisc(include_bytes!("testdata/rtm_newqdisc_eth0.bin")).unwrap();
        assert_eq!(
            (eth0.ifindex, eth0.kind.as_str(), eth0.parent.as_str()),
            (4, "pfifo_fast", "root")
        );
        assert_eq!((eth0.bytes, eth0.packets), (1438437, 17761));
        assert_eq!(
            (
                eth0.drops,
                eth0.overlimits,
                eth0.requeues,
                eth0.backlog,
                eth0.qlen
            ),
            (0, 0, 0, 0, 0)
        );
        let body = include_bytes!("testdata/rtm_newqdisc.bin");
        let q = parse_qdisc(body).unwrap();
        assert_eq!(q.kind, "noqueue");
        assert_eq!(q.parent, "root");
        assert_eq!(q.handle, "0:");
        assert_eq!(tc_parent(0x0001_0002), "1:2");
        assert_eq!(tc_handle(0x8001_0000), "8001:");
    }

    #[test]
    fn tcp_summary_sees_a_listener_and_a_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let s = tcp_summary(&own()).unwrap();
        drop(c);
        assert!(s.states[TCP_LISTEN] >= 1, "{s:?}");
        assert!(s.states[1] >= 2, "{s:?}");
        // The connection waits in the listener's accept queue.
        assert!(s.accept_queue >= 1, "{s:?}");
    }

    #[test]
    fn qdiscs_of_this_namespace_have_names() {
        let q = qdiscs(&own()).unwrap();
        assert!(q.iter().any(|q| q.ifname == "lo"), "{q:?}");
        assert!(q.iter().all(|q| !q.ifname.is_empty() && !q.kind.is_empty()));
    }
}
