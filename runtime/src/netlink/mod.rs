//! Netlink: the one place sonde talks to the kernel over netlink sockets, for every
//! protocol it uses.
//!
//! - [`route`]: rtnetlink: links (interface names), qdiscs with their statistics,
//!   TC filters (listing, deleting sonde's leftovers), the clsact qdisc, link
//!   notifications;
//! - [`diag`]: `sock_diag`: TCP sockets by state and their queues;
//! - [`conntrack`]: ctnetlink statistics;
//! - [`names`]: interface names per network namespace, cached from link dumps.
//!
//! Messages are the typed models of the `netlink-packet-route` and
//! `netlink-packet-sock-diag` crates, framed by `netlink-packet-core` and sent over
//! a `netlink-sys` socket. Answers are read in place from one receive buffer per
//! socket: only the fixed header of each message and the attributes a reader asks
//! for are parsed, so a dump allocates little more than what it returns. ctnetlink's
//! statistics have no typed model in those crates; their payload (a `nfgenmsg` and
//! big-endian `u32` attributes) is read by hand in [`conntrack`], through the same
//! framing and the same request loop ([`Socket::request`]).
//!
//! A netlink socket answers for the network namespace it was created in. [`in_netns`]
//! runs a closure on a short-lived thread that `setns`es into a namespace first (the
//! tokio workers never change namespace); sockets made that way are cached per
//! namespace ([`with_socket`]) and closed by [`forget_except`] when the namespace
//! leaves the scan (a socket keeps its namespace alive, so it must not outlive it).
//! Sockets are synchronous: callers run off the async workers (a script's tick, the
//! TC watcher thread).
//!
//! ```no_run
//! use sonde::netlink::{self, route, Family};
//! use sonde::sources::netns_list;
//! for ns in netns_list().iter() {
//!     let links = netlink::with_socket(ns, Family::Route, |s| {
//!         route::links(s).map_err(netlink::io_err("rtnetlink link dump"))
//!     })
//!     .unwrap();
//!     println!("{}: {} interfaces", ns.inode, links.len());
//! }
//! ```

pub mod conntrack;
pub mod diag;
pub mod names;
pub mod route;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{Socket as SysSocket, SocketAddr};

use crate::sources::{Netns, SourceError};

pub use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};

/// How long a request may wait for the kernel (the socket's receive timeout).
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Flags of a dump request.
pub const DUMP: u16 = NLM_F_DUMP;
/// Flags of a request answered by an acknowledgement.
pub const ACK: u16 = NLM_F_ACK;

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

/// A message whose payload is already laid out: the framing of a protocol the typed
/// crates do not model (ctnetlink), or of a test's hand-made request.
pub struct RawMessage<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

impl NetlinkSerializable for RawMessage<'_> {
    fn message_type(&self) -> u16 {
        self.kind
    }

    fn buffer_len(&self) -> usize {
        self.payload.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[..self.payload.len()].copy_from_slice(self.payload);
    }
}

/// One netlink socket, its receive buffer and its request buffer.
pub struct Socket {
    sock: SysSocket,
    seq: u32,
    buf: Vec<u8>,
    req: Vec<u8>,
}

impl Socket {
    /// A netlink socket of `protocol` (`libc::NETLINK_*`) in the calling thread's
    /// namespace, with a receive timeout of [`TIMEOUT`].
    pub fn open(protocol: libc::c_int) -> io::Result<Socket> {
        let sock = SysSocket::new(protocol as isize)?;
        // A kernel that never answers must not hang a script's tick.
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: a valid descriptor and an option struct of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        // Errors come with the kernel's explanation; a kernel without it still works.
        let _ = sock.set_ext_ack(true);
        Ok(Socket {
            sock,
            seq: 0,
            buf: vec![0; 64 * 1024],
            req: Vec::with_capacity(128),
        })
    }

    /// A non-blocking socket of `protocol` subscribed to the multicast `groups`
    /// (`libc::RTMGRP_*`): something to poll, whose datagrams say that something
    /// changed.
    pub fn subscribe(protocol: libc::c_int, groups: u32) -> io::Result<SysSocket> {
        let mut sock = SysSocket::new(protocol as isize)?;
        sock.set_non_blocking(true)?;
        sock.bind(&SocketAddr::new(0, groups))?;
        Ok(sock)
    }

    /// Sends `msg` with `flags` ([`DUMP`], [`ACK`], or others with [`ACK`]) and calls
    /// `on_msg(kind, payload)` for every answer until the dump is done or the request
    /// is acknowledged. An error from the kernel is returned as an `io::Error` of its
    /// errno.
    pub fn request<M: NetlinkSerializable>(
        &mut self,
        msg: M,
        flags: u16,
        mut on_msg: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        msg.finalize();
        self.req.clear();
        self.req.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.req);
        self.sock.send_to(&self.req, &SocketAddr::new(0, 0), 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n.min(self.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut rest = &self.buf[..n];
            while !rest.is_empty() {
                let m = NetlinkBuffer::new_checked(rest).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("truncated netlink message: {e}"),
                    )
                })?;
                let len = m.length() as usize;
                let (kind, mseq, body) = (m.message_type(), m.sequence_number(), m.payload());
                rest = &rest[align4(len).min(rest.len())..];
                if mseq != seq {
                    continue; // a late answer to an earlier, abandoned request
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = ErrorBuffer::new_checked(body).ok().and_then(|e| e.code());
                        return match code {
                            None => Ok(()), // the acknowledgement
                            Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                        };
                    }
                    _ => {
                        on_msg(kind, body);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor lives as long as `self.sock`, which outlives the
        // borrow.
        unsafe { BorrowedFd::borrow_raw(self.sock.as_raw_fd()) }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The protocols sonde speaks, one cached socket each per namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `NETLINK_SOCK_DIAG`.
    Diag,
    /// `NETLINK_ROUTE`.
    Route,
    /// `NETLINK_NETFILTER`.
    Netfilter,
}

impl Family {
    fn protocol(self) -> libc::c_int {
        match self {
            Family::Diag => libc::NETLINK_SOCK_DIAG,
            Family::Route => libc::NETLINK_ROUTE,
            Family::Netfilter => libc::NETLINK_NETFILTER,
        }
    }
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

/// Closes the sockets (and forgets the interface names) of namespaces not in `live`:
/// a socket would keep a dead namespace alive.
pub fn forget_except(live: &[Netns]) {
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    c.retain(|inode, _| live.iter().any(|n| n.inode == *inode));
    drop(c);
    names::forget_except(live);
}

/// Number of namespaces with cached sockets.
pub fn cached_namespaces() -> usize {
    cache().lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Runs `f` with the cached socket of `family` in `ns`, opened first if needed (from
/// a thread that joins `ns`, unless `ns` is this process's own namespace).
pub fn with_socket<T>(
    ns: &Netns,
    family: Family,
    f: impl FnOnce(&mut Socket) -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    let entry = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(ns.inode)
        .or_default()
        .clone();
    let mut socks = entry.lock().unwrap_or_else(|e| e.into_inner());
    let slot = match family {
        Family::Diag => &mut socks.diag,
        Family::Route => &mut socks.route,
        Family::Netfilter => &mut socks.netfilter,
    };
    if slot.is_none() {
        let protocol = family.protocol();
        let sock = if ns.inode == Netns::own_inode() {
            Socket::open(protocol)
        } else {
            in_netns(&ns.ns_path(), ns.inode, move || Socket::open(protocol))?
        };
        let sock = sock.map_err(|e| match family {
            Family::Netfilter if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
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

/// This process's own network namespace, as the socket cache keys it.
pub fn own_netns() -> Netns {
    Netns {
        inode: Netns::own_inode(),
        pid: std::process::id(),
        pids: Vec::new(),
        bind_mount: None,
    }
}

/// Maps an `io::Error` of a request to a [`SourceError`] saying what was asked.
pub fn io_err(what: &str) -> impl Fn(io::Error) -> SourceError + '_ {
    move |e| SourceError::Io {
        what: what.to_string(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_request_is_framed_and_acknowledged() {
        // RTM_GETLINK for index 1 (the loopback), answered by one RTM_NEWLINK.
        let mut s = Socket::open(libc::NETLINK_ROUTE).unwrap();
        let mut ifinfo = [0u8; 16];
        ifinfo[4..8].copy_from_slice(&1u32.to_ne_bytes());
        let mut kinds = Vec::new();
        s.request(
            RawMessage {
                kind: libc::RTM_GETLINK,
                payload: &ifinfo,
            },
            0,
            |kind, _| kinds.push(kind),
        )
        .unwrap();
        assert_eq!(kinds, [libc::RTM_NEWLINK]);
        // An error comes back as its errno: no interface has index 0x7fffffff.
        ifinfo[4..8].copy_from_slice(&0x7fff_ffffu32.to_ne_bytes());
        let e = s
            .request(
                RawMessage {
                    kind: libc::RTM_GETLINK,
                    payload: &ifinfo,
                },
                0,
                |_, _| {},
            )
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
    }
}
