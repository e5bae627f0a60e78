//! Secure by default, checked from outside: scripts only root can change, the
//! capability set of the systemd unit (and nothing more once started), TLS and basic
//! auth on the endpoints with a real Prometheus scraping, a connection limit that
//! idle clients cannot exhaust, Loki over TLS.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sonde_tests::daemon::{free_port, http_get, prometheus, sample, Client, Daemon, Options};
use sonde_tests::loki::LokiReceiver;
use sonde_tests::tls::{https_get, Pair, Pki};
use sonde_tests::{cannot_run, require_root, sonde_bin, sonde_ok};

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let data = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Authorization: Basic {out}")
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// The `/status` state of every script.
fn states(d: &Daemon) -> Vec<(String, String, String)> {
    d.status()["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["state"].as_str().unwrap_or_default().to_string(),
                s["last_error"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn scripts_others_can_change_are_refused_and_counted() {
    if !require_root("scripts_others_can_change_are_refused_and_counted") {
        return;
    }
    let d = Daemon::start("strict", &["tcp_reset"], "");
    let dir = d.dir.join("scripts");
    // What was found on a node: the script directory 0777 and owned by nobody, and
    // a forged copy of a built-in in it.
    chown(&dir, 65534);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        dir.join("tcp_reset.rhai"),
        "fn on_tick() { emit(\"FORGED\", #{}); }",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.join("shadow.rhai")).unwrap();
    d.wait_for(
        "the forged script to be refused",
        Duration::from_secs(5),
        || {
            sample(
                &d.metrics(),
                "sonde_script_files_refused_total",
                &[("script", "tcp_reset"), ("reason", "untrusted")],
            )
            .is_some()
        },
    );
    let m = d.metrics();
    assert!(
        sample(
            &m,
            "sonde_script_files_refused_total",
            &[("script", "shadow"), ("reason", "untrusted")]
        )
        .is_some(),
        "{m}"
    );
    let unit = d.unit("tcp_reset");
    let err = unit["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!(
            "{}: refused: directory {} is owned by uid 65534, not by root",
            dir.join("tcp_reset.rhai").display(),
            dir.display()
        )),
        "{unit}"
    );
    // The built-in keeps running; the forged one never ran.
    assert_eq!(unit["state"], "running", "{unit}");
    assert_eq!(unit["file"], "builtin:tcp_reset.rhai", "{unit}");
    assert!(!d.stdout().contains("FORGED"));
    assert!(d.unit("shadow")["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("refused"));

    // Owned by root again but still world-writable: refused for that bit.
    chown(&dir, 0);
    std::fs::remove_file(dir.join("shadow.rhai")).unwrap();
    std::fs::write(dir.join("tcp_reset.rhai"), "// touched").unwrap();
    d.wait_for("the mode to be named", Duration::from_secs(5), || {
        d.unit("tcp_reset")["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("is writable by group and others (mode 0777)")
    });
    // Fixed: root's 0755 directory, and the script is taken.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("tcp_reset.rhai"),
        "fn on_tick() { emit(\"MINE\", #{}); }",
    )
    .unwrap();
    d.wait_for("the trusted script to run", Duration::from_secs(5), || {
        d.unit("tcp_reset")["file"] == dir.join("tcp_reset.rhai").display().to_string()
    });
}

#[test]
fn a_configmap_volume_is_trusted() {
    if !require_root("a_configmap_volume_is_trusted") {
        return;
    }
    let d = Daemon::start("cmvolume", &[], "");
    // kubelet's layout: the volume a mount point, 0777; files in a root-owned 0755
    // timestamped directory reached through `..data`.
    let vol = d.dir.join("scripts");
    let target = std::ffi::CString::new(vol.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    struct Unmount(std::ffi::CString);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // SAFETY: unmounting what this test mounted.
            unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let _unmount = Unmount(target);
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ts = vol.join("..2026_12_01_00_00_00.1");
    std::fs::create_dir(&ts).unwrap();
    std::fs::write(
        ts.join("ticker.rhai"),
        "const PROBE = #{ interval: \"100ms\" };\nfn init(p) { this.t = metrics::counter(\"cm_ticks_total\", \"Ticks.\", []); }\nfn on_tick() { this.t.inc([]); }\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_12_01_00_00_00.1", vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ticker.rhai", vol.join("ticker.rhai")).unwrap();
    // The watch is on the directory under the mount: reload by hand.
    // SAFETY: kill on a child we own.
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    d.wait_for(
        "the ConfigMap script to run",
        Duration::from_secs(5),
        || sample(&d.metrics(), "sonde_cm_ticks_total", &[]).is_some(),
    );
}

#[test]
fn a_config_file_others_can_change_is_refused_at_start() {
    if !require_root("a_config_file_others_can_change_is_refused_at_start") {
        return;
    }
    let dir = sonde_tests::daemon::temp_dir("strictcfg");
    let cfg = dir.join("sonde.yaml");
    std::fs::write(&cfg, "listen: 127.0.0.1:0\nscripts:\n  builtin: []\n").unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = Command::new(sonde_bin())
        .args(["daemon", "--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: refused: file {} is writable by group (mode 0664)",
            cfg.display(),
            cfg.display()
        )),
        "{err}"
    );
    // strict_modes: false lowers it to a warning.
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0\nscripts:\n  builtin: []\n  strict_modes: false\n",
    )
    .unwrap();
    sonde_ok(&[
        "daemon".as_ref(),
        "--check".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The capabilities `packaging/sonde.service` grants (`AmbientCapabilities=`),
/// lower case without `CAP_`, as setpriv takes them.
fn unit_capabilities() -> Vec<String> {
    let unit =
        std::fs::read_to_string(sonde_tests::repo_root().join("packaging/sonde.service")).unwrap();
    let line = unit
        .lines()
        .find(|l| l.starts_with("AmbientCapabilities="))
        .expect("AmbientCapabilities= in packaging/sonde.service");
    line.trim_start_matches("AmbientCapabilities=")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// `/proc/<pid>/status` lines of interest: `(CapEff, CapPrm, CapBnd, CapInh, CapAmb,
/// NoNewPrivs, Seccomp)`.
fn proc_status(pid: u32) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.starts_with("Cap") || *k == "NoNewPrivs" || *k == "Seccomp")
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The capability set as the kernel prints it.
fn mask(caps: &[String]) -> String {
    let n = |c: &str| match c {
        "dac_read_search" => 2,
        "net_bind_service" => 10,
        "net_admin" => 12,
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "sys_resource" => 24,
        "syslog" => 34,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("unexpected capability {other} in the unit"),
    };
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | 1 << n(c)))
}

#[test]
fn the_unit_capability_set_runs_every_builtin_and_the_rest_is_dropped() {
    if !require_root("the_unit_capability_set_runs_every_builtin_and_the_rest_is_dropped") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        cannot_run(
            "the_unit_capability_set_runs_every_builtin_and_the_rest_is_dropped",
            "no setpriv (util-linux)",
        );
        return;
    }
    let caps = unit_capabilities();
    let list = caps
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let pod = sonde_tests::NamedNetns::held("sondecaps");
    let builtin: Vec<&str> = sonde::daemon::builtin::names();
    // As the unit runs it: user nobody, exactly these capabilities, no others in
    // the bounding set.
    let d = Daemon::launch(
        "caps",
        Options {
            builtin: &builtin,
            extra: "pods:\n  cri_socket: none\n",
            wrapper: [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                &format!("--inh-caps=-all,{list}"),
                &format!("--ambient-caps=-all,{list}"),
                &format!("--bounding-set=-all,{list}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Options::default()
        },
    );
    // Every built-in up, but those whose every variant needs kprobes on a kernel
    // without them (`sonde probes` says which).
    for (name, state, err) in states(&d) {
        if state == "unavailable" {
            assert!(err.contains("kernel has no kprobes"), "{name}: {err}");
            continue;
        }
        assert!(
            state == "running" || state == "degraded",
            "{name} is {state}: {err}\n{}",
            d.stderr()
        );
    }
    assert_eq!(d.unit("flow")["state"], "running");
    // The per-namespace sources see the pod: procfs through its pid (ptrace
    // access to a root process), netlink by entering it (setns), conntrack
    // (ctnetlink).
    let pod_sample = |m: &str, name: &str| sample(m, name, &[("pod", "sondecaps")]);
    d.wait_for(
        "the pod's namespace in the sources",
        Duration::from_secs(30),
        || {
            let m = d.metrics();
            pod_sample(&m, "sonde_netdev_receive_bytes_total").is_some()
                && pod_sample(&m, "sonde_tcpsummary_sockets").is_some()
                && pod_sample(&m, "sonde_conntrack_drop_total").is_some()
        },
    );
    let m = d.metrics();
    for source in [
        "conntrack",
        "netstat",
        "qdisc",
        "tcpsummary",
        "sockstat",
        "netdev",
    ] {
        // A namespace that vanishes mid-read (`gone`: other tests' namespaces come and
        // go) is not a privilege problem; EPERM shows as `io`.
        for reason in ["missing", "io", "format"] {
            assert_eq!(
                sample(
                    &m,
                    "sonde_source_errors_total",
                    &[("source", source), ("reason", reason)]
                ),
                None,
                "{source} failed ({reason}):\n{}",
                d.stderr()
            );
        }
    }
    // What is left in the process: the unit's set, nothing inheritable or ambient,
    // no_new_privs, a seccomp filter.
    let st = proc_status(d.pid());
    let want = mask(&caps);
    eprintln!("/proc/{}/status: {st:?}", d.pid());
    assert_eq!(st["CapEff"], want, "{st:?}");
    assert_eq!(st["CapPrm"], want, "{st:?}");
    assert_eq!(st["CapBnd"], want, "{st:?}");
    assert_eq!(st["CapInh"], "0000000000000000", "{st:?}");
    assert_eq!(st["CapAmb"], "0000000000000000", "{st:?}");
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2");
    let privileges = &d.status()["privileges"];
    assert_eq!(privileges["uid"], 65534);
    assert_eq!(privileges["missing"], serde_json::json!([]));
    drop(pod);
}

#[test]
fn as_root_everything_but_the_running_set_is_dropped() {
    if !require_root("as_root_everything_but_the_running_set_is_dropped") {
        return;
    }
    let d = Daemon::start("rootcaps", &["tcp_reset"], "");
    let st = proc_status(d.pid());
    eprintln!("/proc/{}/status: {st:?}", d.pid());
    let want = mask(&unit_capabilities());
    assert_eq!(st["CapEff"], want, "{st:?}");
    assert_eq!(st["CapPrm"], want, "{st:?}");
    assert_eq!(st["CapBnd"], want, "{st:?}");
    assert_eq!(st["CapAmb"], "0000000000000000");
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2");
    let dropped: BTreeSet<String> = d.status()["privileges"]["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for c in [
        "SYS_MODULE",
        "SETUID",
        "CHOWN",
        "DAC_OVERRIDE",
        "SYS_RAWIO",
        "SYS_BOOT",
    ] {
        assert!(dropped.contains(c), "{c} not dropped: {dropped:?}");
    }
    assert_eq!(d.unit("tcp_reset")["state"], "running");
}

/// A web config with TLS (server certificate for localhost) and basic auth.
struct Web {
    pki: Pki,
    dir: PathBuf,
    file: PathBuf,
}

fn web_config(test: &str, extra_tls: &str) -> Web {
    let dir = sonde_tests::trusted_tmp().join(format!("sonde-web-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new("sonde test CA");
    pki.server(&["localhost", "127.0.0.1"])
        .write(&dir, "server");
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let file = dir.join("web.yml");
    std::fs::write(
        &file,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra_tls}\
             http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n\
             basic_auth_users:\n  prom: \"{hash}\"\n"
        ),
    )
    .unwrap();
    Web { pki, dir, file }
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_others_get_401() {
    if !require_root("prometheus_scrapes_over_tls_with_basic_auth_and_others_get_401") {
        return;
    }
    let web = web_config("prom", "");
    let client = Client {
        tls: Some(web.pki.client_config(None)),
        headers: vec![basic("prom", "s3cret")],
    };
    let d = Daemon::launch(
        "tlsprom",
        Options {
            builtin: &["tcp_reset"],
            extra: &format!("web_config: {}\n", web.file.display()),
            client: client.clone(),
            ..Options::default()
        },
    );
    assert!(d
        .stderr()
        .contains(&format!("listening on https://{}", d.addr)));
    let tls = web.pki.client_config(None);
    let get =
        |path: &str, headers: &[&str]| https_get(tls.clone(), "localhost", d.addr, path, headers);
    // Unauthenticated, wrong password, unknown user: 401. The probes answer.
    assert_eq!(get("/metrics", &[]).unwrap().0, 401);
    assert_eq!(get("/metrics", &[&basic("prom", "wrong")]).unwrap().0, 401);
    assert_eq!(get("/status", &[&basic("root", "s3cret")]).unwrap().0, 401);
    assert_eq!(get("/healthz", &[]).unwrap(), (200, "ok\n".to_string()));
    let (code, body) = get("/metrics", &[&basic("prom", "s3cret")]).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("sonde_build_info"));
    // Plain HTTP on the TLS port gets no answer.
    assert!(!matches!(http_get(d.addr, "/metrics", &[]), Ok((200, _))));
    // Another CA's client does not trust the daemon.
    let other = Pki::new("other CA");
    assert!(https_get(
        other.client_config(None),
        "localhost",
        d.addr,
        "/healthz",
        &[]
    )
    .is_err());

    // A real Prometheus: one job with the right password, one with a wrong one.
    let ca = web.dir.join("ca.crt");
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    basic_auth:\n      username: prom\n      password: {password}\n    static_configs:\n      - targets: ['{}']\n",
            ca.display(),
            d.addr
        )
    };
    let jobs = format!("{}{}", job("sonde", "s3cret"), job("intruder", "guess"));
    let (mut prom, paddr) = prometheus(&web.dir, &jobs);
    let mut last = String::new();
    let found = (0..80).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        let Ok((200, body)) = http_get(paddr, "/api/v1/targets", &[]) else {
            return false;
        };
        last = body;
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let targets = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let of = |job: &str| {
            targets
                .iter()
                .find(|t| t["labels"]["job"] == job)
                .cloned()
                .unwrap_or_default()
        };
        of("sonde")["health"] == "up"
            && of("intruder")["health"] == "down"
            && of("intruder")["lastError"]
                .as_str()
                .unwrap_or_default()
                .contains("401")
    });
    let up = http_get(paddr, "/api/v1/query?query=sonde_build_info", &[]);
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(
        found,
        "Prometheus targets never showed sonde up and the intruder refused: {last}\n{}",
        std::fs::read_to_string(web.dir.join("prometheus/prometheus.log")).unwrap_or_default()
    );
    let (code, body) = up.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"job\":\"sonde\""), "{body}");
    // Each outcome counted.
    let m = d.metrics();
    assert!(
        sample(
            &m,
            "sonde_http_requests_total",
            &[("path", "/metrics"), ("code", "401")]
        )
        .unwrap()
            >= 3.0
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&web.dir);
}

#[test]
fn client_certificates_are_verified_and_their_names_checked() {
    if !require_root("client_certificates_are_verified_and_their_names_checked") {
        return;
    }
    let web = web_config(
        "mtls",
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [prometheus]\n  min_version: TLS13\n",
    );
    let good = web.pki.client(&["prometheus"]);
    let d = Daemon::launch(
        "mtls",
        Options {
            builtin: &[],
            extra: &format!("web_config: {}\n", web.file.display()),
            client: Client {
                tls: Some(web.pki.client_config(Some(&good))),
                headers: vec![basic("prom", "s3cret")],
            },
            ..Options::default()
        },
    );
    let try_with = |pair: Option<&Pair>| {
        https_get(
            web.pki.client_config(pair),
            "localhost",
            d.addr,
            "/healthz",
            &[],
        )
        .ok()
    };
    // No certificate: the handshake fails.
    assert_eq!(try_with(None), None);
    // Signed by another CA: refused too.
    let other = Pki::new("other CA").client(&["prometheus"]);
    assert_eq!(try_with(Some(&other)), None);
    // Signed by the CA but without an allowed name: closed after the handshake.
    let stranger = web.pki.client(&["someone-else"]);
    assert_eq!(try_with(Some(&stranger)), None);
    // The right one.
    assert_eq!(try_with(Some(&good)), Some((200, "ok\n".to_string())));
    let m = d.metrics();
    assert!(
        sample(
            &m,
            "sonde_http_connections_closed_total",
            &[("reason", "client_not_allowed")]
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "sonde_http_connections_closed_total",
            &[("reason", "tls_handshake")]
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&web.dir);
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn idle_connections_cannot_take_metrics_or_fds_away() {
    if !require_root("idle_connections_cannot_take_metrics_or_fds_away") {
        return;
    }
    let d = Daemon::start("connlimit", &["tcp_reset"], "max_connections: 16\n");
    // The file descriptor limit of the report: 256.
    let st = Command::new("prlimit")
        .arg(format!("--pid={}", d.pid()))
        .arg("--nofile=256:256")
        .status()
        .unwrap();
    assert!(st.success());
    let before = fds(d.pid());
    // 240 clients connect and say nothing.
    let idle: Vec<TcpStream> = (0..240)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // /metrics keeps answering, promptly, again and again.
    for i in 0..20 {
        let t = Instant::now();
        let (code, body) = http_get(d.addr, "/metrics", &[]).unwrap();
        assert_eq!(code, 200, "scrape {i}");
        assert!(body.contains("sonde_build_info"));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "scrape {i} took {:?}",
            t.elapsed()
        );
    }
    let during = fds(d.pid());
    assert!(
        during <= before + 16 + 4,
        "{during} fds open with 240 idle clients (before: {before}, max_connections 16)"
    );
    // A reload still opens what it needs.
    let reloads =
        |m: &str| sample(m, "sonde_config_reloads_total", &[("result", "success")]).unwrap_or(0.0);
    let n = reloads(&d.metrics());
    std::fs::write(
        d.script("ticker.rhai"),
        "const PROBE = #{ interval: \"100ms\" };\nfn init(p) { this.t = metrics::counter(\"limit_ticks_total\", \"Ticks.\", []); }\nfn on_tick() { this.t.inc([]); }\n",
    )
    .unwrap();
    d.wait_for(
        "the reload with 240 idle clients",
        Duration::from_secs(5),
        || {
            let m = d.metrics();
            reloads(&m) > n && sample(&m, "sonde_limit_ticks_total", &[]).is_some()
        },
    );
    let m = d.metrics();
    let evicted = sample(
        &m,
        "sonde_http_connections_closed_total",
        &[("reason", "evicted_idle")],
    )
    .unwrap_or(0.0);
    assert!(evicted >= 200.0, "evicted {evicted}\n{m}");
    assert!(sample(&m, "sonde_http_connections", &[]).unwrap() <= 16.0);
    drop(idle);
}

#[test]
fn status_and_events_on_a_loopback_address_of_their_own_or_off() {
    if !require_root("status_and_events_on_a_loopback_address_of_their_own_or_off") {
        return;
    }
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let d = Daemon::start("admin", &[], &format!("status_listen: {admin}\n"));
    let (code, body) = http_get(d.addr, "/status", &[]).unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        body,
        format!("/status is served on {admin} (status_listen)\n")
    );
    assert_eq!(http_get(d.addr, "/events", &[]).unwrap().0, 404);
    assert_eq!(http_get(d.addr, "/metrics", &[]).unwrap().0, 200);
    assert_eq!(http_get(admin, "/status", &[]).unwrap().0, 200);
    assert_eq!(http_get(admin, "/events", &[]).unwrap().0, 200);
    assert_eq!(http_get(admin, "/metrics", &[]).unwrap().0, 404);
    // `sonde events` reads it there.
    sonde_ok(&["events", "--addr", &admin.to_string()]);
    drop(d);
    let d = Daemon::start("adminoff", &[], "status_listen: off\n");
    let (code, body) = http_get(d.addr, "/events", &[]).unwrap();
    assert_eq!(
        (code, body.as_str()),
        (404, "/events is turned off (status_listen: off)\n")
    );
}

#[test]
fn loki_over_tls_with_a_ca_file_and_a_bearer_token_file() {
    if !require_root("loki_over_tls_with_a_ca_file_and_a_bearer_token_file") {
        return;
    }
    let pki = Pki::new("loki test CA");
    let loki =
        LokiReceiver::start_tls(Pki::server_config(&pki.server(&["loki.test", "127.0.0.1"])));
    let port = loki.port;
    let dir = sonde_tests::trusted_tmp().join(format!("sonde-loki-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("token"), "t0ken\n").unwrap();
    let ticker = |path: &Path| {
        std::fs::write(
            path,
            "const PROBE = #{ interval: \"100ms\" };\nfn on_tick() { emit(\"TLS_TICK\", #{ n: 1 }); }\n",
        )
        .unwrap()
    };
    let d = Daemon::start_with(
        "lokitls",
        &[],
        &format!(
            "sinks:\n  loki:\n    url: https://127.0.0.1:{port}\n    tls:\n      ca_file: {}\n      server_name: loki.test\n    bearer_token_file: {}\n    batch_wait: 100ms\n",
            dir.join("ca.crt").display(),
            dir.join("token").display()
        ),
        &[("ticker.rhai", &ticker)],
        None,
    );
    d.wait_for(
        "events pushed to Loki over TLS",
        Duration::from_secs(10),
        || loki.count() > 0,
    );
    let first = loki.pushes.lock().unwrap()[0].clone();
    assert_eq!(
        first.header("authorization"),
        Some("Bearer t0ken"),
        "{first:?}"
    );
    assert_eq!(first.json()["streams"][0]["stream"]["type"], "TLS_TICK");
    drop(d);

    // Against the system's trust store (no ca_file) the test CA is unknown: pushes
    // fail and are counted, the daemon runs on.
    let d = Daemon::start_with(
        "lokitls-untrusted",
        &[],
        &format!(
            "sinks:\n  loki:\n    url: https://127.0.0.1:{port}\n    tls:\n      server_name: loki.test\n    batch_wait: 100ms\n    min_backoff: 100ms\n    max_backoff: 200ms\n"
        ),
        &[("ticker.rhai", &ticker)],
        None,
    );
    let before = loki.count();
    d.wait_for(
        "a failed push to be logged",
        Duration::from_secs(10),
        || d.stderr().contains("UnknownIssuer") || d.stderr().contains("unknown issuer"),
    );
    assert_eq!(loki.count(), before);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_web_config_is_read_again_on_sighup_and_a_broken_one_is_rejected() {
    if !require_root("the_web_config_is_read_again_on_sighup_and_a_broken_one_is_rejected") {
        return;
    }
    let dir = sonde_tests::trusted_tmp().join(format!("sonde-web-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yml");
    let users = |password: &str| {
        format!(
            "basic_auth_users:\n  prom: \"{}\"\n",
            bcrypt::hash(password, 4).unwrap()
        )
    };
    std::fs::write(&file, users("first")).unwrap();
    let d = Daemon::launch(
        "webreload",
        Options {
            extra: &format!("web_config: {}\n", file.display()),
            client: Client {
                tls: None,
                headers: vec![basic("prom", "first")],
            },
            ..Options::default()
        },
    );
    let code = |password: &str| {
        http_get(d.addr, "/metrics", &[&basic("prom", password)])
            .unwrap()
            .0
    };
    assert_eq!((code("first"), code("second")), (200, 401));
    let hup = || {
        // SAFETY: kill on a child we own.
        unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    };
    std::fs::write(&file, users("second")).unwrap();
    hup();
    d.wait_for("the new password", Duration::from_secs(5), || {
        code("second") == 200
    });
    assert_eq!(code("first"), 401);
    // Broken: rejected, counted, the one in force stays.
    std::fs::write(&file, "basic_auth_users:\n  prom: plaintext\n").unwrap();
    hup();
    let failed = |m: &str| sample(m, "sonde_config_reloads_total", &[("result", "failure")]);
    let scrape = || {
        http_get(d.addr, "/metrics", &[&basic("prom", "second")])
            .unwrap()
            .1
    };
    d.wait_for(
        "the broken web config to be rejected",
        Duration::from_secs(5),
        || failed(&scrape()).is_some_and(|n| n >= 1.0),
    );
    assert_eq!(code("second"), 200);
    let errors = serde_json::from_str::<serde_json::Value>(
        &http_get(d.addr, "/status", &[&basic("prom", "second")])
            .unwrap()
            .1,
    )
    .unwrap()["last_reload"]["errors"]
        .to_string();
    assert!(
        errors.contains("basic_auth_users.prom: not a bcrypt hash"),
        "{errors}"
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
