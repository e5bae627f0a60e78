//! The Kubernetes packaging, checked offline with real tools: the Helm chart rendered
//! by real Helm (PyPI `helm-python-sdk`, the Helm v4 SDK; no helm binary, no
//! cluster), every object validated by `kubernetes-validate --strict`, and a real
//! Prometheus to scrape what runs.
//!
//! The Python packages live in `target/k8s-py` (`pip install --target`, Debian's
//! python3 and pip); `tests/run-all.sh` installs them, and [`py_env`] does when they
//! are missing.
//!
//! ```no_run
//! use sonde_tests::kubernetes::render;
//! let r = render(&[]);
//! let ds = r.object("DaemonSet");
//! assert_eq!(ds["spec"]["template"]["spec"]["hostPID"], true);
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{free_port, http_get};
use crate::repo_root;

/// Debian's interpreter (python3-minimal), whatever else is first on PATH.
pub const PYTHON: &str = "/usr/bin/python3";

pub fn chart_dir() -> PathBuf {
    repo_root().join("packaging/helm/sonde")
}

/// `target/k8s-py` with the packages of tests/kubernetes/requirements.txt, installed
/// once if missing.
pub fn py_env() -> PathBuf {
    static ENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let root = repo_root();
        let dir = root.join("target/k8s-py");
        let stamp = dir.join(".requirements.txt");
        let req = root.join("tests/kubernetes/requirements.txt");
        let wanted = std::fs::read_to_string(&req).unwrap();
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            // runs: /usr/bin/python3
            let out = Command::new(PYTHON)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--upgrade",
                    "--target",
                ])
                .arg(&dir)
                .arg("-r")
                .arg(&req)
                .output()
                .expect("python3 (apt-get install python3-pip)");
            assert!(
                out.status.success(),
                "pip install -r {}: {}",
                req.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&stamp, wanted).unwrap();
        }
        dir
    })
    .clone()
}

/// Runs a Python script of the repository with the packages of [`py_env`].
pub fn python(script: &str, args: &[&str]) -> std::process::Output {
    let env = py_env();
    // runs: /usr/bin/python3
    Command::new(PYTHON)
        .arg(repo_root().join(script))
        .args(args)
        .env("PYTHONPATH", &env)
        .current_dir(repo_root())
        .output()
        .expect("python3")
}

/// What `tests/kubernetes/chart.py render` found.
pub struct Rendered {
    pub objects: Vec<Value>,
    pub report: Value,
}

impl Rendered {
    /// Every object of this kind.
    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of this kind; panics when there is not exactly one.
    pub fn object(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "one {kind} expected: {:?}", self.kinds());
        all[0]
    }

    pub fn kinds(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// The sonde container of the DaemonSet's pod template.
    pub fn container(&self) -> &Value {
        let spec = &self.object("DaemonSet")["spec"]["template"]["spec"];
        spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "sonde")
            .expect("a container named sonde")
    }

    pub fn pod_spec(&self) -> &Value {
        &self.object("DaemonSet")["spec"]["template"]["spec"]
    }
}

/// Renders the chart with real Helm (`helm lint --strict`, values.schema.json, then
/// the templates) with these values files, and validates every object against the
/// Kubernetes schemas (1.25 and the newest) with `kubernetes-validate --strict`.
/// Panics with every error found.
pub fn render(values: &[&Path]) -> Rendered {
    let mut args = vec!["render".to_string(), chart_dir().display().to_string()];
    for v in values {
        args.push("-f".into());
        args.push(v.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python("tests/kubernetes/chart.py", &args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "chart.py printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["errors"].as_array().is_some_and(|e| e.is_empty()),
        "rendering with {values:?} failed:\n{}",
        serde_json::to_string_pretty(&report["errors"]).unwrap()
    );
    Rendered {
        objects: report["objects"].as_array().unwrap().clone(),
        report,
    }
}

/// A real Prometheus server scraping `targets` every second, in `dir`.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(dir: &Path, targets: &[SocketAddr]) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sonde\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        Prometheus {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir: dir.to_path_buf(),
        }
    }

    /// The result vector of an instant query (empty while Prometheus is starting).
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        match http_get(self.addr, &path, &[]) {
            Ok((200, body)) => serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["data"]["result"].as_array().cloned())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Polls `promql` until `ok` accepts its result; returns it, or panics with the
    /// last answer and the server's log after `timeout`.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        ok: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let start = std::time::Instant::now();
        let mut last = Vec::new();
        while start.elapsed() < timeout {
            last = self.query(promql);
            if ok(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "Prometheus never answered {promql} as expected; last: {last:?}\n{}",
            std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// keywords, label names, strings, durations or numbers.
pub fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    let b = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    // Inside {…} or after by/without/on/ignoring/group_x (…): label names, not metrics.
    let mut braces = 0;
    let mut label_list = false;
    while i < b.len() {
        let c = b[i] as char;
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < b.len() && b[i] as char != c {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '[' {
            // A range or subquery duration.
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '{' {
            braces += 1;
        } else if c == '}' {
            braces -= 1;
        } else if c == ')' {
            label_list = false;
        }
        if c.is_ascii_digit() || (c == '.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            // A number, possibly 1e-9 or 0.5.
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || ((b[i] == b'-' || b[i] == b'+') && (b[i - 1] == b'e' || b[i - 1] == b'E')))
            {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start().chars().next();
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                label_list = next == Some('(');
                continue;
            }
            if braces > 0 || label_list || next == Some('(') || KEYWORDS.contains(&lower.as_str()) {
                continue;
            }
            names.push(word.to_string());
            continue;
        }
        i += 1;
    }
    names.sort();
    names.dedup();
    names
}

/// The metric families a `/metrics` text declares (`# TYPE`), with the sample names
/// each one has (`_bucket`, `_sum`, `_count` for histograms and summaries). A
/// histogram's own name is there too: a Prometheus with native histograms scrapes
/// the protobuf format, where log2 histograms are native histograms of that name.
pub fn exported_names(metrics: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut w = rest.split_whitespace();
        let (Some(name), Some(kind)) = (w.next(), w.next()) else {
            continue;
        };
        match kind {
            "histogram" => {
                out.insert(name.to_string());
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            "summary" => {
                out.insert(name.to_string());
                for s in ["_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_leave_out_functions_labels_and_keywords() {
        assert_eq!(
            promql_metric_names(
                r#"histogram_quantile(0.99, sum by (node, le) (rate(sonde_x_seconds_bucket{node=~"$node", le!="1e-9"}[5m]))) > 1e-3"#
            ),
            ["sonde_x_seconds_bucket"]
        );
        assert_eq!(
            promql_metric_names("sonde_a == 0 unless on (node, script) sonde_b == 1 or vector(0)"),
            ["sonde_a", "sonde_b"]
        );
        assert_eq!(
            promql_metric_names(
                "sonde_c / (sonde_d > 0) > 0.85 and topk(10, sum without (x) (sonde_e))"
            ),
            ["sonde_c", "sonde_d", "sonde_e"]
        );
    }

    #[test]
    fn exported_names_expand_histograms() {
        let m =
            "# TYPE a_total counter\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"1\"} 0\n";
        let n = exported_names(m);
        assert!(
            n.contains("a_total")
                && n.contains("h_seconds_bucket")
                && n.contains("h_seconds_count")
        );
        assert!(n.contains("h_seconds"));
        assert!(!n.contains("a_total_bucket"));
    }
}
