//! The Loki sink: batches of events pushed to Grafana Loki's HTTP API.
//!
//! Each event becomes one log line (its JSON form) in the stream of its type; a
//! stream's labels are the static `labels` (with `job`, `sonde` unless set), `node`
//! and `type`. One push carries every stream of a batch:
//!
//! ```json
//! {"streams":[{"stream":{"job":"sonde","node":"n1","type":"TCPRESET_NOSOCK"},
//!              "values":[["1717171717000000000","{\"timestamp\":...}"]]}]}
//! ```
//!
//! A batch is pushed when it holds `batch_size` bytes of lines or `batch_wait` after
//! its first event. One push is in flight at a time, so lines arrive in order. While
//! it is, and while Loki is away, the task keeps taking events off its queue into a
//! buffer of at most `max_buffer` events (past it the oldest are dropped and
//! counted). Connection errors, timeouts, 429 and 5xx are retried after a backoff
//! doubling from `min_backoff` to `max_backoff`; any other status drops the batch
//! (counted; Loki's answer is logged). At shutdown the buffer gets one last try.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Inbox, LogLimiter, LokiConfig, SinkCounters, SinkError};

/// Bytes a line costs in a batch besides its text (timestamp, quotes, commas).
const ENTRY_OVERHEAD: usize = 30;
/// How much of a rejected push's response body is kept for the log.
const MAX_ERROR_BODY: usize = 1024;

/// One event as Loki will get it.
struct Entry {
    ts: u64,
    kind: String,
    line: String,
}

impl Entry {
    fn new(ev: &super::Queued) -> Self {
        Entry {
            ts: ev.timestamp_ns,
            kind: ev.kind.clone(),
            line: ev.json().to_string(),
        }
    }

    fn size(&self) -> usize {
        self.line.len() + ENTRY_OVERHEAD
    }
}

/// How one push ended.
#[derive(Debug)]
enum Outcome {
    Sent,
    /// Worth retrying: connection error, timeout, 429, 5xx.
    Retry(String),
    /// Loki said no for good: the batch is dropped.
    Rejected {
        status: StatusCode,
        body: String,
    },
}

struct Inflight {
    task: JoinHandle<Outcome>,
    entries: Vec<Entry>,
}

pub(super) struct LokiSink {
    url: Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Static labels plus `job` and `node`; `type` is added per stream.
    labels: BTreeMap<String, String>,
    batch_size: usize,
    batch_wait: Duration,
    timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    max_buffer: usize,
}

fn tls_error(path: &'static str, reason: String) -> SinkError {
    SinkError::Config { path, reason }
}

/// The TLS client of an `https://` Loki: the configured CAs or the system's trust
/// store, and a client certificate when one is given. For `http://` nothing is read.
fn client_tls(cfg: &super::LokiTls, https: bool) -> Result<rustls::ClientConfig, SinkError> {
    // ring: see crate::http::web.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("sinks.loki.tls", e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    if https {
        if cfg.ca_file.as_os_str().is_empty() {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(tls_error(
                    "sinks.loki.url",
                    format!(
                        "https needs trusted CAs and the system has none usable (/etc/ssl/certs: install ca-certificates{}); or set sinks.loki.tls.ca_file",
                        found.errors.first().map(|e| format!("; {e}")).unwrap_or_default()
                    ),
                ));
            }
        } else {
            let file = &cfg.ca_file;
            let pem = std::fs::read(file).map_err(|e| {
                tls_error(
                    "sinks.loki.tls.ca_file",
                    format!("cannot read `{}`: {e}", file.display()),
                )
            })?;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| {
                    tls_error(
                        "sinks.loki.tls.ca_file",
                        format!("`{}`: not PEM certificates: {e}", file.display()),
                    )
                })?;
                roots.add(c).map_err(|e| {
                    tls_error(
                        "sinks.loki.tls.ca_file",
                        format!("`{}`: unusable CA certificate: {e}", file.display()),
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(tls_error(
                    "sinks.loki.tls.ca_file",
                    format!("`{}` holds no certificate", file.display()),
                ));
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    if cfg.cert_file.as_os_str().is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| {
            tls_error(
                "sinks.loki.tls.cert_file",
                format!("`{}`: {e}", cfg.cert_file.display()),
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        tls_error(
            "sinks.loki.tls.key_file",
            format!("`{}`: {e}", cfg.key_file.display()),
        )
    })?;
    builder.with_client_auth_cert(certs, key).map_err(|e| {
        tls_error(
            "sinks.loki.tls.key_file",
            format!("the key does not go with sinks.loki.tls.cert_file, or is unusable: {e}"),
        )
    })
}

fn header(path: &'static str, text: &str) -> Result<HeaderValue, SinkError> {
    HeaderValue::from_str(text).map_err(|_| SinkError::Config {
        path,
        reason: "contains characters not allowed in an HTTP header (control characters, \
                 newlines)"
            .into(),
    })
}

impl LokiSink {
    /// Reads the bearer token file and prepares the headers; `url` is the push URL.
    pub(super) fn new(config: &LokiConfig, url: Uri, node: &str) -> Result<Self, SinkError> {
        let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        headers.push((
            USER_AGENT,
            HeaderValue::from_static(concat!("sonde/", env!("CARGO_PKG_VERSION"))),
        ));
        if !config.tenant.is_empty() {
            headers.push((
                HeaderName::from_static("x-scope-orgid"),
                header("sinks.loki.tenant", &config.tenant)?,
            ));
        }
        let token = if !config.bearer_token_file.as_os_str().is_empty() {
            let file = &config.bearer_token_file;
            let text = std::fs::read_to_string(file).map_err(|source| SinkError::ReadToken {
                file: file.clone(),
                source,
            })?;
            if text.trim().is_empty() {
                return Err(SinkError::Config {
                    path: "sinks.loki.bearer_token_file",
                    reason: format!("`{}` is empty; it should hold the token", file.display()),
                });
            }
            Some((text.trim().to_string(), "sinks.loki.bearer_token_file"))
        } else if !config.bearer_token.expose().trim().is_empty() {
            Some((
                config.bearer_token.expose().trim().to_string(),
                "sinks.loki.bearer_token",
            ))
        } else {
            None
        };
        let auth = match token {
            Some((token, path)) => Some(header(path, &format!("Bearer {token}"))?),
            None if config.basic_auth.is_set() => {
                let file = &config.basic_auth.password_file;
                let password = if file.as_os_str().is_empty() {
                    config.basic_auth.password.expose().to_string()
                } else {
                    let text = std::fs::read_to_string(file).map_err(|source| {
                        SinkError::ReadPassword {
                            file: file.clone(),
                            source,
                        }
                    })?;
                    // A Secret written with `echo` ends with a newline that is not
                    // part of the password.
                    text.trim_end_matches(['\n', '\r']).to_string()
                };
                let pair = format!("{}:{}", config.basic_auth.username, password);
                Some(header(
                    "sinks.loki.basic_auth",
                    &format!("Basic {}", base64(pair.as_bytes())),
                )?)
            }
            None => None,
        };
        if let Some(mut auth) = auth {
            auth.set_sensitive(true);
            headers.push((AUTHORIZATION, auth));
        }

        let mut labels = config.labels.clone();
        labels
            .entry("job".to_string())
            .or_insert_with(|| "sonde".to_string());
        labels.insert("node".to_string(), node.to_string());

        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout));
        http.enforce_http(false);
        let https = url.scheme_str() == Some("https");
        let tls = client_tls(&config.tls, https)?;
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = if config.tls.server_name.is_empty() {
            builder
        } else {
            let name = rustls_pki_types::ServerName::try_from(config.tls.server_name.clone())
                .map_err(|_| {
                    tls_error(
                        "sinks.loki.tls.server_name",
                        format!(
                            "`{}` is not a DNS name or an IP address",
                            config.tls.server_name
                        ),
                    )
                })?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);

        Ok(LokiSink {
            url,
            client,
            headers,
            labels,
            batch_size: usize::try_from(config.batch_size).unwrap_or(usize::MAX),
            batch_wait: config.batch_wait,
            timeout: config.timeout,
            min_backoff: config.min_backoff,
            max_backoff: config.max_backoff,
            max_buffer: config.max_buffer,
        })
    }

    /// Serialises `entries` as one push request body.
    fn encode(&self, entries: &[Entry]) -> Bytes {
        let mut streams: Vec<PushStream<'_>> = Vec::new();
        for e in entries {
            let value = (e.ts.to_string(), e.line.as_str());
            match streams.iter_mut().find(|s| s.stream.kind == e.kind) {
                Some(s) => s.values.push(value),
                None => streams.push(PushStream {
                    stream: StreamLabels {
                        base: &self.labels,
                        kind: &e.kind,
                    },
                    values: vec![value],
                }),
            }
        }
        // Serialising maps of strings cannot fail.
        serde_json::to_vec(&PushRequest { streams })
            .unwrap_or_default()
            .into()
    }

    /// Sends `entries` in the background.
    fn start_push(&self, entries: Vec<Entry>, timeout: Duration) -> Inflight {
        let mut request = Request::post(self.url.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let body = Full::new(self.encode(&entries));
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            let request = match request.body(body) {
                Ok(r) => r,
                Err(e) => return Outcome::Retry(format!("cannot build the request: {e}")),
            };
            match tokio::time::timeout(timeout, exchange(&client, request)).await {
                Err(_) => Outcome::Retry(format!("no response within {timeout:?}")),
                Ok(Err(e)) => Outcome::Retry(e),
                Ok(Ok((status, _))) if status.is_success() => Outcome::Sent,
                Ok(Ok((status, body)))
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
                {
                    Outcome::Retry(format!("{status}: {body}"))
                }
                Ok(Ok((status, body))) => Outcome::Rejected { status, body },
            }
        });
        Inflight { task, entries }
    }

    pub(super) async fn run(self, mut inbox: Inbox, counters: SinkCounters) {
        let mut buffer = Buffer::new(self.max_buffer);
        let mut inflight: Option<Inflight> = None;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = self.min_backoff;
        let mut failures = 0u32;
        let mut retry_log = LogLimiter::new();
        let mut reject_log = LogLimiter::new();
        let mut overflow_log = LogLimiter::new();

        loop {
            let now = Instant::now();
            let due = match (&inflight, buffer.started) {
                (None, Some(started)) if retry_at.is_none_or(|t| now >= t) => {
                    buffer.bytes >= self.batch_size || now >= started + self.batch_wait
                }
                _ => false,
            };
            if due {
                let batch = buffer.take(self.batch_size);
                inflight = Some(self.start_push(batch, self.timeout));
            }
            // When to look again if nothing arrives: the batch deadline or the retry.
            let wake = match (&inflight, buffer.started) {
                (None, Some(started)) => {
                    let ready = if buffer.bytes >= self.batch_size {
                        now
                    } else {
                        started + self.batch_wait
                    };
                    Some(retry_at.map_or(ready, |t| t.max(ready)))
                }
                _ => None,
            };

            tokio::select! {
                ev = inbox.recv() => match ev {
                    Some(ev) => {
                        buffer.push(Entry::new(&ev));
                        self.overflowed(buffer.trim(), &counters, &mut overflow_log);
                    }
                    None => break,
                },
                joined = wait(&mut inflight) => {
                    let Some(Inflight { entries, .. }) = inflight.take() else { continue };
                    let outcome = joined.unwrap_or_else(|e| Outcome::Retry(format!("push task failed: {e}")));
                    match outcome {
                        Outcome::Sent => {
                            counters.sent(entries.len());
                            if failures > 0 {
                                tracing::info!(
                                    url = %self.url,
                                    failures,
                                    buffered = buffer.entries.len(),
                                    "loki reachable again; sending the buffered events"
                                );
                            }
                            failures = 0;
                            backoff = self.min_backoff;
                            retry_at = None;
                        }
                        Outcome::Retry(error) => {
                            counters.error();
                            buffer.requeue(entries);
                            self.overflowed(buffer.trim(), &counters, &mut overflow_log);
                            failures += 1;
                            retry_at = Some(Instant::now() + backoff);
                            if let Some(suppressed) = retry_log.check() {
                                tracing::warn!(
                                    url = %self.url,
                                    %error,
                                    buffered = buffer.entries.len(),
                                    retry_in = ?backoff,
                                    suppressed,
                                    "loki push failed; keeping the events and retrying"
                                );
                            }
                            backoff = (backoff * 2).min(self.max_backoff);
                        }
                        Outcome::Rejected { status, body } => {
                            counters.error();
                            counters.dropped(entries.len());
                            failures = 0;
                            backoff = self.min_backoff;
                            retry_at = None;
                            if let Some(suppressed) = reject_log.check() {
                                tracing::error!(
                                    url = %self.url,
                                    status = status.as_u16(),
                                    response = %body,
                                    events = entries.len(),
                                    suppressed,
                                    "loki rejected a batch; its events are dropped"
                                );
                            }
                        }
                    }
                }
                _ = sleep_until(wake) => {}
            }
        }

        // Shutdown: one last try for what is in flight and buffered, within the deadline.
        let deadline = inbox
            .deadline()
            .unwrap_or_else(|| Instant::now() + self.timeout);
        let mut lost = 0;
        let mut up = true;
        let mut next = inflight;
        loop {
            let Some(Inflight { mut task, entries }) = next.take() else {
                if up && !buffer.entries.is_empty() {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let batch = buffer.take(self.batch_size);
                    next = Some(self.start_push(batch, remaining.min(self.timeout)));
                    continue;
                }
                break;
            };
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(Outcome::Sent)) => counters.sent(entries.len()),
                Ok(Ok(Outcome::Rejected { status, body })) => {
                    counters.error();
                    lost += entries.len();
                    tracing::error!(status = status.as_u16(), response = %body, "loki rejected a batch at shutdown");
                }
                other => {
                    task.abort();
                    counters.error();
                    lost += entries.len();
                    up = false;
                    let error = match other {
                        Ok(Ok(Outcome::Retry(e))) => e,
                        Ok(Err(e)) => e.to_string(),
                        _ => "shutdown deadline reached".to_string(),
                    };
                    tracing::warn!(url = %self.url, %error, "loki push failed at shutdown");
                }
            }
        }
        lost += buffer.entries.len();
        counters.dropped(lost);
        if lost > 0 {
            tracing::error!(url = %self.url, lost, "events not delivered to loki before shutdown");
        }
        tracing::debug!("loki sink stopped");
    }
}

impl LokiSink {
    /// Counts and logs (rate-limited) events the full buffer pushed out.
    fn overflowed(&self, lost: usize, counters: &SinkCounters, log: &mut LogLimiter) {
        if lost == 0 {
            return;
        }
        counters.dropped(lost);
        if let Some(suppressed) = log.check() {
            tracing::error!(
                url = %self.url,
                max_buffer = self.max_buffer,
                lost,
                suppressed,
                "loki buffer full; dropping the oldest events"
            );
        }
    }
}

/// Events waiting for a push, oldest first.
struct Buffer {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// When the current batch's first event arrived; `None` when empty.
    started: Option<Instant>,
    max: usize,
}

impl Buffer {
    fn new(max: usize) -> Self {
        Buffer {
            entries: VecDeque::new(),
            bytes: 0,
            started: None,
            max,
        }
    }

    fn push(&mut self, e: Entry) {
        self.bytes += e.size();
        self.entries.push_back(e);
        self.started.get_or_insert_with(Instant::now);
    }

    /// Puts a failed batch back in front, in order.
    fn requeue(&mut self, batch: Vec<Entry>) {
        for e in batch.into_iter().rev() {
            self.bytes += e.size();
            self.entries.push_front(e);
        }
        self.started.get_or_insert_with(Instant::now);
    }

    /// Drops the oldest past `max`; returns how many.
    fn trim(&mut self) -> usize {
        let mut lost = 0;
        while self.entries.len() > self.max {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.size();
                lost += 1;
            }
        }
        lost
    }

    /// Takes the oldest events, up to `max_bytes` (at least one).
    fn take(&mut self, max_bytes: usize) -> Vec<Entry> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(e) = self.entries.front() {
            if !batch.is_empty() && bytes + e.size() > max_bytes {
                break;
            }
            bytes += e.size();
            batch.extend(self.entries.pop_front());
        }
        self.bytes -= bytes;
        if self.entries.is_empty() {
            self.started = None;
        }
        batch
    }
}

async fn wait(inflight: &mut Option<Inflight>) -> Result<Outcome, tokio::task::JoinError> {
    match inflight {
        Some(f) => (&mut f.task).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends the request and reads (the start of) the response body.
async fn exchange(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, String), String> {
    let response = client.request(request).await.map_err(|e| chain(&e))?;
    let status = response.status();
    let body = match Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut text = String::from_utf8_lossy(&body).trim().to_string();
    if text.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    Ok((status, text))
}

/// An error and its sources, `a: b: c` (hyper's own message alone says little).
fn chain(e: &hyper_util::client::legacy::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[derive(serde::Serialize)]
struct PushRequest<'a> {
    streams: Vec<PushStream<'a>>,
}

#[derive(serde::Serialize)]
struct PushStream<'a> {
    stream: StreamLabels<'a>,
    values: Vec<(String, &'a str)>,
}

struct StreamLabels<'a> {
    base: &'a BTreeMap<String, String>,
    kind: &'a str,
}

impl Serialize for StreamLabels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.base.len() + 1))?;
        for (k, v) in self.base {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("type", self.kind)?;
        map.end()
    }
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    fn entry(ts: u64, size: usize) -> Entry {
        Entry {
            ts,
            kind: "T".into(),
            line: "x".repeat(size - ENTRY_OVERHEAD),
        }
    }

    #[test]
    fn buffer_takes_batches_by_size_and_keeps_order_on_requeue() {
        let mut b = Buffer::new(4);
        for ts in 0..4 {
            b.push(entry(ts, 100));
        }
        assert_eq!(b.bytes, 400);
        let batch = b.take(250);
        assert_eq!(batch.iter().map(|e| e.ts).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(b.bytes, 200);
        b.push(entry(4, 100));
        b.push(entry(5, 100));
        b.requeue(batch);
        // Over the limit of 4: the oldest go.
        assert_eq!(b.trim(), 2);
        let ts: Vec<_> = b.take(usize::MAX).iter().map(|e| e.ts).collect();
        assert_eq!(ts, [2, 3, 4, 5]);
        assert_eq!(b.bytes, 0);
        assert!(b.started.is_none());
        // A line larger than the batch size still goes, alone.
        b.push(entry(6, 1000));
        assert_eq!(b.take(10).len(), 1);
    }
}
