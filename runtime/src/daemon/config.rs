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
    pub sinks: SinksConfig,
    /// Pod resolution: the container runtime's socket, refresh, pod labels.
    pub pods: crate::pods::PodsConfig,
    /// How long shutdown may take (scripts' `on_exit`, then flushing sinks) before
    /// what is left is dropped; the process ends at most
    /// [`super::shutdown::EXIT_MARGIN`] later.
    #[serde(with = "super::serde_util::duration")]
    pub shutdown_timeout: Duration,
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

/// Ranges of the budget limits: `(key, min, max)`.
const FAMILIES_PER_SCRIPT_RANGE: (usize, usize) = (1, 10_000);
const TOTAL_SERIES_RANGE: (usize, usize) = (1, 50_000_000);
const MAX_SCRIPT_BYTES_RANGE: (u64, u64) = (1024, 64 << 20);

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9102)),
            node_name: String::new(),
            btf: None,
            btf_archive: None,
            scripts: ScriptsConfig::default(),
            limits: LimitsConfig::default(),
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

impl LimitsConfig {
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
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&file, &text)
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
        let l = &self.limits;
        for (key, zero) in [
            ("max_operations", l.max_operations == 0),
            ("max_call_levels", l.max_call_levels == 0),
            ("max_string_size", l.max_string_size == 0),
            ("max_array_size", l.max_array_size == 0),
            ("max_map_size", l.max_map_size == 0),
            ("call_deadline", l.call_deadline.is_zero()),
            ("series_budget", l.series_budget == 0),
            ("max_backlog", l.max_backlog.is_zero()),
        ] {
            if zero {
                return Err((format!("limits.{key}"), "must be greater than zero".into()));
            }
        }
        if !(1 << 20..=16 << 30).contains(&l.memory) {
            return Err((
                "limits.memory".into(),
                format!(
                    "{} bytes is out of range: give 1MiB to 16GiB (e.g. \"64MiB\")",
                    l.memory
                ),
            ));
        }
        if l.max_backlog > Duration::from_secs(60) {
            return Err((
                "limits.max_backlog".into(),
                "must be at most 60s: a longer backlog means events minutes late".into(),
            ));
        }
        for (key, value, (min, max)) in [
            (
                "families_per_script",
                l.families_per_script,
                FAMILIES_PER_SCRIPT_RANGE,
            ),
            ("total_series", l.total_series, TOTAL_SERIES_RANGE),
        ] {
            if !(min..=max).contains(&value) {
                return Err((
                    format!("limits.{key}"),
                    format!("{value} is out of range; expected {min} to {max}"),
                ));
            }
        }
        let (min, max) = MAX_SCRIPT_BYTES_RANGE;
        if !(min..=max).contains(&l.max_script_bytes) {
            return Err((
                "limits.max_script_bytes".into(),
                format!(
                    "{} is out of range; expected {min} (1KiB) to {max} (64MiB)",
                    l.max_script_bytes
                ),
            ));
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
            "c.yaml: limits.families_per_script: 0 is out of range; expected 1 to 10000"
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
                .contains("limits.max_script_bytes: 1073741824 is out of range; expected 1024 (1KiB) to 67108864 (64MiB)"),
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
        let e = Config::parse("c.yaml", "frobnicate: 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `frobnicate`"), "{e}");
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
