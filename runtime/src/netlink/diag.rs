//! `sock_diag`: the TCP sockets of a namespace, counted by state, with their queues.
//!
//! One `inet_diag_req_v2` dump per address family; each answer's fixed
//! `inet_diag_msg` is read through `netlink-packet-sock-diag`'s
//! [`InetResponseHeader`] (its attributes are not asked for, and not parsed).
//!
//! ```no_run
//! use sonde::netlink::{diag, Socket};
//! let mut s = Socket::open(libc::NETLINK_SOCK_DIAG).unwrap();
//! let mut sum = diag::TcpSummary::default();
//! diag::tcp_dump(&mut s, libc::AF_INET as u8, &mut sum).unwrap();
//! println!("{} established", sum.states[1]);
//! ```

use std::io;

use netlink_packet_core::Parseable;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::{SockDiagMessage, SOCK_DIAG_BY_FAMILY};

use super::{Socket, DUMP};

/// TCP state names, by number (`include/net/tcp_states.h`); index 0 is unused.
pub use crate::bpf::decode::TCP_STATE_NAMES as TCP_STATES;

/// `TCP_LISTEN`.
pub const TCP_LISTEN: usize = 10;

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

impl TcpSummary {
    /// Adds one socket, as `inet_diag_msg` describes it.
    pub fn add(&mut self, s: &InetResponseHeader) {
        let state = usize::from(s.state);
        if let Some(n) = self.states.get_mut(state) {
            *n += 1;
        }
        if state == TCP_LISTEN {
            self.accept_queue += u64::from(s.recv_queue);
        } else {
            self.rx_queue += u64::from(s.recv_queue);
            self.tx_queue += u64::from(s.send_queue);
        }
    }
}

/// Adds one `SOCK_DIAG_BY_FAMILY` answer body (`struct inet_diag_msg`, then
/// attributes) to `sum`; a body too short for the header is skipped.
pub fn add_inet_diag_msg(body: &[u8], sum: &mut TcpSummary) {
    if let Ok(s) = InetResponseHeader::parse(body) {
        sum.add(&s);
    }
}

/// Dumps every TCP socket of `family` (`AF_INET` or `AF_INET6`) of the socket's
/// namespace into `sum`.
pub fn tcp_dump(sock: &mut Socket, family: u8, sum: &mut TcpSummary) -> io::Result<()> {
    let socket_id = if family == libc::AF_INET6 as u8 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let req = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: libc::IPPROTO_TCP as u8,
        extensions: ExtensionFlags::empty(),
        // Every state, those the crate does not name included.
        states: StateFlags::from_bits_retain(u32::MAX),
        socket_id,
    });
    sock.request(req, DUMP, |kind, body| {
        if kind == SOCK_DIAG_BY_FAMILY {
            add_inet_diag_msg(body, sum);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inet_diag_msg_counts_by_state_and_queue() {
        // struct inet_diag_msg: family, state, timer, retrans, sockid (48 bytes),
        // expires, rqueue, wqueue, uid, inode.
        let msg = |state: u8, rq: u32, wq: u32| {
            let mut b = vec![0u8; 72];
            b[0] = libc::AF_INET as u8;
            b[1] = state;
            b[56..60].copy_from_slice(&rq.to_ne_bytes());
            b[60..64].copy_from_slice(&wq.to_ne_bytes());
            b
        };
        let mut sum = TcpSummary::default();
        add_inet_diag_msg(&msg(1, 10, 20), &mut sum);
        add_inet_diag_msg(&msg(10, 3, 128), &mut sum);
        add_inet_diag_msg(&msg(1, 0, 0)[..40], &mut sum); // short: skipped
        assert_eq!((sum.states[1], sum.states[TCP_LISTEN]), (1, 1));
        assert_eq!((sum.rx_queue, sum.tx_queue, sum.accept_queue), (10, 20, 3));
    }
}
