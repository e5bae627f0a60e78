//! The reset workload: threads, each in a network namespace of its own with only `lo`
//! up, connecting to a closed port on 127.0.0.1 in a loop.
//!
//! Every refused connect is exactly two resets as the tools see them: the kernel
//! answers the SYN with a reset for a port with no socket (NOSOCK, sent) and the
//! connecting socket receives it (RECEIVE). Nothing leaves the namespaces, and a
//! tool's events are told apart from the rest of the host's by their namespace.
//!
//! ```no_run
//! let w = Workload::prepare(2, Some(20_000), Duration::from_secs(10))?;
//! let ours = w.netns().to_vec();   // filter the tools' output on these
//! let outcome = w.run()?;          // blocks for the duration
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Resets each refused connect produces (NOSOCK sent + RECEIVE received).
pub const RESETS_PER_CONNECT: u64 = 2;

/// The closed port. A fresh namespace has no listener at all, so any port would do.
const PORT: u16 = 9;

/// What the generator threads did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Connects refused, i.e. NOSOCK resets generated.
    pub refused: u64,
    /// Connects that failed otherwise (never expected); `first_error` says how.
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the start signal to the last thread's end.
    pub elapsed: Duration,
}

impl Outcome {
    pub fn resets(&self) -> u64 {
        self.refused * RESETS_PER_CONNECT
    }
}

struct ThreadResult {
    refused: u64,
    errors: u64,
    first_errno: Option<i32>,
}

/// Generator threads set up in their namespaces, waiting for the start signal.
pub struct Workload {
    netns: Vec<u64>,
    go: Vec<mpsc::Sender<Instant>>,
    handles: Vec<JoinHandle<ThreadResult>>,
}

impl Workload {
    /// Spawns `threads` threads, each in a new network namespace with `lo` up.
    /// `rate` is the total connects per second across threads (None: as fast as
    /// possible).
    pub fn prepare(
        threads: usize,
        rate: Option<u64>,
        duration: Duration,
    ) -> anyhow::Result<Workload> {
        let per_thread = rate.map(|r| r as f64 / threads as f64);
        let mut netns = Vec::new();
        let mut go = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads {
            let (ready_tx, ready_rx) = mpsc::channel::<Result<u64, String>>();
            let (go_tx, go_rx) = mpsc::channel::<Instant>();
            let handle = std::thread::Builder::new()
                .name(format!("reset-gen-{i}"))
                .spawn(move || {
                    match enter_fresh_netns() {
                        Ok(ino) => {
                            let _ = ready_tx.send(Ok(ino));
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                            return ThreadResult {
                                refused: 0,
                                errors: 0,
                                first_errno: None,
                            };
                        }
                    }
                    // A dropped sender means the run was abandoned.
                    match go_rx.recv() {
                        Ok(start) => generate(start, duration, per_thread),
                        Err(_) => ThreadResult {
                            refused: 0,
                            errors: 0,
                            first_errno: None,
                        },
                    }
                })
                .context("cannot spawn a generator thread")?;
            handles.push(handle);
            go.push(go_tx);
            match ready_rx.recv() {
                Ok(Ok(ino)) => netns.push(ino),
                Ok(Err(e)) => bail!("generator thread {i}: {e}"),
                Err(_) => bail!("generator thread {i} ended during setup"),
            }
        }
        Ok(Workload { netns, go, handles })
    }

    /// The namespaces' inode numbers, as tools print them (`netns:<inode>`).
    pub fn netns(&self) -> &[u64] {
        &self.netns
    }

    /// Starts every thread at once and waits for them to finish.
    pub fn run(self) -> anyhow::Result<Outcome> {
        let start = Instant::now();
        for tx in &self.go {
            tx.send(start)
                .map_err(|_| anyhow!("a generator thread ended before the start"))?;
        }
        let mut out = Outcome::default();
        for h in self.handles {
            let r = h
                .join()
                .map_err(|_| anyhow!("a generator thread panicked"))?;
            out.refused += r.refused;
            out.errors += r.errors;
            if out.first_error.is_none() {
                out.first_error = r
                    .first_errno
                    .map(|e| std::io::Error::from_raw_os_error(e).to_string());
            }
        }
        out.elapsed = start.elapsed();
        Ok(out)
    }
}

/// Connects until the deadline; with a rate, sleeps whenever ahead of schedule.
fn generate(start: Instant, duration: Duration, rate: Option<f64>) -> ThreadResult {
    let addr = loopback(PORT);
    let deadline = start + duration;
    let mut r = ThreadResult {
        refused: 0,
        errors: 0,
        first_errno: None,
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = rate {
            let due = now.duration_since(start).as_secs_f64() * rate;
            let done = (r.refused + r.errors) as f64;
            if done >= due {
                // Ahead of schedule: sleep until the next connect is due (at least
                // 100 µs, so the loop does not spin; the schedule catches up).
                let wait = ((done - due + 1.0) / rate).max(100e-6);
                std::thread::sleep(Duration::from_secs_f64(wait).min(deadline - now));
                continue;
            }
        }
        match connect_refused(&addr) {
            Ok(()) => r.refused += 1,
            Err(errno) => {
                r.errors += 1;
                r.first_errno.get_or_insert(errno);
            }
        }
    }
    r
}

/// A thread connecting every few milliseconds in a namespace of its own, until
/// stopped: shows that a tool is attached and its output flowing.
pub struct Canary {
    netns: u64,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Canary {
    pub fn start(every: Duration) -> anyhow::Result<Canary> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<u64, String>>();
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("reset-canary".into())
            .spawn(move || {
                match enter_fresh_netns() {
                    Ok(ino) => {
                        let _ = tx.send(Ok(ino));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                        return;
                    }
                }
                let addr = loopback(PORT);
                while !flag.load(Ordering::Relaxed) {
                    let _ = connect_refused(&addr);
                    std::thread::sleep(every);
                }
            })
            .context("cannot spawn the canary thread")?;
        let netns = match rx.recv() {
            Ok(Ok(ino)) => ino,
            Ok(Err(e)) => bail!("canary thread: {e}"),
            Err(_) => bail!("canary thread ended during setup"),
        };
        Ok(Canary {
            netns,
            stop,
            handle: Some(handle),
        })
    }

    pub fn netns(&self) -> u64 {
        self.netns
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Threads standing for pods: each holds a network namespace of its own (with `lo`
/// up) until dropped, and makes a few refused connects when asked, so that every
/// namespace shows up in per-pod series.
///
/// ```no_run
/// let pods = Pods::prepare(100)?;
/// pods.connect(3)?;               // 3 refused connects (6 resets) per namespace
/// // ... the namespaces stay until `pods` is dropped ...
/// ```
pub struct Pods {
    netns: Vec<u64>,
    ask: Vec<mpsc::Sender<u64>>,
    done: mpsc::Receiver<u64>,
    handles: Vec<JoinHandle<()>>,
}

impl Pods {
    pub fn prepare(n: usize) -> anyhow::Result<Pods> {
        let (done_tx, done) = mpsc::channel::<u64>();
        let mut pods = Pods {
            netns: Vec::with_capacity(n),
            ask: Vec::with_capacity(n),
            done,
            handles: Vec::with_capacity(n),
        };
        for i in 0..n {
            let (ready_tx, ready_rx) = mpsc::channel::<Result<u64, String>>();
            let (ask_tx, ask_rx) = mpsc::channel::<u64>();
            let done_tx = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("pod-{i}"))
                .stack_size(64 * 1024)
                .spawn(move || {
                    let ino = enter_fresh_netns().map_err(|e| format!("{e:#}"));
                    let ok = ino.is_ok();
                    let _ = ready_tx.send(ino);
                    if !ok {
                        return;
                    }
                    let addr = loopback(PORT);
                    // A closed channel (the Pods dropped) ends the thread and its
                    // namespace.
                    while let Ok(count) = ask_rx.recv() {
                        let refused = (0..count)
                            .filter(|_| connect_refused(&addr).is_ok())
                            .count() as u64;
                        let _ = done_tx.send(refused);
                    }
                })
                .context("cannot spawn a pod thread")?;
            pods.handles.push(handle);
            pods.ask.push(ask_tx);
            match ready_rx.recv() {
                Ok(Ok(ino)) => pods.netns.push(ino),
                Ok(Err(e)) => bail!("pod thread {i}: {e}"),
                Err(_) => bail!("pod thread {i} ended during setup"),
            }
        }
        Ok(pods)
    }

    /// The namespaces' inode numbers (`pod="netns:<inode>"` in sonde's series).
    pub fn netns(&self) -> &[u64] {
        &self.netns
    }

    /// Every pod makes `count` refused connects; returns the total refused.
    pub fn connect(&self, count: u64) -> anyhow::Result<u64> {
        for tx in &self.ask {
            tx.send(count)
                .map_err(|_| anyhow!("a pod thread ended early"))?;
        }
        let mut refused = 0;
        for _ in &self.ask {
            refused += self
                .done
                .recv_timeout(Duration::from_secs(30))
                .context("a pod thread did not finish its connects")?;
        }
        Ok(refused)
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.ask.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Moves the calling thread (only it) into a new network namespace, brings `lo` up,
/// and returns the namespace's inode. The namespace goes away with the thread.
pub(crate) fn enter_fresh_netns() -> anyhow::Result<u64> {
    // SAFETY: plain syscalls on this thread; CLONE_NEWNET affects the caller only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET) (run as root)");
    }
    set_lo_up().context("cannot bring lo up in the new namespace")?;
    let meta =
        std::fs::metadata("/proc/thread-self/ns/net").context("stat /proc/thread-self/ns/net")?;
    Ok(std::os::unix::fs::MetadataExt::ino(&meta))
}

fn set_lo_up() -> std::io::Result<()> {
    // SAFETY: a datagram socket used for two ioctls on a zeroed, NUL-terminated
    // ifreq, then closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            result = Err(std::io::Error::last_os_error());
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req) != 0 {
                result = Err(std::io::Error::last_os_error());
            }
        }
        libc::close(fd);
        result
    }
}

pub(crate) fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// One connect to a closed port: Ok when refused (one reset each way), else errno.
pub(crate) fn connect_refused(addr: &libc::sockaddr_in) -> Result<(), i32> {
    // SAFETY: a fresh socket, a connect with a valid sockaddr_in of the right
    // length, and a close of that socket.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno());
        }
        let r = libc::connect(
            fd,
            (addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let e = errno();
        libc::close(fd);
        match r {
            0 => Err(0),
            _ if e == libc::ECONNREFUSED => Ok(()),
            _ => Err(e),
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
