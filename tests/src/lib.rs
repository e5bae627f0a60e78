//! Helpers shared by sonde's integration tests.
//!
//! - [`require_root`]: kernel tests need root; without it they say so loudly and,
//!   when `CI=true`, fail instead of passing silently.
//! - [`NetnsThread`]: a thread living in its own fresh network namespace, so a test
//!   generates traffic nobody else sees while sonde stays in the host namespaces.
//! - [`sonde_bin`]: the built `sonde` binary; [`run`] runs it and reads its output.
//! - [`kernel`]: a built-in program loaded straight into the kernel, records decoded.
//! - [`cri`]: a real containerd of the test's own, pods and containers over CRI.
//! - [`kubernetes`]: the Helm chart rendered with real Helm, the offline Kubernetes tools.
//! - [`veth`]: a pod-like namespace behind a veth pair, for TC probes.

pub mod cri;
pub mod daemon;
pub mod kernel;
pub mod kubernetes;
pub mod loki;
pub mod run;
pub mod tls;
pub mod veth;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc;

/// True when the test may touch the kernel. Otherwise prints why and panics under CI.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        cannot_run(test, "needs root (kernel test)");
    }
    root
}

/// Says loudly that a test cannot run here; fails under CI ([`sonde::testkit::skip`]).
pub use sonde::testkit::skip as cannot_run;

/// A directory for files the daemon reads as scripts or config, trusted by its
/// strict modes (`scripts.strict_modes`, like sshd's `StrictModes`): when root,
/// `/run/sonde-tests` (root-owned, 0755, not under the 1777 `/tmp`), with the umask
/// set to 022 so the files written there are not group- or world-writable. Else the
/// system temp directory, where the daemon refuses them unless its config sets
/// `scripts.strict_modes: false` ([`daemon::Daemon`] does so then).
pub fn trusted_tmp() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return std::env::temp_dir();
    }
    let dir = PathBuf::from("/run/sonde-tests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // SAFETY: umask has no preconditions; 022 is what root's shell has anyway.
    unsafe { libc::umask(0o022) };
    dir
}

/// True when [`trusted_tmp`] is a directory the daemon's strict modes accept.
pub fn strict_modes_hold() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `sonde` binary for these tests, brought up to date once per test process
/// (cargo does not rebuild a workspace binary for another crate's tests).
pub fn sonde_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = repo_root();
        let profile_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.parent()).map(|d| d.to_path_buf()))
            .unwrap_or_else(|| root.join("target/debug"));
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "sonde", "--bin", "sonde"])
            .current_dir(&root);
        // What cargo set for this test binary is not the build's business: ring's
        // build script reruns when CARGO_MANIFEST_DIR changes, which rebuilt ring,
        // rustls and sonde in every test process (and again for the next `cargo
        // test`).
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_")
                || k.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build");
        assert!(st.success(), "building sonde failed");
        profile_dir.join("sonde")
    })
    .clone()
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in its own network namespace (loopback up). Work sent with [`run`] runs
/// there; sonde itself stays in the host namespaces.
///
/// [`run`]: NetnsThread::run
pub struct NetnsThread {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
    pub inode: u32,
}

impl NetnsThread {
    pub fn new() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<u32>>();
        let handle = std::thread::spawn(move || {
            // SAFETY: unshare affects only this thread's namespaces.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            if !matches!(up, Ok(s) if s.success()) {
                let _ = ready_tx.send(Err(std::io::Error::other("ip link set lo up failed")));
                return;
            }
            let inode = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino() as u32);
            let _ = ready_tx.send(inode);
            for job in rx {
                job();
            }
        });
        let inode = ready_rx.recv().map_err(std::io::Error::other)??;
        Ok(NetnsThread {
            tx: Some(tx),
            handle: Some(handle),
            inode,
        })
    }

    /// Runs `f` inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .unwrap();
        rx.recv().expect("netns thread died")
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
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
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = libc::socket(family, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
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
            libc::close(fd);
            return connect_once_refused(addr);
        }
        let rc = libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
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

/// Runs `ip` with `args`; panics with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the interface `dev` of the named network namespace `ns` is up (and
/// 50 ms more for its queues); panics after about 2 s.
pub fn wait_up(ns: &str, dev: &str) {
    for _ in 0..100 {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "link", "show", dev])
            .output()
            .expect("run ip (iproute2)");
        if String::from_utf8_lossy(&out.stdout).contains("state UP") {
            std::thread::sleep(std::time::Duration::from_millis(50));
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{ns}/{dev} did not come up");
}

/// A network namespace under `ip netns` (`/run/netns/NAME`), deleted on drop; with
/// [`NamedNetns::held`], a `sleep` inside keeps a process in it (as a pod's pause
/// does), killed on drop.
pub struct NamedNetns {
    pub name: String,
    holder: Option<std::process::Child>,
}

impl NamedNetns {
    /// Adds `name` afresh (a leftover of an earlier run is deleted first).
    pub fn add(name: &str) -> NamedNetns {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .output();
        ip(&["netns", "add", name]);
        NamedNetns {
            name: name.to_string(),
            holder: None,
        }
    }

    /// [`NamedNetns::add`] with a process living in it.
    pub fn held(name: &str) -> NamedNetns {
        let mut ns = NamedNetns::add(name);
        ns.holder = Some(
            std::process::Command::new("ip")
                .args(["netns", "exec", name, "sleep", "600"])
                .spawn()
                .expect("run ip netns exec (iproute2)"),
        );
        ns
    }

    /// The namespace's inode (what records and `proc::netns()` carry).
    pub fn inode(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(format!("/run/netns/{}", self.name)).unwrap(),
        )
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if let Some(mut c) = self.holder.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
