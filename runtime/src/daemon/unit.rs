//! One running script: its Rhai instance and (when it has one) its attached kernel
//! program, driven by [`crate::script::runner`] on a thread of its own, bound to the
//! script's memory arena.
//!
//! [`Task::stop`] interrupts the script and hands the instance and the program back.
//! That hand-back is what lets a reload put a new version of a script on the same
//! attached program: nothing is detached, no kernel count is lost. When the runner
//! stops a script itself (over its memory budget, failing on every call, a panic), the
//! task says so through the `failed` callback and the supervisor takes it down.
//!
//! The runner's first pass runs the script's first `on_tick` at once; [`Task::started`]
//! says when it is done, so a reload counts as applied (and the daemon as ready) only
//! once every new script has read its sources and set its series.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::bpf::live::Live;
use crate::script::runner::{self, Control, Outcome, Settings};
use crate::script::Instance;

pub use crate::script::runner::RunStats as UnitStats;

/// How long [`Task::stop`] waits for the thread beyond the script's call deadline
/// (the last `on_tick` and `on_exit` each get a deadline of their own).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// What a task's thread hands back when it ends.
struct Ended {
    inst: Instance,
    live: Option<Live>,
}

/// A script thread and the way to stop it.
pub struct Task {
    ctl: Arc<Control>,
    done: oneshot::Receiver<Option<Ended>>,
    /// Fires after the runner's first pass (its first tick); taken once.
    started: Option<oneshot::Receiver<()>>,
    wait: Duration,
}

/// Tells the task's owner when the runner's first pass is over.
struct FirstPass(Option<oneshot::Sender<()>>);

impl runner::Observer for FirstPass {
    fn pass(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Task {
    /// Starts the script's thread. `failed(reason)` is called (from that thread)
    /// when the runner stops the script itself.
    pub fn spawn(
        name: &str,
        mut inst: Instance,
        mut live: Option<Live>,
        settings: Settings,
        stats: Arc<UnitStats>,
        call_deadline: Duration,
        failed: Box<dyn FnOnce(String) + Send>,
    ) -> std::io::Result<Task> {
        let ctl = Arc::new(Control::new(&inst)?);
        let (tx, done) = oneshot::channel();
        let (started_tx, started) = oneshot::channel();
        let thread_ctl = ctl.clone();
        let script = name.to_string();
        std::thread::Builder::new()
            .name(format!("script:{}", truncate(name)))
            .stack_size(crate::script::stack::SCRIPT_STACK_SIZE)
            .spawn(move || {
                if let Some((_, arena)) = &settings.memory {
                    arena.bind();
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runner::run(
                        &mut inst,
                        live.as_mut(),
                        &settings,
                        &stats,
                        &thread_ctl,
                        &mut FirstPass(Some(started_tx)),
                    )
                }));
                let (outcome, ended) = match r {
                    Ok(o) => (o, Some(Ended { inst, live })),
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        // The instance may be half-updated: it is dropped, the
                        // program is handed back.
                        drop(inst);
                        let reason = format!("panic: {msg}");
                        tracing::error!(script = %script, reason = %reason, "script thread panicked; the script is stopped");
                        (Outcome::Failed(reason), None)
                    }
                };
                if let Outcome::Failed(reason) = outcome {
                    failed(reason);
                }
                let _ = tx.send(ended);
            })?;
        Ok(Task {
            ctl,
            done,
            started: Some(started),
            wait: call_deadline * 2 + STOP_GRACE,
        })
    }

    /// Resolves when the runner's first pass (with the first `on_tick` when
    /// [`Settings::tick_at_start`]) is over, or the thread ended before; `None` when
    /// already taken.
    pub fn started(&mut self) -> Option<impl std::future::Future<Output = ()>> {
        let rx = self.started.take()?;
        Some(async move {
            let _ = rx.await;
        })
    }

    /// How long a stop (or a first pass) may take at most.
    pub fn max_wait(&self) -> Duration {
        self.wait
    }

    /// Tells the script to stop without waiting (see [`Task::stop`]).
    pub fn request_stop(&self, exit: bool) {
        self.ctl.stop(exit);
    }

    /// Stops the script. With `exit`, the script ends: a last drain, `on_tick` and
    /// `on_exit` run. Returns the instance and the program, still attached; `None`
    /// if the thread panicked or did not come back in time (it is left behind).
    pub async fn stop(self, exit: bool) -> Option<(Instance, Option<Live>)> {
        self.request_stop(exit);
        match tokio::time::timeout(self.wait, self.done).await {
            Ok(Ok(Some(e))) => Some((e.inst, e.live)),
            Ok(_) => None,
            Err(_) => {
                tracing::error!(
                    waited = ?self.wait,
                    "script thread did not stop in time; left behind"
                );
                None
            }
        }
    }
}

/// Linux keeps 15 bytes of a thread name.
fn truncate(name: &str) -> &str {
    let mut end = name.len().min(8);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
