//! End to end: no input takes sonde down. The real binary is given a kernel BTF
//! with a few bytes changed, config values past their range, `/dev/zero` and a FIFO
//! as BTF, and a recording whose writer was killed with SIGKILL; each must be a
//! clean error (or, for the recording, a warning and everything that was complete),
//! never a panic (exit code 101) or an abort (SIGABRT, a stack overflow).
//!
//! The BTF damage comes from a small deterministic mutator over the running
//! kernel's own BTF: the two kinds found to crash aya-obj, a name offset past the
//! string section (a panic) and a struct that contains itself through an anonymous
//! member (endless recursion: a stack overflow).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sonde_tests::run::start;
use sonde_tests::{cannot_run, connect_refused, repo_root, require_root, sonde_bin, NetnsThread};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const SYSFS_BTF: &str = "/sys/kernel/btf/vmlinux";

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sonde-inputs-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `sonde ARGS`, killed after `limit`; the output and how long it took.
fn sonde_within(args: &[&str], limit: Duration) -> (Output, Duration) {
    let t = Instant::now();
    let child = Command::new(sonde_bin())
        .args(args)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sonde");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.unwrap(), t.elapsed()),
        Err(_) => {
            // SAFETY: kill on a child we own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "sonde {args:?} still running after {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn sonde(args: &[&str]) -> Output {
    sonde_within(args, Duration::from_secs(60)).0
}

/// Exit code and stderr; fails on a death by signal (an abort) or a panic's 101.
fn clean_exit(args: &[&str], out: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.signal().is_none(),
        "sonde {args:?} died by signal {:?}\n{err}",
        out.status.signal()
    );
    let code = out.status.code().unwrap();
    assert_ne!(code, 101, "sonde {args:?} panicked\n{err}");
    assert!(
        !err.contains("panicked at"),
        "sonde {args:?} panicked\n{err}"
    );
    (code, err)
}

/// How a BTF is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// The first struct's name offset just past the string section: aya-obj
    /// slices its strings with it (a panic: exit code 101 before).
    NamePastStrings,
    /// `struct sock_common`'s first anonymous member made `struct sock_common`:
    /// aya-obj recurses through anonymous members forever (a stack overflow: an
    /// abort, exit by SIGABRT before).
    SelfContainingStruct,
}

/// A copy of `raw` (the kernel's BTF) with a few bytes changed.
fn damage(raw: &[u8], how: Damage) -> Vec<u8> {
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let (hdr, type_off, type_len) = (
        word(raw, 4) as usize,
        word(raw, 8) as usize,
        word(raw, 12) as usize,
    );
    let (str_off, str_len) = (word(raw, 16) as usize, word(raw, 20) as usize);
    let strings = &raw[hdr + str_off..hdr + str_off + str_len];
    let name = |off: u32| {
        let s = &strings[off as usize..];
        &s[..s.iter().position(|b| *b == 0).unwrap()]
    };
    let mut out = raw.to_vec();
    let (mut at, end, mut id) = (hdr + type_off, hdr + type_off + type_len, 1u32);
    while at < end {
        let info = word(raw, at + 4);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == 4 {
            match how {
                Damage::NamePastStrings => {
                    out[at..at + 4].copy_from_slice(&(str_len as u32 + 100).to_le_bytes());
                    return out;
                }
                Damage::SelfContainingStruct if name(word(raw, at)) == b"sock_common" => {
                    let anon = (0..vlen)
                        .map(|i| at + 12 + 12 * i)
                        .find(|m| word(raw, *m) == 0)
                        .expect("struct sock_common has an anonymous member");
                    out[anon + 4..anon + 8].copy_from_slice(&id.to_le_bytes());
                    return out;
                }
                _ => {}
            }
        }
        at += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
        id += 1;
    }
    panic!("{how:?}: nothing to damage");
}

/// The kernel's BTF, damaged each way, written to `dir`.
fn damaged_btfs(test: &str, dir: &Path) -> Option<Vec<(Damage, PathBuf)>> {
    let raw = match std::fs::read(SYSFS_BTF) {
        Ok(raw) => raw,
        Err(e) => {
            cannot_run(test, &format!("{SYSFS_BTF}: {e}"));
            return None;
        }
    };
    Some(
        [Damage::NamePastStrings, Damage::SelfContainingStruct]
            .into_iter()
            .map(|how| {
                let path = dir.join(format!("{how:?}.btf"));
                std::fs::write(&path, damage(&raw, how)).unwrap();
                (how, path)
            })
            .collect(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_damaged_btf_is_a_clean_error_from_every_command() {
    let test = "a_damaged_btf_is_a_clean_error_from_every_command";
    let dir = temp_dir("btf");
    let Some(btfs) = damaged_btfs(test, &dir) else {
        return;
    };
    let config = dir.join("sonde.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\nscripts:\n  builtin: [tcp_reset]\n  directories: []\n",
            free_port()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for (how, path) in &btfs {
        let p = path.to_str().unwrap();
        let want = format!("--btf / btf: {p}: corrupt BTF (");
        for (args, code) in [
            (vec!["btf", "--btf", p], 1),
            (vec!["daemon", "--check", "-c", config, "--btf", p], 2),
            (vec!["daemon", "-c", config, "--btf", p], 2),
            (
                vec!["run", "scripts/tcp_reset.rhai", "--for", "1s", "--btf", p],
                1,
            ),
        ] {
            let out = sonde(&args);
            let (got, err) = clean_exit(&args, &out);
            assert_eq!(got, code, "{how:?}: sonde {args:?}\n{err}");
            assert!(err.contains(&want), "{how:?}: sonde {args:?}\n{err}");
        }
    }
    let out = sonde(&["btf", "--btf", btfs[0].1.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("struct name offset") && err.contains("is past the string section"),
        "{err}"
    );
    let out = sonde(&["btf", "--btf", btfs[1].1.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("struct sock_common contains itself without a pointer"),
        "{err}"
    );
    // The good BTF still works, and says it was checked.
    let out = sonde(&["btf", "--btf", SYSFS_BTF]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(structure checked)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dev_zero_and_a_fifo_as_btf_are_clean_errors_within_a_second() {
    let dir = temp_dir("special");
    let fifo = dir.join("fifo.btf");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let config = dir.join("sonde.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\nscripts:\n  builtin: []\n  directories: []\n",
            free_port()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for (path, what) in [
        ("/dev/zero", "a character device"),
        (fifo.to_str().unwrap(), "a FIFO"),
    ] {
        for (args, code) in [
            (vec!["btf", "--btf", path], 1),
            (vec!["daemon", "--check", "-c", config, "--btf", path], 2),
            (vec!["daemon", "-c", config, "--btf", path], 2),
            (
                vec![
                    "run",
                    "scripts/tcp_reset.rhai",
                    "--for",
                    "1s",
                    "--btf",
                    path,
                ],
                1,
            ),
        ] {
            let (out, took) = sonde_within(&args, Duration::from_secs(10));
            let (got, err) = clean_exit(&args, &out);
            assert_eq!(got, code, "sonde {args:?}\n{err}");
            assert!(
                err.contains(&format!("{path}: not a regular file ({what})")),
                "sonde {args:?}\n{err}"
            );
            assert!(
                took < Duration::from_secs(1),
                "sonde {args:?} took {took:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each value passed `--check` before and then panicked, aborted on an allocation
/// or overflowed the stack; now `--check` and the daemon refuse it by its path.
#[test]
fn config_values_out_of_range_are_refused_by_their_path() {
    let dir = temp_dir("ranges");
    let config = dir.join("sonde.yaml");
    for (yaml, want) in [
        (
            "sinks:\n  queue: 18446744073709551615\n",
            "sinks.queue: 18446744073709551615 is out of range 1..=1048576",
        ),
        (
            "sinks:\n  stream:\n    backlog: 1000000000000\n",
            "sinks.stream.backlog: 1000000000000 is out of range 0..=65536",
        ),
        (
            "limits:\n  max_call_levels: 700\n",
            "limits.max_call_levels: 700 is out of range 1..=128",
        ),
        (
            "limits:\n  call_deadline: 0s\n",
            "limits.call_deadline: 0ns is out of range 1ms..=10s",
        ),
        (
            "limits:\n  max_string_size: 100000000000\n",
            "limits.max_string_size: 100000000000 is out of range 1..=16777216",
        ),
        (
            "pods:\n  refresh: 99999999h\n",
            "pods.refresh: 99999999h is out of range 100ms..=1h",
        ),
        (
            "shutdown_timeout: 99999999h\n",
            "shutdown_timeout: 99999999h is out of range 0ns..=10m",
        ),
    ] {
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{}\nscripts:\n  builtin: []\n  directories: []\n{yaml}",
                free_port()
            ),
        )
        .unwrap();
        let c = config.to_str().unwrap();
        for args in [vec!["daemon", "--check", "-c", c], vec!["daemon", "-c", c]] {
            let out = sonde(&args);
            let (code, err) = clean_exit(&args, &out);
            assert_eq!(code, 2, "{yaml}: {err}");
            assert!(err.contains(&format!("{c}: {want} (")), "{yaml}: {err}");
            assert!(err.contains("set a value in that range (default "), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A minimal HTTP/1.0 GET: the body of a 200, `None` otherwise.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let ok = head.split_whitespace().nth(1) == Some("200");
    ok.then(|| body.to_string())
}

struct Daemon {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Daemon {
    /// `sonde daemon` on `config` in `dir`, its output in `dir/std{out,err}.log`.
    fn spawn(dir: &Path, config: &Path, addr: SocketAddr) -> Daemon {
        let child = Command::new(sonde_bin())
            .args(["daemon", "--config"])
            .arg(config)
            .env("SONDE_LOG", "info")
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            dir: dir.to_path_buf(),
            addr,
        }
    }

    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&mut Daemon) -> bool,
    ) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond(self) {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the daemon exited\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}\n{}", self.stderr());
    }

    fn status(&self) -> serde_json::Value {
        get(self.addr, "/status")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill on a child we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `limits.max_call_levels` at its cap and a script that recurses as deep as it can
/// through the heaviest levels a script can write: before, 700 levels overflowed the
/// stack (an abort); now each call stops with a `call_depth` error and the daemon
/// goes on.
#[test]
fn a_recursive_script_at_the_call_level_cap_does_not_take_the_daemon_down() {
    let dir = temp_dir("recursion");
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    let nested = format!("{}f(n - 1){}", "1 + (".repeat(27), ")".repeat(27));
    std::fs::write(
        dir.join("scripts/deep.rhai"),
        format!(
            "const PROBE = #{{ interval: \"100ms\" }};\n\
             fn f(n) {{ if n == 0 {{ 0 }} else {{ {nested} }} }}\n\
             fn on_tick() {{ f(100000) }}\n"
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("sonde.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {addr}\nscripts:\n  builtin: []\n  directories: [{}]\nlimits:\n  max_call_levels: 128\n",
            dir.join("scripts").display()
        ),
    )
    .unwrap();
    let mut d = Daemon::spawn(&dir, &config, addr);
    let errors = |d: &mut Daemon| -> f64 {
        get(d.addr, "/metrics")
            .unwrap_or_default()
            .lines()
            .find(|l| {
                l.starts_with("sonde_script_errors_total{")
                    && l.contains("script=\"deep\"")
                    && l.contains("kind=\"call_depth\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    d.wait_for("three call_depth errors", Duration::from_secs(30), |d| {
        errors(d) >= 3.0
    });
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.stderr());
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_running_daemon_pointed_at_a_damaged_btf_keeps_running_and_reports_the_reload() {
    let test = "a_running_daemon_pointed_at_a_damaged_btf_keeps_running_and_reports_the_reload";
    if !require_root(test) {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("reload");
    let Some(btfs) = damaged_btfs(test, &dir) else {
        return;
    };
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let base =
        format!("listen: {addr}\nscripts:\n  builtin: [tcp_reset, netdev]\n  directories: []\n");
    let config = dir.join("sonde.yaml");
    std::fs::write(&config, &base).unwrap();
    let mut d = Daemon::spawn(&dir, &config, addr);
    let running = |d: &mut Daemon, name: &str| {
        d.status()["scripts"].as_array().is_some_and(|s| {
            s.iter()
                .any(|u| u["name"] == name && u["state"] == "running")
        })
    };
    d.wait_for("tcp_reset running", Duration::from_secs(30), |d| {
        running(d, "tcp_reset")
    });
    for (i, (how, path)) in btfs.iter().enumerate() {
        std::fs::write(&config, format!("{base}btf: {}\n", path.display())).unwrap();
        let p = path.display().to_string();
        d.wait_for(
            &format!("{how:?}: the failed reload"),
            Duration::from_secs(20),
            |d| {
                let r = &d.status()["last_reload"];
                r["result"] == "failure" && r["errors"].to_string().contains(&p)
            },
        );
        let status = d.status();
        let errors = status["last_reload"]["errors"].to_string();
        assert!(
            errors.contains("corrupt BTF") && errors.contains(&path.display().to_string()),
            "{how:?}: {errors}"
        );
        assert!(
            running(&mut d, "tcp_reset"),
            "{how:?}: the running version stays\n{status:#}"
        );
        assert!(running(&mut d, "netdev"), "{how:?}\n{status:#}");
        assert!(
            get(addr, "/metrics").is_some_and(|m| m.contains("sonde_")),
            "{how:?}: /metrics answers"
        );
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "{how:?}: the daemon is still there ({i})"
        );
    }
    // Back to a good config: a successful reload, the probe still running.
    std::fs::write(&config, format!("{base}btf: {SYSFS_BTF}\n")).unwrap();
    d.wait_for("a successful reload", Duration::from_secs(20), |d| {
        d.status()["last_reload"]["result"] == "success"
    });
    assert!(running(&mut d, "tcp_reset"));
    assert!(!d.stderr().contains("panicked at"), "{}", d.stderr());
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real recording of real resets, its writer killed with SIGKILL: the replay
/// has every record that was complete, and says where the recording ends.
#[test]
fn a_recording_killed_with_sigkill_replays_its_complete_records() {
    let test = "a_recording_killed_with_sigkill_replays_its_complete_records";
    if !require_root(test) {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("record");
    let rec = dir.join("killed.sonderec");
    let rec_s = rec.to_str().unwrap().to_string();
    let mut run = start(&[
        "run",
        "scripts/tcp_reset.rhai",
        "--for",
        "120s",
        "--quiet",
        "--record",
        &rec_s,
    ]);
    let ns = NetnsThread::new().unwrap();
    // A port below the ephemeral range: 5000 connects to a port inside it would,
    // once, pick it as their own source port and connect to themselves.
    let port = 1;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // 5000 refused connects: a NOSOCK reset sent and a reset received for each.
    const CONNECTS: usize = 5000;
    for _ in 0..CONNECTS / 500 {
        ns.run(move || connect_refused(addr, 500));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Until every record is drained (a debug build's script takes a few seconds
    // for 10,000) and written: the file stops growing for well past the writer's
    // flush bound (100 ms between flushes, drains at most 100 ms apart).
    let (mut size, mut since) = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    while since.elapsed() < Duration::from_millis(700) {
        assert!(
            Instant::now() < deadline,
            "the recording never stopped growing"
        );
        let now = std::fs::metadata(&rec).map(|m| m.len()).unwrap_or(0);
        if now != size {
            (size, since) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run.child.kill().unwrap();
    let status = run.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let pod = format!("pod=netns:{}", ns.inode);
    let replay = |path: &str| {
        let args = ["run", "scripts/tcp_reset.rhai", "--replay", path];
        let out = sonde(&args);
        let (code, err) = clean_exit(&args, &out);
        let ours = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("type=") && l.contains(&pod))
            .count();
        (code, err, ours)
    };
    let (code, err, ours) = replay(&rec_s);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ours,
        2 * CONNECTS,
        "every reset drained before the kill is in the file\n{err}"
    );
    assert!(err.contains("WARN"), "{err}");
    assert!(err.contains("ends without its end frame at byte"), "{err}");
    assert!(
        err.contains(
            "the writer was killed or the file was cut; the complete frames were replayed"
        ),
        "{err}"
    );

    // The same file cut mid-frame: one record less, the cut said where.
    let bytes = std::fs::read(&rec).unwrap();
    let cut = dir.join("cut.sonderec");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let (code, err, cut_ours) = replay(cut.to_str().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ends mid-frame ("), "{err}");
    assert!(
        cut_ours + 1 >= ours && cut_ours <= ours,
        "{cut_ours} of {ours}\n{err}"
    );

    // A frame damaged in the middle (its tag): an error naming it, after what came
    // before. Frame 1000 found by walking the frames' lengths.
    let mut at = 16 + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut frame = 0;
    while frame < 1000 {
        let len = u32::from_le_bytes(bytes[at + 11..at + 15].try_into().unwrap()) as usize;
        at += 15 + len;
        frame += 1;
    }
    let mut bad = bytes.clone();
    bad[at] = 0x7f;
    let damaged = dir.join("damaged.sonderec");
    std::fs::write(&damaged, &bad).unwrap();
    let (code, err, _) = replay(damaged.to_str().unwrap());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("frame 1000 at byte {at} is corrupt: unknown tag 127; the 1000 frames before it were replayed")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
