//! sonde on Kubernetes, checked here without a cluster:
//!
//! - the Helm chart (packaging/helm/sonde) rendered with real Helm for the default
//!   values and for tests/kubernetes/values-all.yaml (everything on), every object
//!   validated against the Kubernetes schemas, and the DaemonSet's capabilities,
//!   mounts and environment asserted; the rendered config accepted by
//!   `sonde daemon --check`;
//! - the alert rules: the plain file is what the chart renders, `promtool check rules`
//!   and the `promtool test rules` unit tests pass;
//! - the dashboards: the fields Grafana needs, Loki selectors on labels sonde pushes;
//! - every PromQL expression of the dashboards and rules parses (promtool) and reads
//!   only metrics a daemon running the built-in scripts exports (a real scrape);
//! - the image built with podman from a clean checkout of HEAD and run as the
//!   DaemonSet runs it: through a real containerd CRI, in a host-network, host-PID
//!   sandbox, with the rendered securityContext, mounts, env and args, beside test
//!   pods (pause as uid 65535); a real Prometheus scrapes it and returns a reset
//!   counter labelled with a test pod's name; its events reach a Loki receiver with
//!   the password of a Secret volume; a script ConfigMap swapped the kubelet's way is
//!   reloaded; SIGTERM ends it cleanly. `SONDE_K8S_VALUES=file.yaml` adds a values
//!   file (e.g. `capabilities: {SYS_PTRACE: null}` shows what breaks without it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sonde_tests::cri::{self, netns_of, resets_in, Containerd};
use sonde_tests::daemon::{free_port, http_get, sample};
use sonde_tests::kubernetes::{
    exported_names, promql_metric_names, python, render, Prometheus, Rendered,
};
use sonde_tests::loki::LokiReceiver;
use sonde_tests::{cannot_run, repo_root, require_root, sonde_bin, sonde_ok, NamedNetns};

/// The capabilities the chart grants by default (values.yaml `capabilities`).
const CAPABILITIES: &[&str] = &[
    "BPF",
    "DAC_READ_SEARCH",
    "NET_ADMIN",
    "PERFMON",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_PTRACE",
];

fn temp(test: &str) -> PathBuf {
    let dir = sonde_tests::trusted_tmp().join(format!("sonde-k8s-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// volumeMounts joined with their volumes: mount path -> (volume, mount).
fn mounts(r: &Rendered) -> BTreeMap<String, (Value, Value)> {
    let volumes = r.pod_spec()["volumes"].as_array().unwrap();
    r.container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let v = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap_or_else(|| panic!("no volume for {m}"));
            (
                m["mountPath"].as_str().unwrap().to_string(),
                (v.clone(), m.clone()),
            )
        })
        .collect()
}

/// The sonde config.yaml of the rendered ConfigMap.
fn sonde_config(r: &Rendered) -> (String, Value) {
    let cm = r
        .all("ConfigMap")
        .into_iter()
        .find(|c| c["data"]["config.yaml"].is_string())
        .expect("the config ConfigMap");
    let text = cm["data"]["config.yaml"].as_str().unwrap().to_string();
    let v = yaml(&text);
    (text, v)
}

/// `sonde daemon --check` accepts the rendered config.
fn sonde_checks(config: &str, dir: &Path) {
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let path = dir.join("config.yaml");
    eprintln!("sonde daemon --check of the rendered config:\n{config}");
    sonde_ok(&[
        "daemon".as_ref(),
        "--check".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ]);
}

#[test]
fn chart_default_values_render_a_least_privilege_daemonset() {
    let r = render(&[]);
    let kinds: BTreeSet<String> = r
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"]
            .map(String::from)
            .into(),
        "optional objects are off by default"
    );
    for kn in r.kinds() {
        let versions = strings(&r.report["validated"][&kn]);
        assert_eq!(
            versions.len(),
            2,
            "{kn} validated against 1.25 and the newest: {versions:?}"
        );
    }

    let spec = r.pod_spec();
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(
        spec["dnsPolicy"], "ClusterFirstWithHostNet",
        "in-cluster names (Loki) resolve"
    );
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        spec["tolerations"][0]["operator"], "Exists",
        "every node, tainted ones too"
    );
    assert_eq!(
        r.object("DaemonSet")["spec"]["updateStrategy"]["type"],
        "RollingUpdate"
    );

    let c = r.container();
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&sc["capabilities"]["add"]), CAPABILITIES);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(
        sc["allowPrivilegeEscalation"], true,
        "the API server refuses false with SYS_ADMIN"
    );
    assert_eq!(
        strings(&c["args"]),
        ["daemon", "--config", "/etc/sonde/config/config.yaml"]
    );
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(env["SONDE_LOG"]["value"], "info");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["ports"][0]["containerPort"], 9102);
    assert!(c["resources"]["limits"]["memory"].is_string());

    let m = mounts(&r);
    let host = |path: &str| -> (String, String, bool) {
        let (v, mount) = m
            .get(path)
            .unwrap_or_else(|| panic!("no mount at {path}: {:?}", m.keys()));
        (
            v["hostPath"]["path"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["hostPath"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            mount["readOnly"] == true,
        )
    };
    assert_eq!(
        host("/sys/kernel/btf"),
        ("/sys/kernel/btf".into(), "Directory".into(), true)
    );
    assert_eq!(
        host("/sys/kernel/tracing"),
        ("/sys/kernel/tracing".into(), "Directory".into(), true)
    );
    assert_eq!(
        host("/sys/kernel/debug"),
        ("/sys/kernel/debug".into(), "Directory".into(), true)
    );
    assert_eq!(
        host("/run/netns"),
        ("/run/netns".into(), "DirectoryOrCreate".into(), true)
    );
    assert_eq!(m["/run/netns"].1["mountPropagation"], "HostToContainer");
    let cri = "/run/containerd/containerd.sock";
    assert_eq!(host(cri), (cri.into(), "Socket".into(), false));
    // The config ConfigMap mounted as a directory (not subPath), so that sonde sees
    // the kubelet's atomic swap of the ..data link.
    assert_eq!(m["/etc/sonde/config"].0["configMap"]["name"], "sonde");
    assert!(m["/etc/sonde/config"].1.get("subPath").is_none());
    assert!(
        !m.contains_key("/etc/sonde/scripts.d"),
        "no script ConfigMap without scripts"
    );
    assert!(
        !m.keys().any(|k| k == "/proc" || k == "/"),
        "hostPID gives /proc: {:?}",
        m.keys()
    );

    let svc = r.object("Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    assert_eq!(
        svc["spec"]["selector"],
        r.object("DaemonSet")["spec"]["selector"]["matchLabels"]
    );

    let (text, config) = sonde_config(&r);
    assert_eq!(config["listen"], "0.0.0.0:9102");
    assert_eq!(config["pods"]["cri_socket"], cri);
    assert_eq!(
        strings(&config["scripts"]["directories"]),
        ["/etc/sonde/scripts.d"]
    );
    assert!(
        config.get("node_name").is_none(),
        "node_name comes from NODE_NAME"
    );
    assert!(config.get("sinks").is_none(), "no Loki without a URL");
    sonde_checks(&text, &temp("check-default"));
}

#[test]
fn chart_with_everything_on_renders_valid_objects() {
    let r = render(&[&repo_root().join("tests/kubernetes/values-all.yaml")]);
    let kinds: Vec<String> = r.kinds();
    for want in [
        "DaemonSet/sonde",
        "ConfigMap/sonde",
        "ConfigMap/sonde-scripts",
        "Service/sonde",
        "ServiceAccount/sonde",
        "ServiceMonitor/sonde",
        "PodMonitor/sonde",
        "PrometheusRule/sonde",
        "ConfigMap/sonde-dashboard-sonde-pod-network",
        "ConfigMap/sonde-dashboard-sonde-latency",
        "ConfigMap/sonde-dashboard-sonde-events",
        "ConfigMap/sonde-dashboard-sonde-health",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
    // Custom resources have no schema in kubernetes-validate; the rest validated.
    let no_schema: BTreeSet<String> = strings(&r.report["no_schema"]).into_iter().collect();
    assert_eq!(
        no_schema,
        [
            "PodMonitor/sonde",
            "PrometheusRule/sonde",
            "ServiceMonitor/sonde"
        ]
        .map(String::from)
        .into()
    );
    for kn in kinds.iter().filter(|k| !no_schema.contains(*k)) {
        assert_eq!(strings(&r.report["validated"][kn]).len(), 2, "{kn}");
    }

    let c = r.container();
    assert_eq!(
        c["image"],
        "registry.example.invalid/sonde@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let mut caps: Vec<&str> = CAPABILITIES.to_vec();
    caps.push("SYS_RESOURCE");
    caps.sort();
    assert_eq!(strings(&c["securityContext"]["capabilities"]["add"]), caps);
    let m = mounts(&r);
    assert_eq!(
        m["/var/lib/sonde/btf"].0["persistentVolumeClaim"]["claimName"],
        "sonde-btf"
    );
    let scripts = &m["/etc/sonde/scripts.d"].0["projected"]["sources"];
    assert_eq!(scripts[0]["configMap"]["name"], "sonde-scripts");
    assert_eq!(scripts[1]["configMap"]["name"], "team-scripts");
    assert_eq!(
        m["/etc/sonde/secrets/loki"].0["secret"]["secretName"],
        "sonde-loki"
    );
    // The chart's scripts (the README's example) compile: `sonde check`.
    let scripts_dir = temp("chart-scripts");
    for (file, text) in configmap_data(&r, "sonde-scripts") {
        std::fs::write(scripts_dir.join(&file), text).unwrap();
        sonde_ok(&[Path::new("check"), &scripts_dir.join(&file)]);
    }

    let (text, config) = sonde_config(&r);
    let loki = &config["sinks"]["loki"];
    assert_eq!(loki["url"], "http://loki-gateway.monitoring.svc:80");
    assert_eq!(loki["tenant"], "team-a");
    assert_eq!(loki["labels"]["cluster"], "test");
    assert_eq!(loki["labels"]["job"], "sonde");
    assert_eq!(loki["basic_auth"]["username"], "sonde");
    assert_eq!(
        loki["basic_auth"]["password_file"],
        "/etc/sonde/secrets/loki/password"
    );
    assert_eq!(config["btf_archive"], "/var/lib/sonde/btf");
    assert_eq!(
        config["scripts"]["params"]["tcp_reset"]["stack"], true,
        "values' config merged in"
    );
    assert_eq!(
        strings(&config["scripts"]["directories"]),
        ["/etc/sonde/scripts.d"]
    );
    let dir = temp("check-all");
    sonde_checks(&text, &dir);

    let sm = r.object("ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        r.object("DaemonSet")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        r.object("PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"],
        "http"
    );

    // The PrometheusRule is the plain rules file (both come from one template).
    let plain = yaml(
        &std::fs::read_to_string(repo_root().join("packaging/prometheus/sonde-rules.yaml"))
            .unwrap(),
    );
    assert_eq!(r.object("PrometheusRule")["spec"], plain);

    // The dashboards: the files of packaging/grafana, labelled for the sidecar.
    for name in [
        "sonde-pod-network",
        "sonde-latency",
        "sonde-events",
        "sonde-health",
    ] {
        let cm = r
            .all("ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == format!("sonde-dashboard-{name}"))
            .unwrap();
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "sonde");
        assert_eq!(cm["metadata"]["namespace"], "monitoring");
        let file =
            std::fs::read_to_string(repo_root().join(format!("packaging/grafana/{name}.json")))
                .unwrap();
        assert_eq!(cm["data"][format!("{name}.json")].as_str().unwrap(), file);
    }
}

#[test]
fn chart_without_sys_admin_forbids_privilege_escalation() {
    let dir = temp("no-sys-admin");
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        "capabilities:\n  SYS_ADMIN: null\n  NET_ADMIN: null\n",
    )
    .unwrap();
    let r = render(&[&values]);
    let sc = &r.container()["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    let add = strings(&sc["capabilities"]["add"]);
    assert!(
        !add.contains(&"SYS_ADMIN".to_string()) && !add.contains(&"NET_ADMIN".to_string()),
        "{add:?}"
    );
    assert!(add.contains(&"BPF".to_string()));

    // values.schema.json rejects what the chart cannot honour.
    std::fs::write(&values, "capabilities:\n  CAP_BPF: x\nhostPID: false\n").unwrap();
    let out = python(
        "tests/kubernetes/chart.py",
        &[
            "render",
            &sonde_tests::kubernetes::chart_dir().display().to_string(),
            "-f",
            &values.display().to_string(),
        ],
    );
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("values.schema.json") || text.contains("schema"),
        "{text}"
    );
}

#[test]
fn generated_rules_and_dashboards_are_up_to_date() {
    for script in [
        "packaging/prometheus/generate.py",
        "packaging/grafana/dashboards.py",
    ] {
        let out = python(script, &["--check"]);
        assert!(
            out.status.success(),
            "{script} --check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    let dir = repo_root().join("packaging/prometheus");
    let out = sh(Command::new("promtool")
        .args(["check", "rules", "sonde-rules.yaml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
    let out = sh(Command::new("promtool")
        .args(["test", "rules", "sonde-rules.test.yaml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(dir.join("sonde-rules.test.yaml")).unwrap();
    for (_, rule) in rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool test"
        );
    }
}

/// (group, rule) of the plain rules file.
fn rules() -> Vec<(String, Value)> {
    let v = yaml(
        &std::fs::read_to_string(repo_root().join("packaging/prometheus/sonde-rules.yaml"))
            .unwrap(),
    );
    let mut out = Vec::new();
    for g in v["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            out.push((g["name"].as_str().unwrap().to_string(), r.clone()));
        }
    }
    out
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("packaging/grafana");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        out.len(),
        4,
        "{:?}",
        out.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    out
}

/// Every PromQL expression of the dashboards (targets and variable queries) and the
/// rules, with Grafana's variables replaced by values PromQL accepts.
fn promql_expressions() -> Vec<(String, String)> {
    let grafana = |e: &str| {
        e.replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$node", ".*")
            .replace("$namespace", ".*")
            .replace("$pod", ".*")
    };
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if t["datasource"]["type"] == "prometheus" {
                    out.push((
                        format!("{file}: {}", p["title"]),
                        grafana(t["expr"].as_str().unwrap()),
                    ));
                }
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" && v["datasource"]["type"] == "prometheus" {
                let q = v["query"]["query"].as_str().unwrap();
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|s| s.rsplit_once(','))
                    .map(|(sel, _)| sel.trim())
                    .unwrap_or_else(|| {
                        panic!(
                            "{file}: variable {} is not label_values(...): {q}",
                            v["name"]
                        )
                    });
                out.push((format!("{file}: variable {}", v["name"]), grafana(inner)));
            }
        }
    }
    for (group, r) in rules() {
        out.push((
            format!("rules {group}: {}", r["alert"]),
            r["expr"].as_str().unwrap().to_string(),
        ));
    }
    out
}

#[test]
fn dashboards_have_what_grafana_needs_and_query_loki_by_pushed_labels() {
    let mut uids = BTreeSet::new();
    for (file, d) in dashboards() {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid}");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} used twice");
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("sonde / ")),
            "{file}"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{file}: schemaVersion"
        );
        let vars: BTreeSet<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            vars.contains("node") && vars.contains("datasource"),
            "{file}: {vars:?}"
        );
        if file != "sonde-health.json" {
            assert!(
                vars.contains("namespace") && vars.contains("pod"),
                "{file}: {vars:?}"
            );
        }
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 2, "{file}");
        let mut ids = BTreeSet::new();
        for p in panels {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: panel id twice"
            );
            let g = &p["gridPos"];
            assert!(
                g["w"].as_u64().is_some_and(|w| w <= 24) && g["h"].as_u64().is_some(),
                "{file}: {g}"
            );
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap();
            assert!(
                p["datasource"]["uid"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("${")),
                "{file}: {title}: datasource"
            );
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: {title}: no targets"));
            assert!(!targets.is_empty(), "{file}: {title}");
            for t in targets {
                assert!(
                    t["refId"].is_string() && t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{file}: {title}"
                );
                let used = t["datasource"]["uid"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("${")
                    .trim_end_matches('}');
                assert!(
                    vars.contains(used),
                    "{file}: {title}: datasource variable {used} missing"
                );
                if t["datasource"]["type"] == "loki" {
                    check_loki(&format!("{file}: {title}"), t["expr"].as_str().unwrap());
                }
            }
            if p["type"] == "heatmap" {
                assert_eq!(targets[0]["format"], "heatmap", "{file}: {title}");
                assert!(
                    targets[0]["expr"].as_str().unwrap().contains("_bucket"),
                    "{file}: {title}"
                );
            }
        }
    }
    // The events dashboard has the logs panel with type, namespace and pod filters.
    let events = dashboards()
        .into_iter()
        .find(|d| d.0 == "sonde-events.json")
        .unwrap()
        .1;
    let logs = events["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "logs")
        .expect("a logs panel");
    let expr = logs["targets"][0]["expr"].as_str().unwrap();
    for want in [
        "type=~\"$type\"",
        "labels_namespace=~\"$namespace\"",
        "labels_pod=~\"$pod\"",
    ] {
        assert!(expr.contains(want), "{expr} lacks {want}");
    }
}

/// A LogQL expression selects streams only by the labels sonde's Loki sink pushes
/// (runtime/src/sinks/loki.rs: the static labels, `job` by default, `node`, `type`).
fn check_loki(what: &str, expr: &str) {
    const PUSHED: &[&str] = &["job", "node", "type"];
    let mut rest = expr;
    let mut selectors = 0;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').unwrap();
        let sel = &rest[open + 1..close];
        for matcher in sel.split(',') {
            let label: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(
                PUSHED.contains(&label.as_str()),
                "{what}: stream label {label} is not one sonde pushes: {expr}"
            );
        }
        selectors += 1;
        rest = &rest[close + 1..];
    }
    assert!(selectors > 0, "{what}: no stream selector in {expr}");
}

#[test]
fn every_promql_expression_parses_and_reads_metrics_sonde_exports() {
    let exprs = promql_expressions();
    assert!(exprs.len() > 60, "{}", exprs.len());

    // promtool parses each one (as a recording rule).
    let dir = temp("promql");
    let mut rules = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    std::fs::write(dir.join("exprs.yaml"), &rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("exprs.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool cannot parse an expression:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    if !require_root("every_promql_expression_parses_and_reads_metrics_sonde_exports (scrape)") {
        return;
    }
    // A daemon with the embedded default config's built-in scripts, on a random port.
    let metrics = scrape_builtin_daemon(&dir);
    let exported = exported_names(&metrics);
    for self_metric in [
        "sonde_script_up",
        "sonde_script_unavailable",
        "sonde_script_degraded",
        "sonde_script_failures_total",
        "sonde_script_memory_bytes",
        "sonde_script_records_dropped_total",
        "sonde_probe_records_lost_total",
        "sonde_events_dropped_total",
        "sonde_script_handler_seconds_total",
        "sonde_series_dropped_total",
        "sonde_btf_info",
    ] {
        assert!(
            exported.contains(self_metric),
            "{self_metric} is not in the scrape"
        );
    }
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (what, e) in &exprs {
        for name in promql_metric_names(e) {
            if !exported.contains(&name) {
                missing.push(format!("{what}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the dashboards or rules use but sonde does not export:\n  {}",
        missing.join("\n  ")
    );
    eprintln!(
        "{} expressions use {} metrics, all exported",
        exprs.len(),
        used.len()
    );
}

/// `/metrics` of `sonde daemon` with the embedded default config (every built-in
/// script), listening on a random port, after some traffic.
fn scrape_builtin_daemon(dir: &Path) -> String {
    let port = free_port();
    let default = std::fs::read_to_string(repo_root().join("packaging/config.yaml")).unwrap();
    let config = default
        .replace("listen: 0.0.0.0:9102", &format!("listen: 127.0.0.1:{port}"))
        .replace(
            "    - /etc/sonde/scripts.d",
            &format!("    - {}", dir.join("scripts").display()),
        )
        .replace("  cri_socket: auto", "  cri_socket: none");
    assert!(
        config.contains(&format!("127.0.0.1:{port}")),
        "packaging/config.yaml changed its listen line"
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let mut child = Command::new(sonde_bin())
        .args(["daemon", "--config"])
        .arg(dir.join("config.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    let mut metrics = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok((200, _)) = http_get(addr, "/readyz", &[]) {
            sonde_tests::connect_refused("127.0.0.1:9".parse().unwrap(), 3);
            // The source scripts name their families after the kernel's counters on
            // their first tick (10 s for snmp and tcpext): wait for it.
            let ready = Instant::now();
            while ready.elapsed() < Duration::from_secs(40) {
                std::thread::sleep(Duration::from_secs(1));
                metrics = http_get(addr, "/metrics", &[])
                    .map(|r| r.1)
                    .unwrap_or_default();
                if ready.elapsed() > Duration::from_secs(11)
                    && ["snmp", "tcpext", "netdev", "sock"]
                        .iter()
                        .all(|s| metrics.contains(&format!("# TYPE sonde_{s}_")))
                {
                    break;
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill on a child we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(
        metrics.contains("sonde_script_up"),
        "no scrape from the daemon:\n{}",
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    metrics
}

// ---- the image, run as the DaemonSet runs it ----

const IMAGE_TAG: &str = "localhost/sonde:k8s-test";
const NODE: &str = "k8s-node-1";

/// A tick counter dropped in through the chart's `scripts` value.
const CHART_SCRIPT: &str = r#"//! Counts its ticks: proves the chart's script ConfigMap is read.
const PROBE = #{ interval: "1s" };
fn init(params) { this.t = metrics::counter("chart_ticks_total", "Ticks of a script from the chart.", ["source"]); }
fn on_tick() { this.t.inc(["chart"]); }
"#;

/// The files of a ConfigMap or Secret volume as the kubelet writes them: a
/// timestamped directory, `..data` pointing at it, and one link per key through
/// `..data`. Writing again swaps `..data` atomically.
fn atomic_write(dir: &Path, files: &BTreeMap<String, String>, generation: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let version = format!("..gen_{generation}");
    std::fs::create_dir_all(dir.join(&version)).unwrap();
    for (k, v) in files {
        std::fs::write(dir.join(&version).join(k), v).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for k in files.keys() {
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{k}"), &link).unwrap();
        }
    }
}

/// The data of the rendered ConfigMap `name`.
fn configmap_data(r: &Rendered, name: &str) -> BTreeMap<String, String> {
    let cm = r
        .all("ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name}"));
    cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// What the kubelet would ask of the runtime for the sonde container of the rendered
/// DaemonSet: image, args, env (the downward API's spec.nodeName), mounts (hostPath
/// volumes as they are, ConfigMap volumes written under `volumes`), the
/// securityContext (capabilities, privileged, read-only root, user, no_new_privs,
/// seccomp) and the node's namespaces.
fn kubelet_container(
    r: &Rendered,
    image: &str,
    volumes: &Path,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> cri::ContainerConfig {
    let spec = r.pod_spec();
    let c = r.container();
    assert!(c.get("command").is_none(), "the image's entrypoint runs");
    let envs = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
                NODE.to_string()
            } else {
                panic!("env {e}: not supported by this test's kubelet");
            };
            cri::KeyValue {
                key: e["name"].as_str().unwrap().into(),
                value,
            }
        })
        .collect();
    let mut cri_mounts = Vec::new();
    for (path, (v, m)) in mounts(r) {
        let host_path = if let Some(p) = v["hostPath"]["path"].as_str() {
            match v["hostPath"]["type"].as_str().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(p).unwrap(),
                "Directory" => assert!(Path::new(p).is_dir(), "hostPath {p} is not a directory"),
                "Socket" => assert!(Path::new(p).exists(), "hostPath {p} does not exist"),
                t => panic!("hostPath type {t}"),
            }
            PathBuf::from(p)
        } else if let Some(name) = v["configMap"]["name"].as_str() {
            let dir = volumes.join(v["name"].as_str().unwrap());
            atomic_write(&dir, &configmap_data(r, name), 1);
            dir
        } else if let Some(sources) = v["projected"]["sources"].as_array() {
            let mut files = BTreeMap::new();
            for s in sources {
                files.extend(configmap_data(r, s["configMap"]["name"].as_str().unwrap()));
            }
            let dir = volumes.join(v["name"].as_str().unwrap());
            atomic_write(&dir, &files, 1);
            dir
        } else if let Some(name) = v["secret"]["secretName"].as_str() {
            let data = secrets
                .get(name)
                .unwrap_or_else(|| panic!("no Secret {name} given to this test's kubelet"));
            let dir = volumes.join(v["name"].as_str().unwrap());
            atomic_write(&dir, data, 1);
            dir
        } else {
            panic!("volume {v}: not supported by this test's kubelet");
        };
        cri_mounts.push(cri::Mount {
            container_path: path,
            host_path: host_path.display().to_string(),
            readonly: m["readOnly"] == true,
            propagation: if m["mountPropagation"] == "HostToContainer" {
                cri::PROPAGATION_HOST_TO_CONTAINER
            } else {
                0
            },
        });
    }
    let sc = &c["securityContext"];
    let seccomp = match spec["securityContext"]["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault") => (0, "runtime/default"),
        Some("Unconfined") | None => (1, "unconfined"),
        Some(t) => panic!("seccomp {t}"),
    };
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["hostPID"], true);
    cri::ContainerConfig {
        metadata: Some(sonde::pods::cri::ContainerMetadata {
            name: c["name"].as_str().unwrap().into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
        }),
        args: strings(&c["args"]),
        envs,
        mounts: cri_mounts,
        log_path: "sonde.log".into(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                // As the kubelet passes them: without CAP_ (the runtime adds it).
                capabilities: Some(cri::Capability {
                    add_capabilities: strings(&sc["capabilities"]["add"]),
                    drop_capabilities: strings(&sc["capabilities"]["drop"]),
                }),
                privileged: sc["privileged"] == true,
                namespace_options: Some(cri::host_namespaces()),
                run_as_user: sc["runAsUser"]
                    .as_i64()
                    .map(|value| cri::Int64Value { value }),
                readonly_rootfs: sc["readOnlyRootFilesystem"] == true,
                seccomp_profile_path: seccomp.1.into(),
                no_new_privs: sc["allowPrivilegeEscalation"] == false,
                seccomp: Some(cri::SecurityProfile {
                    profile_type: seccomp.0,
                    localhost_ref: String::new(),
                }),
            }),
        }),
        ..Default::default()
    }
}

/// Capabilities, seccomp mode and no_new_privs of the process whose command line
/// has `marker` (what the runtime gave the container), for failure messages.
fn process_status(marker: &str) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            for l in status.lines().filter(|l| {
                l.starts_with("Cap") || l.starts_with("Seccomp") || l.starts_with("NoNewPrivs")
            }) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Builds the image from a clean checkout of HEAD (`git archive`, extracted afresh
/// into target/image-src) with packaging/image/build; returns the OCI archive and
/// the build's output. The checkout's path stays the same from run to run, so cargo
/// rebuilds only what a new HEAD changed (files carry the commit's time).
fn build_image(dir: &Path) -> (PathBuf, String) {
    let src = repo_root().join("target/image-src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap();
    let archive = dir.join("head.tar");
    sh(Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["archive", "--format=tar", "-o"])
        .arg(&archive)
        .arg("HEAD"));
    sh(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&src));
    let image = dir.join("sonde-image.tar");
    // A target directory of its own, kept between runs: only the first build
    // compiles the dependencies (its binary must not replace target/release's).
    // runs: podman
    let out = sh(Command::new(src.join("packaging/image/build"))
        .args(["--tag", IMAGE_TAG, "--archive"])
        .arg(&image)
        .env("CARGO_TARGET_DIR", repo_root().join("target/image-build"))
        .current_dir(&src));
    (image, out)
}

/// The files of the image's layers.
fn image_files(archive: &Path, dir: &Path) -> BTreeSet<String> {
    let x = dir.join("oci");
    std::fs::create_dir_all(&x).unwrap();
    sh(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&x));
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(x.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        x.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut files = BTreeSet::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let list = sh(Command::new("tar")
            .arg("-tf")
            .arg(blob(layer["digest"].as_str().unwrap())));
        files.extend(
            list.lines()
                .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    files
}

#[test]
fn image_from_a_clean_checkout_runs_as_the_daemonset_under_cri() {
    if !require_root("image_from_a_clean_checkout_runs_as_the_daemonset_under_cri") {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        cannot_run(
            "image_from_a_clean_checkout_runs_as_the_daemonset_under_cri",
            "needs podman (apt-get install podman buildah; tests/run-all.sh installs it)",
        );
        return;
    }
    let dir = temp("image");

    // The image: one command, from HEAD, FROM scratch.
    let t = Instant::now();
    let (archive, out) = build_image(&dir);
    eprintln!("image built in {:?}: {}", t.elapsed(), out.trim());
    let inspect: Value = serde_json::from_str(&sh(
        Command::new("podman").args(["image", "inspect", IMAGE_TAG])
    ))
    .unwrap();
    let img = &inspect[0];
    let size = img["Size"].as_u64().unwrap();
    assert!(
        size <= 25 * 1024 * 1024,
        "image is {size} bytes, over 25 MiB"
    );
    let labels = &img["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(labels["org.opencontainers.image.licenses"]
        .as_str()
        .unwrap()
        .contains("Apache-2.0"));
    assert!(labels["org.opencontainers.image.source"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let head = sh(Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["rev-parse", "HEAD"]));
    assert_eq!(labels["org.opencontainers.image.revision"], head.trim());
    assert_eq!(strings(&img["Config"]["Entrypoint"]), ["/usr/bin/sonde"]);
    let files = image_files(&archive, &dir);
    assert!(
        files.contains("usr/bin/sonde") && files.contains("etc/sonde/config.yaml"),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.contains("ld-linux")),
        "the dynamic loader: {files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with("/libc.so.6")), "{files:?}");
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "bin/busybox"] {
        assert!(!files.contains(shell), "the image has {shell}");
    }
    eprintln!("image: {} bytes, files: {files:?}", size);

    // A node: containerd with two test pods and a named network namespace.
    let mut ctd = Containerd::start("k8s", 43);
    ctd.import(&archive);
    // Their pause processes run as 65535, as the kubelet's do: finding their
    // namespaces through /proc/<pid>/ns/net takes SYS_PTRACE.
    let (_web, web_pid) = ctd.run_pod_as("shop", "web-1", "web", Some(65535));
    let (_api, api_pid) = ctd.run_pod_as("shop", "api-1", "api", Some(65535));
    let uid = std::fs::read_to_string(format!("/proc/{api_pid}/status")).unwrap();
    assert!(uid.lines().any(|l| l.starts_with("Uid:\t65535")), "{uid}");
    // `ip netns add` also makes /run/netns a shared mount, which HostToContainer
    // propagation needs (a node's / usually is, this machine's is not).
    let before = NamedNetns::add(&format!("sonde-k8s-a{}", std::process::id()));

    // The chart rendered for this node, the container created from the DaemonSet;
    // events to a Loki receiver, the password from a Secret.
    let loki = LokiReceiver::start();
    let secrets = BTreeMap::from([(
        "sonde-loki".to_string(),
        BTreeMap::from([("password".to_string(), "s3cret\n".to_string())]),
    )]);
    let port = free_port();
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "image: {{repository: localhost/sonde, tag: k8s-test, pullPolicy: Never}}\nport: {port}\ncriSocket: {}\nconfig:\n  pods:\n    refresh: 2s\n  metrics:\n    detail_namespaces: [shop]\n  scripts:\n    params:\n      tcp_reset: {{emit_events: true}}\n  sinks:\n    loki:\n      batch_wait: 200ms\nscripts:\n  chart_ticks.rhai: {}\nloki:\n  url: http://127.0.0.1:{}\n  tenant: team-a\n  labels: {{cluster: test}}\n  auth: {{secretName: sonde-loki, username: sonde, passwordKey: password}}\n",
            ctd.socket().display(),
            serde_json::to_string(CHART_SCRIPT).unwrap(),
            loki.port
        ),
    )
    .unwrap();
    // SONDE_K8S_VALUES: one more values file (e.g. a capability set to null, to see
    // what breaks without it).
    let extra = std::env::var_os("SONDE_K8S_VALUES").map(PathBuf::from);
    let mut files = vec![values.as_path()];
    files.extend(extra.as_deref());
    let r = render(&files);
    assert_eq!(r.container()["image"], IMAGE_TAG);
    let config = kubelet_container(&r, IMAGE_TAG, &dir.join("volumes"), &secrets);
    let (sandbox, sandbox_config) = ctd.run_host_pod("sonde", "sonde-k8s-node-1");
    let id = ctd.start_container(&sandbox, &sandbox_config, config);
    let log = ctd.dir.join("logs/sonde-k8s-node-1/sonde.log");
    let log = || std::fs::read_to_string(&log).unwrap_or_default();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = |path: &str| match http_get(addr, path, &[]) {
        Ok((200, body)) => Some(body),
        _ => None,
    };
    let wait = |what: &str, timeout: Duration, cond: &dyn Fn() -> bool| {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let st = ctd.container_status(&id);
        panic!(
            "timed out waiting for {what}; container state {} exit {} {} {}\n--- log:\n{}",
            st.state,
            st.exit_code,
            st.reason,
            st.message,
            log()
        );
    };
    let ready = wait(
        "sonde in its container to be ready",
        Duration::from_secs(90),
        &|| get("/readyz").is_some(),
    );
    eprintln!("ready {ready:?} after StartContainer");
    assert_eq!(ctd.container_status(&id).state, 1, "running");

    // It loaded its probes (with only the rendered capabilities), and the chart's script.
    let status: Value = serde_json::from_str(&get("/status").unwrap()).unwrap();
    let scripts = status["scripts"].as_array().unwrap();
    let state = |name: &str| {
        scripts
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for probe in [
        "tcp_reset",
        "packet_loss",
        "tcp_retrans",
        "flow",
        "netdev",
        "tcpsummary",
        "chart_ticks",
    ] {
        assert_eq!(
            state(probe),
            "running",
            "{probe}: {}\n--- the container's process:\n{}\n--- log:\n{}",
            serde_json::to_string_pretty(&status).unwrap(),
            process_status("/etc/sonde/config/config.yaml"),
            log()
        );
    }
    let running = scripts.iter().filter(|s| s["state"] == "running").count();
    eprintln!(
        "{running} of {} scripts running in the container",
        scripts.len()
    );
    for s in scripts.iter().filter(|s| s["state"] != "running") {
        eprintln!("  {} {}: {}", s["name"], s["state"], s["last_error"]);
    }

    // It names the test pods from CRI and counts their resets.
    resets_in(&netns_of(web_pid), 5);
    let m = || get("/metrics").unwrap_or_default();
    wait(
        "web-1's resets on /metrics",
        Duration::from_secs(30),
        &|| {
            sample(
                &m(),
                "sonde_tcp_reset_segments_total",
                &[("namespace", "shop"), ("pod", "web-1"), ("node", NODE)],
            )
            .is_some()
        },
    );
    let metrics = m();
    assert_eq!(
        sample(&metrics, "sonde_pods_cri_up", &[]),
        Some(1.0),
        "CRI through the mounted socket"
    );
    assert!(
        sample(&metrics, "sonde_btf_info", &[("source", "sysfs")]).is_some(),
        "BTF through the /sys/kernel/btf mount"
    );
    assert!(
        sample(&metrics, "sonde_chart_ticks_total", &[("source", "chart")])
            .is_some_and(|v| v >= 1.0)
    );
    // On their next tick (10 s), the sources read the test pods' namespaces: netdev
    // through /proc/<pid>/net (hostPID), fd and io summed over the pod's processes
    // (/proc/<pid>/fd and io of uid 65535: SYS_PTRACE, DAC_READ_SEARCH), the named
    // namespace through the /run/netns mount, and the TCP summary with sock_diag from
    // inside each pod's namespace (setns: SYS_ADMIN).
    let named = before.name.clone();
    let checks: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "sonde_netdev_receive_packets_total",
            vec![("namespace", "shop"), ("pod", "api-1"), ("device", "eth0")],
        ),
        ("sonde_netdev_receive_packets_total", vec![("pod", &named)]),
        (
            "sonde_tcpsummary_sockets",
            vec![("namespace", "shop"), ("pod", "web-1")],
        ),
        (
            "sonde_fd_open_fds",
            vec![("namespace", "shop"), ("pod", "web-1")],
        ),
        (
            "sonde_io_read_syscalls_total",
            vec![("namespace", "shop"), ("pod", "web-1")],
        ),
    ];
    let missing = || -> Vec<String> {
        let m = m();
        checks
            .iter()
            .filter(|(name, labels)| sample(&m, name, labels).is_none())
            .map(|(name, labels)| format!("{name}{labels:?}"))
            .collect()
    };
    let start = Instant::now();
    while !missing().is_empty() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        missing().is_empty(),
        "the sources in the pods' namespaces: missing {:?}\n--- log:\n{}",
        missing(),
        log()
    );

    // A namespace added now shows up through the HostToContainer mount of /run/netns.
    let after = NamedNetns::add(&format!("sonde-k8s-b{}", std::process::id()));
    wait(
        "a namespace added after the start",
        Duration::from_secs(30),
        &|| {
            sample(
                &m(),
                "sonde_netdev_receive_packets_total",
                &[("pod", &after.name)],
            )
            .is_some()
        },
    );

    // A script ConfigMap update (the kubelet's atomic ..data swap) reloads sonde in place.
    let mut files = configmap_data(&r, "sonde-scripts");
    files.insert(
        "chart_ticks.rhai".into(),
        CHART_SCRIPT.replace("[\"chart\"]", "[\"chart-v2\"]"),
    );
    atomic_write(&dir.join("volumes/scripts"), &files, 2);
    wait("the swapped script", Duration::from_secs(15), &|| {
        sample(&m(), "sonde_chart_ticks_total", &[("source", "chart-v2")]).is_some()
    });

    // So does an edit of the config ConfigMap.
    let reloads =
        || sample(&m(), "sonde_config_reloads_total", &[("result", "success")]).unwrap_or(0.0);
    let before_edit = reloads();
    let mut config = configmap_data(&r, "sonde");
    config
        .get_mut("config.yaml")
        .unwrap()
        .push_str("limits:\n  series_budget: 1500\n");
    atomic_write(&dir.join("volumes/config"), &config, 2);
    wait(
        "the swapped config to be reloaded",
        Duration::from_secs(15),
        &|| reloads() > before_edit,
    );

    // A real Prometheus scrapes it and returns the reset counter of the test pod.
    let prom = Prometheus::start(&dir.join("prometheus"), &[addr]);
    let result = prom.wait_for(
        "sum by (node, namespace, pod) (sonde_tcp_reset_segments_total{namespace=\"shop\", pod=\"web-1\"})",
        Duration::from_secs(60),
        |r| r.len() == 1 && r[0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 5.0),
    );
    assert_eq!(
        result[0]["metric"]["node"], NODE,
        "node from the downward API"
    );
    eprintln!("Prometheus: {}", result[0]);

    // The resets went to Loki as events: streams labelled job, node, type (and the
    // chart's labels), the pod in the JSON line, basic auth from the Secret's file.
    let push = loki.wait_for(Duration::from_secs(20), |p| {
        p.body.contains("TCPRESET_") && p.body.contains("web-1")
    });
    // base64("sonde:s3cret"): the Secret's trailing newline is not part of it.
    assert_eq!(push.header("authorization"), Some("Basic c29uZGU6czNjcmV0"));
    assert_eq!(push.header("x-scope-orgid"), Some("team-a"));
    let body: Value = serde_json::from_str(&push.body).unwrap();
    // (Other resets on this machine may share the push: find web-1's line.)
    let (stream, line) = body["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["stream"]["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("TCPRESET_"))
        })
        .flat_map(|s| {
            s["values"].as_array().unwrap().iter().map(move |v| {
                (
                    s,
                    serde_json::from_str::<Value>(v[1].as_str().unwrap()).unwrap(),
                )
            })
        })
        .find(|(_, line)| line["labels"]["pod"] == "web-1")
        .unwrap_or_else(|| panic!("no reset line of web-1 in {}", push.body));
    let labels: BTreeSet<&str> = stream["stream"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        labels,
        BTreeSet::from(["cluster", "job", "node", "type"]),
        "{stream}"
    );
    assert_eq!(stream["stream"]["node"], NODE);
    assert_eq!(line["labels"]["namespace"], "shop", "{line}");

    // SIGTERM from the runtime: a clean exit within the grace period.
    let stopping = Instant::now();
    ctd.stop_container(&id, 30);
    let st = ctd.container_status(&id);
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert_eq!(
        (st.state, st.exit_code),
        (2, 0),
        "exited cleanly on SIGTERM: {}",
        log()
    );
    ctd.remove_container(&id);
    let text = log();
    assert!(!text.contains("panicked"), "{text}");
    drop(after);
    drop(before);
}
