//! The guest harness's trigger: makes one kernel condition happen, the same way in a
//! busybox-only guest and on the host (std and libc only; no `ip`, `tc`, `iptables`).
//!
//! ```text
//! sonde-guest-trigger <condition>
//! ```
//!
//! Network conditions run in a fresh network namespace (loopback up), so the harness
//! can count only the rows from that namespace; the trigger prints one line of
//! `key=value` facts on stdout (`netns=<inode>` first, then what it observed, e.g.
//! `retrans_segs=3` from the namespace's own /proc/net/snmp) and exits 0, or says
//! what failed on stderr and exits 1.
//!
//! | condition  | what happens |
//! |---|---|
//! | `refused`  | three connects to a closed loopback port: a reset with no socket, a drop (NO_SOCKET), a failed connect |
//! | `retrans`  | a connection whose receiver drops every segment (a socket filter): the sender retransmits |
//! | `states`   | three connections opened, used and closed on both sides, plus one refused |
//! | `slow-read`| a sender writing 1 MiB to a reader that reads 16 KiB every 10 ms |
//! | `udp-flood`| 2000 datagrams at a socket whose receive buffer is the smallest allowed and never read |
//! | `traffic`  | 4 MiB over a loopback TCP connection and 200 UDP round trips (softirqs, queueing, the stack) |
//! | `lo-traffic` | as `traffic`, in the caller's own network namespace (for programs attached to `lo` there) |
//! | `block`    | 64 direct (O_DIRECT) 4 KiB reads of `/dev/nullb0` if present, else 64 direct writes of a file in /var/tmp |
//! | `virtio-cmd` | promiscuous mode on and off on a virtio-net interface (control-queue commands) |
//! | `listen-overflow` | six connects to a loopback listener with a backlog of 1 that never accepts: two fit, the others' SYNs are refused (and retransmitted at 1 s) |

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(what) = args.first() else {
        eprintln!("usage: sonde-guest-trigger <condition> (see the source's header)");
        std::process::exit(2);
    };
    let result = match what.as_str() {
        "refused" => in_netns(refused),
        "retrans" => in_netns(retrans),
        "states" => in_netns(states),
        "slow-read" => in_netns(slow_read),
        "udp-flood" => in_netns(udp_flood),
        "traffic" => in_netns(traffic),
        "lo-traffic" => traffic(),
        "block" => block(),
        "virtio-cmd" => virtio_cmd(),
        "listen-overflow" => in_netns(listen_overflow),
        other => Err(format!("unknown condition {other}")),
    };
    match result {
        Ok(facts) => println!("{}", facts.join(" ")),
        Err(e) => {
            eprintln!("sonde-guest-trigger {what}: {e}");
            std::process::exit(1);
        }
    }
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Moves this process into a fresh network namespace, brings `lo` up, runs `f`, and
/// puts `netns=<inode>` and the namespace's retransmission count before its facts.
fn in_netns(f: fn() -> Result<Vec<String>>) -> Result<Vec<String>> {
    // SAFETY: unshare has no memory-safety preconditions; the process is single
    // threaded here.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(os_err("unshare(CLONE_NEWNET)"));
    }
    set_flags("lo", libc::IFF_UP as libc::c_short, true)?;
    let inode = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("/proc/self/ns/net: {e}"))?
        .ino();
    let mut facts = vec![format!("netns={inode}")];
    facts.extend(f()?);
    Ok(facts)
}

/// Sets or clears interface flags with SIOCSIFFLAGS.
fn set_flags(ifname: &str, flags: libc::c_short, on: bool) -> Result<()> {
    // SAFETY: a socket this function owns and closes; ifreq is zeroed, the name
    // fits (checked) and is NUL-terminated by the zeroing.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(os_err("socket"));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        if ifname.len() >= req.ifr_name.len() {
            libc::close(fd);
            return Err(format!("interface name too long: {ifname}"));
        }
        for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            let e = os_err(&format!("SIOCGIFFLAGS {ifname}"));
            libc::close(fd);
            return Err(e);
        }
        if on {
            req.ifr_ifru.ifru_flags |= flags;
        } else {
            req.ifr_ifru.ifru_flags &= !flags;
        }
        let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        let e = os_err(&format!("SIOCSIFFLAGS {ifname}"));
        libc::close(fd);
        if rc != 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// A field of this namespace's /proc/net/snmp (`Tcp`, `RetransSegs`).
fn snmp(proto: &str, field: &str) -> Option<u64> {
    proc_net("snmp", proto, field)
}

/// A field of this namespace's /proc/net/netstat (`TcpExt`, `ListenOverflows`).
fn netstat(proto: &str, field: &str) -> Option<u64> {
    proc_net("netstat", proto, field)
}

/// A field of a /proc/net file of name/value line pairs (`snmp`, `netstat`).
fn proc_net(file: &str, proto: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/net/{file}")).ok()?;
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn listener() -> Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(loopback(0)).map_err(|e| format!("bind: {e}"))?;
    let a = l.local_addr().map_err(|e| e.to_string())?;
    Ok((l, a))
}

fn refused() -> Result<Vec<String>> {
    let mut n = 0;
    for _ in 0..3 {
        match TcpStream::connect_timeout(&loopback(9), Duration::from_secs(5)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => n += 1,
            Err(e) => return Err(format!("connect to closed port 9: {e}")),
            Ok(_) => return Err("port 9 is open".into()),
        }
    }
    Ok(vec![format!("refused={n}")])
}

/// The receiving socket drops every segment (a classic BPF socket filter returning 0,
/// checked by tcp_v4_rcv before the segment is queued), so the sender's data is never
/// acknowledged and the retransmission timer resends it (200 ms, 400 ms, 800 ms).
fn retrans() -> Result<Vec<String>> {
    let (l, addr) = listener()?;
    let mut client = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let (server, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    let drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at a live filter array for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            server.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_err("SO_ATTACH_FILTER"));
    }
    let before = snmp("Tcp", "RetransSegs").unwrap_or(0);
    client
        .write_all(&[7u8; 1000])
        .map_err(|e| format!("write: {e}"))?;
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut retrans = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        retrans = snmp("Tcp", "RetransSegs").unwrap_or(0) - before;
        if retrans >= 3 {
            break;
        }
    }
    drop(server);
    Ok(vec![format!("retrans_segs={retrans}")])
}

/// Six connects, none waiting for its handshake, to a listener with a backlog of 1
/// that never accepts: its accept queue holds two, the kernel refuses the other SYNs
/// (TcpExt ListenOverflows) and the clients retransmit them after 1 s.
fn listen_overflow() -> Result<Vec<String>> {
    let (l, addr) = listener()?;
    // SAFETY: listen() again on a listening socket only changes its backlog.
    if unsafe { libc::listen(l.as_raw_fd(), 1) } != 0 {
        return Err(os_err("listen"));
    }
    let SocketAddr::V4(v4) = addr else {
        return Err("the listener is not IPv4".into());
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let before = netstat("TcpExt", "ListenOverflows").unwrap_or(0);
    let mut fds = Vec::new();
    for _ in 0..6 {
        // SAFETY: a new socket, closed below; sin is a valid sockaddr_in.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(os_err("socket"));
        }
        fds.push(fd);
        // SAFETY: as above.
        let rc = unsafe {
            libc::connect(
                fd,
                &sin as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(os_err("connect"));
        }
    }
    std::thread::sleep(Duration::from_millis(1300));
    let overflows = netstat("TcpExt", "ListenOverflows").unwrap_or(0) - before;
    for fd in fds {
        // SAFETY: fd is one of the sockets opened above, closed once.
        unsafe { libc::close(fd) };
    }
    drop(l);
    Ok(vec![format!("listen_overflows={overflows}")])
}

fn states() -> Result<Vec<String>> {
    let (l, addr) = listener()?;
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
        c.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(20));
        drop(c);
        drop(s);
    }
    let refused = refused()?;
    // Let both sides walk through FIN_WAIT/TIME_WAIT/CLOSE.
    std::thread::sleep(Duration::from_millis(200));
    Ok([vec!["connections=3".to_string()], refused].concat())
}

fn slow_read() -> Result<Vec<String>> {
    let (l, addr) = listener()?;
    let writer = std::thread::spawn(move || -> Result<()> {
        let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let chunk = [1u8; 64 * 1024];
        for _ in 0..16 {
            c.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
        }
        Ok(())
    });
    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => return Err(format!("read: {e}")),
        }
        if t.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    writer.join().map_err(|_| "writer panicked".to_string())??;
    Ok(vec![
        format!("read_bytes={total}"),
        format!("ms={}", t.elapsed().as_millis()),
    ])
}

fn udp_flood() -> Result<Vec<String>> {
    let rx = UdpSocket::bind(loopback(0)).map_err(|e| format!("bind: {e}"))?;
    let small: libc::c_int = 1; // the kernel raises it to its minimum
                                // SAFETY: setsockopt with a c_int value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_err("SO_RCVBUF"));
    }
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let tx = UdpSocket::bind(loopback(0)).map_err(|e| format!("bind: {e}"))?;
    let before = snmp("Udp", "RcvbufErrors").unwrap_or(0);
    let payload = [0u8; 1000];
    for _ in 0..2000 {
        tx.send_to(&payload, to).map_err(|e| format!("send: {e}"))?;
    }
    let errors = snmp("Udp", "RcvbufErrors").unwrap_or(0) - before;
    Ok(vec![format!("rcvbuf_errors={errors}")])
}

fn traffic() -> Result<Vec<String>> {
    let (l, addr) = listener()?;
    let sender = std::thread::spawn(move || -> Result<()> {
        let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let chunk = [2u8; 64 * 1024];
        for _ in 0..64 {
            c.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
        }
        Ok(())
    });
    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    let mut sink = Vec::new();
    let tcp = s.read_to_end(&mut sink).map_err(|e| format!("read: {e}"))?;
    sender.join().map_err(|_| "sender panicked".to_string())??;

    let a = UdpSocket::bind(loopback(0)).map_err(|e| format!("bind: {e}"))?;
    let b = UdpSocket::bind(loopback(0)).map_err(|e| format!("bind: {e}"))?;
    let b_addr = b.local_addr().map_err(|e| e.to_string())?;
    let a_addr = a.local_addr().map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    for i in 0..200u32 {
        a.send_to(&i.to_le_bytes(), b_addr)
            .map_err(|e| format!("send: {e}"))?;
        let (n, _) = b.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
        b.send_to(&buf[..n], a_addr)
            .map_err(|e| format!("send: {e}"))?;
        a.recv_from(&mut buf).map_err(|e| format!("recv: {e}"))?;
    }
    Ok(vec![
        format!("tcp_bytes={tcp}"),
        "udp_round_trips=200".into(),
        format!("port={}", addr.port()),
    ])
}

/// Direct (O_DIRECT) 4 KiB reads from /dev/nullb0 (null_blk: the guests load it; its
/// requests complete at once), else direct writes of a file in /var/tmp, which is on
/// the machine's disk (block devices themselves may be closed to us there).
fn block() -> Result<Vec<String>> {
    const BLOCK: usize = 4096;
    let nullb = std::path::Path::new("/dev/nullb0").exists();
    let path = if nullb {
        "/dev/nullb0".to_string()
    } else {
        format!("/var/tmp/sonde-guest-trigger.{}", std::process::id())
    };
    let c_path = CString::new(path.clone()).map_err(|e| e.to_string())?;
    let flags = if nullb {
        libc::O_RDONLY
    } else {
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC
    };
    // SAFETY: open/pread/pwrite/fsync/close on a descriptor this function owns; the
    // buffer is allocated with the alignment O_DIRECT needs and freed before returning.
    unsafe {
        let fd = libc::open(
            c_path.as_ptr(),
            flags | libc::O_DIRECT | libc::O_CLOEXEC,
            0o600,
        );
        if fd < 0 {
            return Err(os_err(&format!("open {path} O_DIRECT")));
        }
        let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK).unwrap();
        let buf = std::alloc::alloc_zeroed(layout);
        let mut done = 0;
        let mut err = None;
        for i in 0..64i64 {
            let n = if nullb {
                libc::pread(fd, buf.cast(), BLOCK, i * 64 * BLOCK as i64)
            } else {
                libc::pwrite(fd, buf.cast(), BLOCK, i * BLOCK as i64)
            };
            if n < 0 {
                err = Some(os_err(&format!("direct I/O on {path}")));
                break;
            }
            if n == 0 {
                break; // a device smaller than 16 MiB
            }
            done += 1;
        }
        if !nullb {
            libc::fsync(fd);
        }
        std::alloc::dealloc(buf, layout);
        libc::close(fd);
        if !nullb {
            libc::unlink(c_path.as_ptr());
        }
        if let Some(e) = err {
            return Err(e);
        }
        Ok(vec![format!("target={path}"), format!("direct_ios={done}")])
    }
}

/// Interfaces driven by virtio_net.
fn virtio_interfaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path().join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n == "virtio_net"))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn virtio_cmd() -> Result<Vec<String>> {
    let ifs = virtio_interfaces();
    let Some(ifname) = ifs.first() else {
        return Err("no virtio-net interface (/sys/class/net/*/device/driver)".into());
    };
    set_flags(ifname, libc::IFF_UP as libc::c_short, true)?;
    for _ in 0..3 {
        set_flags(ifname, libc::IFF_PROMISC as libc::c_short, true)?;
        std::thread::sleep(Duration::from_millis(50));
        set_flags(ifname, libc::IFF_PROMISC as libc::c_short, false)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(vec![
        format!("interface={ifname}"),
        "promisc_toggles=3".into(),
    ])
}
