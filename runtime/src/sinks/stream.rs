//! The live event stream: the last N events plus a broadcast of every new one.
//!
//! A subscriber gets a snapshot of the backlog and a receiver in one step, under the
//! same lock `push` takes, so the backlog and the receiver together hold every event
//! exactly once:
//!
//! ```ignore
//! let (backlog, mut rx) = stream.subscribe();
//! for ev in backlog { send(ev) }
//! while let Ok(ev) = rx.recv().await { send(ev) }
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::event::Event;

pub(super) struct Stream {
    inner: Mutex<Inner>,
    backlog: usize,
}

struct Inner {
    ring: VecDeque<Arc<Event>>,
    /// `None` once the sinks are shut down: receivers then end after what they hold.
    tx: Option<broadcast::Sender<Arc<Event>>>,
}

impl Stream {
    /// Keeps `backlog` recent events; a receiver may fall `capacity` events behind
    /// before it lags.
    pub(super) fn new(backlog: usize, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Stream {
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(backlog),
                tx: Some(tx),
            }),
            backlog,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the ring inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per event: append to the ring, broadcast if anyone listens.
    pub(super) fn push(&self, event: &Arc<Event>) {
        let mut inner = self.lock();
        if self.backlog > 0 {
            if inner.ring.len() == self.backlog {
                inner.ring.pop_front();
            }
            inner.ring.push_back(event.clone());
        }
        if let Some(tx) = &inner.tx {
            if tx.receiver_count() > 0 {
                let _ = tx.send(event.clone());
            }
        }
    }

    pub(super) fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let inner = self.lock();
        let backlog = inner.ring.iter().cloned().collect();
        let rx = match &inner.tx {
            Some(tx) => tx.subscribe(),
            // Closed: a receiver that ends at once.
            None => broadcast::channel(1).1,
        };
        (backlog, rx)
    }

    pub(super) fn close(&self) {
        self.lock().tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Labels;
    use tokio::sync::broadcast::error::RecvError;

    fn ev(ts: u64) -> Arc<Event> {
        Arc::new(Event {
            timestamp_ns: ts,
            kind: "T".into(),
            labels: Labels::default(),
            fields: Default::default(),
            script: "s".into(),
        })
    }

    #[tokio::test]
    async fn backlog_is_bounded_and_receiver_continues_it() {
        let s = Stream::new(3, 16);
        for ts in 0..5 {
            s.push(&ev(ts));
        }
        let (backlog, mut rx) = s.subscribe();
        let ts: Vec<_> = backlog.iter().map(|e| e.timestamp_ns).collect();
        assert_eq!(ts, [2, 3, 4]);
        s.push(&ev(5));
        assert_eq!(rx.recv().await.unwrap().timestamp_ns, 5);
        s.close();
        assert!(matches!(rx.recv().await, Err(RecvError::Closed)));
        let (_, mut late) = s.subscribe();
        assert!(matches!(late.recv().await, Err(RecvError::Closed)));
    }

    #[tokio::test]
    async fn lagging_receiver_learns_how_many_it_missed() {
        let s = Stream::new(0, 4);
        let (_, mut rx) = s.subscribe();
        for ts in 0..10 {
            s.push(&ev(ts));
        }
        assert!(matches!(rx.recv().await, Err(RecvError::Lagged(6))));
        assert_eq!(rx.recv().await.unwrap().timestamp_ns, 6);
    }

    /// Subscribing while another thread pushes: backlog + received is gap- and
    /// duplicate-free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribe_during_pushes_has_no_gap_and_no_duplicate() {
        const N: u64 = 20_000;
        let s = Arc::new(Stream::new(64, N as usize));
        let pusher = {
            let s = s.clone();
            std::thread::spawn(move || {
                for ts in 0..N {
                    s.push(&ev(ts));
                }
            })
        };
        // Let some events go by first.
        while s.lock().ring.len() < 32 {
            std::thread::yield_now();
        }
        let (backlog, mut rx) = s.subscribe();
        pusher.join().unwrap();
        s.close();
        let mut seen: Vec<u64> = backlog.iter().map(|e| e.timestamp_ns).collect();
        while let Ok(e) = rx.recv().await {
            seen.push(e.timestamp_ns);
        }
        assert!(!seen.is_empty());
        let first = seen[0];
        let expected: Vec<u64> = (first..N).collect();
        assert_eq!(seen, expected);
    }
}
