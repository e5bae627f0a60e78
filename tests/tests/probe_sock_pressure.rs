//! sock_pressure, for real (root): in a private network namespace per address family,
//! UDP datagrams flood a socket with the smallest receive buffer that nobody reads, and
//! an ICMP ping socket with the same buffer sends more echo requests than it can hold
//! replies. The script's exported counters for each namespace's pod must equal the
//! kernel's own counts in that namespace: Udp RcvbufErrors (/proc/net/snmp), Udp6
//! RcvbufErrors (/proc/net/snmp6) and the ping socket's drops (/proc/net/icmp, icmp6).
//! A second test checks the per-refusal records: kind, tuple, buffer sizes.

use std::net::{IpAddr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

use sonde::script::ParamValue;
use sonde_tests::kernel::{drain, int, load, ours, s};
use sonde_tests::run::{finish, start, summary_values as rows};
use sonde_tests::{require_root, NetnsThread};

fn set_rcvbuf(fd: i32, bytes: i32) -> i32 {
    let mut got: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: setsockopt/getsockopt on a descriptor the caller owns, int option.
    unsafe {
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes as *const i32 as *const libc::c_void,
            len,
        );
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut got as *mut i32 as *mut libc::c_void,
            &mut len,
        );
    }
    got
}

/// A counter of `/proc/thread-self/net/<file>`: `snmp` has "Udp: names" / "Udp:
/// values" line pairs, `snmp6` "name value" lines.
fn net_stat(file: &str, group: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap();
    if file == "snmp6" {
        return text
            .lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(&format!("{group}{name}")))
                    .then(|| it.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {group}{name} in {file}"));
    }
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next().unwrap();
    let values = lines.next().unwrap();
    let i = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no {group} {name} in {file}"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Sum of the `drops` column of /proc/thread-self/net/icmp or icmp6 (ping sockets).
fn ping_drops(file: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// `n` datagrams of 200 bytes at a socket whose receive buffer is as small as the
/// kernel allows, which nobody reads. Returns the receiver (kept open by the caller).
fn udp_flood(ip: IpAddr, n: usize) -> UdpSocket {
    let rx = UdpSocket::bind((ip, 0)).unwrap();
    set_rcvbuf(rx.as_raw_fd(), 1);
    let tx = UdpSocket::bind((ip, 0)).unwrap();
    for _ in 0..n {
        tx.send_to(&[0x55; 200], rx.local_addr().unwrap()).unwrap();
    }
    rx
}

/// `n` echo requests to `ip` from an ICMP ping socket whose receive buffer is as small
/// as the kernel allows and which reads none of the replies (they are queued through
/// sock_queue_rcv_skb, which refuses them once the buffer is full). Ping sockets need
/// the namespace's ping_group_range to include our group.
fn ping_flood(ip: IpAddr, n: usize) -> i32 {
    std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 0").unwrap();
    let (fam, proto, echo) = if ip.is_ipv4() {
        (libc::AF_INET, libc::IPPROTO_ICMP, 8u8)
    } else {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8)
    };
    // SAFETY: plain socket calls on a descriptor this function owns (returned to the
    // caller, which closes it).
    unsafe {
        let fd = libc::socket(fam, libc::SOCK_DGRAM, proto);
        assert!(fd >= 0, "ping socket: {}", std::io::Error::last_os_error());
        set_rcvbuf(fd, 1);
        let (ss, len) = sonde_tests::sockaddr((ip, 0).into());
        // Echo request: type, code 0; the kernel sets the id and the checksum.
        let mut msg = [0u8; 64];
        msg[0] = echo;
        for seq in 0..n {
            msg[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
            let rc = libc::sendto(
                fd,
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &ss as *const _ as *const libc::sockaddr,
                len,
            );
            assert_eq!(
                rc,
                msg.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
        fd
    }
}

/// The kernel's own counts after the floods, read in the namespace.
struct Kernel {
    udp_rcvbuf_errors: u64,
    udp_mem_errors: u64,
    ping_drops: u64,
}

fn scenario(ip: IpAddr) -> Kernel {
    let _udp = udp_flood(ip, 400);
    let ping = ping_flood(ip, 300);
    let k = if ip.is_ipv4() {
        Kernel {
            udp_rcvbuf_errors: net_stat("snmp", "Udp", "RcvbufErrors"),
            udp_mem_errors: net_stat("snmp", "Udp", "MemErrors"),
            ping_drops: ping_drops("icmp"),
        }
    } else {
        Kernel {
            udp_rcvbuf_errors: net_stat("snmp6", "Udp6", "RcvbufErrors"),
            udp_mem_errors: net_stat("snmp6", "Udp6", "MemErrors"),
            ping_drops: ping_drops("icmp6"),
        }
    };
    // SAFETY: the descriptor from ping_flood, closed once.
    unsafe { libc::close(ping) };
    k
}

#[test]
fn udp_and_ping_floods_match_the_kernel_counters_v4_and_v6() {
    if !require_root("udp_and_ping_floods_match_the_kernel_counters_v4_and_v6") {
        return;
    }
    // Namespaces first: their inodes cannot be reused by anyone during the run.
    let ns4 = NetnsThread::new().unwrap();
    let ns6 = NetnsThread::new().unwrap();
    let run = start(&["run", "scripts/sock_pressure.rhai", "--for", "3s"]);
    let v4: IpAddr = [127, 0, 0, 1].into();
    let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
    let k4 = ns4.run(move || scenario(v4));
    let k6 = ns6.run(move || scenario(v6));
    let (out, _) = finish(run);

    const M: &str = "sonde_sock_pressure_refusals_total";
    for (ns, ip, k) in [(&ns4, v4, k4), (&ns6, v6, k6)] {
        let pod = format!("pod=netns:{},", ns.inode);
        // The floods overflow for sure: a 2304-byte buffer holds a few datagrams.
        assert!(
            k.udp_rcvbuf_errors >= 390 && k.udp_rcvbuf_errors < 400,
            "{ip}: RcvbufErrors {}",
            k.udp_rcvbuf_errors
        );
        assert!(
            k.ping_drops >= 290,
            "{ip}: ping socket drops {}",
            k.ping_drops
        );
        assert_eq!(k.udp_mem_errors, 0, "{ip}");
        assert_eq!(
            rows(&out, M, &[&pod, "kind=UDP_RCVBUF,", "protocol=UDP}"]),
            vec![k.udp_rcvbuf_errors],
            "{ip}\n{out}"
        );
        assert_eq!(
            rows(&out, M, &[&pod, "kind=RCVQUEUE_FULL,"]),
            vec![k.ping_drops],
            "{ip}\n{out}"
        );
        assert_eq!(rows(&out, M, &[&pod]).len(), 2, "{ip}: nothing else\n{out}");
    }
}

#[test]
fn udp_refusal_records_carry_the_socket_and_its_buffer() {
    if !require_root("udp_refusal_records_carry_the_socket_and_its_buffer") {
        return;
    }
    let (mut loaded, env) = load("sock_pressure", &[("emit_events", ParamValue::Bool(true))]);
    let ns = NetnsThread::new().unwrap();
    let (rx_port, tx_port, rcvbuf, errors) = ns.run(|| {
        let rx = UdpSocket::bind(("::1", 0)).unwrap();
        let rcvbuf = set_rcvbuf(rx.as_raw_fd(), 1);
        let tx = UdpSocket::bind(("::1", 0)).unwrap();
        rx.connect(tx.local_addr().unwrap()).unwrap();
        for _ in 0..50 {
            tx.send_to(&[1; 500], rx.local_addr().unwrap()).unwrap();
        }
        let errors = net_stat("snmp6", "Udp6", "RcvbufErrors");
        (
            rx.local_addr().unwrap().port(),
            tx.local_addr().unwrap().port(),
            rcvbuf,
            errors,
        )
    });
    let evs = ours(drain(&mut loaded, &env), ns.inode);
    assert!(errors >= 45, "RcvbufErrors {errors}");
    assert_eq!(evs.len() as u64, errors, "{evs:#?}");
    for e in &evs {
        assert_eq!(s(e, "kind"), "UDP_RCVBUF");
        assert_eq!(s(e, "l4proto"), "UDP");
        assert_eq!(int(e, "family"), libc::AF_INET6 as i64);
        assert_eq!(s(e, "saddr"), "::1");
        assert_eq!(int(e, "sport"), rx_port as i64);
        assert_eq!(s(e, "daddr"), "::1");
        assert_eq!(int(e, "dport"), tx_port as i64);
        assert_eq!(int(e, "rcvbuf"), rcvbuf as i64);
        assert!(int(e, "rmem_alloc") > 0, "{e:?}");
        assert_eq!(int(e, "allocated"), -(libc::ENOMEM as i64));
    }
}
