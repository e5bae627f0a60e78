//! TCP sockets made the way the probes' scenarios need them, and iptables rules
//! that lose chosen segments, in the calling thread's network namespace.

use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

/// Loopback of the family (`::1` or `127.0.0.1`), port 0: for bind(2).
pub fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        (Ipv6Addr::LOCALHOST, 0).into()
    } else {
        ([127, 0, 0, 1], 0).into()
    }
}

fn family(addr: SocketAddr) -> i32 {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// A new TCP socket of `addr`'s family, `flags` (`SOCK_NONBLOCK`, ...) or-ed into
/// its type.
pub fn socket(addr: SocketAddr, flags: i32) -> OwnedFd {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd = unsafe { libc::socket(family(addr), libc::SOCK_STREAM | flags, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// connect(2) of `sock` to `addr`: the error it fails with, if it does.
pub fn connect(sock: &OwnedFd, addr: SocketAddr) -> Result<(), std::io::Error> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss holds a sockaddr of `len` bytes for the socket's family.
    let rc = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A connect that does not wait for the handshake.
pub fn connect_nowait(addr: SocketAddr) -> TcpStream {
    let sock = socket(addr, libc::SOCK_NONBLOCK);
    if let Err(e) = connect(&sock, addr) {
        assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS), "connect: {e}");
    }
    TcpStream::from(sock)
}

/// An iptables (ip6tables) rule that drops TCP segments to a port, in the calling
/// thread's namespace; deleted when dropped.
pub struct DropRule {
    v6: bool,
    spec: Vec<String>,
}

impl DropRule {
    /// Every segment to `port` on `chain` (`INPUT`, `OUTPUT`).
    pub fn all(v6: bool, chain: &str, port: u16) -> DropRule {
        DropRule::add(v6, chain, port, &[])
    }

    /// Segments to `port` on `chain` that carry only an ACK (no SYN, RST or FIN):
    /// the final ACK of a handshake, not its data.
    pub fn bare_acks(v6: bool, chain: &str, port: u16) -> DropRule {
        DropRule::add(v6, chain, port, &["--tcp-flags", "SYN,ACK,RST,FIN", "ACK"])
    }

    fn add(v6: bool, chain: &str, port: u16, matching: &[&str]) -> DropRule {
        let port = port.to_string();
        let mut spec: Vec<String> = [chain, "-p", "tcp", "--dport", &port]
            .iter()
            .chain(matching)
            .map(|s| s.to_string())
            .collect();
        spec.extend(["-j".to_string(), "DROP".to_string()]);
        let rule = DropRule { v6, spec };
        if let Err(e) = rule.iptables("-A") {
            panic!("{e}");
        }
        rule
    }

    fn iptables(&self, op: &str) -> Result<(), String> {
        let cmd = if self.v6 { "ip6tables" } else { "iptables" };
        // runs: iptables ip6tables
        let st = Command::new(cmd).arg(op).args(&self.spec).status();
        match st {
            Ok(st) if st.success() => Ok(()),
            other => Err(format!("{cmd} {op} {:?}: {other:?}", self.spec)),
        }
    }
}

impl Drop for DropRule {
    /// Does not panic (it may run while a failed test unwinds): a rule left behind
    /// dies with the test's namespace.
    fn drop(&mut self) {
        if let Err(e) = self.iptables("-D") {
            eprintln!("{e}");
        }
    }
}

/// Connects from a fresh local port to `addr`, which must be closed, `n` times; each
/// attempt is refused with a reset. Returns the local ports used, in order.
pub fn connect_refused(addr: std::net::SocketAddr, n: usize) -> Vec<u16> {
    (0..n).map(|_| connect_once_refused(addr)).collect()
}

fn connect_once_refused(addr: std::net::SocketAddr) -> u16 {
    use std::mem::{size_of, zeroed};
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr
    // structs are zero-initialised and sized for their family.
    unsafe {
        let sock = socket(addr, 0);
        let fd = sock.as_raw_fd();
        let family = family(addr);
        let (ss, len) = sockaddr(addr);
        // Bind to an ephemeral port first so the port is known before the reset.
        let mut local: libc::sockaddr_storage = zeroed();
        local.ss_family = family as _;
        let rc = libc::bind(fd, &local as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut got: libc::sockaddr_storage = zeroed();
        let mut got_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len);
        let port = if family == libc::AF_INET {
            u16::from_be((*(&got as *const _ as *const libc::sockaddr_in)).sin_port)
        } else {
            u16::from_be((*(&got as *const _ as *const libc::sockaddr_in6)).sin6_port)
        };
        if port == addr.port() {
            // The ephemeral port is the closed port itself: connecting would be a
            // TCP self-connect (simultaneous open), which succeeds. Take another.
            return connect_once_refused(addr);
        }
        let rc = libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len);
        let err = std::io::Error::last_os_error();
        assert!(
            rc != 0 && err.raw_os_error() == Some(libc::ECONNREFUSED),
            "connect to {addr} from port {port}: expected refused, got rc {rc}, {err}"
        );
        port
    }
}

/// `addr` as the `sockaddr` bind(2) and connect(2) take, with its length.
pub fn sockaddr(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    use std::mem::{size_of, zeroed};
    // SAFETY: a zeroed sockaddr_storage is valid and large enough for either family;
    // the casts write the family's own struct at its start.
    unsafe {
        let mut ss: libc::sockaddr_storage = zeroed();
        let len = match addr {
            std::net::SocketAddr::V4(a) => {
                let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as _;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>()
            }
            std::net::SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as _;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }
}
