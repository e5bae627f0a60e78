//! The netlink sources scripts read, per network namespace: TCP sockets by state
//! (`sock_diag`), qdisc statistics with interface names (rtnetlink), conntrack
//! statistics (ctnetlink).
//!
//! The protocol is [`crate::netlink`]'s; this module chooses what to ask of each
//! namespace and says what failed in the terms of a source ([`SourceError`]).
//!
//! ```no_run
//! use sonde::sources::{netlink, netns_list};
//! for ns in netns_list().iter() {
//!     let tcp = netlink::tcp_summary(ns).unwrap();
//!     println!("{}: {} established", ns.inode, tcp.states[1]);
//! }
//! ```

use std::io;

use super::{Netns, SourceError};
use crate::netlink::{self as nl, conntrack::StatsError, diag, names, route, Family};

pub use crate::netlink::conntrack::{Conntrack, CONNTRACK_STATS};
pub use crate::netlink::diag::{TcpSummary, TCP_STATES};
pub use crate::netlink::route::Qdisc;
pub use crate::netlink::{cached_namespaces, forget_except, in_netns, TIMEOUT};

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
    nl::with_socket(ns, Family::Diag, |s| {
        let mut sum = TcpSummary::default();
        for (family, _) in [libc::AF_INET as u8, libc::AF_INET6 as u8]
            .into_iter()
            .zip(families)
            .filter(|(_, has)| *has)
        {
            diag::tcp_dump(s, family, &mut sum)
                .or_else(|e| {
                    // A kernel without IPv6 has no AF_INET6 diag handler.
                    if family == libc::AF_INET6 as u8 && e.raw_os_error() == Some(libc::ENOENT) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(nl::io_err("sock_diag tcp"))?;
        }
        Ok(sum)
    })
}

/// Every qdisc of `ns` with its statistics, interface names resolved in `ns`. The
/// link dump that names them also refreshes the namespace's interface names
/// ([`names`]).
pub fn qdiscs(ns: &Netns) -> Result<Vec<Qdisc>, SourceError> {
    let (mut out, links) = nl::with_socket(ns, Family::Route, |s| {
        let out = route::qdiscs(s).map_err(nl::io_err("rtnetlink qdisc dump"))?;
        let links = route::links(s).map_err(nl::io_err("rtnetlink link dump"))?;
        Ok((out, links))
    })?;
    for q in &mut out {
        if let Some((_, n)) = links.iter().find(|(i, _)| *i as i32 == q.ifindex) {
            q.ifname.clone_from(n);
        }
    }
    names::store(ns, &links);
    Ok(out)
}

/// Conntrack statistics of `ns` (what `conntrack -S` and `conntrack -C` show);
/// [`SourceError::Missing`] when the kernel has no conntrack.
pub fn conntrack(ns: &Netns) -> Result<Conntrack, SourceError> {
    let missing = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOENT) | Some(libc::EPROTONOSUPPORT)
        )
    };
    nl::with_socket(ns, Family::Netfilter, |s| {
        nl::conntrack::stats(s).map_err(|e| match e {
            StatsError::PerCpu(e) if missing(&e) => SourceError::Missing {
                what: "conntrack",
                reason: format!(
                    "ctnetlink does not answer ({e}): module nf_conntrack_netlink not loaded"
                ),
            },
            StatsError::PerCpu(e) => nl::io_err("ctnetlink stats")(e),
            StatsError::Global(e) => nl::io_err("ctnetlink global stats")(e),
        })
    })
}

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
    fn tcp_summary_sees_a_listener_and_a_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let s = tcp_summary(&own()).unwrap();
        drop(c);
        assert!(s.states[diag::TCP_LISTEN] >= 1, "{s:?}");
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
