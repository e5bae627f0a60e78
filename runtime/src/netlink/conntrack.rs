//! ctnetlink statistics: what `conntrack -S` and `conntrack -C` show.
//!
//! The typed netlink crates sonde uses have no model of ctnetlink, so this is the
//! one protocol whose payload is laid out by hand: a request is a `struct nfgenmsg`
//! (four zero bytes: every family), an answer is that header followed by
//! big-endian `u32` attributes. Framing, the request loop and attribute walking are
//! the shared ones ([`Socket::request`], `netlink-packet-core`'s `NlasIterator`).
//!
//! ```no_run
//! use sonde::netlink::{conntrack, Socket};
//! let mut s = Socket::open(libc::NETLINK_NETFILTER).unwrap();
//! let c = conntrack::stats(&mut s).unwrap();
//! println!("{} entries, {} insert_failed", c.entries, c.stats[9]);
//! ```

use std::io;

use netlink_packet_core::NlasIterator;

use super::{RawMessage, Socket, ACK, DUMP};

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

/// `struct nfgenmsg` is 4 bytes.
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET_STATS_CPU: u16 = 4;
const IPCTNL_MSG_CT_GET_STATS: u16 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;

/// `(kind, big-endian u32 value)` of each attribute after the `nfgenmsg`.
fn be_attributes(body: &[u8]) -> impl Iterator<Item = (u16, u64)> + '_ {
    NlasIterator::new(body.get(NFGENMSG_LEN..).unwrap_or(&[]))
        .flatten()
        .map(|nla| {
            let v = nla
                .value()
                .get(0..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            (nla.kind(), u64::from(v))
        })
}

/// Adds one `IPCTNL_MSG_CT_GET_STATS_CPU` answer to `sum`.
pub fn add_cpu(body: &[u8], sum: &mut Conntrack) {
    for (kind, v) in be_attributes(body) {
        if let Some(slot) = sum.stats.get_mut(usize::from(kind)) {
            *slot += v;
        }
    }
    sum.cpus += 1;
}

/// Reads one `IPCTNL_MSG_CT_GET_STATS` answer into `sum`.
pub fn add_global(body: &[u8], sum: &mut Conntrack) {
    for (kind, v) in be_attributes(body) {
        match kind {
            CTA_STATS_GLOBAL_ENTRIES => sum.entries = v,
            CTA_STATS_GLOBAL_MAX_ENTRIES => sum.max = v,
            _ => {}
        }
    }
}

/// What went wrong, and at which of the two requests.
#[derive(Debug)]
pub enum StatsError {
    /// The per-CPU dump.
    PerCpu(io::Error),
    /// The global request.
    Global(io::Error),
}

/// The conntrack statistics of the socket's (`NETLINK_NETFILTER`) namespace.
pub fn stats(sock: &mut Socket) -> Result<Conntrack, StatsError> {
    let mut sum = Conntrack::default();
    // struct nfgenmsg: family AF_UNSPEC, version 0, res_id 0.
    let nfgenmsg = [0u8; NFGENMSG_LEN];
    let per_cpu = RawMessage {
        kind: (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS_CPU,
        payload: &nfgenmsg,
    };
    sock.request(per_cpu, DUMP, |_, body| add_cpu(body, &mut sum))
        .map_err(StatsError::PerCpu)?;
    let global = RawMessage {
        kind: (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS,
        payload: &nfgenmsg,
    };
    sock.request(global, ACK, |_, body| add_global(body, &mut sum))
        .map_err(StatsError::Global)?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_sum_over_cpus() {
        // nfgenmsg, then `found` (2) = 5 and `insert_failed` (9) = 1, big-endian.
        let mut body = vec![0u8; 4];
        for (kind, v) in [(2u16, 5u32), (9, 1)] {
            body.extend_from_slice(&8u16.to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut sum = Conntrack::default();
        add_cpu(&body, &mut sum);
        add_cpu(&body, &mut sum);
        assert_eq!((sum.stats[2], sum.stats[9], sum.cpus), (10, 2, 2));
        let mut global = vec![0u8; 4];
        for (kind, v) in [(1u16, 42u32), (2, 65536)] {
            global.extend_from_slice(&8u16.to_ne_bytes());
            global.extend_from_slice(&kind.to_ne_bytes());
            global.extend_from_slice(&v.to_be_bytes());
        }
        add_global(&global, &mut sum);
        assert_eq!((sum.entries, sum.max), (42, 65536));
    }
}
