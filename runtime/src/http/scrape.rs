//! `GET /metrics`: the registry in the format the scraper asks for.
//!
//! Prometheus lists the formats it accepts in `Accept`, best first, e.g.
//!
//! ```text
//! Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1
//! ```
//!
//! OpenMetrics 1.0 is served when `application/openmetrics-text` is accepted at
//! least as much as plain text; anything else (curl's `*/*`, no header) gets
//! Prometheus text 0.0.4. Prometheus started with
//! `--enable-feature=native-histograms` asks for the protobuf format first:
//!
//! ```text
//! Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,...
//! ```
//!
//! and gets it (log2 histograms as native histograms, [`Registry::render_protobuf`])
//! when it is accepted at least as much as either text format.

use std::sync::Arc;
use std::time::Instant;

use hyper::header::HeaderValue;

use crate::metrics::{Registry, PROTOBUF_CONTENT_TYPE};

use super::DaemonState;

pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    Prometheus,
    OpenMetrics,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages.
    Protobuf,
}

impl Exposition {
    /// Picks the format from an `Accept` header (`None`: no header).
    pub fn negotiate(accept: Option<&HeaderValue>) -> Self {
        let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
            return Exposition::Prometheus;
        };
        let (mut openmetrics, mut text, mut protobuf) = (0.0f32, 0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let params: Vec<(&str, &str)> = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let param = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
            };
            let q = param("q").map_or(1.0, |v| v.parse().unwrap_or(0.0));
            if media.eq_ignore_ascii_case("application/vnd.google.protobuf") {
                // Only the delimited encoding of MetricFamily (not `text` or
                // `compact-text`, which older clients could ask for).
                if param("proto") == Some("io.prometheus.client.MetricFamily")
                    && param("encoding") == Some("delimited")
                {
                    protobuf = protobuf.max(q);
                }
            } else if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(q);
            } else if ["text/plain", "text/*", "*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
            {
                text = text.max(q);
            }
        }
        if protobuf > 0.0 && protobuf >= openmetrics && protobuf >= text {
            Exposition::Protobuf
        } else if openmetrics > 0.0 && openmetrics >= text {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Exposition::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Exposition::Protobuf => PROTOBUF_CONTENT_TYPE,
        }
    }
}

/// Lets the daemon refresh its kernel-side numbers, then renders. Runs on the
/// blocking pool so a large registry does not stall event streams. Returns the body
/// and how long it all took, in seconds.
pub async fn render(
    registry: Arc<Registry>,
    state: Arc<dyn DaemonState>,
    format: Exposition,
) -> Result<(Vec<u8>, f64), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        state.before_scrape();
        let text = match format {
            Exposition::Prometheus => registry.render_prometheus().into_bytes(),
            Exposition::OpenMetrics => registry.render_openmetrics().into_bytes(),
            Exposition::Protobuf => registry.render_protobuf(),
        };
        (text, started.elapsed().as_secs_f64())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> Exposition {
        Exposition::negotiate(Some(&HeaderValue::from_str(accept).unwrap()))
    }

    #[test]
    fn prometheus_asks_for_openmetrics_first() {
        // Prometheus 2.x.
        assert_eq!(
            pick("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Exposition::OpenMetrics
        );
        // Prometheus 3.x.
        assert_eq!(
            pick("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"),
            Exposition::OpenMetrics
        );
    }

    #[test]
    fn prometheus_with_native_histograms_asks_for_protobuf() {
        // Prometheus 2.42 with --enable-feature=native-histograms.
        assert_eq!(
            pick("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Exposition::Protobuf
        );
        assert_eq!(
            Exposition::Protobuf.content_type(),
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        );
        // Other encodings, or protobuf ranked below text, get text.
        assert_eq!(
            pick("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"),
            Exposition::Prometheus
        );
        assert_eq!(
            pick("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.2,application/openmetrics-text;version=1.0.0;q=0.5"),
            Exposition::OpenMetrics
        );
    }

    #[test]
    fn plain_text_otherwise() {
        assert_eq!(Exposition::negotiate(None), Exposition::Prometheus);
        assert_eq!(pick("*/*"), Exposition::Prometheus);
        // scrape_protocols: [PrometheusText0.0.4]
        assert_eq!(
            pick("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Exposition::Prometheus
        );
        assert_eq!(
            pick("text/plain, application/openmetrics-text;q=0.3"),
            Exposition::Prometheus
        );
        assert_eq!(
            pick("application/openmetrics-text;q=0"),
            Exposition::Prometheus
        );
    }
}
