//! The last resort of a shutdown: the process ends by a deadline, whatever is stuck.
//!
//! After SIGTERM or SIGINT the daemon stops its scripts, its HTTP server and its
//! sinks, each bounded by what is left of `shutdown_timeout`. What no deadline can
//! interrupt (a write(2) to a pipe nobody reads, a handler that does not return) is
//! left behind by the runtime's own bounded shutdown. Should anything still hold
//! the process past `shutdown_timeout` + [`EXIT_MARGIN`], the [`Watchdog`] logs the
//! step that was in progress and ends the process with `_exit` (exit status
//! [`EXIT_FORCED`]): nothing stays in the kernel, since every program and link is
//! held by a file descriptor the kernel closes.
//!
//! ```no_run
//! use std::time::Duration;
//! use sonde::daemon::shutdown::Watchdog;
//!
//! let watchdog = Watchdog::new();
//! // SIGTERM came:
//! watchdog.arm(Duration::from_secs(5));
//! watchdog.step("flushing event sinks");
//! // ... everything stopped in time:
//! watchdog.disarm();
//! ```

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Past `shutdown_timeout`, how long the watchdog still waits before it ends the
/// process.
pub const EXIT_MARGIN: Duration = Duration::from_millis(500);

/// Exit status of a shutdown the watchdog had to end.
pub const EXIT_FORCED: i32 = 3;

#[derive(Default)]
struct State {
    step: String,
    done: bool,
}

/// Ends the process when a shutdown overruns; see the [module docs](self).
#[derive(Clone, Default)]
pub struct Watchdog {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Watchdog {
    /// A watchdog not armed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the countdown: `limit` from now, the process ends unless
    /// [`Watchdog::disarm`] was called.
    pub fn arm(&self, limit: Duration) {
        let inner = self.inner.clone();
        let start = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("sonde-watchdog".into())
            .spawn(move || {
                let (lock, cv) = &*inner;
                let state = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (state, _) = cv
                    .wait_timeout_while(state, limit, |s| !s.done)
                    .unwrap_or_else(|e| e.into_inner());
                if state.done {
                    return;
                }
                let step = state.step.clone();
                drop(state);
                force_exit(&step, start.elapsed());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the shutdown watchdog; shutdown is not bounded");
        }
    }

    /// Says what the shutdown is doing now (named if the watchdog has to act).
    pub fn step(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::debug!(step = %what, "shutdown");
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner()).step = what;
    }

    /// The shutdown finished: the process ends on its own.
    pub fn disarm(&self) {
        let (lock, cv) = &*self.inner;
        lock.lock().unwrap_or_else(|e| e.into_inner()).done = true;
        cv.notify_all();
    }
}

/// Logs what was still busy and ends the process at once. The log line is written
/// from another thread, given a moment: stderr itself may be what blocks.
fn force_exit(step: &str, after: Duration) -> ! {
    let (tx, rx) = std::sync::mpsc::channel();
    let step = step.to_string();
    let _ = std::thread::Builder::new().spawn(move || {
        tracing::error!(
            busy = %step,
            ?after,
            "shutdown did not finish within shutdown_timeout; exiting now (what was still queued is lost)"
        );
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_millis(200));
    // SAFETY: _exit ends the process without running atexit handlers or flushing
    // stdio, which may be what is stuck.
    unsafe { libc::_exit(EXIT_FORCED) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disarmed_watchdog_lets_the_process_be() {
        let w = Watchdog::new();
        w.arm(Duration::from_millis(50));
        w.step("testing");
        w.disarm();
        std::thread::sleep(Duration::from_millis(150));
        // Still here.
    }

    /// Run by [`an_overrun_ends_the_process_with_exit_forced`] in a child process.
    #[test]
    fn overrun_child() {
        if std::env::var_os("SONDE_WATCHDOG_CHILD").is_none() {
            return;
        }
        let w = Watchdog::new();
        w.arm(Duration::from_millis(100));
        w.step("writing to a stuck pipe");
        std::thread::sleep(Duration::from_secs(20));
    }

    #[test]
    fn an_overrun_ends_the_process_with_exit_forced() {
        let start = Instant::now();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "daemon::shutdown::tests::overrun_child",
                "--nocapture",
            ])
            .env("SONDE_WATCHDOG_CHILD", "1")
            .output()
            .unwrap();
        let took = start.elapsed();
        assert_eq!(
            out.status.code(),
            Some(EXIT_FORCED),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
}
