//! One running script: its Rhai instance and (when it has one) its attached kernel
//! program, driven by one tokio task.
//!
//! The task drains the program's ring buffers when they signal data and on a timer
//! (records submitted without a wake-up wait at most [`DRAIN_INTERVAL`] while records
//! flow, [`DRAIN_IDLE`] after a quiet spell: an idle daemon with a dozen programs
//! does not wake a hundred times a second to find empty rings),
//! calls `on_tick` at the script's interval, and on [`Task::stop`] drains once more
//! and hands the instance and the program back. That hand-back is what lets a reload
//! put a new version of a script on the same attached program: nothing is detached,
//! no kernel count is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bpf::live::Live;
use crate::script::Instance;

/// How often ring buffers are drained when no wake-up came, while records flow.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// The drain timer once [`IDLE_AFTER`] drains in a row found nothing; the first
/// drain that finds a record brings it back to [`DRAIN_INTERVAL`].
pub const DRAIN_IDLE: Duration = Duration::from_millis(500);
const IDLE_AFTER: u32 = 10;

/// Records handled before the task yields to others (HTTP, sinks, other scripts):
/// under a flood a scrape waits for at most one batch.
const DRAIN_BATCH: u64 = 1024;

/// Counters a unit task keeps; read at scrape time.
#[derive(Default)]
pub struct UnitStats {
    /// Records read from the ring buffers.
    pub records: AtomicU64,
    /// Records that could not be decoded.
    pub undecodable: AtomicU64,
    /// Time spent in the script's handlers, in nanoseconds.
    pub handler_ns: AtomicU64,
}

/// A unit task and the way to stop it.
pub struct Task {
    stop: oneshot::Sender<bool>,
    join: JoinHandle<(Instance, Option<Live>)>,
}

impl Task {
    /// Starts the task on the current tokio runtime.
    pub fn spawn(
        inst: Instance,
        live: Option<Live>,
        interval: Duration,
        stats: Arc<UnitStats>,
    ) -> Task {
        let (stop, stopped) = oneshot::channel();
        let join = tokio::spawn(run(inst, live, interval, stats, stopped));
        Task { stop, join }
    }

    /// Stops the task after a last drain. With `exit`, the script ends: a last
    /// `on_tick` and `on_exit` run. Returns the instance and the program, still
    /// attached; `None` if the task panicked.
    pub async fn stop(self, exit: bool) -> Option<(Instance, Option<Live>)> {
        let _ = self.stop.send(exit);
        match self.join.await {
            Ok(parts) => Some(parts),
            Err(e) => {
                tracing::error!(error = %e, "script task failed");
                None
            }
        }
    }
}

async fn run(
    mut inst: Instance,
    mut live: Option<Live>,
    interval: Duration,
    stats: Arc<UnitStats>,
    mut stopped: oneshot::Receiver<bool>,
) -> (Instance, Option<Live>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = DrainPace::default();
    let mut poll = live.is_some();
    loop {
        let ready = async {
            match live.as_ref() {
                Some(l) if poll => l.readable().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = &mut stopped => {
                drain(live.as_mut(), &mut inst, &stats).await;
                // A dropped sender (the daemon is going away) ends the script too.
                if exit.unwrap_or(true) {
                    timed(&stats, || inst.on_tick());
                    timed(&stats, || inst.on_exit());
                }
                return (inst, live);
            }
            _ = ticker.tick() => {
                pace.after(drain(live.as_mut(), &mut inst, &stats).await);
                timed(&stats, || inst.on_tick());
            }
            r = ready => {
                if let Err(e) = r {
                    tracing::error!(script = inst.name(), error = %e, "ring buffer poll failed; reading on the timer only");
                    poll = false;
                }
                pace.after(drain(live.as_mut(), &mut inst, &stats).await);
            }
            _ = tokio::time::sleep(pace.interval()), if live.is_some() => {
                pace.after(drain(live.as_mut(), &mut inst, &stats).await);
            }
        }
    }
}

fn timed(stats: &UnitStats, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    stats
        .handler_ns
        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
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

/// Reads the rings empty, yielding to other tasks between batches; returns the
/// records read.
async fn drain(live: Option<&mut Live>, inst: &mut Instance, stats: &UnitStats) -> u64 {
    let Some(live) = live else { return 0 };
    let mut total = 0;
    loop {
        let t = Instant::now();
        let mut undecodable = 0;
        let n = live.drain(DRAIN_BATCH, |_, _, decoded| match decoded {
            Ok(ev) => inst.on_record(ev),
            Err(e) => {
                undecodable += 1;
                tracing::debug!(error = %e, "undecodable record");
            }
        });
        if n > 0 {
            stats.records.fetch_add(n, Ordering::Relaxed);
            stats
                .handler_ns
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        if undecodable > 0 {
            stats.undecodable.fetch_add(undecodable, Ordering::Relaxed);
        }
        total += n;
        if n < DRAIN_BATCH {
            return total;
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod pace_tests {
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
