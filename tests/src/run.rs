//! The real `sonde` binary run the way a person runs it: start it, wait until its
//! program is attached, make traffic, let `--for` end it, read its output.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{repo_root, sonde_bin};

/// A running `sonde` with its stderr collected.
pub struct Run {
    pub child: Child,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    stderr_all: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Run {
    /// A test that panics before `finish` must not leave sonde running (attached,
    /// until the machine reboots): SIGTERM, and SIGKILL after 3 s.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on the pid of a child that has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `sonde ARGS` (in the repository root) and waits until its program is attached.
pub fn start(args: &[&str]) -> Run {
    let mut child = Command::new(sonde_bin())
        .args(args)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let all2 = all.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all2.lock().unwrap().push_str(&line);
            all2.lock().unwrap().push('\n');
            let _ = tx.send(line);
        }
    });
    let run = Run {
        child,
        stderr_lines: rx,
        stderr_all: all,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match run.stderr_lines.recv_timeout(left) {
            Ok(l) if l.contains("attached") => return run,
            Ok(_) => continue,
            Err(_) => panic!("sonde did not attach: {}", run.stderr_all.lock().unwrap()),
        }
    }
}

/// Waits for sonde to exit on its own (--for) and returns (stdout, stderr).
pub fn finish(mut run: Run) -> (String, String) {
    let mut out = String::new();
    run.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = run.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let err = run.stderr_all.lock().unwrap().clone();
    assert!(
        status.success(),
        "sonde failed: {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    (out, err)
}

/// Stops sonde as Ctrl-C does (SIGINT: a last drain, the summary, exit 0) and returns
/// (stdout, stderr). For tests whose traffic takes as long as the machine makes it:
/// a fixed `--for` can end before the last event on a loaded machine.
pub fn interrupt(run: Run) -> (String, String) {
    stop_with(run, libc::SIGINT)
}

/// Sends `signal` to sonde and returns (stdout, stderr) once it exited, successfully.
pub fn stop_with(run: Run, signal: i32) -> (String, String) {
    // SAFETY: kill(2) on the pid of our child, which `finish` reaps.
    unsafe { libc::kill(run.child.id() as i32, signal) };
    finish(run)
}

/// The event lines of type `ty` (`TCPRETRANS`) from the pod of network namespace
/// `inode` (named `netns:<inode>` when no pod has it), in the order printed.
pub fn events_of<'a>(out: &'a str, ty: &str, inode: u32) -> Vec<&'a str> {
    let (ty, pod) = (format!("type={ty} "), format!(" pod=netns:{inode} "));
    out.lines()
        .filter(|l| l.starts_with(&ty) && l.contains(&pod))
        .collect()
}

/// The value of the summary row containing every one of `parts`.
pub fn summary_row(out: &str, parts: &[&str]) -> u64 {
    let line = out
        .lines()
        .find(|l| !l.starts_with("type=") && parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no summary row with {parts:?} in:\n{out}"));
    line.split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line}"))
}

/// The last word of each row of `metric`'s block in the summary (the rows indented
/// under the line naming it) that contains every one of `parts`.
pub fn summary_rows(out: &str, metric: &str, parts: &[&str]) -> Vec<String> {
    let mut in_metric = false;
    let mut found = Vec::new();
    for line in out.lines() {
        if !line.starts_with(' ') {
            in_metric = line.trim() == metric;
            continue;
        }
        if in_metric && parts.iter().all(|p| line.contains(p)) {
            found.extend(line.split_whitespace().last().map(str::to_string));
        }
    }
    found
}

/// [`summary_rows`] as numbers.
pub fn summary_values(out: &str, metric: &str, parts: &[&str]) -> Vec<u64> {
    summary_rows(out, metric, parts)
        .iter()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{metric} {parts:?}: {v} is no count"))
        })
        .collect()
}

/// The `count N` of the summary's histogram line that starts with `series`
/// (`name{label=value}`), `None` without one.
pub fn summary_hist_count(out: &str, series: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with(series))?;
    let rest = &line[line.find("count ")? + 6..];
    rest.split(',').next()?.trim().parse().ok()
}

/// The value of `key=value` in an event line.
pub fn event_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// `sonde run SCRIPT --for FOR -p PARAM...`, with `-p variant=V` when a variant is
/// asked for (else the loader's first that works), started as [`start`] does.
pub fn start_script(script: &str, run_for: &str, params: &[&str], variant: Option<&str>) -> Run {
    let mut args = vec!["run", script, "--for", run_for];
    for p in params {
        args.extend(["-p", p]);
    }
    let asked = variant.map(|v| format!("variant={v}"));
    if let Some(a) = &asked {
        args.extend(["-p", a.as_str()]);
    }
    start(&args)
}
