//! The endpoints end to end: a real server on a random port, a real hyper client, a
//! real registry, and a fake daemon (a backlog and a broadcast channel).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rhai::{Dynamic, Map};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::event::{Event, Labels};

/// Bounds every wait in these tests, so a bug fails fast instead of hanging.
const WAIT: Duration = Duration::from_secs(3);

/// A daemon as the HTTP layer sees it.
pub(crate) struct FakeDaemon {
    pub backlog: Mutex<Vec<Arc<Event>>>,
    pub live: broadcast::Sender<Arc<Event>>,
    pub ready: Mutex<Result<(), String>>,
    pub lagged: AtomicU64,
    pub scrapes: AtomicU64,
}

impl FakeDaemon {
    /// `capacity`: of the live channel; a client further behind lags.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(FakeDaemon {
            backlog: Mutex::new(Vec::new()),
            live: broadcast::channel(capacity).0,
            ready: Mutex::new(Err("2 of 3 scripts loaded".into())),
            lagged: AtomicU64::new(0),
            scrapes: AtomicU64::new(0),
        })
    }

    pub fn publish(&self, event: Event) {
        let _ = self.live.send(Arc::new(event));
    }
}

impl DaemonState for FakeDaemon {
    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "scripts": [{
                "name": "tcp_reset",
                "programs": [{"name": "tcp_reset", "variant": "tp_btf", "state": "attached"}],
                "state": "loaded",
                "last_error": null,
            }]
        })
    }

    fn ready(&self) -> Result<(), String> {
        self.ready.lock().unwrap().clone()
    }

    fn before_scrape(&self) {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
    }

    fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let backlog = self.backlog.lock().unwrap();
        (backlog.clone(), self.live.subscribe())
    }

    fn stream_lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }
}

/// An event of `kind` in pod `namespace/pod`, with a `seq` field.
pub(crate) fn event(kind: &str, namespace: &str, pod: &str, seq: i64) -> Event {
    let mut fields = Map::new();
    fields.insert("seq".into(), Dynamic::from_int(seq));
    fields.insert("saddr".into(), "10.0.0.1".into());
    Event {
        timestamp_ns: 1_700_000_000_000_000_000 + seq as u64,
        kind: kind.into(),
        labels: Labels {
            namespace: namespace.into(),
            pod: pod.into(),
            node: "n1".into(),
        },
        fields,
        script: "test".into(),
    }
}

pub(crate) struct Server {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub daemon: Arc<FakeDaemon>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), HttpError>>,
}

impl Server {
    pub async fn start(daemon: Arc<FakeDaemon>) -> Server {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = Arc::new(Registry::new("n1"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            registry.clone(),
            daemon.clone() as Arc<dyn DaemonState>,
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            registry,
            daemon,
            stop: Some(stop),
            task,
        }
    }

    /// Shuts the server down and waits for `serve` to return.
    async fn shutdown(mut self) -> Result<(), HttpError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
    }

    /// The sample line of `series` (e.g. `sonde_http_event_streams{node="n1"}`).
    fn sample(&self, series: &str) -> Option<String> {
        self.registry
            .render_prometheus()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(str::to_string)
    }

    /// Waits until `series` has `value` (streams end asynchronously).
    async fn wait_for_sample(&self, series: &str, value: &str) {
        let want = format!("{series} {value}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.sample(series).as_deref() != Some(&want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} never became {value}: {:?}",
                self.sample(series)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends one request on a new connection. The connection task is returned so a test
/// can cut the connection.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    accept: Option<&str>,
) -> (Response<Incoming>, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(accept) = accept {
        req = req.header(ACCEPT, accept);
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("response head in time")
        .unwrap();
    (resp, conn)
}

/// A whole response: status, content type, body.
async fn get_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    accept: Option<&str>,
) -> (StatusCode, String, String) {
    let (resp, _conn) = send(addr, method, path, accept).await;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("whole body in time")
        .unwrap()
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
    get_with(addr, Method::GET, path, None).await
}

/// Reads a streamed body until it has `n` more lines.
async fn read_lines(body: &mut Incoming, pending: &mut Vec<u8>, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            lines.push(String::from_utf8(line[..pos].to_vec()).unwrap());
            if lines.len() == n {
                return lines;
            }
        }
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} lines in time: {lines:?}", lines.len()))
            .expect("stream still open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            pending.extend_from_slice(&data);
        }
    }
}

fn kinds_and_seqs(lines: &[String]) -> Vec<(String, i64)> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["type"].as_str().unwrap().to_string(),
                v["fields"]["seq"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn metrics_speak_prometheus_text_by_default_and_openmetrics_when_asked() {
    let server = Server::start(FakeDaemon::new(16)).await;
    let resets = server
        .registry
        .counter(
            "tcp_reset_segments_total",
            "TCP RST segments.",
            &["pod"],
            10,
        )
        .unwrap();
    resets.add(&["web-1"], 3u64).unwrap();

    let (status, content_type, text) = get(server.addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        text.contains("# TYPE sonde_tcp_reset_segments_total counter\n"),
        "{text}"
    );
    assert!(text.contains("sonde_tcp_reset_segments_total{node=\"n1\",pod=\"web-1\"} 3\n"));
    assert!(text.contains("# TYPE sonde_http_scrape_duration_seconds histogram\n"));
    assert!(text.contains("sonde_http_event_streams{node=\"n1\"} 0\n"));
    assert!(!text.contains("# EOF"));

    // What Prometheus 2.x sends.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, content_type, text) =
        get_with(server.addr, Method::GET, "/metrics", Some(accept)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        text.contains("# TYPE sonde_tcp_reset_segments counter\n"),
        "{text}"
    );
    assert!(text.contains("sonde_tcp_reset_segments_total{node=\"n1\",pod=\"web-1\"} 3\n"));
    // The first scrape is counted by the time of the second.
    assert!(
        text.contains("sonde_http_requests_total{node=\"n1\",path=\"/metrics\",code=\"200\"} 1\n")
    );
    assert!(text.contains("sonde_http_scrape_duration_seconds_count{node=\"n1\"} 1\n"));
    assert!(text.ends_with("\n# EOF\n"));
    assert_eq!(server.daemon.scrapes.load(Ordering::Relaxed), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn probes_and_status() {
    let server = Server::start(FakeDaemon::new(16)).await;
    assert_eq!(
        get(server.addr, "/healthz").await,
        (
            StatusCode::OK,
            "text/plain; charset=utf-8".into(),
            "ok\n".into()
        )
    );
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: 2 of 3 scripts loaded\n");
    *server.daemon.ready.lock().unwrap() = Ok(());
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));

    let (status, content_type, body) = get(server.addr, "/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json, server.daemon.status());
    assert!(
        body.contains("\n  \"scripts\": ["),
        "pretty-printed: {body}"
    );
    assert!(server
        .sample("sonde_http_requests_total{node=\"n1\",path=\"/readyz\",code=\"503\"}")
        .is_some_and(|l| l.ends_with(" 1")));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_other_methods_and_bad_queries_are_refused() {
    let server = Server::start(FakeDaemon::new(16)).await;
    let (status, _, body) = get(server.addr, "/metric").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        "no endpoint /metric; try /metrics, /healthz, /readyz, /status or /events\n"
    );
    let (resp, _conn) = send(server.addr, Method::POST, "/metrics", None).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()[ALLOW], "GET");
    let (status, _, body) = get(server.addr, "/events?limit=ten").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        "bad /events query: `limit=ten`: expected a number of events\n"
    );
    assert!(server
        .sample("sonde_http_requests_total{node=\"n1\",path=\"other\",code=\"404\"}")
        .is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_backlog_is_filtered_and_limited() {
    let daemon = FakeDaemon::new(16);
    *daemon.backlog.lock().unwrap() = vec![
        Arc::new(event("A", "shop", "web-1", 1)),
        Arc::new(event("B", "shop", "web-2", 2)),
        Arc::new(event("A", "other", "web-1", 3)),
        Arc::new(event("C", "shop", "web-1", 4)),
    ];
    let expected_first = daemon.backlog.lock().unwrap()[0].to_json();
    let server = Server::start(daemon).await;
    let lines = |body: String| body.lines().map(String::from).collect::<Vec<_>>();

    let (status, content_type, body) = get(server.addr, "/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/x-ndjson");
    let all = lines(body);
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], expected_first);

    let seqs = |body: String| -> Vec<i64> {
        kinds_and_seqs(&lines(body))
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    };
    assert_eq!(seqs(get(server.addr, "/events?type=A").await.2), [1, 3]);
    assert_eq!(
        seqs(get(server.addr, "/events?type=A,B").await.2),
        [1, 2, 3]
    );
    assert_eq!(
        seqs(get(server.addr, "/events?type=B&type=C").await.2),
        [2, 4]
    );
    assert_eq!(
        seqs(get(server.addr, "/events?pod=web-1").await.2),
        [1, 3, 4]
    );
    assert_eq!(
        seqs(get(server.addr, "/events?pod=shop/web-1").await.2),
        [1, 4]
    );
    assert_eq!(
        seqs(get(server.addr, "/events?pod=shop%2Fweb-1&type=A").await.2),
        [1]
    );
    assert_eq!(
        seqs(get(server.addr, "/events?pod=web-1&limit=2").await.2),
        [3, 4]
    );
    assert_eq!(
        seqs(get(server.addr, "/events?limit=0").await.2),
        [] as [i64; 0]
    );
    assert_eq!(
        seqs(get(server.addr, "/events?type=NOPE").await.2),
        [] as [i64; 0]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn follow_streams_backlog_then_live_events() {
    let daemon = FakeDaemon::new(64);
    *daemon.backlog.lock().unwrap() = vec![
        Arc::new(event("A", "shop", "web-1", 1)),
        Arc::new(event("B", "shop", "web-1", 2)),
    ];
    let server = Server::start(daemon).await;
    let (resp, _conn) = send(server.addr, Method::GET, "/events?follow=1&type=A", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/x-ndjson");
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    let backlog = read_lines(&mut body, &mut pending, 1).await;
    assert_eq!(kinds_and_seqs(&backlog), [("A".to_string(), 1)]);
    server
        .wait_for_sample("sonde_http_event_streams{node=\"n1\"}", "1")
        .await;

    // Published after the client connected, one at a time: each arrives on its own.
    for seq in [10, 11] {
        server.daemon.publish(event("B", "shop", "web-1", seq - 5));
        server.daemon.publish(event("A", "shop", "web-1", seq));
        let line = read_lines(&mut body, &mut pending, 1).await;
        assert_eq!(kinds_and_seqs(&line), [("A".to_string(), seq)]);
    }
    assert_eq!(server.daemon.lagged.load(Ordering::Relaxed), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lagging_client_is_reported_and_keeps_streaming() {
    // The test runtime has one thread: the 50 sends below happen before the stream
    // task runs again, so it finds itself 42 events behind a channel of 8.
    let server = Server::start(FakeDaemon::new(8)).await;
    let (resp, _conn) = send(server.addr, Method::GET, "/events?follow=true", None).await;
    let mut body = resp.into_body();
    for seq in 0..50 {
        server.daemon.publish(event("A", "shop", "web-1", seq));
    }
    let mut pending = Vec::new();
    let lines = read_lines(&mut body, &mut pending, 8).await;
    let seqs: Vec<i64> = kinds_and_seqs(&lines).into_iter().map(|(_, s)| s).collect();
    assert_eq!(seqs, (42..50).collect::<Vec<_>>());
    assert_eq!(server.daemon.lagged.load(Ordering::Relaxed), 42);
    // Still streaming.
    server.daemon.publish(event("A", "shop", "web-1", 99));
    let line = read_lines(&mut body, &mut pending, 1).await;
    assert_eq!(kinds_and_seqs(&line), [("A".to_string(), 99)]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_going_away_ends_its_stream_task() {
    let server = Server::start(FakeDaemon::new(16)).await;
    let streams = "sonde_http_event_streams{node=\"n1\"}";
    let (resp, conn) = send(server.addr, Method::GET, "/events?follow=1", None).await;
    server.wait_for_sample(streams, "1").await;
    // No event is ever published: the task must notice the client left by itself.
    conn.abort();
    drop(resp);
    server.wait_for_sample(streams, "0").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_follow_streams_and_returns_promptly() {
    let server = Server::start(FakeDaemon::new(16)).await;
    let addr = server.addr;
    let (resp, _conn) = send(addr, Method::GET, "/events?follow=1", None).await;
    let mut body = resp.into_body();
    server.daemon.publish(event("A", "shop", "web-1", 1));
    let mut pending = Vec::new();
    read_lines(&mut body, &mut pending, 1).await;

    let started = tokio::time::Instant::now();
    let ending = tokio::spawn(async move {
        // The stream ends cleanly: the last chunk, no error.
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    });
    server.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, ending).await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "took {:?}",
        started.elapsed()
    );
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
