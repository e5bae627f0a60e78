//! The stdout sink: one line per event, text or JSON.
//!
//! Lines gather in a buffer while the queue has more; the buffer is written and
//! flushed when the queue is momentarily empty (or the buffer passes 64 KiB), so a
//! quiet node shows each event at once and a busy one writes in large chunks:
//!
//! ```text
//! type=TCPRESET_NOSOCK pod=web-1 namespace=shop saddr=10.1.2.3 sport=443 daddr=10.1.9.8 dport=33488
//! ```
//!
//! A write waits for stdout as long as it takes, while the queue in front of the
//! sink fills and further events are dropped and counted. Once shutdown begins it
//! waits no longer than the shutdown deadline: stdout into a pipe nobody reads
//! cannot hold the daemon. What was not written is counted and logged.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Inbox, LogLimiter, SinkCounters, StdoutFormat};

/// Write once the buffer holds this much, even if more events are queued.
const WRITE_AT: usize = 64 * 1024;

pub(super) async fn run(
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
    format: StdoutFormat,
    mut inbox: Inbox,
    counters: SinkCounters,
) {
    let mut buf = Vec::with_capacity(WRITE_AT + 4096);
    let mut text = String::with_capacity(256);
    let mut log = LogLimiter::new();
    while let Some(first) = inbox.recv().await {
        let mut lines = 0;
        let mut next = Some(first);
        while let Some(ev) = next {
            match format {
                StdoutFormat::Text => {
                    text.clear();
                    ev.write_text(&mut text);
                    buf.extend_from_slice(text.as_bytes());
                }
                StdoutFormat::Json => buf.extend_from_slice(ev.json().as_bytes()),
            }
            buf.push(b'\n');
            lines += 1;
            if buf.len() >= WRITE_AT {
                break;
            }
            next = inbox.try_recv();
        }
        let write = async {
            out.write_all(&buf).await?;
            out.flush().await
        };
        // A write stuck past the shutdown deadline is given up (the blocking write
        // itself is left behind; the runtime does not wait for it).
        let result = tokio::select! {
            r = write => r,
            _ = inbox.past_deadline() => Err(std::io::ErrorKind::TimedOut.into()),
        };
        buf.clear();
        match result {
            Ok(()) => counters.sent(lines),
            Err(error) => {
                counters.dropped(lines);
                counters.error();
                if inbox
                    .deadline()
                    .is_some_and(|d| tokio::time::Instant::now() >= d)
                {
                    // Shutting down and stdout is stuck: count the rest and stop.
                    let mut rest = 0;
                    while inbox.recv().await.is_some() {
                        rest += 1;
                    }
                    counters.dropped(rest);
                    tracing::error!(%error, dropped = lines + rest, "stdout did not take the events before the shutdown deadline; dropped");
                    return;
                }
                if let Some(suppressed) = log.check() {
                    tracing::error!(%error, lines, suppressed, "cannot write events to stdout; dropped");
                }
            }
        }
    }
}
