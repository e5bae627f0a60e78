//! The runner: drives one script instance and its kernel program on a thread of its
//! own, for `sonde run` and for each script of the daemon.
//!
//! Why a thread per script: a handler may take up to its deadline per call, and a
//! script may be slow on every event. On a thread of its own that cost lands on the
//! script alone: the daemon's HTTP endpoints, signals, reloads and the other scripts
//! run on other threads and keep their latency. A blocked tokio worker (the earlier
//! design) stalled all of them.
//!
//! The loop waits (`poll`) on the program's ring buffers, a wake-up descriptor and the
//! next tick, then:
//!
//! - **drains** the rings, calling `on_event` per record (or `on_events` once per
//!   batch of up to 64 records, when the script defines it). The script's bounded
//!   queue is the ring itself when it is the program's only reader, or a queue of
//!   its own, as large as the rings, when scripts share the program
//!   ([`crate::bpf::live::SharedLive`]): records that do not fit are dropped and
//!   counted for that script alone. A pass that has been busy for
//!   [`Settings::max_backlog`] stops calling the handler and drops what is left in
//!   the queue (counted in [`RunStats::dropped`]): a script that cannot keep up sees
//!   fresh records with gaps, never a backlog minutes old. Records are also drained
//!   on a timer (records submitted without a wake-up), every [`DRAIN_INTERVAL`]
//!   while records flow and every [`DRAIN_IDLE`] after a quiet spell;
//! - **ticks** at the manifest's interval, the first time at once when
//!   [`Settings::tick_at_start`] (the daemon: sources are read before the script
//!   counts as started, so the first scrape has their series);
//! - **measures** the script's memory ([`crate::memory`]) between batches and stops
//!   the script past [`Settings::memory`];
//! - **judges** its health every [`WINDOW`]: `degraded` while handlers fail or records
//!   are dropped, and stopped (`failed`) when every handler call failed for
//!   [`FAIL_AFTER`] windows in a row.
//!
//! [`Control::stop`] ends the loop at once: it interrupts the handler call in
//! progress (every 1024 operations the engine checks the flag) and the rest of a
//! pass is not read.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::bpf::decode::DecodeEnv;
use crate::bpf::live::Live;

use super::Instance;
use crate::event::coarse_ns;

/// How often ring buffers are drained when no wake-up came, while records flow.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// The drain timer once [`IDLE_AFTER`] drains in a row found nothing; the first
/// drain that finds a record brings it back to [`DRAIN_INTERVAL`].
pub const DRAIN_IDLE: Duration = Duration::from_millis(500);
const IDLE_AFTER: u32 = 10;

/// How long the last drain of an ending script may run handlers: records already in
/// the rings get handled, but removing a script or Ctrl-C is not held up by a backlog.
const LAST_DRAIN: Duration = Duration::from_millis(200);

/// Records read between two checks of the clock, the stop flag and memory.
const BATCH: u64 = 64;

/// The window over which a script's health is judged.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Windows in a row in which every handler call failed before the script is stopped.
pub const FAIL_AFTER: u32 = 3;

/// A script is `degraded` for this long after its last failure or dropped record.
const DEGRADED_FOR: Duration = Duration::from_secs(60);

/// What a run is allowed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `on_tick` period (the manifest's `interval`).
    pub interval: Duration,
    /// How long one drain pass may run handlers before the rest is dropped.
    pub max_backlog: Duration,
    /// The script's memory budget in bytes, with the arena that measures it.
    pub memory: Option<(u64, crate::memory::Arena)>,
    /// The first `on_tick` runs at once instead of one interval after the start.
    pub tick_at_start: bool,
}

/// Counters and state a run keeps; read at scrape time and by `/status`.
#[derive(Default)]
pub struct RunStats {
    /// Records read from the ring buffers.
    pub records: AtomicU64,
    /// Records that could not be decoded.
    pub undecodable: AtomicU64,
    /// Records not handled because the script was behind: more than `max_backlog`
    /// of handling in one pass, or its queue at a shared program full.
    pub dropped: AtomicU64,
    /// Time spent in the script's handlers, in nanoseconds.
    pub handler_ns: AtomicU64,
    /// The script's memory at the last measurement, in bytes.
    pub memory: AtomicU64,
    /// 1 while degraded (see [`RunStats::reason`]).
    pub degraded: AtomicU8,
    /// Why the script is degraded or why it was stopped.
    pub reason: Mutex<Option<String>>,
    /// The last handler error, `handler: file:line:col: message`, and when.
    pub last_error: Mutex<Option<(String, SystemTime)>>,
}

impl RunStats {
    pub fn reason(&self) -> Option<String> {
        lock(&self.reason).clone()
    }

    pub fn last_error(&self) -> Option<(String, SystemTime)> {
        lock(&self.last_error).clone()
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed) == 1
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// [`Control::stop`] was called.
    Stopped,
    /// The runner stopped the script: over its memory budget, or failing on every call.
    Failed(String),
}

const RUN: u8 = 0;
const STOP: u8 = 1;
const EXIT: u8 = 2;

/// The way to stop a run from another thread.
pub struct Control {
    state: AtomicU8,
    cancel: Arc<AtomicBool>,
    wake: OwnedFd,
}

impl Control {
    /// A control for runs of `inst`.
    pub fn new(inst: &Instance) -> std::io::Result<Control> {
        // SAFETY: eventfd has no memory preconditions; the descriptor is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Control {
            state: AtomicU8::new(RUN),
            cancel: inst.canceller(),
            // SAFETY: `fd` is a new descriptor owned by nobody else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Ends the run: the handler call in progress is interrupted and the loop
    /// returns. With `exit`, the script ends: a last drain (at most 200 ms of
    /// handling), `on_tick` and `on_exit` run first.
    pub fn stop(&self, exit: bool) {
        self.state
            .store(if exit { EXIT } else { STOP }, Ordering::Release);
        self.cancel.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    fn stopping(&self) -> bool {
        self.state.load(Ordering::Relaxed) != RUN
    }
}

/// What `sonde run` adds around the loop (a recording, the printer).
pub trait Observer {
    /// A raw record, before its handler runs (also when it is dropped unhandled
    /// because the script is behind).
    fn record(&mut self, _env: &DecodeEnv, _source: usize, _bytes: &[u8]) {}
    /// Before each tick's `on_tick`.
    fn tick(&mut self) {}
    /// After each pass of the loop.
    fn pass(&mut self) {}
}

impl Observer for () {}

/// Runs `inst` (and `live`, when the script has a program) until stopped or failed.
pub fn run(
    inst: &mut Instance,
    mut live: Option<&mut Live>,
    settings: &Settings,
    stats: &RunStats,
    ctl: &Control,
    obs: &mut dyn Observer,
) -> Outcome {
    let mut r = Runner {
        settings,
        stats,
        ctl,
        memory: settings.memory.as_ref().map(|(budget, arena)| Memory {
            budget: *budget,
            arena: arena.clone(),
            measured_at: Instant::now() - crate::memory::MEASURE_EVERY,
            net_at: 0,
            headroom: 0,
        }),
        health: Health::new(inst, settings.max_backlog),
        last_error_at: None,
    };
    r.measure(inst, true);
    if settings.tick_at_start && !ctl.stopping() {
        // Before any record: the first pass is the tick alone, so a start waits for
        // the sources to be read, not for a backlog of records.
        obs.tick();
        r.timed(|| inst.on_tick());
        obs.pass();
    }
    let mut next_tick = Instant::now() + settings.interval;
    let mut pace = DrainPace::default();
    // The descriptors to wait on, asked again before each wait: a shared program's
    // change with its readers.
    let wake = ctl.wake.as_raw_fd();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let outcome = loop {
        if ctl.stopping() {
            break Outcome::Stopped;
        }
        let now = Instant::now();
        let mut timeout = next_tick.saturating_duration_since(now);
        if live.is_some() {
            timeout = timeout.min(pace.interval());
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        fds.clear();
        fds.extend(
            live.as_deref()
                .map(|l| l.fds())
                .unwrap_or_default()
                .into_iter()
                .chain([wake])
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }),
        );
        // SAFETY: `fds` is a valid array of pollfd for its length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if ctl.stopping() {
            break Outcome::Stopped;
        }
        if let Some(l) = live.as_deref_mut() {
            pace.after(r.drain(l, inst, obs, false));
        }
        if Instant::now() >= next_tick {
            obs.tick();
            r.timed(|| inst.on_tick());
            // Ticks missed while a tick (or a pass) ran long are skipped, not run back
            // to back.
            next_tick += settings.interval;
            let now = Instant::now();
            if next_tick < now {
                next_tick = now + settings.interval;
            }
        }
        obs.pass();
        if let Some(reason) = r.measure(inst, false) {
            break Outcome::Failed(reason);
        }
        if let Some(reason) = r.judge(inst) {
            break Outcome::Failed(reason);
        }
    };
    if outcome == Outcome::Stopped && ctl.state.load(Ordering::Acquire) == EXIT {
        // The script ends: its last handlers run with the interruption lifted.
        ctl.cancel.store(false, Ordering::Release);
        if let Some(l) = live {
            r.drain(l, inst, obs, true);
        }
        obs.tick();
        r.timed(|| inst.on_tick());
        r.timed(|| inst.on_exit());
        obs.pass();
    }
    r.copy_last_error(inst);
    outcome
}

struct Memory {
    budget: u64,
    arena: crate::memory::Arena,
    measured_at: Instant,
    /// [`crate::memory::thread_net`] at the last measurement.
    net_at: i64,
    headroom: i64,
}

struct Runner<'a> {
    settings: &'a Settings,
    stats: &'a RunStats,
    ctl: &'a Control,
    memory: Option<Memory>,
    health: Health,
    last_error_at: Option<SystemTime>,
}

impl Runner<'_> {
    fn timed(&self, f: impl FnOnce()) {
        let t = Instant::now();
        f();
        self.stats
            .handler_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Reads the rings until empty; returns the records read. Past its budget
    /// (`max_backlog`, or [`LAST_DRAIN`] for the final drain of an ending script)
    /// the rest is read and dropped; a stop ends the pass at once (but for the final
    /// drain).
    fn drain(
        &mut self,
        live: &mut Live,
        inst: &mut Instance,
        obs: &mut dyn Observer,
        last: bool,
    ) -> u64 {
        let start = Instant::now();
        let budget = if last {
            LAST_DRAIN.min(self.settings.max_backlog)
        } else {
            self.settings.max_backlog
        };
        let until = coarse_ns().saturating_add(budget.as_nanos() as u64);
        let env = live.env.clone();
        let ctl = self.ctl;
        let mut total = 0;
        let mut behind = false;
        let mut cut = false;
        // A script with `on_events` gets each drained batch in one call.
        let batching = inst.has_on_events();
        let mut batch = Vec::new();
        loop {
            let mut undecodable = 0;
            let mut dropped = 0;
            let n = live.drain(BATCH, |r| {
                // A recording keeps every record, handled or not.
                obs.record(&env, r.source, r.bytes);
                if behind {
                    dropped += 1;
                    return true;
                }
                // The handler may keep its record (`this.last = ev`), and the
                // engine takes only owned values: the record is copied out of the
                // ring here, inline (no allocation) up to 64 bytes.
                match r.to_record() {
                    Ok(ev) if batching => {
                        batch.push(ev);
                        return true;
                    }
                    Ok(ev) => inst.on_record(ev),
                    Err(e) => {
                        undecodable += 1;
                        tracing::debug!(error = %e, "undecodable record");
                    }
                }
                if !last && ctl.stopping() {
                    cut = true;
                    return false;
                }
                behind = coarse_ns() >= until;
                true
            });
            if !batch.is_empty() {
                inst.on_records(&mut batch);
                if !last && ctl.stopping() {
                    cut = true;
                }
                behind = behind || coarse_ns() >= until;
            }
            total += n;
            // Records its queue at a shared program had no room for.
            dropped += live.take_dropped();
            let s = self.stats;
            s.records.fetch_add(n, Ordering::Relaxed);
            if undecodable > 0 {
                s.undecodable.fetch_add(undecodable, Ordering::Relaxed);
            }
            if dropped > 0 {
                s.dropped.fetch_add(dropped, Ordering::Relaxed);
                self.health.dropping = true;
            }
            if cut || n < BATCH {
                break;
            }
            if !behind && self.over_headroom() && self.measure(inst, true).is_some() {
                break; // the loop fails the script right after
            }
        }
        self.stats
            .handler_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        total
    }

    fn over_headroom(&self) -> bool {
        self.memory
            .as_ref()
            .is_some_and(|m| crate::memory::thread_net() - m.net_at > m.headroom)
    }

    /// Measures the script's memory when it is due (or `now`); returns why the
    /// script must stop when it is over its budget.
    fn measure(&mut self, inst: &Instance, now: bool) -> Option<String> {
        let over = self.over_headroom();
        let m = self.memory.as_mut()?;
        if !now && !over && m.measured_at.elapsed() < crate::memory::MEASURE_EVERY {
            return None;
        }
        let bytes = m.arena.live_bytes();
        m.measured_at = Instant::now();
        m.net_at = crate::memory::thread_net();
        m.headroom = m.budget as i64 - bytes as i64;
        self.stats.memory.store(bytes, Ordering::Relaxed);
        inst.set_headroom(Some(m.headroom));
        (bytes > m.budget).then(|| {
            format!(
                "memory: the script holds {} MiB, over its budget of {} MiB (limits.memory)",
                bytes >> 20,
                m.budget >> 20
            )
        })
    }

    /// Judges the last window: degraded or failing.
    fn judge(&mut self, inst: &Instance) -> Option<String> {
        self.copy_last_error(inst);
        self.health.judge(inst, self.stats)
    }

    fn copy_last_error(&mut self, inst: &Instance) {
        if let Some((e, at)) = inst.last_error() {
            if self.last_error_at != Some(*at) {
                self.last_error_at = Some(*at);
                *lock(&self.stats.last_error) = Some((e.clone(), *at));
            }
        }
    }
}

/// Handler failures and drops, judged per [`WINDOW`].
struct Health {
    max_backlog: Duration,
    window_start: Instant,
    calls_at: u64,
    errors_at: u64,
    errors_seen: u64,
    failing_windows: u32,
    dropping: bool,
    /// When trouble was last seen, and whether it was records dropped (else errors).
    trouble: Option<(Instant, bool)>,
}

fn error_total(inst: &Instance) -> u64 {
    inst.errors().values().sum()
}

impl Health {
    fn new(inst: &Instance, max_backlog: Duration) -> Health {
        let errors = error_total(inst);
        Health {
            max_backlog,
            window_start: Instant::now(),
            calls_at: inst.calls(),
            errors_at: errors,
            errors_seen: errors,
            failing_windows: 0,
            dropping: false,
            trouble: None,
        }
    }

    /// Updates `stats.degraded` and its reason; returns why the script must stop when
    /// every call failed for [`FAIL_AFTER`] windows.
    fn judge(&mut self, inst: &Instance, stats: &RunStats) -> Option<String> {
        let errors = error_total(inst);
        let now = Instant::now();
        if errors > self.errors_seen {
            self.trouble = Some((now, false));
        }
        if self.dropping {
            self.trouble = Some((now, true));
        }
        self.errors_seen = errors;
        self.dropping = false;
        if self.window_start.elapsed() >= WINDOW {
            let calls = inst.calls() - self.calls_at;
            let failed = errors - self.errors_at;
            if failed > 0 && failed * 10 >= calls * 9 {
                self.failing_windows += 1;
            } else {
                self.failing_windows = 0;
            }
            self.window_start = now;
            self.calls_at = inst.calls();
            self.errors_at = errors;
            if self.failing_windows >= FAIL_AFTER {
                let last = lock(&stats.last_error)
                    .as_ref()
                    .map(|(e, _)| e.clone())
                    .unwrap_or_default();
                return Some(format!(
                    "errors: every handler call failed for {}s; last: {last}",
                    WINDOW.as_secs() * u64::from(FAIL_AFTER)
                ));
            }
        }
        let reason = match self.trouble {
            Some((at, dropped)) if at.elapsed() < DEGRADED_FOR => Some(if dropped {
                format!(
                    "behind: records dropped after {:?} of handling in one pass \
                     (limits.max_backlog) or because its queue was full; {} dropped so far",
                    self.max_backlog,
                    stats.dropped.load(Ordering::Relaxed)
                )
            } else {
                "handler errors in the last minute (see last_error)".to_string()
            }),
            _ => None,
        };
        stats
            .degraded
            .store(reason.is_some() as u8, Ordering::Relaxed);
        *lock(&stats.reason) = reason;
        None
    }
}

/// The drain timer's period: [`DRAIN_INTERVAL`], or [`DRAIN_IDLE`] after
/// [`IDLE_AFTER`] empty drains in a row.
#[derive(Default)]
struct DrainPace {
    empty: u32,
}

impl DrainPace {
    fn after(&mut self, records: u64) {
        self.empty = if records > 0 {
            0
        } else {
            self.empty.saturating_add(1)
        };
    }

    fn interval(&self) -> Duration {
        if self.empty >= IDLE_AFTER {
            DRAIN_IDLE
        } else {
            DRAIN_INTERVAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_timer_slows_after_empty_drains_and_recovers_on_a_record() {
        let mut p = DrainPace::default();
        for _ in 0..IDLE_AFTER - 1 {
            p.after(0);
            assert_eq!(p.interval(), DRAIN_INTERVAL);
        }
        p.after(0);
        assert_eq!(p.interval(), DRAIN_IDLE);
        p.after(3);
        assert_eq!(p.interval(), DRAIN_INTERVAL);
    }
}
