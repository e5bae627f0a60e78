//! The hooked operations of the `kernel` benchmark: each one the cheapest
//! deterministic way found to make a program's hooks fire, run in a tight loop by a
//! thread of its own inside a private network namespace.
//!
//! ```no_run
//! let r = Runner::start(Op::OtherhostFrame)?;   // thread, namespace, sockets
//! let s = r.run(100_000)?;                       // 100k ops: wall and thread CPU time
//! println!("{:.0} ns/op", s.cpu_ns as f64 / s.ops as f64);
//! ```

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};

use crate::workload::{connect_refused, enter_fresh_netns, loopback};

/// One hooked operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// An Ethernet frame for another host's MAC sent on `lo` through an AF_PACKET
    /// socket: loopback hands it straight back to the stack and `ip_rcv` drops it
    /// (`SKB_DROP_REASON_OTHERHOST`), one `kfree_skb` per op, no socket lookup, no
    /// reply.
    OtherhostFrame,
    /// A TCP SYN to a closed port on 127.0.0.1, sent as a frame on `lo` through an
    /// AF_PACKET socket: the kernel answers with a reset sent with no socket
    /// (`tcp_send_reset`) whose route lookup fails (the source, 10.1.1.1, is
    /// unroutable in the namespace), and drops the SYN (`NO_SOCKET`). No socket is
    /// created.
    ClosedPortSyn,
    /// The same TCP SYN sent again and again (AF_PACKET on `lo`, from 10.1.1.1 to a
    /// listener on 10.1.1.2, an address of `lo` in the namespace): the first
    /// one makes a request socket, every later one has the kernel retransmit its
    /// SYN-ACK (`tcp_retransmit_synack`; `tcp_invalid_ratelimit` is 0 in the
    /// namespace); the SYN-ACK goes out on lo and is dropped coming back (10.1.1.1 is
    /// not local, no forwarding). The request expires after about a minute (SYN-ACK
    /// retries) and the next SYN makes a new one.
    SynAckRetransmit,
    /// `listen()` then `shutdown(SHUT_RD)` on one TCP socket bound to 127.0.0.1: the
    /// socket goes CLOSE -> LISTEN -> CLOSE (`tcp_disconnect`), no packet, no socket
    /// allocated or port searched per op.
    ListenShutdown,
    /// `connect()` to a closed port on 127.0.0.1, then `close()`: a SYN, a reset sent
    /// with no socket, the reset received, the SYN dropped (`NO_SOCKET`), the socket
    /// going CLOSE -> SYN_SENT -> CLOSE.
    ConnectRefused,
    /// A 1-byte UDP datagram to a socket on `lo` whose receive buffer is full: the
    /// datagram is refused at enqueue (`udp_fail_queue_rcv_skb`) and dropped.
    UdpToFullSocket,
    /// A 1-byte UDP datagram from a socket to itself on `lo`, then read: one packet
    /// through the whole transmit and receive path and the socket's queue.
    UdpEcho,
    /// One byte written on a loopback TCP connection and read at the other end.
    TcpPingPong,
}

impl Op {
    pub fn describe(self) -> &'static str {
        match self {
            Op::OtherhostFrame => "AF_PACKET frame to another MAC on lo (dropped by ip_rcv)",
            Op::ClosedPortSyn => {
                "AF_PACKET TCP SYN to a closed port on lo (reset traced, not routed)"
            }
            Op::SynAckRetransmit => {
                "AF_PACKET duplicate TCP SYN to a listener on lo (SYN-ACK retransmitted)"
            }
            Op::ListenShutdown => "listen() + shutdown(SHUT_RD) of a TCP socket on 127.0.0.1",
            Op::ConnectRefused => "connect() to a closed port on 127.0.0.1 + close()",
            Op::UdpToFullSocket => "UDP send to a full socket on lo",
            Op::UdpEcho => "UDP send to itself on lo + recv",
            Op::TcpPingPong => "1-byte TCP write + read over lo",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Op::OtherhostFrame => "otherhost frame",
            Op::ClosedPortSyn => "syn to closed port",
            Op::SynAckRetransmit => "duplicate syn",
            Op::ListenShutdown => "listen + shutdown",
            Op::ConnectRefused => "refused connect",
            Op::UdpToFullSocket => "udp to full socket",
            Op::UdpEcho => "udp echo",
            Op::TcpPingPong => "tcp ping-pong",
        }
    }

    /// Sets the operation up in the calling thread's namespace.
    fn setup(self) -> anyhow::Result<Box<dyn FnMut() -> Result<(), String>>> {
        Ok(match self {
            Op::OtherhostFrame => {
                // Destination MAC 02:00:00:00:00:01 (lo's own is all zeros):
                // PACKET_OTHERHOST, dropped before any routing.
                packet_sender(ipv4_frame(
                    [0x02, 0, 0, 0, 0, 1],
                    [127, 0, 0, 1],
                    libc::IPPROTO_UDP as u8,
                    &[0; 8],
                ))?
            }
            Op::ClosedPortSyn => {
                let mut tcp = [0u8; 20];
                tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
                tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
                tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
                tcp[12] = 5 << 4;
                tcp[13] = 0x02; // SYN
                tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
                // A frame arriving on lo has no route yet: 127.0.0.1 as a destination
                // needs route_localnet, and the source must not be local (10.1.1.1,
                // unroutable here: the reset is traced, then fails its route lookup
                // instead of coming back).
                let knob = "/proc/sys/net/ipv4/conf/lo/route_localnet";
                std::fs::write(knob, "1").with_context(|| format!("cannot write {knob}"))?;
                let now = std::fs::read_to_string(knob).unwrap_or_default();
                if now.trim() != "1" {
                    bail!("{knob} reads {:?} after writing 1", now.trim());
                }
                // Checksum over the pseudo-header (addresses, protocol, TCP length).
                let mut pseudo = vec![10, 1, 1, 1, 127, 0, 0, 1, 0, libc::IPPROTO_TCP as u8];
                pseudo.extend_from_slice(&20u16.to_be_bytes());
                pseudo.extend_from_slice(&tcp);
                let sum = ip_checksum(&pseudo);
                tcp[16..18].copy_from_slice(&sum.to_be_bytes());
                packet_sender(ipv4_frame(
                    [0; 6],
                    [10, 1, 1, 1],
                    libc::IPPROTO_TCP as u8,
                    &tcp,
                ))?
            }
            Op::SynAckRetransmit => syn_ack_retransmit()?,
            Op::ListenShutdown => listen_shutdown()?,
            Op::ConnectRefused => {
                let addr = loopback(9);
                Box::new(move || {
                    connect_refused(&addr)
                        .map_err(|e| format!("connect: {}", std::io::Error::from_raw_os_error(e)))
                })
            }
            Op::UdpToFullSocket => udp_to_full_socket()?,
            Op::UdpEcho => udp_echo()?,
            Op::TcpPingPong => tcp_ping_pong()?,
        })
    }
}

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub ops: u64,
    pub wall_ns: u64,
    /// The looping thread's CPU time (softirq work done on its behalf included: this
    /// kernel does not account IRQ time separately).
    pub cpu_ns: u64,
}

impl Sample {
    pub fn cpu_per_op(&self) -> f64 {
        self.cpu_ns as f64 / self.ops.max(1) as f64
    }

    pub fn wall_per_op(&self) -> f64 {
        self.wall_ns as f64 / self.ops.max(1) as f64
    }
}

/// A thread in a network namespace of its own that runs `op` when asked.
pub struct Runner {
    ask: Option<mpsc::Sender<u64>>,
    done: mpsc::Receiver<Result<Sample, String>>,
    handle: Option<JoinHandle<()>>,
    netns: u64,
}

impl Runner {
    pub fn start(op: Op) -> anyhow::Result<Runner> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u64, String>>();
        let (ask_tx, ask_rx) = mpsc::channel::<u64>();
        let (done_tx, done_rx) = mpsc::channel::<Result<Sample, String>>();
        let handle = std::thread::Builder::new()
            .name("kernel-op".into())
            .spawn(move || {
                let prepared = enter_fresh_netns().and_then(|ino| Ok((ino, op.setup()?)));
                let mut f = match prepared {
                    Ok((ino, f)) => {
                        let _ = ready_tx.send(Ok(ino));
                        f
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                while let Ok(n) = ask_rx.recv() {
                    let cpu0 = thread_cpu_ns();
                    let t0 = Instant::now();
                    let mut err = None;
                    for _ in 0..n {
                        if let Err(e) = f() {
                            err = Some(e);
                            break;
                        }
                    }
                    let wall_ns = t0.elapsed().as_nanos() as u64;
                    let cpu_ns = thread_cpu_ns().saturating_sub(cpu0);
                    let r = match err {
                        Some(e) => Err(e),
                        None => Ok(Sample {
                            ops: n,
                            wall_ns,
                            cpu_ns,
                        }),
                    };
                    if done_tx.send(r).is_err() {
                        return;
                    }
                }
            })
            .context("cannot spawn the operation thread")?;
        let netns = match ready_rx.recv() {
            Ok(Ok(ino)) => ino,
            Ok(Err(e)) => bail!("{}: {e}", op.describe()),
            Err(_) => bail!("{}: the thread ended during setup", op.describe()),
        };
        Ok(Runner {
            ask: Some(ask_tx),
            done: done_rx,
            handle: Some(handle),
            netns,
        })
    }

    /// The namespace the operations run in.
    pub fn netns(&self) -> u64 {
        self.netns
    }

    /// Runs the operation `n` times.
    pub fn run(&self, n: u64) -> anyhow::Result<Sample> {
        self.ask
            .as_ref()
            .ok_or_else(|| anyhow!("runner stopped"))?
            .send(n)
            .map_err(|_| anyhow!("the operation thread ended"))?;
        self.done
            .recv()
            .map_err(|_| anyhow!("the operation thread ended"))?
            .map_err(|e| anyhow!("operation failed: {e}"))
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.ask.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec passed.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn last_error(what: &str) -> anyhow::Error {
    anyhow!("{what}: {}", std::io::Error::last_os_error())
}

fn errno_string() -> String {
    std::io::Error::last_os_error().to_string()
}

/// A socket descriptor closed when dropped.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

fn socket(domain: i32, ty: i32, proto: i32) -> anyhow::Result<Fd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(last_error("socket"));
    }
    Ok(Fd(fd))
}

fn sockaddr_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
}

/// Binds to 127.0.0.1 on a free port and returns the address.
fn bind_loopback(fd: &Fd) -> anyhow::Result<libc::sockaddr_in> {
    let mut addr = loopback(0);
    // SAFETY: bind and getsockname with a sockaddr_in and its length.
    unsafe {
        if libc::bind(
            fd.0,
            (&addr as *const libc::sockaddr_in).cast(),
            sockaddr_len(),
        ) != 0
        {
            return Err(last_error("bind"));
        }
        let mut len = sockaddr_len();
        if libc::getsockname(fd.0, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
            return Err(last_error("getsockname"));
        }
    }
    Ok(addr)
}

fn connect(fd: &Fd, addr: &libc::sockaddr_in) -> anyhow::Result<()> {
    // SAFETY: connect with a sockaddr_in and its length.
    let r = unsafe {
        libc::connect(
            fd.0,
            (addr as *const libc::sockaddr_in).cast(),
            sockaddr_len(),
        )
    };
    if r != 0 {
        return Err(last_error("connect"));
    }
    Ok(())
}

fn setsockopt_int(fd: &Fd, level: i32, name: i32, value: i32) -> anyhow::Result<()> {
    // SAFETY: setsockopt with an int option value.
    let r = unsafe {
        libc::setsockopt(
            fd.0,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(last_error("setsockopt"));
    }
    Ok(())
}

fn syn_ack_retransmit() -> anyhow::Result<Box<dyn FnMut() -> Result<(), String>>> {
    // 10.1.1.2 local; 10.1.1.1 routed out through lo but not local (a prefix route
    // on lo would be a local one). A child process inherits this thread's network
    // namespace.
    for args in [
        &["addr", "add", "10.1.1.2/32", "dev", "lo"][..],
        &["route", "add", "10.1.1.1/32", "dev", "lo"][..],
    ] {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .context("cannot run ip (iproute2)")?;
        if !status.success() {
            bail!("ip {} failed", args.join(" "));
        }
    }
    std::fs::write("/proc/sys/net/ipv4/tcp_invalid_ratelimit", "0")
        .context("tcp_invalid_ratelimit in the operation's namespace")?;
    let listener = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let mut addr = loopback(0);
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::new(10, 1, 1, 2)).to_be();
    // SAFETY: bind, getsockname and listen on our socket with a sockaddr_in.
    unsafe {
        if libc::bind(
            listener.0,
            (&addr as *const libc::sockaddr_in).cast(),
            sockaddr_len(),
        ) != 0
        {
            return Err(last_error("bind"));
        }
        let mut len = sockaddr_len();
        if libc::getsockname(
            listener.0,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        ) != 0
        {
            return Err(last_error("getsockname"));
        }
        if libc::listen(listener.0, 128) != 0 {
            return Err(last_error("listen"));
        }
    }
    let (src, dst) = ([10, 1, 1, 1], [10, 1, 1, 2]);
    let tcp = tcp_syn(src, dst, 40000, u16::from_be(addr.sin_port));
    let mut frame = ipv4_frame([0; 6], src, libc::IPPROTO_TCP as u8, &tcp);
    frame[30..34].copy_from_slice(&dst);
    let ip = &mut frame[14..34];
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = ip_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut send = packet_sender(frame)?;
    Ok(Box::new(move || {
        let _ = &listener;
        send()
    }))
}

/// A TCP SYN header (no options) with its checksum.
fn tcp_syn(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> [u8; 20] {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&20u16.to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let sum = ip_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    tcp
}

/// An Ethernet frame on lo (source MAC zero) carrying an IPv4 packet from `src` to
/// 127.0.0.1 with this payload.
fn ipv4_frame(dst_mac: [u8; 6], src: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 20];
    frame[0..6].copy_from_slice(&dst_mac);
    frame[12..14].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&[127, 0, 0, 1]);
    let sum = ip_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Sends `frame` on lo through an AF_PACKET socket, once per call.
fn packet_sender(frame: Vec<u8>) -> anyhow::Result<Box<dyn FnMut() -> Result<(), String>>> {
    // Protocol 0: the socket sends but receives nothing, so it is no tap on lo.
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    // SAFETY: a NUL-terminated interface name.
    let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if ifindex == 0 {
        return Err(last_error("if_nametoindex(lo)"));
    }
    // SAFETY: sockaddr_ll is plain data; zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    to.sll_ifindex = ifindex as i32;
    Ok(Box::new(move || {
        // The whole descriptor, so that it lives as long as the closure.
        let fd = &fd;
        // SAFETY: sendto with a buffer and a sockaddr_ll, both alive for the call.
        let r = unsafe {
            libc::sendto(
                fd.0,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(format!("sendto: {}", errno_string()));
        }
        Ok(())
    }))
}

fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn listen_shutdown() -> anyhow::Result<Box<dyn FnMut() -> Result<(), String>>> {
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    bind_loopback(&fd)?;
    Ok(Box::new(move || {
        let fd = &fd;
        // SAFETY: listen and shutdown on our own bound socket.
        unsafe {
            if libc::listen(fd.0, 1) != 0 {
                return Err(format!("listen: {}", errno_string()));
            }
            if libc::shutdown(fd.0, libc::SHUT_RD) != 0 {
                return Err(format!("shutdown: {}", errno_string()));
            }
        }
        Ok(())
    }))
}

fn udp_to_full_socket() -> anyhow::Result<Box<dyn FnMut() -> Result<(), String>>> {
    let rx = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    setsockopt_int(&rx, libc::SOL_SOCKET, libc::SO_RCVBUF, 1)?;
    let addr = bind_loopback(&rx)?;
    let tx = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    connect(&tx, &addr)?;
    let byte = [0u8; 1];
    let send = move |fd: &Fd| {
        // SAFETY: send of a 1-byte buffer on a connected socket.
        let r = unsafe { libc::send(fd.0, byte.as_ptr().cast(), 1, 0) };
        if r != 1 {
            return Err(format!("send: {}", errno_string()));
        }
        Ok(())
    };
    // Fill the receive buffer: it takes a datagram or two at the minimum size.
    for _ in 0..64 {
        send(&tx).map_err(|e| anyhow!(e))?;
    }
    Ok(Box::new(move || {
        let _keep = &rx;
        send(&tx)
    }))
}

fn udp_echo() -> anyhow::Result<Box<dyn FnMut() -> Result<(), String>>> {
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let addr = bind_loopback(&fd)?;
    connect(&fd, &addr)?;
    let mut buf = [0u8; 16];
    Ok(Box::new(move || {
        let fd = &fd;
        // SAFETY: send and recv on a socket connected to itself, with live buffers.
        unsafe {
            if libc::send(fd.0, buf.as_ptr().cast(), 1, 0) != 1 {
                return Err(format!("send: {}", errno_string()));
            }
            if libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) != 1 {
                return Err(format!("recv: {}", errno_string()));
            }
        }
        Ok(())
    }))
}

fn tcp_ping_pong() -> anyhow::Result<Box<dyn FnMut() -> Result<(), String>>> {
    let listener = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let addr = bind_loopback(&listener)?;
    // SAFETY: listen and accept on our own socket.
    if unsafe { libc::listen(listener.0, 1) } != 0 {
        return Err(last_error("listen"));
    }
    let a = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    setsockopt_int(&a, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    connect(&a, &addr)?;
    // SAFETY: accept with no peer address wanted.
    let b = unsafe {
        libc::accept4(
            listener.0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if b < 0 {
        return Err(last_error("accept"));
    }
    let b = Fd(b);
    let mut buf = [0u8; 16];
    Ok(Box::new(move || {
        let (_, a, b) = (&listener, &a, &b);
        // SAFETY: write and read on a connected pair, with live buffers.
        unsafe {
            if libc::send(a.0, buf.as_ptr().cast(), 1, 0) != 1 {
                return Err(format!("send: {}", errno_string()));
            }
            if libc::recv(b.0, buf.as_mut_ptr().cast(), buf.len(), 0) != 1 {
                return Err(format!("recv: {}", errno_string()));
            }
        }
        Ok(())
    }))
}
