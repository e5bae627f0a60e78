//! `GET /events`: recent events, then live ones, as newline-delimited JSON.
//!
//! ```text
//! GET /events                              the recent backlog, then the response ends
//! GET /events?limit=20                     its last 20 (after filtering)
//! GET /events?follow=1                     the backlog, then live events until the
//!                                          client goes away or the daemon stops
//! GET /events?follow=1&limit=0             live events only: no backlog
//! GET /events?since=5m                     backlog events of the last 5 minutes
//! GET /events?since=1765000000000000000&follow=1
//!                                          events at or after that time (Unix ns)
//! GET /events?type=TCPRESET_NOSOCK,TCPDROP&pod=shop/web-1&follow=true
//! ```
//!
//! `type` (repeatable or comma-separated) matches the event type exactly; `pod`
//! (repeatable) matches the `pod` label, or `namespace/pod`; `since` keeps events
//! whose timestamp is at or after a time: nanoseconds since the Unix epoch, or a
//! duration (`30s`, `5m`, `1h`) back from the daemon's clock, so that a client on
//! another machine needs no synchronised clock. `limit` applies after the other
//! filters. Each line is [`Event::to_json`]. The filters run here, in the daemon:
//! events a client does not want are never serialised nor sent.
//!
//! A follow stream is one task per client reading the daemon's broadcast channel.
//! It sends what is ready as one chunk (so hyper writes and flushes per batch), and
//! ends when the body is dropped (the client left), when the server shuts down, or
//! when the channel closes. A client too slow for the channel skips the events it
//! missed and the daemon is told through [`DaemonState::stream_lagged`].

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::debug;

use crate::event::{now_ns, Event};
use crate::metrics::Gauge;

use super::{stopped, Body, DaemonState};

/// Chunks in flight between a stream task and its connection.
const STREAM_QUEUE: usize = 8;
/// A chunk is sent once it reaches this size even if more events are ready.
const MAX_CHUNK: usize = 64 * 1024;

/// What a client asked `/events` for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EventsQuery {
    pub follow: bool,
    /// Event types; empty: all.
    pub types: Vec<String>,
    /// `pod` or `namespace/pod`; empty: all.
    pub pods: Vec<String>,
    /// Only the last `limit` events of the backlog; `Some(0)`: live events only.
    pub limit: Option<usize>,
    /// Only events with `timestamp_ns` at or after this (Unix ns).
    pub since_ns: Option<u64>,
}

impl EventsQuery {
    /// Parses a query string (`follow=1&type=A,B&pod=web-1&limit=10&since=5m`). The
    /// error names the parameter and says what was expected.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        Self::parse_at(query, now_ns())
    }

    /// [`EventsQuery::parse`] with `since=<duration>` counted back from `now_ns`.
    fn parse_at(query: Option<&str>, now_ns: u64) -> Result<Self, String> {
        let mut q = EventsQuery::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)?;
            let value = percent_decode(value)?;
            match key.as_str() {
                "follow" => {
                    q.follow = match value.as_str() {
                        "" | "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(format!("`follow={value}`: expected 1, true, 0 or false")),
                    }
                }
                "type" => q.types.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from),
                ),
                "pod" if !value.is_empty() => q.pods.push(value),
                "pod" => return Err("`pod=`: expected a pod name or namespace/pod".into()),
                "limit" => {
                    q.limit = Some(
                        value
                            .parse()
                            .map_err(|_| format!("`limit={value}`: expected a number of events"))?,
                    )
                }
                "since" => q.since_ns = Some(parse_since(&value, now_ns)?),
                _ => {
                    return Err(format!(
                        "unknown parameter `{key}`; expected follow, type, pod, since or limit"
                    ))
                }
            }
        }
        Ok(q)
    }

    /// Whether `event` passes the `type`, `pod` and `since` filters.
    pub fn matches(&self, event: &Event) -> bool {
        if self.since_ns.is_some_and(|t| event.timestamp_ns < t) {
            return false;
        }
        let type_ok = self.types.is_empty() || self.types.contains(&event.kind);
        let pod_ok = self.pods.is_empty()
            || self.pods.iter().any(|p| match p.split_once('/') {
                Some((ns, pod)) => ns == event.labels.namespace && pod == event.labels.pod,
                None => *p == event.labels.pod,
            });
        type_ok && pod_ok
    }

    /// The backlog as NDJSON: filtered, then the last `limit`.
    pub fn backlog(&self, events: &[Arc<Event>]) -> Vec<u8> {
        let selected: Vec<&Arc<Event>> = events.iter().filter(|e| self.matches(e)).collect();
        let skip = self.limit.map_or(0, |n| selected.len().saturating_sub(n));
        let mut out = Vec::with_capacity((selected.len() - skip) * 256);
        for e in &selected[skip..] {
            push_line(&mut out, e);
        }
        out
    }
}

/// `since=`: Unix nanoseconds (digits only), or a duration back from `now_ns`.
fn parse_since(value: &str, now_ns: u64) -> Result<u64, String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map_err(|_| {
            format!("`since={value}`: too large for nanoseconds since the Unix epoch")
        });
    }
    let ago = crate::script::parse_duration(value).map_err(|_| {
        format!(
            "`since={value}`: expected nanoseconds since the Unix epoch or a duration \
             like 5m (units ns, us, ms, s, m, h)"
        )
    })?;
    let ago = u64::try_from(ago.as_nanos()).unwrap_or(u64::MAX);
    Ok(now_ns.saturating_sub(ago))
}

fn push_line(out: &mut Vec<u8>, event: &Event) {
    out.extend_from_slice(event.to_json().as_bytes());
    out.push(b'\n');
}

/// `%XX` and `+` decoding of one query component.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("`{s}`: bad percent-encoding"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{s}`: not UTF-8 once decoded"))
}

/// Counts open follow streams in `sonde_http_event_streams` for as long as it lives.
struct OpenStream(Gauge);

impl OpenStream {
    fn new(gauge: Gauge) -> Self {
        let _ = gauge.add(&[] as &[&str], 1.0);
        OpenStream(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let _ = self.0.add(&[] as &[&str], -1.0);
    }
}

/// Starts a follow stream: `backlog` first, then what `live` receives. Returns the
/// body to answer with; the task behind it ends on its own (see the module docs).
pub fn follow(
    query: EventsQuery,
    backlog: Vec<u8>,
    live: broadcast::Receiver<Arc<Event>>,
    state: Arc<dyn DaemonState>,
    stop: watch::Receiver<bool>,
    open_streams: Gauge,
    // Held while the stream runs (the connection is busy, not idle).
    busy: Box<dyn Send + 'static>,
) -> Body {
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let guard = OpenStream::new(open_streams);
    tokio::spawn(async move {
        let _guard = guard;
        let _busy = busy;
        let sent = pump(&query, backlog, live, &*state, stop, &tx).await;
        debug!(events = sent, "event stream ended");
    });
    Body::stream(rx)
}

/// The body of a follow task; returns how many events it sent.
async fn pump(
    query: &EventsQuery,
    backlog: Vec<u8>,
    mut live: broadcast::Receiver<Arc<Event>>,
    state: &dyn DaemonState,
    mut stop: watch::Receiver<bool>,
    tx: &mpsc::Sender<Bytes>,
) -> u64 {
    let mut sent = 0u64;
    let mut chunk = backlog;
    loop {
        if !chunk.is_empty() {
            let data = Bytes::from(std::mem::take(&mut chunk));
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => return sent,
                r = tx.send(data) => {
                    if r.is_err() {
                        return sent;
                    }
                }
            }
        }
        let first = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return sent,
            _ = tx.closed() => return sent,
            r = live.recv() => r,
        };
        match first {
            Ok(e) if query.matches(&e) => {
                push_line(&mut chunk, &e);
                sent += 1;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => lagged(state, n),
            Err(RecvError::Closed) => return sent,
        }
        // Whatever else is ready goes in the same chunk.
        while chunk.len() < MAX_CHUNK {
            match live.try_recv() {
                Ok(e) if query.matches(&e) => {
                    push_line(&mut chunk, &e);
                    sent += 1;
                }
                Ok(_) => {}
                Err(TryRecvError::Lagged(n)) => lagged(state, n),
                Err(_) => break,
            }
        }
    }
}

fn lagged(state: &dyn DaemonState, n: u64) {
    debug!(missed = n, "event stream client too slow; events skipped");
    state.stream_lagged(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parses_repeated_and_comma_separated_types() {
        let q = EventsQuery::parse(Some("follow=true&type=A,B&type=C&pod=shop%2Fweb-1&limit=5"))
            .unwrap();
        assert_eq!(
            q,
            EventsQuery {
                follow: true,
                types: vec!["A".into(), "B".into(), "C".into()],
                pods: vec!["shop/web-1".into()],
                limit: Some(5),
                since_ns: None,
            }
        );
        assert_eq!(EventsQuery::parse(None).unwrap(), EventsQuery::default());
        assert!(EventsQuery::parse(Some("follow")).unwrap().follow);
        assert!(!EventsQuery::parse(Some("follow=0")).unwrap().follow);
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let err = |q| EventsQuery::parse(Some(q)).unwrap_err();
        assert_eq!(err("limit=ten"), "`limit=ten`: expected a number of events");
        assert_eq!(
            err("follow=yes"),
            "`follow=yes`: expected 1, true, 0 or false"
        );
        assert_eq!(
            err("types=A"),
            "unknown parameter `types`; expected follow, type, pod, since or limit"
        );
        assert_eq!(err("pod=%zz"), "`%zz`: bad percent-encoding");
        let since = "expected nanoseconds since the Unix epoch or a duration like 5m \
                     (units ns, us, ms, s, m, h)";
        assert_eq!(
            err("since=yesterday"),
            format!("`since=yesterday`: {since}")
        );
        assert_eq!(err("since="), format!("`since=`: {since}"));
        assert_eq!(err("since=-5m"), format!("`since=-5m`: {since}"));
        assert_eq!(
            err("since=99999999999999999999"),
            "`since=99999999999999999999`: too large for nanoseconds since the Unix epoch"
        );
    }

    #[test]
    fn since_is_unix_ns_or_a_duration_back_from_now() {
        const NOW: u64 = 1_700_000_000_000_000_000;
        let since = |q: &str| EventsQuery::parse_at(Some(q), NOW).unwrap().since_ns;
        assert_eq!(
            since("since=1699999999000000000"),
            Some(1_699_999_999_000_000_000)
        );
        assert_eq!(since("since=5m"), Some(NOW - 300_000_000_000));
        assert_eq!(since("since=1m30s"), Some(NOW - 90_000_000_000));
        assert_eq!(since("since=250ms"), Some(NOW - 250_000_000));
        // Further back than the epoch: everything.
        assert_eq!(since("since=1000000h"), Some(0));
        assert_eq!(since("follow=1"), None);
    }

    fn at(kind: &str, ts: u64) -> Arc<Event> {
        Arc::new(Event {
            timestamp_ns: ts,
            kind: kind.into(),
            labels: Default::default(),
            fields: Default::default(),
            script: "s".into(),
        })
    }

    fn kinds(ndjson: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(ndjson)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
            .map(|t| t.trim_matches('"').to_string())
            .collect()
    }

    #[test]
    fn backlog_keeps_events_since_then_limits_them() {
        let events = [
            at("A", 10),
            at("B", 20),
            at("A", 30),
            at("C", 40),
            at("A", 50),
        ];
        let backlog = |q: &str| {
            kinds(
                &EventsQuery::parse_at(Some(q), 100)
                    .unwrap()
                    .backlog(&events),
            )
        };
        assert_eq!(backlog(""), ["A", "B", "A", "C", "A"]);
        assert_eq!(backlog("since=30"), ["A", "C", "A"]);
        // 60 ns back from 100: at or after 40.
        assert_eq!(backlog("since=60ns"), ["C", "A"]);
        assert_eq!(backlog("since=30&type=A"), ["A", "A"]);
        assert_eq!(backlog("since=20&limit=2"), ["C", "A"]);
        assert_eq!(backlog("since=51"), Vec::<String>::new());
        assert_eq!(backlog("follow=1&limit=0"), Vec::<String>::new());
        // Live events are filtered the same way.
        let q = EventsQuery::parse_at(Some("since=30"), 100).unwrap();
        assert!(!q.matches(&at("A", 29)));
        assert!(q.matches(&at("A", 30)));
    }
}
