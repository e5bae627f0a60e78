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
