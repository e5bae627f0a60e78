//! `Sinks` end to end: real queues and tasks, a real file, a real HTTP receiver
//! standing in for Loki, metrics read from the Prometheus export.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rhai::{Dynamic, Map};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::event::Labels;

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sonde-sinks-{name}-{}-{}",
        std::process::id(),
        crate::event::now_ns()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An event with a recognisable timestamp (`base + seq`) and a `seq` field.
fn event(seq: u64, kind: &str) -> Event {
    let mut fields = Map::new();
    fields.insert("seq".into(), Dynamic::from_int(seq as i64));
    fields.insert("saddr".into(), "10.0.0.1".into());
    Event {
        timestamp_ns: 1_700_000_000_000_000_000 + seq,
        kind: kind.into(),
        labels: Labels {
            namespace: "shop".into(),
            pod: "web-1".into(),
            node: "n1".into(),
        },
        fields,
        script: "test".into(),
    }
}

fn seq_of(json_line: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(json_line).unwrap_or_else(|e| panic!("not JSON ({e}): {json_line}"));
    v["fields"]["seq"].as_u64().unwrap()
}

/// A counter series as Prometheus would scrape it.
fn metric(registry: &Registry, name: &str, sink: &str) -> f64 {
    let text = registry.render_prometheus();
    let prefix = format!("{name}{{node=\"n1\",sink=\"{sink}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn no_stdout() -> SinksConfig {
    SinksConfig {
        stdout: StdoutConfig {
            enabled: false,
            ..StdoutConfig::default()
        },
        ..SinksConfig::default()
    }
}

#[tokio::test]
async fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let registry = Registry::new("n1");
    let err = std::thread::spawn(move || {
        Sinks::start(&SinksConfig::default(), "n1", &registry)
            .err()
            .map(|e| e.to_string())
    })
    .join()
    .unwrap();
    assert_eq!(
        err.as_deref(),
        Some("event sinks must be started inside a tokio runtime")
    );
}

#[tokio::test]
async fn full_queue_drops_and_counts_without_blocking() {
    let registry = Registry::new("n1");
    // stdout is a pipe nobody reads: the sink blocks on its first write.
    let (writer, reader) = tokio::io::duplex(64);
    let config = SinksConfig {
        queue: 4,
        ..SinksConfig::default()
    };
    let sinks = Sinks::start_with(&config, "n1", &registry, Box::new(writer)).unwrap();
    let t = Instant::now();
    for seq in 0..200 {
        sinks.emit(event(seq, "T"));
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "emit blocked: {:?}",
        t.elapsed()
    );
    // This runtime is single-threaded: the sink task has not run yet, so exactly the
    // queue's worth got in.
    assert_eq!(metric(&registry, EVENTS_DROPPED, "stdout"), 196.0);
    // The live stream is not held back by a slow sink.
    assert_eq!(sinks.subscribe().0.len(), 200);

    let read = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            out.push(l);
        }
        out
    });
    sinks.shutdown(Duration::from_secs(2)).await;
    drop(sinks); // closes the pipe
    let lines = read.await.unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], event(0, "T").to_text());
    assert_eq!(metric(&registry, EVENTS_SENT, "stdout"), 4.0);
}

#[tokio::test]
async fn emit_after_shutdown_is_counted_as_dropped() {
    let registry = Registry::new("n1");
    let (writer, _reader) = tokio::io::duplex(1 << 16);
    let sinks =
        Sinks::start_with(&SinksConfig::default(), "n1", &registry, Box::new(writer)).unwrap();
    sinks.shutdown(Duration::from_secs(1)).await;
    sinks.emit(event(0, "T"));
    assert_eq!(metric(&registry, EVENTS_DROPPED, "stdout"), 1.0);
    // Shutting down twice is harmless.
    sinks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stdout_prints_text_or_json_lines() {
    for format in [StdoutFormat::Text, StdoutFormat::Json] {
        let registry = Registry::new("n1");
        let (writer, reader) = tokio::io::duplex(1 << 16);
        let config = SinksConfig {
            stdout: StdoutConfig {
                enabled: true,
                format,
            },
            ..SinksConfig::default()
        };
        let sinks = Sinks::start_with(&config, "n1", &registry, Box::new(writer)).unwrap();
        sinks.emit(event(1, "TCPRESET_NOSOCK"));
        sinks.emit(event(2, "TCPRESET_NOSOCK"));
        sinks.shutdown(Duration::from_secs(1)).await;
        drop(sinks);
        let mut lines = tokio::io::BufReader::new(reader).lines();
        let mut got = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            got.push(l);
        }
        let want: Vec<String> = [1, 2]
            .iter()
            .map(|&s| match format {
                StdoutFormat::Text => event(s, "TCPRESET_NOSOCK").to_text(),
                StdoutFormat::Json => event(s, "TCPRESET_NOSOCK").to_json(),
            })
            .collect();
        assert_eq!(got, want, "{format:?}");
        assert_eq!(metric(&registry, EVENTS_SENT, "stdout"), 2.0);
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn file_rotates_and_keeps_every_event() {
    let dir = temp_dir("rotate");
    let path = dir.join("events.jsonl");
    let registry = Registry::new("n1");
    let max_size = 4096;
    let config = SinksConfig {
        file: FileConfig {
            path: path.clone(),
            max_size,
            max_files: 5,
        },
        ..no_stdout()
    };
    let line = event(0, "T").to_json().len() as u64 + 1;
    // Two and a half files' worth: rotated twice.
    let n = (max_size * 5 / 2).div_ceil(line);
    let sinks = Sinks::start(&config, "n1", &registry).unwrap();
    for seq in 0..n {
        sinks.emit(event(seq, "T"));
        if seq % 10 == 0 {
            // Let the sink write in several batches, not one.
            tokio::task::yield_now().await;
        }
    }
    sinks.shutdown(Duration::from_secs(2)).await;

    let numbered = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    assert!(
        numbered(2).exists() && !numbered(3).exists(),
        "expected two rotations"
    );
    let mut all = Vec::new();
    for p in [numbered(2), numbered(1), path.clone()] {
        assert!(
            std::fs::metadata(&p).unwrap().len() <= max_size,
            "{} too big",
            p.display()
        );
        all.extend(read_lines(&p).iter().map(|l| seq_of(l)));
    }
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert_eq!(metric(&registry, EVENTS_SENT, "file"), n as f64);
    assert_eq!(metric(&registry, EVENTS_DROPPED, "file"), 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- Loki ----

struct Pushed {
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Pushed {
    /// `(type label, seq)` of every line, in order.
    fn lines(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for s in self.body["streams"].as_array().unwrap() {
            for v in s["values"].as_array().unwrap() {
                out.push((
                    s["stream"]["type"].as_str().unwrap().to_string(),
                    seq_of(v[1].as_str().unwrap()),
                ));
            }
        }
        out
    }
}

/// A stand-in for Loki: records pushes, answers with the next scripted status
/// (204 once the script runs out).
struct FakeLoki {
    pushes: mpsc::UnboundedReceiver<Pushed>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLoki {
    async fn start(addr: SocketAddr, statuses: &[(u16, &'static str)]) -> FakeLoki {
        let listener = TcpListener::bind(addr).await.unwrap();
        let (tx, pushes) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<_>>(),
        ));
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        let (status, text) =
                            statuses.lock().unwrap().pop_front().unwrap_or((204, ""));
                        async move {
                            assert_eq!(req.uri().path(), "/loki/api/v1/push");
                            let headers = req.headers().clone();
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            let body = serde_json::from_slice(&bytes).unwrap();
                            let _ = tx.send(Pushed { headers, body });
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(text.as_bytes())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeLoki { pushes, server }
    }

    async fn next(&mut self) -> Pushed {
        tokio::time::timeout(Duration::from_secs(5), self.pushes.recv())
            .await
            .expect("no push within 5s")
            .unwrap()
    }

    /// Pushes until `n` lines have arrived.
    async fn lines(&mut self, n: usize) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while out.len() < n {
            out.extend(self.next().await.lines());
        }
        out
    }
}

impl Drop for FakeLoki {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A local address nothing listens on (yet).
async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn loki_config(addr: SocketAddr) -> SinksConfig {
    SinksConfig {
        loki: LokiConfig {
            url: format!("http://{addr}"),
            batch_wait: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            ..LokiConfig::default()
        },
        ..no_stdout()
    }
}

#[tokio::test]
async fn loki_push_has_streams_labels_timestamps_headers_in_one_batch() {
    let addr = free_addr().await;
    let mut loki = FakeLoki::start(addr, &[]).await;
    let registry = Registry::new("n1");
    let mut config = loki_config(addr);
    config.loki.tenant = "team-a".into();
    config.loki.basic_auth = BasicAuth {
        username: "sonde".into(),
        password: Secret("s3cret".into()),
        ..BasicAuth::default()
    };
    config.loki.labels.insert("cluster".into(), "c1".into());
    config.loki.batch_wait = Duration::from_millis(200);
    let sinks = Sinks::start(&config, "n1", &registry).unwrap();
    let kinds = ["A", "B", "A", "A", "B"];
    for (seq, kind) in kinds.iter().enumerate() {
        sinks.emit(event(seq as u64, kind));
    }
    let push = loki.next().await;

    assert_eq!(push.headers["content-type"], "application/json");
    assert_eq!(push.headers["x-scope-orgid"], "team-a");
    // base64("sonde:s3cret")
    assert_eq!(push.headers["authorization"], "Basic c29uZGU6czNjcmV0");
    let streams = push.body["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "one stream per type: {}", push.body);
    for (stream, kind, seqs) in [
        (&streams[0], "A", vec![0, 2, 3]),
        (&streams[1], "B", vec![1, 4]),
    ] {
        assert_eq!(
            stream["stream"],
            serde_json::json!({"job": "sonde", "cluster": "c1", "node": "n1", "type": kind})
        );
        let values = stream["values"].as_array().unwrap();
        assert_eq!(values.len(), seqs.len());
        for (v, seq) in values.iter().zip(seqs) {
            let ev = event(seq, kind);
            // Nanosecond timestamps as strings; the line is the event's JSON.
            assert_eq!(v[0], serde_json::json!(ev.timestamp_ns.to_string()));
            assert_eq!(v[1], serde_json::json!(ev.to_json()));
        }
    }
    until("sent counted", || {
        metric(&registry, EVENTS_SENT, "loki") == 5.0
    })
    .await;
    sinks.shutdown(Duration::from_secs(1)).await;
    assert!(loki.pushes.try_recv().is_err(), "all five went in one push");
}

#[tokio::test]
async fn loki_bearer_token_is_read_from_its_file() {
    let dir = temp_dir("token");
    std::fs::write(dir.join("token"), "abc.def\n").unwrap();
    let addr = free_addr().await;
    let mut loki = FakeLoki::start(addr, &[]).await;
    let registry = Registry::new("n1");
    let mut config = loki_config(addr);
    config.loki.bearer_token_file = dir.join("token");
    let sinks = Sinks::start(&config, "n1", &registry).unwrap();
    sinks.emit(event(0, "T"));
    let push = loki.next().await;
    assert_eq!(push.headers["authorization"], "Bearer abc.def");
    assert!(push.headers.get("x-scope-orgid").is_none());
    sinks.shutdown(Duration::from_secs(1)).await;

    config.loki.bearer_token_file = dir.join("missing");
    let err = Sinks::start(&config, "n1", &registry).err().unwrap();
    assert!(
        err.to_string()
            .starts_with("sinks.loki.bearer_token_file: cannot read"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn loki_basic_auth_password_is_read_from_its_file() {
    let dir = temp_dir("password");
    std::fs::write(dir.join("password"), "s3cret\n").unwrap();
    let addr = free_addr().await;
    let mut loki = FakeLoki::start(addr, &[]).await;
    let registry = Registry::new("n1");
    let mut config = loki_config(addr);
    config.loki.basic_auth = BasicAuth {
        username: "sonde".into(),
        password_file: dir.join("password"),
        ..BasicAuth::default()
    };
    let sinks = Sinks::start(&config, "n1", &registry).unwrap();
    sinks.emit(event(0, "T"));
    let push = loki.next().await;
    // base64("sonde:s3cret"): the file's trailing newline is not part of it.
    assert_eq!(push.headers["authorization"], "Basic c29uZGU6czNjcmV0");
    sinks.shutdown(Duration::from_secs(1)).await;

    config.loki.basic_auth.password = Secret("other".into());
    let err = Sinks::start(&config, "n1", &registry).err().unwrap();
    assert!(err.to_string().contains("not both"), "{err}");
    config.loki.basic_auth.password = Secret::default();
    config.loki.basic_auth.password_file = dir.join("missing");
    let err = Sinks::start(&config, "n1", &registry).err().unwrap();
    assert!(
        err.to_string()
            .starts_with("sinks.loki.basic_auth.password_file: cannot read"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_down_then_back_delivers_the_buffered_events_in_order() {
    let addr = free_addr().await;
    let registry = Registry::new("n1");
    let sinks = Sinks::start(&loki_config(addr), "n1", &registry).unwrap();
    let mut slowest = Duration::ZERO;
    for seq in 0..30 {
        let t = Instant::now();
        sinks.emit(event(seq, "T"));
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        slowest < Duration::from_millis(20),
        "emit took {slowest:?} while loki was down"
    );
    until("failed pushes", || {
        metric(&registry, SINK_ERRORS, "loki") >= 2.0
    })
    .await;
    assert_eq!(metric(&registry, EVENTS_SENT, "loki"), 0.0);

    let mut loki = FakeLoki::start(addr, &[]).await;
    let lines = loki.lines(30).await;
    let seqs: Vec<u64> = lines.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (0..30).collect::<Vec<_>>());
    until("sent counted", || {
        metric(&registry, EVENTS_SENT, "loki") == 30.0
    })
    .await;
    assert_eq!(metric(&registry, EVENTS_DROPPED, "loki"), 0.0);
    sinks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn loki_buffer_overflow_drops_the_oldest_and_counts_them() {
    let addr = free_addr().await;
    let registry = Registry::new("n1");
    let mut config = loki_config(addr);
    config.loki.max_buffer = 5;
    let sinks = Sinks::start(&config, "n1", &registry).unwrap();
    for seq in 0..20 {
        sinks.emit(event(seq, "T"));
    }
    // At most one batch is in flight besides the buffer; it fails and comes back
    // to the front, where the oldest are trimmed.
    until("overflow counted", || {
        metric(&registry, EVENTS_DROPPED, "loki") == 15.0
    })
    .await;
    let mut loki = FakeLoki::start(addr, &[]).await;
    let seqs: Vec<u64> = loki.lines(5).await.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [15, 16, 17, 18, 19]);
    sinks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn loki_4xx_drops_and_counts_5xx_and_429_are_retried() {
    let addr = free_addr().await;
    let mut loki = FakeLoki::start(
        addr,
        &[
            (400, "entry for stream has timestamp too old"),
            (503, "ingester unavailable"),
            (429, "rate limited"),
        ],
    )
    .await;
    let registry = Registry::new("n1");
    let sinks = Sinks::start(&loki_config(addr), "n1", &registry).unwrap();
    for seq in 0..3 {
        sinks.emit(event(seq, "T"));
    }
    // 400: gone for good.
    assert_eq!(loki.next().await.lines().len(), 3);
    until("rejection counted", || {
        metric(&registry, EVENTS_DROPPED, "loki") == 3.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(loki.pushes.try_recv().is_err(), "a 400 must not be retried");

    // 503, then 429, then accepted: the same batch three times.
    sinks.emit(event(3, "T"));
    for _ in 0..3 {
        assert_eq!(loki.next().await.lines(), [("T".to_string(), 3)]);
    }
    until("sent counted", || {
        metric(&registry, EVENTS_SENT, "loki") == 1.0
    })
    .await;
    assert_eq!(metric(&registry, EVENTS_DROPPED, "loki"), 3.0);
    assert_eq!(metric(&registry, SINK_ERRORS, "loki"), 3.0);
    sinks.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_flushes_a_waiting_loki_batch() {
    let addr = free_addr().await;
    let mut loki = FakeLoki::start(addr, &[]).await;
    let registry = Registry::new("n1");
    let mut config = loki_config(addr);
    config.loki.batch_wait = Duration::from_secs(60);
    let sinks = Sinks::start(&config, "n1", &registry).unwrap();
    for seq in 0..3 {
        sinks.emit(event(seq, "T"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(loki.pushes.try_recv().is_err(), "batch_wait not over yet");
    sinks.shutdown(Duration::from_secs(2)).await;
    assert_eq!(loki.lines(3).await.len(), 3);
    assert_eq!(metric(&registry, EVENTS_SENT, "loki"), 3.0);
}

#[tokio::test]
async fn shutdown_with_loki_down_returns_in_time_and_counts_the_loss() {
    let addr = free_addr().await;
    let registry = Registry::new("n1");
    let mut config = loki_config(addr);
    config.loki.min_backoff = Duration::from_secs(30);
    config.loki.max_backoff = Duration::from_secs(30);
    let sinks = Sinks::start(&config, "n1", &registry).unwrap();
    for seq in 0..3 {
        sinks.emit(event(seq, "T"));
    }
    until("a failed push", || {
        metric(&registry, SINK_ERRORS, "loki") >= 1.0
    })
    .await;
    let t = Instant::now();
    sinks.shutdown(Duration::from_millis(500)).await;
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert_eq!(metric(&registry, EVENTS_DROPPED, "loki"), 3.0);
}

#[tokio::test]
async fn stream_lag_is_counted() {
    let registry = Registry::new("n1");
    let sinks = Sinks::start(&no_stdout(), "n1", &registry).unwrap();
    sinks.stream_dropped(7);
    assert_eq!(metric(&registry, EVENTS_DROPPED, "stream"), 7.0);
}

#[test]
fn an_event_is_formatted_as_json_once_for_every_sink_that_writes_json() {
    let q = Queued::new(Arc::new(event(7, "T")));
    let first = q.json();
    assert_eq!(first, event(7, "T").to_json());
    // The second sink gets the same string, not a new formatting of it.
    assert!(std::ptr::eq(first, q.json()));
}
