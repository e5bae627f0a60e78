//! The daemon's HTTP endpoints: `/metrics` for Prometheus, probes for Kubernetes,
//! `/status` for people, `/events` for `sonde events`.
//!
//! The daemon owns the state and lends it through [`DaemonState`]; this module only
//! answers requests. HTTP/1.1 only, `GET` only (anything else is 405, unknown paths
//! 404).
//!
//! ```text
//! GET /metrics   Prometheus text 0.0.4; OpenMetrics 1.0 when Accept asks for it
//! GET /healthz   200 "ok" while the server answers
//! GET /readyz    200 "ready", or 503 and the reason (e.g. scripts still loading)
//! GET /status    every script, its programs, variant, state and last error (JSON)
//! GET /events    recent events as NDJSON; ?follow=1 ?type=T ?pod=P ?limit=N
//! ```
//!
//! The server counts what it does in `sonde_http_requests_total{path,code}`,
//! `sonde_http_scrape_duration_seconds` and `sonde_http_event_streams`. When the
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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
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
        Ok(HttpMetrics {
            requests,
            scrape_seconds,
            event_streams,
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
    let metrics = HttpMetrics::register(&registry)?;
    let (stop_tx, stop) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        registry,
        state,
        metrics,
        stop,
    });
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    info!(addr = %addr, "http server listening");
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(ctx.clone(), stream, peer));
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

async fn connection(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut stop = ctx.stop.clone();
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
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

async fn handle(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let route = Route::of(req.uri().path());
    let response = match route {
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
        Route::Metrics => metrics(ctx, &req).await,
        Route::Healthz => text(StatusCode::OK, "ok\n"),
        Route::Readyz => match ctx.state.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        Route::Status => status(ctx),
        Route::Events => events(ctx, req.uri().query()),
    };
    let _ = ctx
        .metrics
        .requests
        .inc(&[route.label(), response.status().as_str()]);
    response
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

fn events(ctx: &Ctx, query: Option<&str>) -> Response<Body> {
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
        )
    } else {
        Body::full(backlog)
    };
    let mut r = respond(StatusCode::OK, NDJSON_CONTENT_TYPE, body);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
