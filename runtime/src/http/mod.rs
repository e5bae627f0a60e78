//! The daemon's HTTP endpoints: `/metrics` for Prometheus, probes for Kubernetes,
//! `/status` for people, `/events` for `sonde events`.
//!
//! The daemon owns the state and lends it through [`DaemonState`]; this module only
//! answers requests. HTTP/1.1 only, `GET` only (anything else is 405, unknown paths
//! 404).
//!
//! ```text
//! GET /metrics   Prometheus text 0.0.4; OpenMetrics 1.0 or protobuf (native
//!                histograms) when Accept asks for it
//! GET /healthz   200 "ok" while the server answers
//! GET /readyz    200 "ready", or 503 and the reason (e.g. scripts still loading)
//! GET /status    every script, its programs, variant, state and last error (JSON)
//! GET /events    recent events as NDJSON; ?follow=1 ?type=T ?pod=P ?limit=N ?since=5m
//! ```
//!
//! With a web configuration ([`web`], the Prometheus exporter toolkit's format)
//! connections are TLS (client certificates optional) and requests need basic auth,
//! except `/healthz` and `/readyz`. A listener serves all endpoints, or only
//! `/metrics` and the probes, or only `/status`, `/events` and the probes
//! ([`Routes`]), so the latter can live on a loopback address of their own.
//!
//! At most `max_connections` connections are open at once ([`ServeOptions`]): past
//! it, the connection idle the longest (no request in flight, an event stream
//! counts as one) is closed to make room, and when every connection is busy the new
//! one is closed at once. Idle clients can never take the file descriptors, or
//! `/metrics`, away.
//!
//! The server counts what it does in `sonde_http_requests_total{path,code}`,
//! `sonde_http_scrape_duration_seconds`, `sonde_http_event_streams`,
//! `sonde_http_connections` and `sonde_http_connections_closed_total{reason}`. When the
//! `shutdown` future resolves it stops accepting, ends open event streams, lets
//! connections finish their response, and returns within [`SHUTDOWN_GRACE`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use sonde::http::{self, DaemonState, HttpError};
//! use sonde::metrics::Registry;
//!
//! async fn run(registry: Arc<Registry>, state: Arc<dyn DaemonState>) -> Result<(), HttpError> {
//!     let listener = http::bind("0.0.0.0:9102").await?;
//!     let shutdown = async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     };
//!     http::serve(listener, registry, state, shutdown).await
//! }
//! ```

mod body;
mod events;
mod scrape;
#[cfg(test)]
pub(crate) mod tests;
pub mod web;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::event::Event;
use crate::metrics::{Counter, Gauge, Histogram, MetricsError, Registry};

use body::Body;
use events::EventsQuery;
pub use scrape::{Exposition, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};

/// Content type of `/events`.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";
/// How long [`serve`] waits for open connections after shutdown before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// A client must send its request headers within this time; an idle keep-alive
/// connection is closed after it too.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake must be done within this time.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServeOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Everything.
    All,
    /// `/metrics`, `/healthz`, `/readyz`; `/status` and `/events` are elsewhere or off.
    Metrics,
    /// `/status`, `/events`, `/healthz`, `/readyz`: the admin listener.
    Status,
}

/// How a listener serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub routes: Routes,
    /// TLS, basic auth, headers, rate limit; empty: plain HTTP, no auth.
    pub security: web::SecurityCell,
    /// Open connections at most; see the [module docs](self).
    pub max_connections: usize,
    /// Where `/status` and `/events` are when this listener does not serve them
    /// (for the 404's text): an address, or `None` when they are off.
    pub status_elsewhere: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            routes: Routes::All,
            security: web::SecurityCell::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            status_elsewhere: None,
        }
    }
}

/// What the daemon tells the HTTP layer.
pub trait DaemonState: Send + Sync + 'static {
    /// JSON for /status: each script, its programs, variant chosen, state, last error
    /// (built by the daemon).
    fn status(&self) -> serde_json::Value;
    /// Ok when every enabled script is loaded or failed with a reason; Err(reason)
    /// otherwise (e.g. still starting).
    fn ready(&self) -> Result<(), String>;
    /// Called before each /metrics render, on a blocking thread (the daemon refreshes
    /// kernel-side self-metrics here). Must be fast.
    fn before_scrape(&self) {}
    /// Recent events and a live receiver, without gap or duplicate between them.
    fn subscribe(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);
    /// A stream client lagged and missed `n` events (the daemon counts them as
    /// dropped).
    fn stream_lagged(&self, n: u64);
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register the http self-metrics")]
    Metrics(#[from] MetricsError),
}

/// Binds the listener [`serve`] takes (`HOST:PORT`, e.g. `0.0.0.0:9102`).
pub async fn bind(addr: &str) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// The HTTP layer's own metrics.
#[derive(Clone)]
struct HttpMetrics {
    requests: Counter,
    scrape_seconds: Histogram,
    event_streams: Gauge,
    connections: Gauge,
    closed: Counter,
}

impl HttpMetrics {
    fn register(registry: &Registry) -> Result<Self, MetricsError> {
        const NONE: &[&str] = &[];
        let requests = registry.counter(
            "sonde_http_requests_total",
            "HTTP requests answered, by endpoint (`other` for unknown paths) and status code.",
            &["path", "code"],
            64,
        )?;
        let scrape_seconds = registry.histogram(
            "sonde_http_scrape_duration_seconds",
            "Time to answer /metrics: the daemon's refresh of kernel-side numbers plus rendering.",
            NONE,
            vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
            1,
        )?;
        let event_streams = registry.gauge(
            "sonde_http_event_streams",
            "Open /events?follow=1 streams.",
            NONE,
            1,
        )?;
        // Present from the first scrape, not only after the first stream.
        event_streams.add(NONE, 0.0)?;
        let connections = registry.gauge(
            "sonde_http_connections",
            "Open HTTP connections, by listener address.",
            &["listener"],
            8,
        )?;
        let closed = registry.counter(
            "sonde_http_connections_closed_total",
            "Connections the server closed itself: evicted_idle (the oldest idle one, to make room past max_connections), refused_busy (past max_connections with every connection busy), tls_handshake (failed or too slow), client_not_allowed (certificate without an allowed SAN), rate_limited is counted per request in sonde_http_requests_total{code=\"429\"}.",
            &["listener", "reason"],
            32,
        )?;
        Ok(HttpMetrics {
            requests,
            scrape_seconds,
            event_streams,
            connections,
            closed,
        })
    }
}

/// What every request handler sees.
struct Ctx {
    registry: Arc<Registry>,
    state: Arc<dyn DaemonState>,
    metrics: HttpMetrics,
    /// Becomes `true` when the server shuts down.
    stop: watch::Receiver<bool>,
    options: ServeOptions,
    /// The listener's address, for metric labels.
    addr: String,
}

/// One open connection, as the limit sees it.
struct Slot {
    /// Requests in flight, event streams included.
    busy: AtomicUsize,
    /// When it last started or finished a request (ms since `Slots::epoch`).
    last: AtomicU64,
    /// Told to close.
    evict: Notify,
}

/// The open connections of one listener.
struct Slots {
    epoch: Instant,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Slots {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Room for one more: `Ok(evicted?)`, or `Err` when all `max` are busy.
    fn make_room(&self, max: usize) -> Result<bool, ()> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() < max {
            return Ok(false);
        }
        let idle = open
            .values()
            .filter(|s| s.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|s| s.last.load(Ordering::Relaxed));
        match idle {
            Some(s) => {
                // Not picked again while it closes.
                s.busy.store(usize::MAX / 2, Ordering::Release);
                s.evict.notify_one();
                Ok(true)
            }
            None => Err(()),
        }
    }

    fn add(self: &Arc<Self>) -> SlotGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            last: AtomicU64::new(self.now()),
            evict: Notify::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, slot.clone());
        SlotGuard {
            slots: self.clone(),
            id,
            slot,
        }
    }
}

/// Removes its slot when the connection ends.
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// A request in flight on a slot; the connection is idle again when the last one
/// (and its response body) is dropped.
struct Busy {
    slot: Arc<Slot>,
    slots: Arc<Slots>,
}

impl Busy {
    fn new(slot: &Arc<Slot>, slots: &Arc<Slots>) -> Self {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        slot.last.store(slots.now(), Ordering::Relaxed);
        Busy {
            slot: slot.clone(),
            slots: slots.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot.last.store(self.slots.now(), Ordering::Relaxed);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the endpoints on `listener` until `shutdown` resolves, then stops
/// accepting, ends event streams and waits up to [`SHUTDOWN_GRACE`] for open
/// connections. Accept errors (e.g. out of file descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    state: Arc<dyn DaemonState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    serve_with(listener, ServeOptions::default(), registry, state, shutdown).await
}

/// [`serve`] with TLS, auth, routes and the connection limit of `options`.
pub async fn serve_with(
    listener: TcpListener,
    options: ServeOptions,
    registry: Arc<Registry>,
    state: Arc<dyn DaemonState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let metrics = HttpMetrics::register(&registry)?;
    let (stop_tx, stop) = watch::channel(false);
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let max = options.max_connections.max(1);
    let ctx = Arc::new(Ctx {
        registry,
        state,
        metrics,
        stop,
        options,
        addr: addr.clone(),
    });
    let slots = Arc::new(Slots {
        epoch: Instant::now(),
        next: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
    });
    let _ = ctx.metrics.connections.set(&[addr.as_str()], 0.0);
    info!(
        addr = %addr,
        tls = ctx.options.security.get().is_some_and(|s| s.tls.is_some()),
        basic_auth = ctx.options.security.get().is_some_and(|s| s.basic_auth()),
        max_connections = max,
        routes = ?ctx.options.routes,
        "http server listening"
    );
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    match slots.make_room(max) {
                        Ok(evicted) => {
                            if evicted {
                                let _ = ctx.metrics.closed.inc(&[addr.as_str(), "evicted_idle"]);
                            }
                            let guard = slots.add();
                            connections.spawn(connection(ctx.clone(), stream, peer, guard));
                        }
                        Err(()) => {
                            let _ = ctx.metrics.closed.inc(&[addr.as_str(), "refused_busy"]);
                            debug!(peer = %peer, max_connections = max, "every connection busy: closing the new one");
                            drop(stream);
                        }
                    }
                }
                Err(e) => {
                    warn!(addr = %addr, error = %e, "http accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => reap(done),
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    let open = connections.len();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = connections.join_next().await {
            reap(done);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = connections.len(),
            "http connections still open after the shutdown grace; closing them"
        );
        connections.shutdown().await;
    }
    info!(addr = %addr, connections = open, "http server stopped");
    Ok(())
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!(error = %e, "http connection task panicked");
        }
    }
}

/// Resolves once the server shuts down (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr, guard: SlotGuard) {
    let _ = stream.set_nodelay(true);
    let label = ctx.addr.clone();
    let _ = ctx.metrics.connections.add(&[label.as_str()], 1.0);
    let slot = guard.slot.clone();
    let security = ctx.options.security.get();
    match security.as_ref().and_then(|s| s.tls.clone()) {
        None => serve_io(ctx.clone(), stream, peer, guard).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                r = handshake => r,
                _ = slot.evict.notified() => Ok(Err(std::io::Error::other("evicted"))),
            };
            match tls {
                Ok(Ok(tls)) => {
                    if security
                        .as_ref()
                        .is_some_and(|s| !s.client_allowed(tls.get_ref().1.peer_certificates()))
                    {
                        let _ = ctx
                            .metrics
                            .closed
                            .inc(&[label.as_str(), "client_not_allowed"]);
                        debug!(peer = %peer, "client certificate has no allowed SAN (client_allowed_sans)");
                    } else {
                        serve_io(ctx.clone(), tls, peer, guard).await;
                    }
                }
                Ok(Err(e)) => {
                    let _ = ctx.metrics.closed.inc(&[label.as_str(), "tls_handshake"]);
                    debug!(peer = %peer, error = %e, "tls handshake failed");
                }
                Err(_) => {
                    let _ = ctx.metrics.closed.inc(&[label.as_str(), "tls_handshake"]);
                    debug!(peer = %peer, "tls handshake timed out");
                }
            }
        }
    }
    let _ = ctx.metrics.connections.add(&[label.as_str()], -1.0);
}

async fn serve_io<IO>(ctx: Arc<Ctx>, io: IO, peer: SocketAddr, guard: SlotGuard)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = ctx.stop.clone();
    let slot = guard.slot.clone();
    let slots = guard.slots.clone();
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        let busy = Busy::new(&slot, &slots);
        async move { Ok::<_, Infallible>(handle(&ctx, req, busy).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = guard.slot.evict.notified() => {
            debug!(peer = %peer, "idle connection closed to make room (max_connections)");
            Ok(())
        }
    };
    if let Err(e) = result {
        debug!(peer = %peer, error = %e, "http connection ended with an error");
    }
}

/// The endpoints; the `path` label of `sonde_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
    Readyz,
    Status,
    Events,
    Other,
}

impl Route {
    fn of(path: &str) -> Self {
        match path {
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/status" => Route::Status,
            "/events" => Route::Events,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Metrics => "/metrics",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Status => "/status",
            Route::Events => "/events",
            Route::Other => "other",
        }
    }
}

async fn handle(ctx: &Arc<Ctx>, req: Request<Incoming>, busy: Busy) -> Response<Body> {
    let route = Route::of(req.uri().path());
    let security = ctx.options.security.get();
    let security = security.as_deref();
    let served = match (ctx.options.routes, route) {
        (_, Route::Healthz | Route::Readyz | Route::Other) | (Routes::All, _) => true,
        (Routes::Metrics, r) => r == Route::Metrics,
        (Routes::Status, r) => r != Route::Metrics,
    };
    let mut response = if security.is_some_and(|s| !s.admit()) {
        text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests (rate_limit of the web config)\n",
        )
    } else if !matches!(route, Route::Healthz | Route::Readyz)
        && security.is_some_and(|s| s.basic_auth())
        && !authorized(security, &req).await
    {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "unauthorized: basic auth needed\n",
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sonde\""),
        );
        r
    } else if !served {
        let path = req.uri().path();
        text(
            StatusCode::NOT_FOUND,
            match (route, &ctx.options.status_elsewhere) {
                (Route::Metrics, _) => {
                    format!("{path} is not served here; it is on the main listen address\n")
                }
                (_, Some(addr)) => format!("{path} is served on {addr} (status_listen)\n"),
                (_, None) => format!("{path} is turned off (status_listen: off)\n"),
            },
        )
    } else {
        route_request(ctx, &req, route, busy).await
    };
    if let Some(s) = security {
        for (k, v) in &s.headers {
            response.headers_mut().insert(k.clone(), v.clone());
        }
    }
    let _ = ctx
        .metrics
        .requests
        .inc(&[route.label(), response.status().as_str()]);
    response
}

async fn authorized(security: Option<&web::WebSecurity>, req: &Request<Incoming>) -> bool {
    match security {
        None => true,
        Some(s) => s.authorized(req.headers().get(AUTHORIZATION)).await,
    }
}

async fn route_request(
    ctx: &Arc<Ctx>,
    req: &Request<Incoming>,
    route: Route,
    busy: Busy,
) -> Response<Body> {
    match route {
        Route::Other => text(
            StatusCode::NOT_FOUND,
            format!(
                "no endpoint {}; try /metrics, /healthz, /readyz, /status or /events\n",
                req.uri().path()
            ),
        ),
        _ if req.method() != Method::GET => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed; use GET\n", req.method()),
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            r
        }
        Route::Metrics => metrics(ctx, req).await,
        Route::Healthz => text(StatusCode::OK, "ok\n"),
        Route::Readyz => match ctx.state.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        Route::Status => status(ctx),
        Route::Events => events(ctx, req.uri().query(), busy),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", Body::full(body))
}

async fn metrics(ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let format = Exposition::negotiate(req.headers().get(ACCEPT));
    match scrape::render(ctx.registry.clone(), ctx.state.clone(), format).await {
        Ok((body, seconds)) => {
            let _ = ctx.metrics.scrape_seconds.observe(&[] as &[&str], seconds);
            respond(StatusCode::OK, format.content_type(), Body::full(body))
        }
        Err(e) => {
            error!(error = %e, "metrics rendering failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics rendering failed; see the daemon's log\n",
            )
        }
    }
}

fn status(ctx: &Ctx) -> Response<Body> {
    // Serializing a `Value` cannot fail.
    let mut json = serde_json::to_string_pretty(&ctx.state.status()).unwrap_or_default();
    json.push('\n');
    respond(StatusCode::OK, "application/json", Body::full(json))
}

fn events(ctx: &Ctx, query: Option<&str>, busy: Busy) -> Response<Body> {
    let query = match EventsQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad /events query: {e}\n")),
    };
    let (backlog, live) = ctx.state.subscribe();
    let backlog = query.backlog(&backlog);
    let body = if query.follow {
        events::follow(
            query,
            backlog,
            live,
            ctx.state.clone(),
            ctx.stop.clone(),
            ctx.metrics.event_streams.clone(),
            Box::new(busy),
        )
    } else {
        Body::full(backlog)
    };
    let mut r = respond(StatusCode::OK, NDJSON_CONTENT_TYPE, body);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
