//! Event sinks: where the daemon sends what scripts `emit`.
//!
//! [`Sinks`] is the daemon's [`EventSink`]. `emit` never blocks: it wraps the event in
//! an `Arc` once, appends it to the live [stream](Sinks::subscribe) behind the HTTP
//! `/events` endpoint, and `try_send`s it to one bounded queue per enabled sink. A
//! full queue drops the event and counts it in `sonde_events_dropped_total{sink}`.
//! Each sink is a tokio task that formats and writes on its own time:
//!
//! - `stdout`: one line per event, KubeSkoop-style text or JSON;
//! - `file`: JSON lines, rotated by size (`path` → `path.1` → … → `path.N`);
//! - `loki`: batches pushed to Grafana Loki's HTTP API, one stream per event type,
//!   retried with exponential backoff and buffered (bounded) while Loki is away.
//!
//! ```no_run
//! use sonde::event::EventSink;
//! use sonde::metrics::Registry;
//! use sonde::sinks::{Sinks, SinksConfig};
//!
//! # async fn run(event: sonde::event::Event) -> Result<(), sonde::sinks::SinkError> {
//! let registry = Registry::new("node-1");
//! let config: SinksConfig = serde_yaml::from_str("loki: { url: \"http://loki:3100\" }").unwrap();
//! let sinks = Sinks::start(&config, "node-1", &registry)?;
//! sinks.emit(event);
//! sinks.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! Self-metrics, all labelled `sink` (`stdout`, `file`, `loki`, `stream`):
//! `sonde_events_sent_total` (delivered), `sonde_events_dropped_total` (lost: queue
//! full, write failed, rejected by Loki, Loki buffer overflow, stream reader lagging)
//! and `sonde_sink_errors_total` (failed writes or pushes, including ones retried
//! later). Loki is reached over plain HTTP only: TLS would need a crypto stack in the
//! agent, so an `https://` URL is a config error; use Loki's in-cluster address or a
//! local TLS-terminating proxy.

mod config;
mod file;
mod loki;
mod stdout;
mod stream;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::event::{Event, EventSink};
use crate::metrics::{Counter, MetricsError, Registry};

pub use config::{
    BasicAuth, FileConfig, LokiConfig, LokiTls, Secret, SinksConfig, StdoutConfig, StdoutFormat,
    StreamConfig, LOKI_PUSH_PATH,
};

/// Delivered events, by sink.
pub const EVENTS_SENT: &str = "sonde_events_sent_total";
/// Lost events, by sink.
pub const EVENTS_DROPPED: &str = "sonde_events_dropped_total";
/// Failed writes or pushes, by sink.
pub const SINK_ERRORS: &str = "sonde_sink_errors_total";

/// How often a repeating sink problem is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {reason}")]
    Config { path: &'static str, reason: String },
    #[error("sinks.file.path: cannot open `{}` for appending", file.display())]
    OpenFile {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sinks.loki.bearer_token_file: cannot read `{}`", file.display())]
    ReadToken {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sinks.loki.basic_auth.password_file: cannot read `{}`", file.display())]
    ReadPassword {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register the sink self-metrics")]
    Metrics(#[from] MetricsError),
    #[error("event sinks must be started inside a tokio runtime")]
    NoRuntime,
}

/// The counters one sink task updates.
#[derive(Clone)]
pub(crate) struct SinkCounters {
    sink: &'static str,
    sent: Counter,
    dropped: Counter,
    errors: Counter,
}

impl SinkCounters {
    fn register(registry: &Registry, sink: &'static str) -> Result<Self, MetricsError> {
        let sent = registry.counter(
            EVENTS_SENT,
            "Events a sink delivered: written to stdout or the file, or accepted by Loki.",
            &["sink"],
            usize::MAX,
        )?;
        let dropped = registry.counter(
            EVENTS_DROPPED,
            "Events a sink lost: its queue was full, a write failed, Loki rejected them or \
             its buffer overflowed, or a live stream reader fell behind.",
            &["sink"],
            usize::MAX,
        )?;
        let errors = registry.counter(
            SINK_ERRORS,
            "Failed writes to a sink or pushes to Loki, including ones retried later.",
            &["sink"],
            usize::MAX,
        )?;
        // Series exist from the start, so a dashboard sees 0 rather than nothing.
        for c in [&sent, &dropped, &errors] {
            c.add(&[sink], 0u64)?;
        }
        Ok(SinkCounters {
            sink,
            sent,
            dropped,
            errors,
        })
    }

    pub(crate) fn sent(&self, n: usize) {
        if n > 0 {
            let _ = self.sent.add(&[self.sink], n);
        }
    }

    pub(crate) fn dropped(&self, n: usize) {
        if n > 0 {
            let _ = self.dropped.add(&[self.sink], n);
        }
    }

    pub(crate) fn error(&self) {
        let _ = self.errors.inc(&[self.sink]);
    }
}

/// An event on its way to the sinks, with its JSON form made at most once however
/// many sinks write JSON (stdout in JSON, file, Loki).
pub(crate) struct Queued {
    event: Arc<Event>,
    json: OnceLock<String>,
}

impl Queued {
    fn new(event: Arc<Event>) -> Self {
        Queued {
            event,
            json: OnceLock::new(),
        }
    }

    /// [`Event::to_json`], formatted by the first sink that asks.
    pub(crate) fn json(&self) -> &str {
        self.json.get_or_init(|| self.event.to_json())
    }
}

impl std::ops::Deref for Queued {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

/// What a sink task receives: its queue and the shutdown signal.
pub(crate) struct Inbox {
    rx: mpsc::Receiver<Arc<Queued>>,
    shutdown: watch::Receiver<Option<Instant>>,
    closing: bool,
}

impl Inbox {
    /// The next event; `None` once shutdown began and the queue is drained. Cancel
    /// safe.
    pub(crate) async fn recv(&mut self) -> Option<Arc<Queued>> {
        loop {
            if self.closing {
                return self.rx.recv().await;
            }
            tokio::select! {
                biased;
                // A value, or the `Sinks` was dropped: either way, stop accepting.
                _ = self.shutdown.changed() => {
                    self.closing = true;
                    self.rx.close();
                }
                ev = self.rx.recv() => return ev,
            }
        }
    }

    /// An event already queued, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Arc<Queued>> {
        self.rx.try_recv().ok()
    }

    /// When shutdown must be over; `None` before shutdown (or if `Sinks` was dropped).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.shutdown.borrow()
    }

    /// Completes once shutdown began and its deadline passed; never before. For
    /// racing a write that may never finish (stdout into a pipe nobody reads).
    pub(crate) async fn past_deadline(&self) {
        let mut shutdown = self.shutdown.clone();
        let deadline = loop {
            if let Some(d) = *shutdown.borrow_and_update() {
                break d;
            }
            if shutdown.changed().await.is_err() {
                // `Sinks` dropped without a shutdown: no deadline will come.
                return std::future::pending().await;
            }
        };
        tokio::time::sleep_until(deadline).await
    }
}

/// Logs a repeating problem at most once per [`LOG_EVERY`], reporting how many
/// occurrences were not logged. One per task; no locking.
pub(crate) struct LogLimiter {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new() -> Self {
        LogLimiter {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last log)` when this occurrence should be logged.
    pub(crate) fn check(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The same, shared by the threads that call `emit`.
struct SharedLogLimiter {
    origin: std::time::Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl SharedLogLimiter {
    fn new() -> Self {
        SharedLogLimiter {
            origin: std::time::Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn check(&self) -> Option<u64> {
        let now = self.origin.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + LOG_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

struct Queue {
    counters: SinkCounters,
    tx: mpsc::Sender<Arc<Queued>>,
    full_log: SharedLogLimiter,
}

/// The daemon's event sinks. See the [module docs](self).
pub struct Sinks {
    queues: Vec<Queue>,
    stream: stream::Stream,
    stream_counters: SinkCounters,
    shutdown: watch::Sender<Option<Instant>>,
    tasks: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Sinks {
    /// Validates `config`, opens the file and reads the bearer token (so a mistake
    /// fails here, not later), and spawns one task per enabled sink. Must be called
    /// inside a tokio runtime (multi- or current-thread). `node` is added to Loki
    /// streams as the `node` label.
    pub fn start(
        config: &SinksConfig,
        node: &str,
        registry: &Registry,
    ) -> Result<Sinks, SinkError> {
        Self::start_with(config, node, registry, Box::new(tokio::io::stdout()))
    }

    /// [`Sinks::start`] with the stdout sink writing to `stdout` instead.
    pub(crate) fn start_with(
        config: &SinksConfig,
        node: &str,
        registry: &Registry,
        stdout: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> Result<Sinks, SinkError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SinkError::NoRuntime)?;

        // Everything that can fail, before anything is spawned.
        let file = if config.file.enabled() {
            Some((
                file::FileWriter::open(&config.file)?,
                SinkCounters::register(registry, "file")?,
            ))
        } else {
            None
        };
        let loki = match config.loki.push_url()? {
            Some(url) => Some((
                loki::LokiSink::new(&config.loki, url, node)?,
                SinkCounters::register(registry, "loki")?,
            )),
            None => None,
        };
        let stdout = if config.stdout.enabled {
            Some((stdout, SinkCounters::register(registry, "stdout")?))
        } else {
            None
        };
        let stream_counters = SinkCounters::register(registry, "stream")?;

        let (shutdown, _) = watch::channel(None);
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        let mut queue = |counters: &SinkCounters| {
            let (tx, rx) = mpsc::channel(config.queue);
            queues.push(Queue {
                counters: counters.clone(),
                tx,
                full_log: SharedLogLimiter::new(),
            });
            Inbox {
                rx,
                shutdown: shutdown.subscribe(),
                closing: false,
            }
        };
        if let Some((out, counters)) = stdout {
            let inbox = queue(&counters);
            let format = config.stdout.format;
            tasks.push((
                "stdout",
                runtime.spawn(stdout::run(out, format, inbox, counters)),
            ));
        }
        if let Some((writer, counters)) = file {
            let inbox = queue(&counters);
            tasks.push(("file", runtime.spawn(file::run(writer, inbox, counters))));
        }
        if let Some((sink, counters)) = loki {
            let inbox = queue(&counters);
            tasks.push(("loki", runtime.spawn(sink.run(inbox, counters))));
        }
        tracing::info!(
            stdout = config.stdout.enabled,
            file = %config.file.path.display(),
            loki = %config.loki.url,
            queue = config.queue,
            "event sinks started"
        );
        Ok(Sinks {
            queues,
            stream: stream::Stream::new(config.stream.backlog, config.queue),
            stream_counters,
            shutdown,
            tasks: Mutex::new(tasks),
        })
    }

    /// The recent events (oldest first) and a receiver for every later one: together
    /// they hold each event exactly once. On `RecvError::Lagged(n)` call
    /// [`Sinks::stream_dropped`]. After [`Sinks::shutdown`] the receiver ends.
    pub fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        self.stream.subscribe()
    }

    /// Counts `n` events a stream reader missed because it fell behind.
    pub fn stream_dropped(&self, n: u64) {
        self.stream_counters.dropped(n as usize);
    }

    /// Stops accepting events, lets every sink write what it holds (Loki gets one
    /// last attempt) and returns within `timeout`. Events emitted afterwards are
    /// dropped and counted. Calling it again does nothing.
    pub async fn shutdown(&self, timeout: Duration) {
        let started = Instant::now();
        let hard = started + timeout;
        // Sinks stop working a little before the hard deadline, to count what they lose.
        let soft = started + timeout.mul_f64(0.9);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        self.stream.close();
        self.shutdown.send_replace(Some(soft));
        for (sink, mut task) in tasks {
            if tokio::time::timeout_at(hard, &mut task).await.is_err() {
                task.abort();
                tracing::error!(
                    sink,
                    ?timeout,
                    "sink did not finish before the shutdown deadline; its pending events are lost"
                );
            }
        }
        tracing::info!(elapsed = ?started.elapsed(), "event sinks stopped");
    }
}

impl EventSink for Sinks {
    fn emit(&self, event: Event) {
        let event = Arc::new(event);
        self.stream.push(&event);
        if self.queues.is_empty() {
            return;
        }
        let event = Arc::new(Queued::new(event));
        for q in &self.queues {
            if let Err(e) = q.tx.try_send(event.clone()) {
                q.counters.dropped(1);
                if let Some(suppressed) = q.full_log.check() {
                    let reason = match e {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "sink stopped",
                    };
                    tracing::error!(
                        sink = q.counters.sink,
                        reason,
                        suppressed,
                        "dropping events"
                    );
                }
            }
        }
    }
}
