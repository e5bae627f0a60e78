//! The stdout sink: one line per event, text or JSON.
//!
//! Lines gather in a buffer while the queue has more; the buffer is written and
//! flushed when the queue is momentarily empty (or the buffer passes 64 KiB), so a
//! quiet node shows each event at once and a busy one writes in large chunks:
//!
//! ```text
//! type=TCPRESET_NOSOCK pod=web-1 namespace=shop saddr=10.1.2.3 sport=443 daddr=10.1.9.8 dport=33488
//! ```

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
    let mut log = LogLimiter::new();
    while let Some(first) = inbox.recv().await {
        let mut lines = 0;
        let mut next = Some(first);
        while let Some(ev) = next {
            match format {
                StdoutFormat::Text => buf.extend_from_slice(ev.to_text().as_bytes()),
                StdoutFormat::Json => buf.extend_from_slice(ev.to_json().as_bytes()),
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
        let result = match inbox.deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, write)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            None => write.await,
        };
        buf.clear();
        match result {
            Ok(()) => counters.sent(lines),
            Err(error) => {
                counters.dropped(lines);
                counters.error();
                if let Some(suppressed) = log.check() {
                    tracing::error!(%error, lines, suppressed, "cannot write events to stdout; dropped");
                }
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
                    return;
                }
            }
        }
    }
}
