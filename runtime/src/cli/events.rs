//! `sonde events`: reads a running daemon's `/events` stream and prints it.
//!
//! ```text
//! sonde events                                  recent events, then exit
//! sonde events -f -t TCPRESET_NOSOCK -p shop/web-1
//! sonde events -f --no-backlog                  only what happens from now on
//! sonde events -f --since 5m                    the last 5 minutes, then live
//! sonde events --since 2026-12-06T07:00:00Z     since 07:00 UTC, then exit
//! sonde events -f -o json | jq .fields
//! ```
//!
//! The daemon sends one JSON object per line ([`Event::to_json`]); `-o json` prints
//! the lines as they are, the default rebuilds each [`Event`] and prints its
//! timestamp (UTC, RFC 3339 with milliseconds, the same on every node; `--local`:
//! this machine's time zone with its offset) followed by
//! [`Event::to_text`], the line the daemon's stdout sink and `sonde run` print:
//!
//! ```text
//! 2026-12-06T07:01:02.345Z type=TCPRESET_NOSOCK pod=web-1 namespace=shop saddr=10.1.2.3 sport=443 ...
//! ```
//!
//! `--since` and `--no-backlog` become the `since` and `limit=0` parameters of
//! `/events`: the daemon filters its backlog, so events nobody asked for are not
//! sent. A duration goes as a duration and is counted back from the daemon's clock,
//! so this machine's clock need not agree with the node's; an absolute time goes as
//! Unix nanoseconds. Exits 0 at the end of the stream and on Ctrl-C.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ACCEPT, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rhai::{Dynamic, Map};
use tokio::net::TcpStream;
use tracing::warn;

use crate::cli::time::{local_timestamp, timestamp, Since};
use crate::cli::{EventsArgs, Output};
use crate::event::{Event, Label, Labels};

/// Giving up on connecting after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut out = io::BufWriter::new(io::stdout().lock());
        tokio::select! {
            r = stream(&args, &mut out) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The request path and query for `args`.
fn request_path(args: &EventsArgs) -> String {
    let mut path = String::from("/events");
    let mut sep = '?';
    let mut param = |key: &str, value: &str| {
        path.push(sep);
        sep = '&';
        path.push_str(key);
        path.push('=');
        percent_encode(&mut path, value);
    };
    if args.follow {
        param("follow", "1");
    }
    if args.no_backlog {
        param("limit", "0");
    }
    match args.since {
        Some(Since::Ago(d)) => param("since", &duration_param(d)),
        Some(Since::At(ns)) => param("since", &ns.to_string()),
        None => {}
    }
    for t in &args.types {
        param("type", t);
    }
    if let Some(pod) = &args.pod {
        param("pod", pod);
    }
    path
}

fn percent_encode(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Connects, sends the request and copies the stream to `out`. Returns when the
/// daemon ends the stream; a closed `out` (`| head`) also ends it, quietly.
async fn stream(args: &EventsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let addr = args
        .addr
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let unreachable = |e: &dyn std::fmt::Display| {
        anyhow!(
            "cannot reach the sonde daemon at {addr}: {e}; is it running? set --addr or SONDE_ADDR"
        )
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(unreachable(&e)),
        Err(_) => return Err(unreachable(&"connection timed out")),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(&e))?;
    let conn = tokio::spawn(conn);
    let req = Request::get(request_path(args))
        .header(HOST, addr)
        .header(ACCEPT, crate::http::NDJSON_CONTENT_TYPE)
        .body(Empty::<Bytes>::new())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        bail!("the sonde daemon at {addr} answered {status}: {text}");
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("the event stream from {addr} broke"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + pos];
            start += pos + 1;
            if !print_line(line, args, out)? {
                return Ok(());
            }
        }
        pending.drain(..start);
        if !flush(out)? {
            return Ok(());
        }
    }
    if !pending.is_empty() {
        print_line(&pending, args, out)?;
    }
    flush(out)?;
    conn.abort();
    Ok(())
}

/// Prints one NDJSON line; `Ok(false)` when `out` is closed.
fn print_line(line: &[u8], args: &EventsArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(true);
    }
    let printed = match args.output {
        Output::Json => line.to_string(),
        Output::Text => match event_from_json(line) {
            Ok(event) => {
                let time = if args.local {
                    local_timestamp(event.timestamp_ns)
                } else {
                    timestamp(event.timestamp_ns)
                };
                format!("{time} {}", event.to_text())
            }
            Err(e) => {
                warn!(error = %e, line = %line, "skipping a line that is not an event");
                return Ok(true);
            }
        },
    };
    match writeln!(out, "{printed}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

fn flush(out: &mut impl Write) -> anyhow::Result<bool> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// A duration as `/events?since=` reads it: whole seconds when it is, else
/// nanoseconds.
fn duration_param(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Rebuilds an [`Event`] from [`Event::to_json`]'s output, so that
/// [`Event::to_text`] prints what the daemon itself would. The script name is not in
/// the JSON and is left empty.
pub(crate) fn event_from_json(line: &str) -> Result<Event, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let kind = v["type"].as_str().ok_or("no `type` string")?.to_string();
    let label = |k: &str| Label::from(v["labels"][k].as_str().unwrap_or(""));
    let fields: Map = match &v["fields"] {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
            .collect(),
        serde_json::Value::Null => Map::new(),
        _ => return Err("`fields` is not an object".into()),
    };
    Ok(Event {
        timestamp_ns: v["timestamp"].as_u64().unwrap_or(0),
        kind,
        labels: Labels {
            namespace: label("namespace"),
            pod: label("pod"),
            node: label("node"),
        },
        fields,
        script: Label::default(),
    })
}

/// The inverse of [`crate::event::dynamic_to_json`]: integers stay integers, `null`
/// is `()`.
fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => Dynamic::from_array(a.iter().map(json_to_dynamic).collect()),
        Value::Object(m) => Dynamic::from_map(
            m.iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::http::tests::{event, FakeDaemon, Server};

    fn args(addr: String, follow: bool, output: Output) -> EventsArgs {
        EventsArgs {
            addr,
            follow,
            since: None,
            no_backlog: false,
            local: false,
            types: vec![],
            pod: None,
            output,
        }
    }

    fn rich_event() -> Event {
        let mut inner = Map::new();
        inner.insert("rtt".into(), Dynamic::from_float(0.25));
        inner.insert("name".into(), "eth0".into());
        let mut fields = Map::new();
        fields.insert("saddr".into(), "10.0.0.1".into());
        fields.insert("sport".into(), Dynamic::from_int(443));
        fields.insert("daddr".into(), "10.0.9.8".into());
        fields.insert("dport".into(), Dynamic::from_int(33488));
        fields.insert("protocol".into(), "tcp".into());
        fields.insert("latency".into(), Dynamic::from_float(1.5e-7));
        fields.insert("ratio".into(), Dynamic::from_float(2.0));
        fields.insert("big".into(), Dynamic::from_float(3.0e20));
        fields.insert("retrans".into(), Dynamic::from_bool(true));
        fields.insert("none".into(), Dynamic::UNIT);
        fields.insert("sock".into(), Dynamic::from_map(inner));
        fields.insert(
            "flags".into(),
            Dynamic::from_array(vec![1.into(), "SYN".into()]),
        );
        fields.insert("ch".into(), Dynamic::from_char('x'));
        fields.insert(
            "stack".into(),
            Dynamic::from_array(vec!["tcp_v4_rcv+0x12".into(), "ip_rcv+0x4".into()]),
        );
        let mut e = event("TCPRESET_NOSOCK", "shop", "web-1", 7);
        e.fields.extend(fields);
        e
    }

    #[test]
    fn text_rebuilt_from_json_is_the_daemons_text() {
        for e in [
            rich_event(),
            event("HOST_EVENT", "", "", 1),
            event("UNKNOWN_NETNS", "", "netns:4026531993", 2),
        ] {
            let rebuilt = event_from_json(&e.to_json()).unwrap();
            assert_eq!(rebuilt.to_text(), e.to_text());
            assert_eq!(rebuilt.to_json(), e.to_json());
        }
        assert_eq!(
            event_from_json(&rich_event().to_json()).unwrap().to_text(),
            "type=TCPRESET_NOSOCK pod=web-1 namespace=shop protocol=tcp saddr=10.0.0.1 \
             sport=443 daddr=10.0.9.8 dport=33488 big=3e20 ch=x flags=[1,\"SYN\"] \
             latency=0.00000015 none=- ratio=2.0 retrans=true seq=7 \
             sock={\"name\":\"eth0\",\"rtt\":0.25} \
             stacktrace:tcp_v4_rcv+0x12 ip_rcv+0x4"
        );
        assert!(event_from_json("{\"labels\":{}}").is_err());
        assert!(event_from_json("not json").is_err());
    }

    #[test]
    fn query_carries_the_filters() {
        let mut a = args("x".into(), true, Output::Text);
        a.types = vec!["TCPRESET_NOSOCK".into(), "TCP DROP".into()];
        a.pod = Some("shop/web-1".into());
        assert_eq!(
            request_path(&a),
            "/events?follow=1&type=TCPRESET_NOSOCK&type=TCP%20DROP&pod=shop%2Fweb-1"
        );
        assert_eq!(
            request_path(&args("x".into(), false, Output::Json)),
            "/events"
        );
        let mut a = args("x".into(), true, Output::Text);
        a.no_backlog = true;
        assert_eq!(request_path(&a), "/events?follow=1&limit=0");
        a.no_backlog = false;
        a.since = Some(Since::Ago(Duration::from_secs(300)));
        assert_eq!(request_path(&a), "/events?follow=1&since=300s");
        a.since = Some(Since::Ago(Duration::from_millis(1500)));
        assert_eq!(request_path(&a), "/events?follow=1&since=1500000000ns");
        a.since = Some(Since::At(1_765_004_400_000_000_000));
        assert_eq!(
            request_path(&a),
            "/events?follow=1&since=1765004400000000000"
        );
    }

    #[tokio::test]
    async fn prints_a_daemons_backlog_as_text_or_json() {
        let daemon = FakeDaemon::new(16);
        *daemon.backlog.lock().unwrap() = vec![
            Arc::new(rich_event()),
            Arc::new(event("B", "other", "db-0", 2)),
        ];
        let server = Server::start(daemon.clone()).await;
        let mut out = Vec::new();
        let mut a = args(server.addr.to_string(), false, Output::Text);
        a.pod = Some("shop/web-1".into());
        stream(&a, &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("2023-11-14T22:13:20.000Z {}\n", rich_event().to_text())
        );

        let mut out = Vec::new();
        let a = args(format!("http://{}/", server.addr), false, Output::Json);
        stream(&a, &mut out).await.unwrap();
        let backlog = daemon.backlog.lock().unwrap().clone();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}\n{}\n", backlog[0].to_json(), backlog[1].to_json())
        );
    }

    /// Reads `a`'s stream from `server` until `n` lines arrived.
    async fn lines(server: &Server, a: EventsArgs, n: usize) -> Vec<String> {
        let addr = server.addr.to_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut out = LineWriter(tx, Vec::new());
            let _ = stream(&EventsArgs { addr, ..a }, &mut out).await;
        });
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(l)) => got.push(l),
                _ => break,
            }
        }
        task.abort();
        got
    }

    /// Sends each complete line written to it.
    struct LineWriter(tokio::sync::mpsc::UnboundedSender<String>, Vec<u8>);

    impl Write for LineWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1.extend_from_slice(buf);
            while let Some(pos) = self.1.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.1.drain(..=pos).collect();
                let _ = self
                    .0
                    .send(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn at(kind: &str, seq: i64, ns: u64) -> Event {
        let mut e = event(kind, "shop", "web-1", seq);
        e.timestamp_ns = ns;
        e
    }

    #[tokio::test]
    async fn no_backlog_and_since_are_filtered_by_the_daemon() {
        let now = crate::event::now_ns();
        let minute = 60_000_000_000;
        // A daemon per client, so that the live event goes out once the client
        // has subscribed.
        let serve = |live: Option<&'static str>| async move {
            let daemon = FakeDaemon::new(16);
            *daemon.backlog.lock().unwrap() = vec![
                Arc::new(at("OLD", 1, now - 10 * minute)),
                Arc::new(at("RECENT", 2, now - minute)),
            ];
            let server = Server::start(daemon.clone()).await;
            if let Some(kind) = live {
                tokio::spawn(async move {
                    while daemon.live.receiver_count() == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    daemon.publish(at(kind, 3, crate::event::now_ns()));
                });
            }
            server
        };
        let kinds = |lines: Vec<String>| -> Vec<String> {
            lines
                .iter()
                .map(|l| l.split(' ').nth(1).unwrap_or("").to_string())
                .collect()
        };

        let mut a = args(String::new(), true, Output::Text);
        a.no_backlog = true;
        assert_eq!(
            kinds(lines(&serve(Some("LIVE")).await, a, 1).await),
            ["type=LIVE"]
        );

        let mut a = args(String::new(), true, Output::Text);
        a.since = Some(Since::Ago(Duration::from_secs(300)));
        assert_eq!(
            kinds(lines(&serve(Some("LIVE")).await, a, 2).await),
            ["type=RECENT", "type=LIVE"]
        );

        let server = serve(None).await;
        let mut a = args(String::new(), false, Output::Text);
        a.since = Some(Since::At(now - 20 * minute));
        let got = lines(&server, a, 2).await;
        assert_eq!(kinds(got.clone()), ["type=OLD", "type=RECENT"]);
        assert_eq!(
            got[0].split(' ').next().unwrap(),
            timestamp(now - 10 * minute)
        );

        // Nothing old comes through when nothing is as recent as asked.
        let mut a = args(String::new(), false, Output::Text);
        a.since = Some(Since::Ago(Duration::from_secs(30)));
        assert_eq!(lines(&server, a, 1).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_refusal_is_an_error_with_the_daemons_reason() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let body = "not ready: still loading\n";
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(body.as_bytes()).await.unwrap();
        });
        let err = stream(&args(addr.clone(), true, Output::Text), &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("the sonde daemon at {addr} answered 503 Service Unavailable: not ready: still loading")
        );
    }

    #[tokio::test]
    async fn an_absent_daemon_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = stream(&args(addr.clone(), false, Output::Text), &mut Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot reach the sonde daemon at {addr}: ")),
            "{err}"
        );
        assert!(
            err.ends_with("; is it running? set --addr or SONDE_ADDR"),
            "{err}"
        );
    }
}
