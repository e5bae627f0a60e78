//! A traced tool as a child process: its event lines counted as they arrive, its
//! stderr kept, its CPU time measured from the kernel's accounting.
//!
//! Event lines look like `type=TCPRESET_NOSOCK pod=netns:4026532301 ...` for every
//! tool; only lines from the workload's namespaces count, so resets elsewhere on the
//! host do not inflate the figures.
//!
//! ```no_run
//! let t = Tool::spawn(cmd, Filter { ours, canary })?;
//! t.wait_ready(Ready::Canary, Duration::from_secs(30))?;
//! let cpu_before = t.cpu()?;
//! // ... workload ...
//! let end = t.interrupt_and_wait(Duration::from_secs(20))?;
//! ```

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Lines other than events kept for parsing (summaries, errors), at most.
const KEPT_LINES: usize = 10_000;

/// Which namespaces an event line must come from to count.
#[derive(Clone)]
pub struct Filter {
    pub ours: HashSet<u64>,
    pub canary: Option<u64>,
}

/// What a tool printed on stdout.
#[derive(Debug, Default, Clone)]
pub struct Lines {
    /// Event lines from the workload's namespaces.
    pub events: u64,
    pub nosock: u64,
    pub receive: u64,
    /// Event lines from elsewhere on the host (not counted in `events`).
    pub foreign: u64,
    pub canary: u64,
    /// Sum of bpftrace's `Lost N events` reports.
    pub lost_reported: u64,
    /// Every other line, for summaries.
    pub other: Vec<String>,
}

/// When a tool counts as attached and ready for the workload.
#[derive(Clone, Copy)]
pub enum Ready {
    /// A canary event came out on stdout: attached, and output flowing.
    Canary,
    /// This text appeared on stderr.
    Stderr(&'static str),
}

#[derive(Default)]
struct Progress {
    canary_seen: bool,
    stderr: String,
    stdout_closed: bool,
    stderr_closed: bool,
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

pub struct Tool {
    name: String,
    child: Child,
    pid: i32,
    shared: Shared,
    stdout: Option<JoinHandle<Lines>>,
    stderr: Option<JoinHandle<()>>,
    reaped: bool,
}

/// How the tool ended.
#[derive(Debug)]
pub struct Ended {
    pub status: i32,
    /// User + system CPU of every thread over the whole life of the process.
    pub cpu: Duration,
    pub lines: Lines,
    pub stderr: String,
}

impl Tool {
    /// Starts the tool. With a filter its stdout is read and counted; without one
    /// it goes to /dev/null.
    pub fn spawn(name: &str, mut cmd: Command, filter: Option<Filter>) -> anyhow::Result<Tool> {
        let stdout = if filter.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        // If the benchmark dies, its tool ends too (as on Ctrl-C) instead of
        // running on until its guard duration.
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        let pid = child.id() as i32;
        let progress = Progress {
            stdout_closed: filter.is_none(),
            ..Progress::default()
        };
        let shared: Shared = Arc::new((Mutex::new(progress), Condvar::new()));
        let err = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let stdout = match (filter, child.stdout.take()) {
            (Some(filter), Some(out)) => {
                let s = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("tool-stdout".into())
                        .spawn(move || count_lines(out, filter, s))
                        .context("cannot spawn a reader thread")?,
                )
            }
            _ => None,
        };
        let s = shared.clone();
        let stderr = std::thread::Builder::new()
            .name("tool-stderr".into())
            .spawn(move || keep_stderr(err, s))
            .context("cannot spawn a reader thread")?;
        Ok(Tool {
            name: name.to_string(),
            child,
            pid,
            shared,
            stdout,
            stderr: Some(stderr),
            reaped: false,
        })
    }

    /// The process id, for reading `/proc/PID/...`.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until the tool is ready, failing if it exits or the timeout passes.
    pub fn wait_ready(&self, ready: Ready, timeout: Duration) -> anyhow::Result<()> {
        let (lock, cond) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let done = match ready {
                Ready::Canary => p.canary_seen,
                Ready::Stderr(text) => p.stderr.contains(text),
            };
            if done {
                return Ok(());
            }
            if p.stdout_closed && p.stderr_closed {
                bail!(
                    "{} exited before it was ready; its stderr:\n{}",
                    self.name,
                    p.stderr.trim_end()
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "{} not ready after {timeout:?}; its stderr so far:\n{}",
                    self.name,
                    p.stderr.trim_end()
                );
            }
            p = cond
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// CPU time used so far by the threads alive now, in nanoseconds of run time
    /// (`/proc/PID/task/*/schedstat`; the same clock `wait4` reports at the end).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let dir = format!("/proc/{}/task", self.pid);
        let mut nanos = 0u64;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
            let path = entry?.path().join("schedstat");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            nanos += text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
        // Threads that already exited are only in the process totals of
        // /proc/PID/stat (clock ticks): take whichever is larger.
        Ok(Duration::from_nanos(nanos).max(self.cpu_ticks().unwrap_or_default()))
    }

    /// utime + stime of /proc/PID/stat, exited threads included, at tick resolution.
    fn cpu_ticks(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name, which may contain spaces: state is field 3,
        // utime and stime are fields 14 and 15.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let ticks: u64 =
            fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }

    /// Sends SIGINT (as Ctrl-C would) and waits for the tool to finish.
    pub fn interrupt_and_wait(self, timeout: Duration) -> anyhow::Result<Ended> {
        // SAFETY: signalling our own child, not yet reaped, so the pid is still ours.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
        self.wait(timeout)
    }

    /// Waits for the tool to exit by itself; killed after the timeout.
    pub fn wait(mut self, timeout: Duration) -> anyhow::Result<Ended> {
        let deadline = Instant::now() + timeout;
        let (status, cpu) = loop {
            if let Some(done) = self.try_reap()? {
                break done;
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("{} did not exit within {timeout:?}; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let lines = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
        let stderr = std::mem::take(
            &mut self
                .shared
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stderr,
        );
        Ok(Ended {
            status,
            cpu,
            lines,
            stderr,
        })
    }

    /// wait4 with WNOHANG: the exit status and the rusage CPU once exited.
    fn try_reap(&mut self) -> anyhow::Result<Option<(i32, Duration)>> {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("wait4");
        }
        if r == 0 {
            return Ok(None);
        }
        self.reaped = true;
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok(Some((code, tv(usage.ru_utime) + tv(usage.ru_stime))))
    }

    fn kill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Tool {
    /// A tool abandoned on an error path is killed, never left running.
    fn drop(&mut self) {
        self.kill();
    }
}

fn count_lines(out: impl Read, filter: Filter, shared: Shared) -> Lines {
    let mut reader = BufReader::with_capacity(1 << 20, out);
    let mut lines = Lines::default();
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(rest) = line.strip_prefix(b"type=") {
            match event_netns(line) {
                Some(ns) if filter.ours.contains(&ns) => {
                    lines.events += 1;
                    if rest.starts_with(b"TCPRESET_NOSOCK ") {
                        lines.nosock += 1;
                    } else if rest.starts_with(b"TCPRESET_RECEIVE ") {
                        lines.receive += 1;
                    }
                }
                Some(ns) if Some(ns) == filter.canary => {
                    lines.canary += 1;
                    if lines.canary == 1 {
                        let (lock, cond) = &*shared;
                        lock.lock().unwrap_or_else(|e| e.into_inner()).canary_seen = true;
                        cond.notify_all();
                    }
                }
                _ => lines.foreign += 1,
            }
        } else if let Some(n) = lost_events(line) {
            lines.lost_reported += n;
        } else if lines.other.len() < KEPT_LINES {
            lines.other.push(String::from_utf8_lossy(line).into_owned());
        }
    }
    let (lock, cond) = &*shared;
    lock.lock().unwrap_or_else(|e| e.into_inner()).stdout_closed = true;
    cond.notify_all();
    lines
}

fn keep_stderr(err: impl Read, shared: Shared) {
    let reader = BufReader::new(err);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let (lock, cond) = &*shared;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        if p.stderr.len() < 1 << 20 {
            p.stderr.push_str(&String::from_utf8_lossy(&line));
            p.stderr.push('\n');
        }
        cond.notify_all();
    }
    let (lock, cond) = &*shared;
    lock.lock().unwrap_or_else(|e| e.into_inner()).stderr_closed = true;
    cond.notify_all();
}

/// The namespace inode of an event line (`pod=netns:<inode>`).
fn event_netns(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b" pod=netns:";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// bpftrace's `Lost N events` report.
fn lost_events(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let n = text.strip_prefix("Lost ")?.strip_suffix(" events")?;
    n.parse().ok()
}

/// Reads the sonde summary line from stderr:
/// `sonde: N records (R/s), E events emitted, L lost in the kernel, U undecodable, in S.SSs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SondeSummary {
    pub records: u64,
    pub lost: u64,
    /// Records read but not handled: the script was behind by more than its
    /// backlog (`sonde: warning: N records were dropped because the script was behind`).
    pub behind: u64,
    pub undecodable: u64,
    pub seconds: f64,
}

impl SondeSummary {
    pub fn parse(stderr: &str) -> Option<SondeSummary> {
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("sonde: ") && l.contains(" records ("))?;
        let num_before = |suffix: &str| -> Option<u64> {
            let end = line.find(suffix)?;
            let start = line[..end]
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |i| i + 1);
            line[start..end].parse().ok()
        };
        let seconds = line
            .rsplit_once(" in ")
            .and_then(|(_, s)| s.trim().trim_end_matches('s').parse().ok())
            .unwrap_or(0.0);
        let behind = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix("sonde: warning: ")?
                    .strip_suffix(
                        " records were dropped because the script was behind by more than 1s",
                    )?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Some(SondeSummary {
            behind,
            records: num_before(" records (")?,
            lost: num_before(" lost in the kernel")?,
            undecodable: num_before(" undecodable")?,
            seconds,
        })
    }
}

/// Sums the values of one metric in a sonde metrics summary, over the label sets
/// that `keep` accepts:
///
/// ```text
/// sonde_bench_resets_total
///   {kind=NOSOCK}   3
/// ```
pub fn metric_sum(summary: &[String], metric: &str, keep: impl Fn(&str) -> bool) -> Option<u64> {
    let start = summary.iter().position(|l| l.trim() == metric)?;
    let mut total = 0;
    for l in &summary[start + 1..] {
        let Some(rest) = l.strip_prefix("  ") else {
            break;
        };
        let Some((labels, value)) = rest.trim().rsplit_once(char::is_whitespace) else {
            break;
        };
        if keep(labels) {
            total += value.trim().parse::<f64>().ok()? as u64;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_line() {
        let s = SondeSummary::parse(
            "sonde: tcp_reset attached (variant tracepoint)\n\
             sonde: 1234 records (123/s), 1200 events emitted, 34 lost in the kernel, 0 undecodable, in 10.00s\n",
        )
        .unwrap();
        assert_eq!((s.records, s.lost, s.undecodable), (1234, 34, 0));
        assert_eq!(s.seconds, 10.0);
    }

    #[test]
    fn reads_netns_and_lost_reports() {
        assert_eq!(
            event_netns(b"type=TCPRESET_NOSOCK pod=netns:4026532177 protocol=TCP"),
            Some(4026532177)
        );
        assert_eq!(event_netns(b"type=TCPRESET_NOSOCK protocol=TCP"), None);
        assert_eq!(lost_events(b"Lost 1203 events"), Some(1203));
    }

    #[test]
    fn sums_a_metric() {
        let lines: Vec<String> = [
            "sonde_tcp_reset_segments_total",
            "  {namespace=,pod=netns:11,kind=NOSOCK}   2",
            "  {namespace=,pod=netns:12,kind=RECEIVE}  3",
            "other_metric",
            "  {} 7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            metric_sum(&lines, "sonde_tcp_reset_segments_total", |_| true),
            Some(5)
        );
        assert_eq!(
            metric_sum(&lines, "sonde_tcp_reset_segments_total", |l| l
                .contains("netns:12,")),
            Some(3)
        );
        assert_eq!(metric_sum(&lines, "other_metric", |_| true), Some(7));
    }
}
