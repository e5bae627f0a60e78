//! The `sinks:` section of the daemon config, and its validation.
//!
//! Every key, with its default (what the daemon runs with when the section is
//! missing: stdout text on, file and Loki off):
//!
//! ```yaml
//! sinks:
//!   queue: 4096            # events buffered per sink before drops are counted; 1..=1048576
//!   stdout:
//!     enabled: true
//!     format: text         # text (KubeSkoop style) | json
//!   file:
//!     path: ""             # empty = off; JSON lines
//!     max_size: 64MiB      # rotate before the file would pass this; 4KiB..=1TiB
//!     max_files: 5         # keep path.1 .. path.N; 0 keeps none; 0..=1000
//!   loki:
//!     url: ""              # empty = off; http://loki:3100 gets /loki/api/v1/push appended
//!                          # unless it has a path; https:// verifies Loki's certificate
//!     tls:                 # for https:// only
//!       ca_file: ""        # PEM CAs to trust instead of the system's (/etc/ssl/certs)
//!       cert_file: ""      # client certificate (mutual TLS), with key_file
//!       key_file: ""
//!       server_name: ""    # the name to verify instead of the URL's host
//!     tenant: ""           # X-Scope-OrgID
//!     basic_auth: { username: "", password: "" }   # or password_file: a path read at start
//!     bearer_token: ""     # or bearer_token_file: a path read at start; not with basic_auth
//!     batch_size: 1MiB     # push when a batch holds this many bytes of lines; 1KiB..=64MiB
//!     batch_wait: 1s       # or this long after the first event of a batch; 10ms..=5m
//!     timeout: 10s         # one push, connect to response; 100ms..=5m
//!     min_backoff: 500ms   # retry waits double from this (10ms..=5m) ...
//!     max_backoff: 30s     # ... up to this (min_backoff..=1h)
//!     labels: { job: sonde }   # static stream labels; `node` and `type` are added
//!     max_buffer: 10000    # events kept while Loki is away; the oldest go first; 1..=1000000
//!   stream:
//!     backlog: 1024        # recent events a new /events client gets first; 0..=65536
//! ```
//!
//! Every struct rejects unknown keys and fills missing ones from its default, so a
//! config names only what it changes:
//!
//! ```
//! use sonde::sinks::{SinksConfig, StdoutFormat};
//!
//! let config: SinksConfig = serde_yaml::from_str(
//!     "stdout: { format: json }\nloki: { url: \"http://loki:3100\", tenant: team-a }",
//! )
//! .unwrap();
//! config.validate().unwrap();
//! assert_eq!(config.stdout.format, StdoutFormat::Json);
//! assert_eq!(
//!     config.loki.push_url().unwrap().unwrap().to_string(),
//!     "http://loki:3100/loki/api/v1/push"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;
use serde::{Deserialize, Serialize};

use super::SinkError;

/// The most events a sink queue may hold (`sinks.queue`).
pub const MAX_QUEUE: usize = 1 << 20;

/// The most events the `/events` backlog may hold (`sinks.stream.backlog`).
pub const MAX_BACKLOG: usize = 1 << 16;

/// Where Loki's push API lives on a server given by its base URL.
pub const LOKI_PUSH_PATH: &str = "/loki/api/v1/push";

/// Every event sink of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Events buffered per sink before new ones are dropped (and counted).
    pub queue: usize,
    pub stdout: StdoutConfig,
    pub file: FileConfig,
    pub loki: LokiConfig,
    pub stream: StreamConfig,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            queue: 4096,
            stdout: StdoutConfig::default(),
            file: FileConfig::default(),
            loki: LokiConfig::default(),
            stream: StreamConfig::default(),
        }
    }
}

/// One line per event on standard output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    pub enabled: bool,
    pub format: StdoutFormat,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig {
            enabled: true,
            format: StdoutFormat::Text,
        }
    }
}

/// How the stdout sink prints an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdoutFormat {
    /// KubeSkoop-style `type=... pod=... key=value` ([`crate::event::Event::to_text`]).
    #[default]
    Text,
    /// One JSON object per line ([`crate::event::Event::to_json`]).
    Json,
}

/// JSON lines in a file, rotated by size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The file to append to; empty turns the sink off.
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes.
    #[serde(with = "crate::daemon::serde_util::size")]
    pub max_size: u64,
    /// Rotated files kept (`path.1` newest .. `path.N` oldest); 0 keeps none.
    pub max_files: u32,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: PathBuf::new(),
            max_size: 64 << 20,
            max_files: 5,
        }
    }
}

impl FileConfig {
    pub fn enabled(&self) -> bool {
        !self.path.as_os_str().is_empty()
    }
}

/// Grafana Loki's push API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiConfig {
    /// `http://host:port`, `https://host:port`, or a full push URL; empty turns the
    /// sink off.
    pub url: String,
    /// Certificates for `https://`.
    pub tls: LokiTls,
    /// Sent as `X-Scope-OrgID` when not empty.
    pub tenant: String,
    pub basic_auth: BasicAuth,
    pub bearer_token: Secret,
    /// A file holding the bearer token, read once at start.
    pub bearer_token_file: PathBuf,
    /// Push once a batch holds this many bytes of log lines.
    #[serde(with = "crate::daemon::serde_util::size")]
    pub batch_size: u64,
    /// ... or this long after the first event of a batch.
    #[serde(with = "crate::daemon::serde_util::duration")]
    pub batch_wait: Duration,
    /// For one push, from connecting to reading the response.
    #[serde(with = "crate::daemon::serde_util::duration")]
    pub timeout: Duration,
    /// First wait after a failed push; doubled after each failure up to `max_backoff`.
    #[serde(with = "crate::daemon::serde_util::duration")]
    pub min_backoff: Duration,
    #[serde(with = "crate::daemon::serde_util::duration")]
    pub max_backoff: Duration,
    /// Static stream labels; `job` defaults to `sonde`, `node` and `type` are added.
    pub labels: BTreeMap<String, String>,
    /// Events kept while Loki is unreachable; past it the oldest are dropped.
    pub max_buffer: usize,
}

/// TLS of the Loki sink, named as in Prometheus' `tls_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LokiTls {
    /// PEM file of the CAs that may sign Loki's certificate; empty: the system's
    /// trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    pub ca_file: PathBuf,
    /// Client certificate chain (PEM) for mutual TLS, with `key_file`.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The name Loki's certificate must carry, when it is not the URL's host.
    pub server_name: String,
}

impl LokiTls {
    pub fn is_set(&self) -> bool {
        *self != LokiTls::default()
    }
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig {
            url: String::new(),
            tls: LokiTls::default(),
            tenant: String::new(),
            basic_auth: BasicAuth::default(),
            bearer_token: Secret::default(),
            bearer_token_file: PathBuf::new(),
            batch_size: 1 << 20,
            batch_wait: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            labels: BTreeMap::from([("job".to_string(), "sonde".to_string())]),
            max_buffer: 10_000,
        }
    }
}

/// HTTP basic authentication; all fields empty means none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
    /// A file holding the password, read once at start (a mounted Kubernetes Secret).
    pub password_file: PathBuf,
}

impl BasicAuth {
    pub fn is_set(&self) -> bool {
        !self.username.is_empty()
            || !self.password.0.is_empty()
            || !self.password_file.as_os_str().is_empty()
    }
}

/// A credential: written and read like a string, shown as `***` by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// The live stream behind the HTTP `/events` endpoint. A client may fall `queue`
/// events behind before it misses some (counted as `sink="stream"` drops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Recent events a new subscriber receives first.
    pub backlog: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig { backlog: 1024 }
    }
}

fn invalid(path: &'static str, reason: impl Into<String>) -> SinkError {
    SinkError::Config {
        path,
        reason: reason.into(),
    }
}

impl SinksConfig {
    /// Checks what serde cannot: ranges, URLs, conflicting credentials. Files are not
    /// opened here; [`super::Sinks::start`] does that.
    ///
    /// Ranges (what a real node could need, and no more; each queue and buffer is
    /// allocated or can fill to its size):
    ///
    /// | key | range |
    /// |---|---|
    /// | `queue` | 1..=1048576 events |
    /// | `stream.backlog` | 0..=65536 events |
    /// | `file.max_size` | 4KiB..=1TiB |
    /// | `file.max_files` | 0..=1000 |
    /// | `loki.batch_size` | 1KiB..=64MiB |
    /// | `loki.batch_wait` | 10ms..=5m |
    /// | `loki.timeout` | 100ms..=5m |
    /// | `loki.min_backoff` | 10ms..=5m |
    /// | `loki.max_backoff` | min_backoff..=1h |
    /// | `loki.max_buffer` | 1..=1000000 events |
    pub fn validate(&self) -> Result<(), SinkError> {
        use crate::daemon::serde_util::{check_range, check_size};
        let d = SinksConfig::default();
        check_range(
            self.queue,
            1..=MAX_QUEUE,
            d.queue,
            "events buffered per sink",
        )
        .map_err(|m| invalid("sinks.queue", m))?;
        check_range(
            self.stream.backlog,
            0..=MAX_BACKLOG,
            d.stream.backlog,
            "recent events a new /events client gets first",
        )
        .map_err(|m| invalid("sinks.stream.backlog", m))?;
        check_size(
            self.file.max_size,
            4 << 10..=1 << 40,
            d.file.max_size,
            "rotate before the file passes this size",
        )
        .map_err(|m| invalid("sinks.file.max_size", m))?;
        check_range(
            self.file.max_files,
            0..=1000,
            d.file.max_files,
            "rotated files kept",
        )
        .map_err(|m| invalid("sinks.file.max_files", m))?;
        if self.file.enabled() && self.file.path.file_name().is_none() {
            return Err(invalid(
                "sinks.file.path",
                format!("`{}` names no file", self.file.path.display()),
            ));
        }
        self.loki.validate()
    }
}

impl LokiConfig {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The push endpoint: `url` with [`LOKI_PUSH_PATH`] appended when it has no path.
    /// `None` when the sink is off.
    pub fn push_url(&self) -> Result<Option<Uri>, SinkError> {
        let text = self.url.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let uri: Uri = text.parse().map_err(|e| {
            invalid(
                "sinks.loki.url",
                format!("expected a URL like \"http://loki:3100\", got \"{text}\" ({e})"),
            )
        })?;
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => {
                return Err(invalid(
                    "sinks.loki.url",
                    format!("expected a URL starting with http:// or https://, got \"{text}\""),
                ))
            }
        };
        let Some(authority) = uri.authority() else {
            return Err(invalid("sinks.loki.url", format!("\"{text}\" has no host")));
        };
        if authority.as_str().contains('@') {
            return Err(invalid(
                "sinks.loki.url",
                "credentials in the URL are not supported; use sinks.loki.basic_auth",
            ));
        }
        let path_and_query = match uri.path_and_query() {
            Some(pq) if pq.path() != "/" && !pq.path().is_empty() => pq.as_str().to_string(),
            Some(pq) => match pq.query() {
                Some(q) => format!("{LOKI_PUSH_PATH}?{q}"),
                None => LOKI_PUSH_PATH.to_string(),
            },
            None => LOKI_PUSH_PATH.to_string(),
        };
        let full = format!("{scheme}://{authority}{path_and_query}");
        full.parse().map(Some).map_err(|e| {
            invalid(
                "sinks.loki.url",
                format!("\"{full}\" is not a valid URL ({e})"),
            )
        })
    }

    fn validate(&self) -> Result<(), SinkError> {
        if !self.enabled() {
            return Ok(());
        }
        let url = self.push_url()?;
        if self.tls.is_set()
            && url
                .as_ref()
                .is_some_and(|u| u.scheme_str() != Some("https"))
        {
            return Err(invalid(
                "sinks.loki.tls",
                "is set but sinks.loki.url is http://; use https://",
            ));
        }
        if self.tls.cert_file.as_os_str().is_empty() != self.tls.key_file.as_os_str().is_empty() {
            return Err(invalid(
                "sinks.loki.tls.cert_file",
                "a client certificate needs both cert_file and key_file",
            ));
        }
        let bearer = !self.bearer_token.is_empty();
        let bearer_file = !self.bearer_token_file.as_os_str().is_empty();
        if bearer && bearer_file {
            return Err(invalid(
                "sinks.loki.bearer_token",
                "set either bearer_token or bearer_token_file, not both",
            ));
        }
        if self.basic_auth.is_set() && (bearer || bearer_file) {
            return Err(invalid(
                "sinks.loki.basic_auth",
                "set either basic_auth or a bearer token, not both",
            ));
        }
        if !self.basic_auth.password.is_empty()
            && !self.basic_auth.password_file.as_os_str().is_empty()
        {
            return Err(invalid(
                "sinks.loki.basic_auth.password",
                "set either password or password_file, not both",
            ));
        }
        if self.basic_auth.is_set() && self.basic_auth.username.is_empty() {
            return Err(invalid(
                "sinks.loki.basic_auth.username",
                "a password is set but the username is empty",
            ));
        }
        if self.basic_auth.username.contains(':') {
            return Err(invalid(
                "sinks.loki.basic_auth.username",
                "basic auth usernames cannot contain `:`",
            ));
        }
        use crate::daemon::serde_util::{check_duration, check_range, check_size};
        let d = LokiConfig::default();
        let ms = Duration::from_millis;
        check_size(
            self.batch_size,
            1 << 10..=64 << 20,
            d.batch_size,
            "bytes of log lines per push",
        )
        .map_err(|m| invalid("sinks.loki.batch_size", m))?;
        check_duration(
            self.batch_wait,
            ms(10)..=ms(300_000),
            d.batch_wait,
            "longest wait before a batch is pushed",
        )
        .map_err(|m| invalid("sinks.loki.batch_wait", m))?;
        check_duration(
            self.timeout,
            ms(100)..=ms(300_000),
            d.timeout,
            "one push, connect to response",
        )
        .map_err(|m| invalid("sinks.loki.timeout", m))?;
        check_duration(
            self.min_backoff,
            ms(10)..=ms(300_000),
            d.min_backoff,
            "first wait after a failed push",
        )
        .map_err(|m| invalid("sinks.loki.min_backoff", m))?;
        if self.max_backoff < self.min_backoff {
            return Err(invalid(
                "sinks.loki.max_backoff",
                format!(
                    "{:?} is shorter than min_backoff ({:?}); raise it or lower min_backoff",
                    self.max_backoff, self.min_backoff
                ),
            ));
        }
        check_duration(
            self.max_backoff,
            self.min_backoff..=ms(3_600_000),
            d.max_backoff,
            "longest wait between retries",
        )
        .map_err(|m| invalid("sinks.loki.max_backoff", m))?;
        check_range(
            self.max_buffer,
            1..=1_000_000,
            d.max_buffer,
            "events kept while Loki is unreachable",
        )
        .map_err(|m| invalid("sinks.loki.max_buffer", m))?;
        for (name, value) in &self.labels {
            if !is_label_name(name) {
                return Err(invalid(
                    "sinks.loki.labels",
                    format!(
                        "`{name}` is not a Loki label name (letters, digits and `_`, not \
                         starting with a digit)"
                    ),
                ));
            }
            if name == "node" || name == "type" {
                return Err(invalid(
                    "sinks.loki.labels",
                    format!("`{name}` is set by sonde on every stream; remove it"),
                ));
            }
            if value.is_empty() {
                return Err(invalid(
                    "sinks.loki.labels",
                    format!("`{name}` has an empty value; Loki drops empty labels"),
                ));
            }
        }
        Ok(())
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loki(url: &str) -> LokiConfig {
        LokiConfig {
            url: url.into(),
            ..LokiConfig::default()
        }
    }

    fn path_of(e: SinkError) -> &'static str {
        match e {
            SinkError::Config { path, .. } => path,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn default_is_stdout_text_only() {
        let c = SinksConfig::default();
        assert!(c.stdout.enabled);
        assert_eq!(c.stdout.format, StdoutFormat::Text);
        assert!(!c.file.enabled());
        assert!(!c.loki.enabled());
        assert_eq!(c.queue, 4096);
        assert_eq!(c.loki.labels["job"], "sonde");
        c.validate().unwrap();
        // An empty section is the default.
        let parsed: SinksConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(parsed, c);
    }

    /// The YAML in the module docs is the default, key for key.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let source = include_str!("config.rs");
        let yaml: String = source
            .lines()
            .skip_while(|l| *l != "//! ```yaml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| {
                format!(
                    "{}\n",
                    l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
                )
            })
            .collect();
        let doc: BTreeMap<String, SinksConfig> = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(doc["sinks"], SinksConfig::default());
    }

    #[test]
    fn documented_example_parses_and_round_trips() {
        let yaml = r#"
queue: 4096
stdout:
  enabled: true
  format: text
file:
  path: /var/log/sonde/events.jsonl
  max_size: 64MiB
  max_files: 5
loki:
  url: http://loki:3100
  tenant: team-a
  basic_auth: { username: "sonde", password: "s3cret" }
  batch_size: 1MiB
  batch_wait: 1s
  timeout: 10s
  min_backoff: 500ms
  max_backoff: 30s
  labels: { job: sonde, cluster: prod }
  max_buffer: 10000
stream:
  backlog: 256
"#;
        let c: SinksConfig = serde_yaml::from_str(yaml).unwrap();
        c.validate().unwrap();
        assert_eq!(c.file.max_size, 64 << 20);
        assert_eq!(c.loki.batch_wait, Duration::from_secs(1));
        assert_eq!(c.loki.min_backoff, Duration::from_millis(500));
        assert_eq!(c.loki.basic_auth.password.expose(), "s3cret");
        assert_eq!(c.loki.labels["cluster"], "prod");
        assert_eq!(c.stream.backlog, 256);
        let again: SinksConfig = serde_yaml::from_str(&serde_yaml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        // Secrets stay out of debug output.
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_yaml::from_str::<SinksConfig>("loki: { urll: http://x }").unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
        let err = serde_yaml::from_str::<SinksConfig>("stdout: { format: yaml }").unwrap_err();
        assert!(err.to_string().contains("yaml"), "{err}");
    }

    #[test]
    fn push_url_appends_the_push_path_only_when_there_is_no_path() {
        let url = |u: &str| loki(u).push_url().unwrap().unwrap().to_string();
        assert_eq!(url("http://loki:3100"), "http://loki:3100/loki/api/v1/push");
        assert_eq!(
            url("http://loki:3100/"),
            "http://loki:3100/loki/api/v1/push"
        );
        assert_eq!(url(" http://10.0.0.1 "), "http://10.0.0.1/loki/api/v1/push");
        assert_eq!(url("http://gw/custom/push"), "http://gw/custom/push");
        assert_eq!(loki("").push_url().unwrap(), None);
    }

    #[test]
    fn validation_names_the_config_path() {
        let check = |c: LokiConfig| {
            path_of(
                SinksConfig {
                    loki: c,
                    ..SinksConfig::default()
                }
                .validate()
                .unwrap_err(),
            )
        };
        assert_eq!(check(loki("ftp://loki")), "sinks.loki.url");
        let tls_on_http = LokiConfig {
            tls: LokiTls {
                ca_file: "/ca.pem".into(),
                ..LokiTls::default()
            },
            ..loki("http://loki")
        };
        assert_eq!(check(tls_on_http), "sinks.loki.tls");
        let half = LokiConfig {
            tls: LokiTls {
                cert_file: "/c.pem".into(),
                ..LokiTls::default()
            },
            ..loki("https://loki")
        };
        assert_eq!(check(half), "sinks.loki.tls.cert_file");
        assert_eq!(check(loki("loki:3100")), "sinks.loki.url");
        assert_eq!(check(loki("http://u:p@loki")), "sinks.loki.url");
        let both = LokiConfig {
            basic_auth: BasicAuth {
                username: "u".into(),
                password: Secret("p".into()),
                ..BasicAuth::default()
            },
            bearer_token: Secret("t".into()),
            ..loki("http://loki")
        };
        assert_eq!(check(both), "sinks.loki.basic_auth");
        let two_tokens = LokiConfig {
            bearer_token: Secret("t".into()),
            bearer_token_file: "/run/token".into(),
            ..loki("http://loki")
        };
        assert_eq!(check(two_tokens), "sinks.loki.bearer_token");
        let backoff = LokiConfig {
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(1),
            ..loki("http://loki")
        };
        assert_eq!(check(backoff), "sinks.loki.max_backoff");
        let reserved = LokiConfig {
            labels: BTreeMap::from([("node".into(), "x".into())]),
            ..loki("http://loki")
        };
        assert_eq!(check(reserved), "sinks.loki.labels");
        let bad_label = LokiConfig {
            labels: BTreeMap::from([("my-label".into(), "x".into())]),
            ..loki("http://loki")
        };
        assert_eq!(check(bad_label), "sinks.loki.labels");
        // Nothing is checked while the sink is off.
        SinksConfig {
            loki: LokiConfig {
                url: String::new(),
                min_backoff: Duration::ZERO,
                ..LokiConfig::default()
            },
            ..SinksConfig::default()
        }
        .validate()
        .unwrap();

        let zero_queue = SinksConfig {
            queue: 0,
            ..SinksConfig::default()
        };
        assert_eq!(path_of(zero_queue.validate().unwrap_err()), "sinks.queue");
        let zero_size = SinksConfig {
            file: FileConfig {
                path: "/tmp/x.jsonl".into(),
                max_size: 0,
                max_files: 1,
            },
            ..SinksConfig::default()
        };
        assert_eq!(
            path_of(zero_size.validate().unwrap_err()),
            "sinks.file.max_size"
        );
    }

    #[test]
    fn error_message_says_what_to_do() {
        let e = SinksConfig {
            loki: loki("ftp://loki.example"),
            ..SinksConfig::default()
        }
        .validate()
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("sinks.loki.url: "), "{msg}");
        assert!(
            msg.contains("expected a URL starting with http:// or https://"),
            "{msg}"
        );
        // https is kept as such.
        assert_eq!(
            loki("https://loki.example")
                .push_url()
                .unwrap()
                .unwrap()
                .to_string(),
            "https://loki.example/loki/api/v1/push"
        );
    }
}
