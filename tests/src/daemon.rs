//! The real `sonde daemon` in a temp directory on a random port, and the HTTP client
//! the end-to-end tests read it with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sonde_bin;

/// A file put in the script directory before the daemon starts: its name, and what
/// writes it (`mkfifo` is fine).
pub type ScriptFile<'a> = (&'a str, &'a dyn Fn(&std::path::Path));

/// A running daemon in its own temp directory; SIGTERM on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    /// How [`Daemon::get`] and friends talk to it (TLS, credentials).
    pub client: Client,
}

/// How the harness talks to the daemon: plain HTTP, or TLS with a CA to trust (and
/// a client certificate); headers sent with every request (e.g. `Authorization`).
#[derive(Clone, Default)]
pub struct Client {
    pub tls: Option<std::sync::Arc<crate::tls::rustls::ClientConfig>>,
    pub headers: Vec<String>,
}

impl Client {
    pub fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[&str],
    ) -> std::io::Result<(u16, String)> {
        let mut all: Vec<&str> = self.headers.iter().map(String::as_str).collect();
        all.extend_from_slice(headers);
        match &self.tls {
            None => http_get(addr, path, &all),
            Some(cfg) => crate::tls::https_get(cfg.clone(), "localhost", addr, path, &all),
        }
    }
}

/// What [`Daemon::launch`] starts.
#[derive(Default)]
pub struct Options<'a> {
    /// Built-in scripts to run.
    pub builtin: &'a [&'a str],
    /// Run every built-in script (the embedded default list) instead of `builtin`.
    pub every_builtin: bool,
    /// Appended to the config.
    pub extra: &'a str,
    /// Put in the script directory before the start.
    pub files: &'a [ScriptFile<'a>],
    /// Where stdout goes (default: `stdout.log` in the directory).
    pub stdout: Option<Stdio>,
    /// The daemon runs as `wrapper... sonde daemon --config ... args...` (e.g.
    /// `setpriv ...`).
    pub wrapper: Vec<String>,
    pub args: Vec<String>,
    pub client: Client,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `<trusted_tmp>/sonde-e2e-<test>-<pid>` with an empty `scripts` directory, fresh.
pub fn temp_dir(test: &str) -> PathBuf {
    let dir = crate::trusted_tmp().join(format!("sonde-e2e-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    dir
}

/// A daemon's directory, config and address, ready to start: what the tests'
/// [`Daemon`] and the benchmarks' daemons (which measure the process themselves)
/// have in common.
pub struct Setup {
    /// Holds `sonde.yaml`, `scripts/` and the logs.
    pub dir: PathBuf,
    pub addr: SocketAddr,
}

impl Setup {
    /// A fresh [`temp_dir`] with `opts.files` in its script directory and a config
    /// that listens on a free port, runs `opts.builtin` (or every built-in), watches
    /// the script directory, and ends with `opts.extra`.
    pub fn new(test: &str, opts: &Options<'_>) -> Setup {
        let dir = temp_dir(test);
        for (name, fill) in opts.files {
            fill(&dir.join("scripts").join(name));
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let builtin = if opts.every_builtin {
            String::new()
        } else {
            format!("  builtin: [{}]\n", opts.builtin.join(", "))
        };
        let config = format!(
            "listen: {addr}\nnode_name: e2e-node\nscripts:\n{builtin}  directories: [{}]\n{}{}",
            dir.join("scripts").display(),
            if crate::strict_modes_hold() {
                ""
            } else {
                "  strict_modes: false\n"
            },
            opts.extra,
        );
        std::fs::write(dir.join("sonde.yaml"), config).unwrap();
        Setup { dir, addr }
    }

    /// `wrapper... SONDE daemon --config DIR/sonde.yaml args...`, logging at info.
    pub fn command(&self, sonde: &std::path::Path, wrapper: &[String], args: &[String]) -> Command {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(sonde),
            Some((program, rest)) => {
                // runs: setpriv
                let mut c = Command::new(program);
                c.args(rest).arg(sonde);
                c
            }
        };
        cmd.args(["daemon", "--config"])
            .arg(self.dir.join("sonde.yaml"))
            .args(args)
            .env("SONDE_LOG", "info");
        cmd
    }
}

/// Polls `/readyz` every 10 ms until it answers 200: the time that took, or
/// `Err(timeout)`.
pub fn wait_ready(
    client: &Client,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Duration, Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if matches!(client.get(addr, "/readyz", &[]), Ok((200, _))) {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(timeout)
}

impl Daemon {
    /// Starts `sonde daemon` with `extra` appended to a config that listens on a
    /// random port and watches `<dir>/scripts`; waits until /readyz says ready.
    pub fn start(test: &str, builtin: &[&str], extra: &str) -> Daemon {
        Self::start_with(test, builtin, extra, &[], None)
    }

    /// [`Daemon::start`] with files put in the script directory before it starts
    /// (`(name, fill)`: `fill` writes the file) and stdout going to `stdout`
    /// instead of `stdout.log`.
    pub fn start_with(
        test: &str,
        builtin: &[&str],
        extra: &str,
        files: &[ScriptFile<'_>],
        stdout: Option<Stdio>,
    ) -> Daemon {
        Self::launch(
            test,
            Options {
                builtin,
                extra,
                files,
                stdout,
                ..Options::default()
            },
        )
    }

    /// Starts a daemon as `opts` say; waits until /readyz says ready.
    pub fn launch(test: &str, mut opts: Options<'_>) -> Daemon {
        let setup = Setup::new(test, &opts);
        let stdout = opts.stdout.take().unwrap_or_else(|| {
            std::fs::File::create(setup.dir.join("stdout.log"))
                .unwrap()
                .into()
        });
        let child = setup
            .command(&sonde_bin(), &opts.wrapper, &opts.args)
            .stdout(stdout)
            .stderr(std::fs::File::create(setup.dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            dir: setup.dir,
            addr: setup.addr,
            client: opts.client,
        };
        if wait_ready(&d.client, d.addr, Duration::from_secs(20)).is_err() {
            panic!(
                "timed out after 20s waiting for /readyz to say ready\nstderr:\n{}",
                d.stderr()
            );
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn script(&self, name: &str) -> PathBuf {
        self.dir.join("scripts").join(name)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn try_get(&self, path: &str) -> Option<(u16, String)> {
        self.client.get(self.addr, path, &[]).ok()
    }

    pub fn get(&self, path: &str) -> String {
        match self.client.get(self.addr, path, &[]) {
            Ok((200, body)) => body,
            other => panic!("GET {path}: {other:?}\nstderr:\n{}", self.stderr()),
        }
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics")
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status")).unwrap()
    }

    /// The `/status` entry of one script.
    pub fn unit(&self, name: &str) -> serde_json::Value {
        self.status()["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `cond` every 50 ms; panics with the daemon's log after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\nstderr:\n{}",
            self.stderr()
        );
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill on a child we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!(
                    "daemon did not stop within 15s of SIGTERM\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A minimal HTTP/1.1 GET (Connection: close): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(get_request(addr, path, headers).as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// The bytes of a `GET` with `headers` that asks the server to close after it.
pub fn get_request(addr: impl std::fmt::Display, path: &str, headers: &[&str]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// `(status, body)` of a whole HTTP/1.1 response (chunked bodies joined).
pub fn parse_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The value of the first sample of `name` carrying all of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of the samples of `name` carrying all of `labels` (a series split by
/// labels not asked for, e.g. both reset kinds of one pod), `None` when none does.
pub fn sample_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// `promtool check metrics` on an exposition: no error and no lint warning.
pub fn promtool_check(text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus (scrape interval and timeout 1s) with `jobs`, the YAML of its
/// `scrape_configs` entries, keeping its files and log under `dir/prometheus`.
pub fn prometheus(dir: &std::path::Path, jobs: &str) -> (std::process::Child, SocketAddr) {
    prometheus_with(dir, jobs, &[])
}

/// [`prometheus`] with more command-line flags, e.g.
/// `--enable-feature=native-histograms`.
pub fn prometheus_with(
    dir: &std::path::Path,
    jobs: &str,
    args: &[&str],
) -> (std::process::Child, SocketAddr) {
    let pdir = dir.join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    let port = free_port();
    std::fs::write(
        pdir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}"),
    )
    .unwrap();
    let child = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            pdir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(pdir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (apt-get install prometheus)");
    (child, format!("127.0.0.1:{port}").parse().unwrap())
}
