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
//! - [`tcp`]: sockets made the way the probes' scenarios need (refused, not waiting,
//!   with SYN retries), and iptables rules that lose chosen segments.

pub mod cri;
pub mod daemon;
pub mod kernel;
pub mod kubernetes;
pub mod loki;
pub mod run;
pub mod tcp;
pub mod tls;
pub mod veth;

pub use tcp::{connect_refused, sockaddr};

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

/// Runs `sonde ARGS` to its end in the repository root, as from a checkout, and
/// returns its stdout; fails the test with sonde's output when sonde fails.
pub fn sonde_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = std::process::Command::new(sonde_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run sonde");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sonde {:?} failed ({}):\n{stdout}{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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
