//! A "pod" for TC tests: a private network namespace joined to the host by a veth
//! pair whose host end sonde attaches to, with traffic of known size between them;
//! and what `tc`, `bpftool` and the kernel show of sonde on an interface.
//!
//! ```no_run
//! use sonde_tests::veth::{no_sonde_left, Pod};
//! let pod = Pod::new("x", 50); // host end `sflx<pid>h`: 10.77.50.1, fd77:50::1
//! let (sport, dport) = pod.udp(pod.v4, 3, 100); // three datagrams pod -> host
//! drop(pod); // deletes the pair
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::{ip, NetnsThread};

/// The stdout and stderr of a command, together.
pub fn text(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("run command");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A "pod": a namespace with a veth whose host side is `host` (10.77.N.1, fd77:N::1)
/// and pod side 10.77.N.2, fd77:N::2. Dropping it deletes the pair.
pub struct Pod {
    pub ns: NetnsThread,
    /// The host end, in the test's (the host's) namespace.
    pub host: String,
    /// (host, pod) addresses.
    pub v4: (IpAddr, IpAddr),
    pub v6: (IpAddr, IpAddr),
}

impl Pod {
    pub fn new(tag: &str, n: u8) -> Pod {
        let ns = NetnsThread::new().expect("network namespace");
        let host = format!("sfl{tag}{}h", std::process::id() % 10000);
        let pod = format!("sfl{n}p");
        let pid = std::process::id().to_string();
        let (h, p) = (host.clone(), pod.clone());
        // Created inside the namespace; the host side is moved to this process's
        // (the host's) namespace by pid.
        ns.run(move || {
            ip(&[
                "link", "add", &p, "type", "veth", "peer", "name", &h, "netns", &pid,
            ]);
            ip(&["addr", "add", &format!("10.77.{n}.2/24"), "dev", &p]);
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd77:{n}::2/64"),
                "dev",
                &p,
                "nodad",
            ]);
            ip(&["link", "set", &p, "up"]);
            // Plain TCP headers: every segment but the SYN (MSS option) has 20 bytes.
            for (k, v) in [
                ("tcp_timestamps", "0"),
                ("tcp_sack", "0"),
                ("tcp_window_scaling", "0"),
            ] {
                std::fs::write(format!("/proc/sys/net/ipv4/{k}"), v).unwrap();
            }
        });
        ip(&["addr", "add", &format!("10.77.{n}.1/24"), "dev", &host]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("fd77:{n}::1/64"),
            "dev",
            &host,
            "nodad",
        ]);
        ip(&["link", "set", &host, "up"]);
        Pod {
            ns,
            host,
            v4: (
                format!("10.77.{n}.1").parse().unwrap(),
                format!("10.77.{n}.2").parse().unwrap(),
            ),
            v6: (
                format!("fd77:{n}::1").parse().unwrap(),
                format!("fd77:{n}::2").parse().unwrap(),
            ),
        }
    }

    /// Sends `count` datagrams of `size` bytes from the pod to the host; returns the
    /// (source port, destination port) once the host has received them all.
    pub fn udp(&self, (host, pod): (IpAddr, IpAddr), count: usize, size: usize) -> (u16, u16) {
        let rx = UdpSocket::bind((host, 0)).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = rx.local_addr().unwrap();
        let sport = self.ns.run(move || {
            let tx = UdpSocket::bind((pod, 0)).unwrap();
            for _ in 0..count {
                tx.send_to(&vec![7u8; size], to).unwrap();
            }
            tx.local_addr().unwrap().port()
        });
        let mut buf = [0u8; 65536];
        for _ in 0..count {
            let (n, _) = rx.recv_from(&mut buf).expect("datagram");
            assert_eq!(n, size);
        }
        (sport, to.port())
    }

    /// A TCP connection from the pod to the host carrying `bytes`, closed by both.
    pub fn tcp(&self, (host, _): (IpAddr, IpAddr), bytes: usize) -> (u16, u16) {
        let l = TcpListener::bind((host, 0)).unwrap();
        let to = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut n = 0;
            let mut buf = [0u8; 65536];
            loop {
                let k = c.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                n += k;
            }
            n
        });
        let sport = self.ns.run(move || {
            let mut c = TcpStream::connect(to).unwrap();
            c.write_all(&vec![1u8; bytes]).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            c.local_addr().unwrap().port()
        });
        assert_eq!(server.join().unwrap(), bytes);
        // The last ACK of the close.
        std::thread::sleep(Duration::from_millis(200));
        (sport, to.port())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .status();
    }
}

/// Asserts that no filter, clsact qdisc or TCX link of sonde is on `iface`.
pub fn no_sonde_left(iface: &str) {
    for dir in ["ingress", "egress"] {
        let f = text("tc", &["filter", "show", "dev", iface, dir]);
        assert!(
            !f.contains("tc_ingress") && !f.contains("tc_egress"),
            "filters left on {iface} {dir}: {f}"
        );
    }
    let q = text("tc", &["qdisc", "show", "dev", iface]);
    assert!(!q.contains("clsact"), "clsact qdisc left on {iface}: {q}");
    let tcx = sonde::bpf::tc::tcx_programs(iface);
    assert!(tcx.is_empty(), "TCX links left on {iface}: {tcx:?}");
}

/// Two named network namespaces (`ip netns add`), `<tag><pid>a` and `<tag><pid>b`,
/// joined by a veth whose ends carry their namespace's name and the MAC addresses
/// `<mac>:01` (a) and `<mac>:02` (b); both ends down, no address. Dropping it deletes
/// both namespaces (and so the pair).
pub struct NamedPair {
    pub a: String,
    pub b: String,
    /// Namespace inodes, as the kernel programs report them.
    pub inode_a: u32,
    pub inode_b: u32,
}

impl NamedPair {
    /// `mac`: the first five bytes, e.g. `02:00:00:00:09`.
    pub fn new(tag: &str, mac: &str) -> NamedPair {
        use std::os::unix::fs::MetadataExt;
        let tag = format!("{tag}{}", std::process::id() % 100_000);
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        for ns in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        let inode = |ns: &str| std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino() as u32;
        let pair = NamedPair {
            inode_a: inode(&a),
            inode_b: inode(&b),
            a,
            b,
        };
        let (mac_a, mac_b) = (format!("{mac}:01"), format!("{mac}:02"));
        ip(&[
            "link", "add", &pair.a, "netns", &pair.a, "address", &mac_a, "type", "veth", "peer",
            "name", &pair.b, "netns", &pair.b, "address", &mac_b,
        ]);
        pair
    }
}

impl Drop for NamedPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
