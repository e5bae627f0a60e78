//! A program loaded, attached and ready to read: its maps, its ring buffers (with the
//! descriptors to wait on), and the decoding environment its records need. Shared by `sonde run`
//! and the daemon, whose script reloads keep a [`Live`] program attached while the
//! script around it changes.
//!
//! Several scripts can read one loaded program: [`Live::into_shared`] turns it into a
//! [`SharedLive`], and each [`SharedLive::subscribe`] is a [`Live`] of its own for one
//! script. The kernel runs the program once and submits each record once, to one
//! ring. While one script reads the program, it reads the rings itself, as a
//! [`Live::start`]ed program does. While two or more do, a reader thread copies
//! every record into each subscriber's bounded queue (as large as the rings) and
//! wakes it. A subscriber whose queue is full loses the records that do not fit
//! ([`Live::take_dropped`]); the others go on, so a slow script never stalls the
//! others. When every queue is full the reader leaves the records in the rings,
//! where the kernel counts what it cannot queue. Queued records are counted in no
//! script's memory arena; each queue holds at most what the rings hold. When a
//! second script joins a lone reader that is in the middle of a drain, the reader
//! thread takes over the rings once the handler call in progress ends. The maps are the same for every subscriber: what one script reads, the
//! others read. Scripts only read maps, with one exception that sharing changes: a
//! `stacks` entry is freed once a record's stack is read and kept in a cache for 2 s,
//! so a subscriber that reads the same stack more than 2 s after the first finds it
//! empty. The program is detached when the last subscriber and the [`SharedLive`]
//! are dropped.
//!
//! ```no_run
//! # fn f() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use sonde::bpf::{catalog, live::Live};
//! use sonde::btf::KernelBtf;
//! use sonde::pods::HostResolver;
//!
//! let btf = KernelBtf::locate(None)?;
//! let spec = catalog::find("tcp_reset").unwrap();
//! let mut live = Live::start(spec, &[], &btf, Arc::new(HostResolver::new("node-1")), false)?;
//! live.wait(std::time::Duration::from_secs(1))?;
//! // Read in place, from the ring's own bytes.
//! live.drain(u64::MAX, |r| { let _ = r.view().map(|v| v.get("kind")); true });
//!
//! // Two scripts, one program in the kernel.
//! let shared = live.into_shared()?;
//! let (mut a, mut b) = (shared.subscribe()?, shared.subscribe()?);
//! a.wait(std::time::Duration::from_secs(1))?;
//! a.drain(u64::MAX, |_| true);
//! b.drain(u64::MAX, |_| true); // the same records
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};

use super::decode::{DecodeEnv, DecodeError, Record, RecordType, RecordView};
use super::ksyms::Symbols;
use super::{catalog::ProgramSpec, BpfError, Loaded};
use crate::btf::KernelBtf;
use crate::pods::PodResolver;
use crate::script::ParamValue;

/// A loaded program with its ring buffers, read by one script.
pub struct Live {
    pub loaded: Arc<Loaded>,
    pub env: Arc<DecodeEnv>,
    /// `enum skb_drop_reason` names, when the program's records or maps use them.
    pub drop_reasons: HashMap<u64, crate::label::Label>,
    /// Ring buffer map names, in source order.
    pub sources: Vec<String>,
    feed: Feed,
}

/// Where a [`Live`] reads its records.
enum Feed {
    /// The rings themselves: the only reader.
    Own {
        rings: Vec<RingBuf<MapData>>,
        decoders: Vec<RecordType>,
    },
    /// A queue of its own, filled by a shared program's reader thread.
    Shared(Subscription),
}

impl Live {
    /// Loads and attaches `spec` (see [`super::load`]) and prepares its records'
    /// decoding: drop-reason names and kernel symbols are read only when a record or
    /// map of this program needs them. `record_notes` keeps every symbol and stack
    /// resolved while decoding, for recordings.
    pub fn start(
        spec: &'static ProgramSpec,
        params: &[(String, ParamValue)],
        btf: &KernelBtf,
        pods: Arc<dyn PodResolver>,
        record_notes: bool,
    ) -> Result<Live, BpfError> {
        let mut loaded = super::load(spec, params, btf)?;
        let table = loaded.maps.clone();
        let event_sources = loaded.take_sources();
        let needs = event_sources
            .iter()
            .fold(table.needs(), |acc, s| acc | s.decoder.needs());
        let drop_reasons = if needs.drop_reasons {
            super::drop_reason_names(btf)
        } else {
            HashMap::new()
        };
        let stack_table = table.clone();
        let env = Arc::new(DecodeEnv {
            pods,
            drop_reasons: drop_reasons.clone(),
            ksyms: if needs.symbols {
                Symbols::Kernel
            } else {
                Symbols::none()
            },
            stacks: Some(Box::new(move |id| stack_table.stack(id))),
            notes: record_notes.then(|| Mutex::new(Vec::new())),
            pod_cache: Default::default(),
        });
        table.set_env(env.clone());
        let mut sources = Vec::with_capacity(event_sources.len());
        let mut rings = Vec::with_capacity(event_sources.len());
        let mut decoders = Vec::with_capacity(event_sources.len());
        for s in event_sources {
            sources.push(s.map);
            rings.push(s.ring);
            decoders.push(s.decoder.bind(&env));
        }
        Ok(Live {
            loaded: Arc::new(loaded),
            env,
            drop_reasons,
            sources,
            feed: Feed::Own { rings, decoders },
        })
    }

    /// Makes this program one that several scripts read: a reader thread takes over
    /// its rings and hands each record to every [`SharedLive::subscribe`]r. (A
    /// subscriber's [`Live`] gives back the program it reads.)
    pub fn into_shared(self) -> std::io::Result<Arc<SharedLive>> {
        let (rings, decoders) = match self.feed {
            Feed::Own { rings, decoders } => (rings, decoders),
            Feed::Shared(sub) => return Ok(sub.program.clone()),
        };
        // Each subscriber may hold what the rings hold.
        let queue_bytes = rings
            .iter()
            .map(|r| ring_bytes(r.as_raw_fd()).unwrap_or(DEFAULT_RING_BYTES))
            .sum();
        let ring_fds: Vec<RawFd> = rings.iter().map(|r| r.as_raw_fd()).collect();
        let rings = Arc::new(Mutex::new(rings));
        let subscribers: Arc<Mutex<Vec<Arc<Queue>>>> = Arc::default();
        let reader = if ring_fds.is_empty() {
            None
        } else {
            let (stop, kick) = (eventfd()?, eventfd()?);
            let fds = [stop.as_raw_fd(), kick.as_raw_fd()];
            let (subs, thread_rings, thread_fds) =
                (subscribers.clone(), rings.clone(), ring_fds.clone());
            let thread = std::thread::Builder::new()
                .name(format!("ring:{}", truncate(self.loaded.spec.name)))
                .spawn(move || read_loop(&thread_rings, &thread_fds, &subs, fds))?;
            Some(Reader {
                stop,
                kick,
                thread: Some(thread),
            })
        };
        Ok(Arc::new(SharedLive {
            reader,
            loaded: self.loaded,
            env: self.env,
            drop_reasons: self.drop_reasons,
            sources: self.sources,
            decoders,
            queue_bytes,
            rings,
            ring_fds,
            subscribers,
            readers: AtomicUsize::new(0),
        }))
    }

    /// The shared program this script reads, when it shares one.
    pub fn shared(&self) -> Option<&Arc<SharedLive>> {
        match &self.feed {
            Feed::Own { .. } => None,
            Feed::Shared(sub) => Some(&sub.program),
        }
    }

    /// The descriptors to wait on now: each is readable when records are there to
    /// read (the rings themselves, or this subscriber's wake-up). They change while
    /// a shared program gains and loses readers: ask again before each wait.
    pub fn fds(&self) -> Vec<RawFd> {
        match &self.feed {
            Feed::Own { rings, .. } => rings.iter().map(|r| r.as_raw_fd()).collect(),
            Feed::Shared(sub) => {
                let mut fds = vec![sub.queue.wake.as_raw_fd()];
                if !sub.program.fans_out() {
                    fds.extend_from_slice(&sub.program.ring_fds);
                }
                fds
            }
        }
    }

    /// Waits until a ring buffer has data or `timeout` passes (sleeps the whole
    /// timeout when there is no ring).
    pub fn wait(&self, timeout: Duration) -> std::io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .fds()
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads queued records, at most `limit`: `f(record)`, which returns whether
    /// to go on. Each record is handed over where it lies (the ring slot, or the
    /// shared program's queue): `f` reads it in place or takes a copy it may keep.
    /// Returns how many were read; fewer than `limit`, with `f` never saying stop,
    /// means the rings were emptied.
    pub fn drain(&mut self, limit: u64, mut f: impl FnMut(RingRecord<'_>) -> bool) -> u64 {
        let mut n = 0;
        match &mut self.feed {
            Feed::Own { rings, decoders } => {
                for (i, rb) in rings.iter_mut().enumerate() {
                    while n < limit {
                        let Some(item) = rb.next() else { break };
                        n += 1;
                        let r = RingRecord {
                            source: i,
                            bytes: &item,
                            shared: None,
                            ty: &decoders[i],
                        };
                        if !f(r) {
                            return n;
                        }
                    }
                }
            }
            Feed::Shared(sub) => {
                let program = &sub.program;
                // Reset before reading: a record queued after this wakes again.
                sub.queue.reset_wake();
                // Alone, the rings are read here, after what the reader queued before
                // (it queues only while holding the rings: nothing comes in between).
                let mut rings = (!program.fans_out()).then(|| lock(&program.rings));
                while n < limit {
                    let Some((i, bytes)) = sub.queue.pop() else {
                        break;
                    };
                    n += 1;
                    let r = RingRecord {
                        source: i,
                        bytes: &bytes,
                        shared: Some(&bytes),
                        ty: &program.decoders[i],
                    };
                    if !f(r) {
                        return n;
                    }
                }
                for (i, rb) in rings.iter_mut().flat_map(|r| r.iter_mut().enumerate()) {
                    while n < limit {
                        if program.fans_out() {
                            // A script joined: the reader thread takes the rings
                            // over now, not after this drain.
                            return n;
                        }
                        let Some(item) = rb.next() else { break };
                        n += 1;
                        let r = RingRecord {
                            source: i,
                            bytes: &item,
                            shared: None,
                            ty: &program.decoders[i],
                        };
                        if !f(r) {
                            return n;
                        }
                    }
                }
            }
        }
        n
    }

    /// Records this subscriber lost since the last call because its queue was full
    /// (always 0 for the only reader of the rings: the kernel counts those losses).
    pub fn take_dropped(&self) -> u64 {
        match &self.feed {
            Feed::Own { .. } => 0,
            Feed::Shared(sub) => sub.queue.dropped.swap(0, Ordering::Relaxed),
        }
    }
}

/// One record of a ring, where it lies: in the ring's slot (released once the
/// [`Live::drain`] callback returns) or in a shared program's queue.
pub struct RingRecord<'a> {
    /// Which of the program's rings (an index into [`Live::sources`]).
    pub source: usize,
    /// The raw bytes, as the kernel wrote them.
    pub bytes: &'a [u8],
    /// The queue's buffer, when the record came through one.
    shared: Option<&'a Arc<[u8]>>,
    ty: &'a RecordType,
}

impl RingRecord<'_> {
    /// The record read in place: nothing copied, valid inside the callback only.
    pub fn view(&self) -> Result<RecordView<'_>, DecodeError> {
        self.ty.view(self.bytes)
    }

    /// The record as a value that may outlive the ring slot: a copy (inline up to
    /// 64 bytes), or the queue's shared buffer.
    pub fn to_record(&self) -> Result<Record, DecodeError> {
        match self.shared {
            Some(b) => self.ty.record_shared(b),
            None => self.ty.record(self.bytes),
        }
    }
}

/// A program several scripts read, each through a [`Live`] of its own.
pub struct SharedLive {
    /// First field: stopped (and its rings closed) before the program detaches.
    reader: Option<Reader>,
    pub loaded: Arc<Loaded>,
    pub env: Arc<DecodeEnv>,
    pub drop_reasons: HashMap<u64, crate::label::Label>,
    pub sources: Vec<String>,
    decoders: Vec<RecordType>,
    /// The most each subscriber may have queued, in record bytes.
    queue_bytes: usize,
    /// The rings: read by the reader thread while two or more scripts read the
    /// program, by the one script otherwise.
    rings: Arc<Mutex<Vec<RingBuf<MapData>>>>,
    ring_fds: Vec<RawFd>,
    subscribers: Arc<Mutex<Vec<Arc<Queue>>>>,
    /// `subscribers.len()`, read without the lock on the per-record path.
    readers: AtomicUsize,
}

impl SharedLive {
    /// A reader of this program for one script: from now on it gets every record.
    pub fn subscribe(self: &Arc<Self>) -> std::io::Result<Live> {
        let queue = Arc::new(Queue {
            items: Mutex::default(),
            capacity: self.queue_bytes,
            dropped: AtomicU64::new(0),
            wake: eventfd()?,
        });
        {
            let mut subs = lock(&self.subscribers);
            subs.push(queue.clone());
            self.readers.store(subs.len(), Ordering::Relaxed);
        }
        self.kick();
        Ok(Live {
            loaded: self.loaded.clone(),
            env: self.env.clone(),
            drop_reasons: self.drop_reasons.clone(),
            sources: self.sources.clone(),
            feed: Feed::Shared(Subscription {
                program: self.clone(),
                queue,
            }),
        })
    }

    /// How many scripts read it now.
    pub fn subscribers(&self) -> usize {
        lock(&self.subscribers).len()
    }

    /// What each subscriber may have queued at most, in bytes.
    pub fn queue_bytes(&self) -> usize {
        self.queue_bytes
    }

    /// Whether the reader thread hands the records out (two or more readers).
    fn fans_out(&self) -> bool {
        self.readers.load(Ordering::Relaxed) >= 2
    }

    /// Tells the reader and the subscribers that the readers changed.
    fn kick(&self) {
        if let Some(r) = &self.reader {
            signal(r.kick.as_raw_fd());
        }
        for q in lock(&self.subscribers).iter() {
            signal(q.wake.as_raw_fd());
        }
    }
}

impl Drop for SharedLive {
    fn drop(&mut self) {
        if let Some(r) = &mut self.reader {
            signal(r.stop.as_raw_fd());
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct Reader {
    stop: OwnedFd,
    /// Signalled when subscribers come or go.
    kick: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One subscriber's place at a shared program; leaves it when dropped.
struct Subscription {
    program: Arc<SharedLive>,
    queue: Arc<Queue>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        {
            let mut subs = lock(&self.program.subscribers);
            subs.retain(|q| !Arc::ptr_eq(q, &self.queue));
            self.program.readers.store(subs.len(), Ordering::Relaxed);
        }
        // The one left reads the rings itself from now on.
        self.program.kick();
    }
}

/// Records waiting for one subscriber, bounded in bytes.
struct Queue {
    items: Mutex<Items>,
    capacity: usize,
    /// Records that did not fit, not yet taken by [`Live::take_dropped`].
    dropped: AtomicU64,
    /// Readable while records were queued since the subscriber last looked.
    wake: OwnedFd,
}

#[derive(Default)]
struct Items {
    records: VecDeque<(usize, Arc<[u8]>)>,
    bytes: usize,
}

impl Queue {
    /// Queues what fits of `batch` and wakes the subscriber.
    fn push(&self, batch: &[(usize, Arc<[u8]>)]) {
        let mut dropped = 0;
        let mut queued = false;
        {
            let mut q = lock(&self.items);
            for (source, bytes) in batch {
                if q.bytes + bytes.len() > self.capacity {
                    dropped += 1;
                    continue;
                }
                q.bytes += bytes.len();
                q.records.push_back((*source, bytes.clone()));
                queued = true;
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if queued {
            signal(self.wake.as_raw_fd());
        }
    }

    fn has_room(&self) -> bool {
        lock(&self.items).bytes < self.capacity
    }

    fn pop(&self) -> Option<(usize, Arc<[u8]>)> {
        let mut q = lock(&self.items);
        let item = q.records.pop_front()?;
        q.bytes -= item.1.len();
        Some(item)
    }

    fn reset_wake(&self) {
        reset(self.wake.as_raw_fd());
    }
}

/// How often the reader looks at the rings when no wake-up came (records submitted
/// without one), while records flow; [`READ_IDLE`] after a quiet spell.
const READ_INTERVAL: Duration = Duration::from_millis(100);
const READ_IDLE: Duration = Duration::from_millis(500);
const IDLE_AFTER: u32 = 10;

/// Records copied out of the rings before they are handed to the subscribers.
const BATCH: usize = 256;

/// A ring's size when the kernel does not say.
const DEFAULT_RING_BYTES: usize = 256 << 10;

/// How long the reader waits while every subscriber's queue is full: the records stay
/// in the rings (the kernel counts what it cannot queue there), and reading resumes
/// once a subscriber made room.
const FULL_WAIT: Duration = Duration::from_millis(10);

/// The reader thread. While two or more scripts read the program it waits on the
/// rings, copies each record once and hands it to every subscriber; otherwise it
/// sleeps until `kick`. It runs no script code, so it is never late by more than a
/// copy; and it reads only while some subscriber has room, so a flood nobody can
/// keep up with costs the kernel's ring, not a core copying records to be dropped.
fn read_loop(
    rings: &Mutex<Vec<RingBuf<MapData>>>,
    ring_fds: &[RawFd],
    subscribers: &Mutex<Vec<Arc<Queue>>>,
    [stop, kick]: [RawFd; 2],
) {
    let mut fds: Vec<libc::pollfd> = [stop, kick]
        .iter()
        .chain(ring_fds)
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut empty = 0u32;
    let mut batch: Vec<(usize, Arc<[u8]>)> = Vec::with_capacity(BATCH);
    loop {
        let subs = lock(subscribers).clone();
        let fan_out = subs.len() >= 2;
        let room = fan_out && subs.iter().any(|q| q.has_room());
        // Without room (or alone), wait on `stop` and `kick` only: a full ring stays
        // readable.
        let (n, timeout) = match (fan_out, room, empty >= IDLE_AFTER) {
            (false, _, _) => (2, None),
            (true, false, _) => (2, Some(FULL_WAIT)),
            (true, true, false) => (fds.len(), Some(READ_INTERVAL)),
            (true, true, true) => (fds.len(), Some(READ_IDLE)),
        };
        let ms = timeout.map_or(-1, |t| t.as_millis() as i32);
        // SAFETY: `fds` is a valid array of pollfd of at least `n` entries.
        unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
        if fds[0].revents & libc::POLLIN != 0 {
            return;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            reset(kick);
        }
        if !room {
            continue;
        }
        let mut read = 0;
        let mut held = lock(rings);
        loop {
            // A subscriber that left makes the last one read the rings itself.
            let subs = lock(subscribers).clone();
            if subs.len() < 2 {
                break;
            }
            batch.clear();
            for (i, rb) in held.iter_mut().enumerate() {
                while batch.len() < BATCH {
                    let Some(item) = rb.next() else { break };
                    batch.push((i, Arc::from(&*item)));
                }
            }
            if batch.is_empty() {
                break;
            }
            read += batch.len();
            for q in &subs {
                q.push(&batch);
            }
            if batch.len() < BATCH || !subs.iter().any(|q| q.has_room()) {
                break;
            }
        }
        drop(held);
        empty = if read > 0 { 0 } else { empty.saturating_add(1) };
    }
}

/// A ring buffer's size in bytes, from the kernel's `max_entries`.
fn ring_bytes(fd: RawFd) -> Option<usize> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("max_entries:"))
        .and_then(|v| v.trim().parse().ok())
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; the descriptor is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clears a non-blocking eventfd.
fn reset(fd: RawFd) {
    let mut n: u64 = 0;
    // SAFETY: reads 8 bytes into a u64 we own from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut n as *mut u64).cast(), std::mem::size_of::<u64>()) };
}

fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
    unsafe { libc::write(fd, (&one as *const u64).cast(), std::mem::size_of::<u64>()) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Linux keeps 15 bytes of a thread name (`ring:` and 10 of the program's).
fn truncate(name: &str) -> &str {
    let mut end = name.len().min(10);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize) -> Queue {
        Queue {
            items: Mutex::default(),
            capacity,
            dropped: AtomicU64::new(0),
            wake: eventfd().unwrap(),
        }
    }

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    /// The reader hands every record to every subscriber without waiting: one that
    /// never reads fills its own queue and loses what does not fit, counted for it
    /// alone, while the one that keeps up gets everything.
    #[test]
    fn a_full_queue_drops_for_its_subscriber_only() {
        let (slow, fast) = (queue(100), queue(100));
        let mut got = Vec::new();
        for b in 0..10u8 {
            let batch: Vec<(usize, Arc<[u8]>)> = (0..3u8)
                .map(|i| (0, Arc::from(&[b * 3 + i; 20][..])))
                .collect();
            slow.push(&batch);
            fast.push(&batch);
            assert!(readable(fast.wake.as_raw_fd()));
            fast.reset_wake();
            assert!(!readable(fast.wake.as_raw_fd()));
            while let Some((_, r)) = fast.pop() {
                got.push(r[0]);
            }
        }
        assert_eq!(got, (0..30).collect::<Vec<u8>>());
        assert_eq!(fast.dropped.load(Ordering::Relaxed), 0);
        // 100 bytes hold the first five records; the 25 after them were dropped.
        assert_eq!(slow.dropped.load(Ordering::Relaxed), 25);
        let kept: Vec<u8> = std::iter::from_fn(|| slow.pop())
            .map(|(_, r)| r[0])
            .collect();
        assert_eq!(kept, [0, 1, 2, 3, 4]);
        // Room again once read.
        slow.push(&[(1, Arc::from(&[7u8; 20][..]))]);
        assert_eq!(slow.pop().map(|(s, r)| (s, r[0])), Some((1, 7)));
    }
}
