//! The daemon's configuration: YAML, snake_case, every key optional.
//!
//! The embedded default is `packaging/config.yaml` itself, so the documented file and
//! what runs without `--config` cannot drift apart. A mistake names its config path
//! and, for YAML syntax, the line and column:
//!
//! ```
//! use sonde::daemon::config::Config;
//!
//! let cfg = Config::parse("x.yaml", "scripts:\n  params:\n    tcp_reset: { stack: true }\n").unwrap();
//! assert_eq!(cfg.scripts.params["tcp_reset"]["stack"], "true");
//! let err = Config::parse("x.yaml", "limits:\n  call_deadlin: 1s\n").unwrap_err();
//! assert!(err.to_string().starts_with("x.yaml: limits.call_deadlin: unknown field `call_deadlin`"));
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::script::Limits;
use crate::sinks::SinksConfig;

/// The commented default configuration, embedded.
pub const DEFAULT_YAML: &str = include_str!("../../../packaging/config.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// The file can be changed by someone else than root or the daemon's user.
    #[error("{message}")]
    Untrusted { file: String, message: String },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        /// Dotted config path, e.g. `limits.call_deadline` (`.` for the root).
        path: String,
        message: String,
    },
}

/// Everything `sonde daemon` reads from its config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP endpoints (`/metrics`, `/events`, ...).
    pub listen: SocketAddr,
    /// A Prometheus web configuration file (TLS, basic auth, headers, rate limit:
    /// [`crate::http::web`]); empty: plain HTTP without auth. `--web-config`
    /// overrides it.
    pub web_config: Option<PathBuf>,
    /// Where `/status` and `/events` are served: `listen` (with `/metrics`), `off`,
    /// or a loopback address of their own (plain HTTP, no auth: for `sonde events`
    /// and people on the node).
    pub status_listen: StatusListen,
    /// Open HTTP connections at most, per listener; past it the longest idle one is
    /// closed, or the new one when all are busy.
    pub max_connections: usize,
    /// The `node` label of every series and event; empty: the host name.
    pub node_name: String,
    /// Kernel BTF to use before anything else (a file), or a directory searched
    /// after `/sys/kernel/btf/vmlinux`; empty: the fallback chain alone.
    pub btf: Option<PathBuf>,
    /// Directory of BTFs laid out `<ID>/<VERSION_ID>/<arch>/<release>.btf[.xz]`,
    /// searched after the embedded ones; empty: `/var/lib/sonde/btf` if it exists.
    pub btf_archive: Option<PathBuf>,
    pub scripts: ScriptsConfig,
    pub limits: LimitsConfig,
    /// How metrics are exported on `/metrics`.
    pub metrics: MetricsConfig,
    pub sinks: SinksConfig,
    /// Pod resolution: the container runtime's socket, refresh, pod labels.
    pub pods: crate::pods::PodsConfig,
    /// How long shutdown may take (scripts' `on_exit`, then flushing sinks) before
    /// what is left is dropped; the process ends at most
    /// [`super::shutdown::EXIT_MARGIN`] later.
    #[serde(with = "super::serde_util::duration")]
    pub shutdown_timeout: Duration,
}

/// `status_listen`: where `/status` and `/events` are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusListen {
    /// On `listen`, with everything else.
    Listen,
    /// Not served.
    Off,
    /// On a loopback address of their own.
    Addr(SocketAddr),
}

impl Serialize for StatusListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StatusListen::Listen => s.serialize_str("listen"),
            StatusListen::Off => s.serialize_str("off"),
            StatusListen::Addr(a) => s.serialize_str(&a.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for StatusListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "listen" | "" => Ok(StatusListen::Listen),
            "off" => Ok(StatusListen::Off),
            other => {
                let addr: SocketAddr = other.parse().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected `listen`, `off` or a loopback address like 127.0.0.1:9103, got `{other}`"
                    ))
                })?;
                if !addr.ip().is_loopback() {
                    return Err(serde::de::Error::custom(format!(
                        "{addr} is not a loopback address: /status and /events on an address of their own are served without TLS or auth, so only on 127.0.0.1 or ::1"
                    )));
                }
                Ok(StatusListen::Addr(addr))
            }
        }
    }
}

/// Which scripts run, and their params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsConfig {
    /// Built-in scripts to run, by name (`sonde daemon --check` lists them).
    pub builtin: Vec<String>,
    /// Directories of `*.rhai` scripts, watched for changes. A script here with the
    /// name of a built-in replaces it.
    pub directories: Vec<PathBuf>,
    /// Param overrides per script name: `tcp_reset: { stack: true }`. Values are
    /// parsed by the type of the script's default (durations like `"10ms"` work for
    /// integer params in ms/us/ns).
    pub params: BTreeMap<String, BTreeMap<String, String>>,
    /// sshd's `StrictModes`: a script file, every directory above it and the config
    /// file must be owned by root (or the daemon's user) and not writable by group or
    /// others, else they are refused ([`crate::script::trust`]). `false` only warns,
    /// for development.
    pub strict_modes: bool,
}

/// `metrics`: how metrics are exported on `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Log2 histograms in the text formats (classic histograms, one series per
    /// bucket) keep the bucket of every this-many-th power of two
    /// ([`crate::metrics::Registry::set_classic_log2_step`]): 1 keeps all (42
    /// buckets for a histogram of slots 0..=40), 4 (the default) every fourth (12).
    /// Protobuf scrapes (native histograms) always get every slot.
    pub classic_log2_step: u32,
    /// What every pod gets: `core` (the default; the series scripts mark detail
    /// are left out for pods) or `all` ([`crate::metrics::PodDetail`]).
    pub pod_detail: PodDetailMode,
    /// Pod namespaces whose pods get everything, and every bucket of the log2
    /// histograms in the text formats whatever `classic_log2_step` says.
    pub detail_namespaces: Vec<String>,
}

/// `metrics.pod_detail`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodDetailMode {
    /// The core set per pod; detail only for `detail_namespaces`.
    #[default]
    Core,
    /// Every series for every pod.
    All,
}

impl MetricsConfig {
    /// The registry's view of `pod_detail` and `detail_namespaces`.
    pub fn pod_detail(&self) -> crate::metrics::PodDetail {
        crate::metrics::PodDetail {
            all: self.pod_detail == PodDetailMode::All,
            namespaces: self.detail_namespaces.iter().cloned().collect(),
        }
    }
}

/// Default of [`MetricsConfig::classic_log2_step`].
pub const DEFAULT_CLASSIC_LOG2_STEP: u32 = 4;

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            classic_log2_step: DEFAULT_CLASSIC_LOG2_STEP,
            pod_detail: PodDetailMode::Core,
            detail_namespaces: Vec::new(),
        }
    }
}

impl MetricsConfig {
    /// `classic_log2_step` within 1..=16 (16: one bucket per 65536-fold range,
    /// about the coarsest that still tells apart microseconds from seconds).
    pub fn validate(&self) -> Result<(), (String, String)> {
        super::serde_util::check_range(
            self.classic_log2_step,
            1..=16,
            DEFAULT_CLASSIC_LOG2_STEP,
            "powers of two per bucket of a log2 histogram in the text formats",
        )
        .map_err(|m| ("metrics.classic_log2_step".to_string(), m))
    }
}

/// Limits applied to every script's handler calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    #[serde(with = "super::serde_util::duration")]
    pub call_deadline: Duration,
    /// Series per metric family; past it new series are dropped and counted.
    pub series_budget: usize,
    /// Memory one script may hold (its state, series, decoded records, queued
    /// events); past it the script is stopped and tried again later.
    #[serde(with = "super::serde_util::size")]
    pub memory: u64,
    /// How long one pass over a script's ring buffers may run handlers; what is still
    /// queued after it is dropped and counted, so a slow script sees fresh records.
    #[serde(with = "super::serde_util::duration")]
    pub max_backlog: Duration,
    /// Metric families one script may hold; past it registering a new one fails.
    pub families_per_script: usize,
    /// Series of all scripts' metric families together; past it new series are
    /// dropped and counted.
    pub total_series: usize,
    /// Largest script file read from a script directory, in bytes (`"1MiB"`).
    #[serde(with = "super::serde_util::size")]
    pub max_script_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9102)),
            web_config: None,
            status_listen: StatusListen::Listen,
            max_connections: crate::http::DEFAULT_MAX_CONNECTIONS,
            node_name: String::new(),
            btf: None,
            btf_archive: None,
            scripts: ScriptsConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            sinks: SinksConfig::default(),
            pods: crate::pods::PodsConfig::default(),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        ScriptsConfig {
            builtin: super::builtin::SCRIPTS
                .iter()
                .map(|(n, _)| n.to_string())
                .collect(),
            directories: vec![PathBuf::from("/etc/sonde/scripts.d")],
            params: BTreeMap::new(),
            strict_modes: true,
        }
    }
}

impl ScriptsConfig {
    /// The param overrides the config sets for one script, as `(name, text)`.
    pub fn overrides(&self, script: &str) -> Vec<(String, String)> {
        self.params
            .get(script)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            max_operations: l.max_operations,
            max_call_levels: l.max_call_levels,
            max_string_size: l.max_string_size,
            max_array_size: l.max_array_size,
            max_map_size: l.max_map_size,
            call_deadline: l.call_deadline,
            series_budget: l.series_budget,
            memory: 64 << 20,
            max_backlog: Duration::from_secs(1),
            families_per_script: crate::metrics::DEFAULT_FAMILIES_PER_SCRIPT,
            total_series: crate::metrics::DEFAULT_TOTAL_SERIES,
            max_script_bytes: crate::script::MAX_SCRIPT_BYTES,
        }
    }
}

/// The largest config file read (the documented default is 10 KB).
pub const MAX_FILE: u64 = 16 << 20;

/// The longest `shutdown_timeout`: past it a supervisor (systemd, the kubelet) has
/// long since killed the process.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(600);

impl LimitsConfig {
    /// Every limit within its range (see `packaging/config.yaml`), as (config path,
    /// message). The ranges are what a real deployment could need, and no more:
    ///
    /// | key | range | why the bounds |
    /// |---|---|---|
    /// | `max_operations` | 1000..=100000000 | 100M operations take seconds, past any deadline |
    /// | `max_call_levels` | 1..=128 | [`crate::script::stack::MAX_CALL_LEVELS`]: what the script stack holds |
    /// | `max_string_size` | 1..=16MiB | one string; a script holds many |
    /// | `max_array_size`, `max_map_size` | 1..=1000000 | entries of one array or map |
    /// | `call_deadline` | 1ms..=10s | a handler holds its script's records meanwhile |
    /// | `series_budget` | 1..=100000 | series of one metric family on one node |
    /// | `memory` | 1MiB..=16GiB | what one script holds, measured in its arena |
    /// | `max_backlog` | 1ms..=60s | handling in one pass before the rest is dropped |
    /// | `families_per_script` | 1..=10000 | metric families of one script |
    /// | `total_series` | 1..=50000000 | series of all scripts |
    /// | `max_script_bytes` | 1KiB..=64MiB | one script file |
    pub fn validate(&self) -> Result<(), (String, String)> {
        use super::serde_util::{check_duration, check_range, check_size};
        let d = LimitsConfig::default();
        let at = |key: &str| {
            let path = format!("limits.{key}");
            move |m: String| (path, m)
        };
        check_range(
            self.max_operations,
            1_000..=100_000_000,
            d.max_operations,
            "Rhai operations per handler call",
        )
        .map_err(at("max_operations"))?;
        check_range(
            self.max_call_levels,
            1..=crate::script::stack::MAX_CALL_LEVELS,
            d.max_call_levels,
            "nested function calls; deeper ones would not fit the stack scripts run on",
        )
        .map_err(at("max_call_levels"))?;
        check_range(
            self.max_string_size,
            1..=16 << 20,
            d.max_string_size,
            "bytes in one string",
        )
        .map_err(at("max_string_size"))?;
        check_range(
            self.max_array_size,
            1..=1_000_000,
            d.max_array_size,
            "elements in one array",
        )
        .map_err(at("max_array_size"))?;
        check_range(
            self.max_map_size,
            1..=1_000_000,
            d.max_map_size,
            "entries in one object map",
        )
        .map_err(at("max_map_size"))?;
        check_duration(
            self.call_deadline,
            Duration::from_millis(1)..=Duration::from_secs(10),
            d.call_deadline,
            "wall-clock time of one handler call",
        )
        .map_err(at("call_deadline"))?;
        check_range(
            self.series_budget,
            1..=100_000,
            d.series_budget,
            "series per metric family",
        )
        .map_err(at("series_budget"))?;
        check_size(
            self.memory,
            1 << 20..=16 << 30,
            d.memory,
            "memory one script may hold",
        )
        .map_err(at("memory"))?;
        check_duration(
            self.max_backlog,
            Duration::from_millis(1)..=Duration::from_secs(60),
            d.max_backlog,
            "handling in one pass over a script's ring buffers; longer means events late",
        )
        .map_err(at("max_backlog"))?;
        check_range(
            self.families_per_script,
            1..=10_000,
            d.families_per_script,
            "metric families one script may hold",
        )
        .map_err(at("families_per_script"))?;
        check_range(
            self.total_series,
            1..=50_000_000,
            d.total_series,
            "series of all scripts together",
        )
        .map_err(at("total_series"))?;
        check_size(
            self.max_script_bytes,
            1024..=64 << 20,
            d.max_script_bytes,
            "largest script file read",
        )
        .map_err(at("max_script_bytes"))?;
        Ok(())
    }

    pub fn to_limits(&self) -> Limits {
        Limits {
            max_operations: self.max_operations,
            max_call_levels: self.max_call_levels,
            max_string_size: self.max_string_size,
            max_array_size: self.max_array_size,
            max_map_size: self.max_map_size,
            call_deadline: self.call_deadline,
            series_budget: self.series_budget,
            ..Limits::default()
        }
    }

    /// The registry budgets these limits set.
    pub fn budgets(&self) -> crate::metrics::Budgets {
        crate::metrics::Budgets {
            families_per_script: self.families_per_script,
            total_series: self.total_series,
        }
    }
}

impl Config {
    /// Reads and validates a config file: a regular file of at most [`MAX_FILE`]
    /// bytes (a FIFO or a device is an error, not a wait).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let read = |source| ConfigError::Read {
            file: file.clone(),
            source,
        };
        let bytes = crate::btf::input::read_capped(path, MAX_FILE).map_err(read)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.utf8_error(),
            ))
        })?;
        Config::parse(&file, &text)
    }

    /// [`Config::load`], then the file's trust ([`crate::script::trust`]): a config
    /// that someone besides root (or the daemon's user) can change is refused, or
    /// only warned about when it sets `scripts.strict_modes: false`.
    pub fn load_trusted(path: &Path) -> Result<Config, ConfigError> {
        let cfg = Config::load(path)?;
        let policy = crate::script::trust::TrustPolicy::for_this_process();
        match crate::script::trust::check_trusted(path, &policy) {
            Ok(_) => Ok(cfg),
            Err(e) if !cfg.scripts.strict_modes => {
                tracing::warn!(error = %e, "untrusted config read anyway: it sets scripts.strict_modes: false");
                Ok(cfg)
            }
            Err(e) => Err(ConfigError::Untrusted {
                file: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::parse("packaging/config.yaml", DEFAULT_YAML)
            .unwrap_or_else(|e| panic!("the embedded default config is invalid: {e}"))
    }

    /// Parses and validates YAML; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let invalid = |path: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            path: if path.is_empty() { ".".into() } else { path },
            message,
        };
        // An empty or all-comments file is the default.
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| invalid(String::new(), yaml_message(&e)))?;
        let value = match value {
            serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
            v => v,
        };
        let value = stringify_params(value).map_err(|(p, m)| invalid(p, m))?;
        let cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            invalid(path, e.into_inner().to_string())
        })?;
        cfg.validate().map_err(|(p, m)| invalid(p, m))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (i, name) in self.scripts.builtin.iter().enumerate() {
            if super::builtin::find(name).is_none() {
                return Err((
                    format!("scripts.builtin[{i}]"),
                    format!(
                        "no built-in script `{name}`; built-in scripts: {}",
                        super::builtin::names().join(", ")
                    ),
                ));
            }
        }
        self.limits.validate()?;
        self.metrics.validate()?;
        super::serde_util::check_duration(
            self.shutdown_timeout,
            Duration::ZERO..=MAX_SHUTDOWN_TIMEOUT,
            Config::default().shutdown_timeout,
            "how long shutdown may spend flushing sinks",
        )
        .map_err(|m| ("shutdown_timeout".to_string(), m))?;
        super::serde_util::check_range(
            self.max_connections,
            1..=65536,
            crate::http::DEFAULT_MAX_CONNECTIONS,
            "HTTP connections open at once",
        )
        .map_err(|m| ("max_connections".to_string(), m))?;
        if let StatusListen::Addr(a) = self.status_listen {
            if a == self.listen {
                return Err((
                    "status_listen".into(),
                    format!("{a} is `listen` itself; write `listen` to serve them there"),
                ));
            }
        }
        self.pods.validate()?;
        self.sinks.validate().map_err(|e| match e {
            crate::sinks::SinkError::Config { path, reason } => (path.to_string(), reason),
            other => ("sinks".to_string(), other.to_string()),
        })?;
        Ok(())
    }

    /// The node name to use: the configured one or the host name.
    pub fn node(&self) -> String {
        if self.node_name.is_empty() {
            crate::pods::node_name()
        } else {
            self.node_name.clone()
        }
    }
}

/// `scripts.params.<script>.<param>` values are scalars of any YAML type; they reach
/// the script host as text and are parsed by the type of the script's default.
fn stringify_params(mut root: serde_yaml::Value) -> Result<serde_yaml::Value, (String, String)> {
    use serde_yaml::Value;
    let Some(params) = root
        .get_mut("scripts")
        .and_then(|s| s.get_mut("params"))
        .and_then(Value::as_mapping_mut)
    else {
        return Ok(root);
    };
    for (script, values) in params.iter_mut() {
        let script = yaml_key(script);
        let Some(values) = values.as_mapping_mut() else {
            if values.is_null() {
                *values = Value::Mapping(Default::default());
                continue;
            }
            return Err((
                format!("scripts.params.{script}"),
                "expected a map of param names to values, e.g. `{ stack: true }`".into(),
            ));
        };
        for (name, v) in values.iter_mut() {
            let text = match &*v {
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => {
                    return Err((
                        format!("scripts.params.{script}.{}", yaml_key(name)),
                        "expected a bool, a number or a string".into(),
                    ))
                }
            };
            *v = Value::String(text);
        }
    }
    Ok(root)
}

fn yaml_key(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn yaml_message(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => format!(
            "line {}, column {}: {}",
            l.line(),
            l.column(),
            e.to_string().split(" at line ").next().unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_the_default() {
        assert_eq!(Config::embedded(), Config::default());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("x", "").unwrap(), Config::default());
        assert_eq!(
            Config::parse("x", "# nothing\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn classic_log2_step_has_a_range() {
        assert_eq!(Config::default().metrics.classic_log2_step, 4);
        let c = Config::parse("c.yaml", "metrics:\n  classic_log2_step: 1\n").unwrap();
        assert_eq!(c.metrics.classic_log2_step, 1);
        let c = Config::parse("c.yaml", "metrics:\n  detail_namespaces: [shop]\n").unwrap();
        assert_eq!(c.metrics.detail_namespaces, ["shop"]);
        assert_eq!(c.metrics.pod_detail, PodDetailMode::Core);
        let c = Config::parse("c.yaml", "metrics:\n  pod_detail: all\n").unwrap();
        assert!(c.metrics.pod_detail().all);
        let e = Config::parse("c.yaml", "metrics:\n  pod_detail: some\n").unwrap_err();
        assert!(e.to_string().contains("metrics.pod_detail"), "{e}");
        let e = Config::parse("c.yaml", "metrics:\n  classic_log2_step: 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml: metrics.classic_log2_step: 0 is out of range 1..=16 (powers of two per bucket of a log2 histogram in the text formats); set a value in that range (default 4)"
        );
    }

    #[test]
    fn errors_name_the_path() {
        let e = Config::parse("c.yaml", "listen: nowhere\n").unwrap_err();
        assert!(e.to_string().starts_with("c.yaml: listen: "), "{e}");
        let e = Config::parse("c.yaml", "limits:\n  call_deadline: soon\n").unwrap_err();
        assert!(e.to_string().contains("limits.call_deadline"), "{e}");
        let e = Config::parse("c.yaml", "scripts:\n  builtin: [tcp_reset, nope]\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("scripts.builtin[1]: no built-in script `nope`"),
            "{e}"
        );
        let e = Config::parse("c.yaml", "scripts:\n  params:\n    x: { a: [1] }\n").unwrap_err();
        assert!(e.to_string().contains("scripts.params.x.a"), "{e}");
        let e = Config::parse("c.yaml", "limits:\n  max_operations: -3\n").unwrap_err();
        assert!(e.to_string().contains("limits.max_operations"), "{e}");
        let e = Config::parse("c.yaml", "limits: [\n").unwrap_err();
        assert!(e.to_string().contains("line "), "{e}");
        let e = Config::parse("c.yaml", "pods:\n  labels: [pod]\n").unwrap_err();
        assert!(e.to_string().contains("pods.labels[0]"), "{e}");
        let e = Config::parse("c.yaml", "pods:\n  refresh: 1ms\n").unwrap_err();
        assert!(e.to_string().contains("pods.refresh"), "{e}");
        let e = Config::parse("c.yaml", "limits:\n  families_per_script: 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yaml: limits.families_per_script: 0 is out of range 1..=10000 (metric families one script may hold); set a value in that range (default 256)"
        );
        let e = Config::parse("c.yaml", "limits:\n  total_series: 100000000\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("limits.total_series: 100000000 is out of range"),
            "{e}"
        );
        let e = Config::parse("c.yaml", "limits:\n  max_script_bytes: 1GiB\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("limits.max_script_bytes: 1GiB is out of range 1KiB..=64MiB (largest script file read); set a value in that range (default 1MiB)"),
            "{e}"
        );
        let c = Config::parse(
            "c.yaml",
            "limits:\n  max_script_bytes: 256KiB\n  families_per_script: 8\n",
        )
        .unwrap();
        assert_eq!(
            (c.limits.max_script_bytes, c.limits.families_per_script),
            (256 << 10, 8)
        );
        let e = Config::parse("c.yaml", "status_listen: 0.0.0.0:9103\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("status_listen: 0.0.0.0:9103 is not a loopback address"),
            "{e}"
        );
        let c = Config::parse(
            "c.yaml",
            "status_listen: \"[::1]:9103\"\nmax_connections: 8\n",
        )
        .unwrap();
        assert_eq!(
            c.status_listen,
            StatusListen::Addr("[::1]:9103".parse().unwrap())
        );
        assert_eq!(
            Config::parse("c.yaml", "status_listen: off\n")
                .unwrap()
                .status_listen,
            StatusListen::Off
        );
        let e = Config::parse("c.yaml", "max_connections: 0\n").unwrap_err();
        assert!(
            e.to_string().contains("max_connections: 0 is out of range"),
            "{e}"
        );
        let e = Config::parse("c.yaml", "frobnicate: 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `frobnicate`"), "{e}");
    }

    /// Values that passed `--check` and then took the daemon down: each is now
    /// refused with its path and range.
    #[test]
    fn numbers_out_of_their_range_name_path_and_range() {
        for (yaml, want) in [
            (
                "sinks:\n  queue: 18446744073709551615\n",
                "sinks.queue: 18446744073709551615 is out of range 1..=1048576 (",
            ),
            (
                "sinks:\n  stream:\n    backlog: 1000000000000\n",
                "sinks.stream.backlog: 1000000000000 is out of range 0..=65536 (",
            ),
            (
                "limits:\n  max_call_levels: 700\n",
                "limits.max_call_levels: 700 is out of range 1..=128 (",
            ),
            (
                "limits:\n  max_call_levels: 0\n",
                "limits.max_call_levels: 0 is out of range",
            ),
            (
                "limits:\n  max_operations: 0\n",
                "limits.max_operations: 0 is out of range 1000..=100000000",
            ),
            (
                "limits:\n  max_string_size: 1GiB\n",
                "limits.max_string_size: ",
            ),
            (
                "limits:\n  max_array_size: 100000000\n",
                "limits.max_array_size: 100000000 is out of range",
            ),
            (
                "limits:\n  max_map_size: 0\n",
                "limits.max_map_size: 0 is out of range",
            ),
            (
                "limits:\n  call_deadline: 0s\n",
                "limits.call_deadline: 0ns is out of range 1ms..=10s",
            ),
            (
                "limits:\n  call_deadline: 1000000h\n",
                "limits.call_deadline: 1000000h is out of range",
            ),
            (
                "limits:\n  series_budget: 10000000\n",
                "limits.series_budget: 10000000 is out of range 1..=100000",
            ),
            (
                "shutdown_timeout: 100000h\n",
                "shutdown_timeout: 100000h is out of range 0ns..=10m",
            ),
            (
                "pods:\n  refresh: 100000h\n",
                "pods.refresh: 100000h is out of range 100ms..=1h",
            ),
            (
                "pods:\n  label_budget: 0\n",
                "pods.label_budget: 0 is out of range 1..=10000",
            ),
            (
                "sinks:\n  queue: 0\n",
                "sinks.queue: 0 is out of range 1..=1048576",
            ),
            (
                "sinks:\n  file: { path: /tmp/x.jsonl, max_size: 10 }\n",
                "sinks.file.max_size: 10 is out of range 4KiB..=1TiB",
            ),
            (
                "sinks:\n  file: { path: /tmp/x.jsonl, max_files: 100000 }\n",
                "sinks.file.max_files: 100000 is out of range 0..=1000",
            ),
            (
                "sinks:\n  loki: { url: http://l:3100, batch_wait: 0s }\n",
                "sinks.loki.batch_wait: 0ns is out of range 10ms..=5m",
            ),
            (
                "sinks:\n  loki: { url: http://l:3100, batch_size: 10GiB }\n",
                "sinks.loki.batch_size: 10GiB is out of range 1KiB..=64MiB",
            ),
            (
                "sinks:\n  loki: { url: http://l:3100, max_buffer: 100000000 }\n",
                "sinks.loki.max_buffer: 100000000 is out of range 1..=1000000",
            ),
            (
                "sinks:\n  loki: { url: http://l:3100, timeout: 10h }\n",
                "sinks.loki.timeout: 10h is out of range 100ms..=5m",
            ),
            (
                "sinks:\n  loki: { url: http://l:3100, max_backoff: 10h }\n",
                "sinks.loki.max_backoff: 10h is out of range 500ms..=1h",
            ),
        ] {
            let e = Config::parse("c.yaml", yaml).unwrap_err().to_string();
            assert!(e.starts_with(&format!("c.yaml: {want}")), "{yaml}: {e}");
            if e.contains("out of range") {
                assert!(e.contains("; set a value in that range (default "), "{e}");
            }
        }
        // The bounds themselves are accepted.
        Config::parse(
            "c.yaml",
            "limits: { max_call_levels: 128, max_operations: 100000000, call_deadline: 10s }\n\
             sinks: { queue: 1048576, stream: { backlog: 0 } }\nshutdown_timeout: 0s\n",
        )
        .unwrap();
    }

    #[test]
    fn a_config_that_is_not_a_regular_file_is_an_error_at_once() {
        let e = Config::load(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: cannot read: not a regular file (a character device)"
        );
    }

    #[test]
    fn params_of_any_scalar_type() {
        let c = Config::parse(
            "c.yaml",
            "scripts:\n  params:\n    a: { x: 1, y: true, z: 10ms, w: 1.5 }\n    b:\n",
        )
        .unwrap();
        let a = &c.scripts.params["a"];
        assert_eq!(
            (&*a["x"], &*a["y"], &*a["z"], &*a["w"]),
            ("1", "true", "10ms", "1.5")
        );
        assert!(c.scripts.params["b"].is_empty());
    }
}
