//! `sonde events` against the real daemon: timestamped lines, `--since` (a duration
//! or a time) and `--no-backlog`, with a script that emits one numbered event per
//! tick, so which events arrive says exactly what the daemon sent.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sonde_tests::daemon::Daemon;
use sonde_tests::{require_root, sonde_bin};

/// One `E2E_TICK` event with `n` = 1, 2, 3, … every 100 ms.
const TICKER: &str = r#"//! ticker: one numbered event per tick.
const PROBE = #{ interval: "100ms" };
fn init(params) { this.n = 0; }
fn on_tick() { this.n += 1; emit("E2E_TICK", #{ n: this.n }); }
"#;

fn start(test: &str) -> Daemon {
    let ticker = |p: &std::path::Path| std::fs::write(p, TICKER).unwrap();
    Daemon::start_with(
        test,
        &[],
        "sinks:\n  stdout:\n    enabled: false\n",
        &[("ticker.rhai", &ticker)],
        None,
    )
}

/// A printed line: `2026-12-06T07:01:02.345Z type=E2E_TICK n=7`, or with --local
/// `2026-12-06T12:31:02.345+05:30 type=E2E_TICK n=7`.
#[derive(Debug)]
struct Line {
    time: String,
    n: u64,
}

fn parse(line: &str) -> Line {
    let (time, event) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("no time: {line:?}"));
    let b = time.as_bytes();
    assert!(
        b.len() >= 24
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && (time.len() == 24 && time.ends_with('Z')
                || time.len() == 29 && matches!(b[23], b'+' | b'-') && b[26] == b':'),
        "not an RFC 3339 time with milliseconds: {line:?}"
    );
    let n = event
        .strip_prefix("type=E2E_TICK n=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a tick event: {line:?}"));
    Line {
        time: time.to_string(),
        n,
    }
}

/// `sonde events --addr <d> args...` to its end: the lines it printed.
fn events(d: &Daemon, args: &[&str]) -> Vec<String> {
    events_in(d, args, "UTC")
}

/// [`events`] with `TZ` set to `tz`.
fn events_in(d: &Daemon, args: &[&str], tz: &str) -> Vec<String> {
    let out = Command::new(sonde_bin())
        .env("TZ", tz)
        .arg("events")
        .args(args)
        .args(["--addr", &d.addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sonde events {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// `sonde events --follow ...` running, its lines arriving on a channel.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn start(d: &Daemon, args: &[&str]) -> Follow {
        let mut child = Command::new(sonde_bin())
            .args(["events", "--follow"])
            .args(args)
            .args(["--addr", &d.addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines }
    }

    /// Lines until one has `n` ≥ `last` (5 s at most).
    fn until(&self, last: u64) -> Vec<Line> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let line = parse(&l);
                let done = line.n >= last;
                got.push(line);
                if done {
                    return got;
                }
            }
        }
        panic!("no event n={last} within 5 s; got {got:?}");
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Now on this machine's clock (the daemon's too), in nanoseconds since the epoch.
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `ns` as `date -u +%FT%T.%3NZ` prints it: what the lines are compared with.
fn utc(ns: u128) -> String {
    date(ns, "UTC", "+%FT%T.%3NZ")
}

/// `ns` as `TZ=tz date +format` prints it.
fn date(ns: u128, tz: &str, format: &str) -> String {
    let out = Command::new("date")
        .env("TZ", tz)
        .args([
            "-d",
            &format!("@{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000),
            format,
        ])
        .output()
        .expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The `(n, timestamp)` of the events the daemon holds in its backlog now.
fn backlog(d: &Daemon) -> Vec<(u64, u128)> {
    d.get("/events")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let n = v["fields"]["n"].as_u64().unwrap();
            (n, v["timestamp"].as_u64().unwrap().into())
        })
        .collect()
}

fn backlog_ns(d: &Daemon) -> Vec<u64> {
    backlog(d).into_iter().map(|(n, _)| n).collect()
}

fn wait_for_backlog(d: &Daemon, n: usize) {
    d.wait_for(
        &format!("{n} events in the backlog"),
        Duration::from_secs(10),
        || backlog_ns(d).len() >= n,
    );
}

#[test]
fn text_lines_carry_the_events_time_in_utc() {
    if !require_root("text_lines_carry_the_events_time_in_utc") {
        return;
    }
    let before = utc(now_ns());
    let d = start("events-time");
    wait_for_backlog(&d, 3);
    let after = utc(now_ns());
    let text = events(&d, &[]);
    let json = events(&d, &["-o", "json"]);
    assert!(text.len() >= 3, "{text:?}");
    // The JSON lines keep their nanosecond timestamp; the text line shows the same
    // instant as `date` prints it.
    for (t, j) in text.iter().zip(&json) {
        let line = parse(t);
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        assert_eq!(v["fields"]["n"].as_u64(), Some(line.n), "{t}\n{j}");
        let ns = v["timestamp"].as_u64().unwrap();
        assert_eq!(utc(ns.into()), line.time, "{t}\n{j}");
    }
    // --local: the machine's time zone and its offset, as `date` prints them, for a
    // zone with a half-hour offset and one with daylight saving time.
    for tz in ["Asia/Kolkata", "America/St_Johns"] {
        let local = events_in(&d, &["--local"], tz);
        assert!(local.len() >= 3, "{local:?}");
        for (t, j) in local.iter().zip(&json) {
            let v: serde_json::Value = serde_json::from_str(j).unwrap();
            let ns = v["timestamp"].as_u64().unwrap();
            assert_eq!(
                parse(t).time,
                date(ns.into(), tz, "+%FT%T.%3N%:z"),
                "TZ={tz}: {t}\n{j}"
            );
        }
    }
    // Wall-clock time, from between the daemon's start and the backlog's third event.
    let first = parse(&text[0]).time;
    assert!(
        before <= first && first <= after,
        "{before} <= {first} <= {after}"
    );
}

#[test]
fn since_a_duration_or_a_time_leaves_older_events_out() {
    if !require_root("since_a_duration_or_a_time_leaves_older_events_out") {
        return;
    }
    let d = start("events-since");
    wait_for_backlog(&d, 30);

    // A duration: counted back from now on the daemon's clock.
    const SECOND: u128 = 1_000_000_000;
    let start = now_ns();
    let recent: Vec<Line> = events(&d, &["--since", "1s"])
        .iter()
        .map(|l| parse(l))
        .collect();
    let end = now_ns();
    let all = backlog(&d);
    let ns: Vec<u64> = recent.iter().map(|l| l.n).collect();
    assert!(!ns.is_empty(), "nothing in the last second of {all:?}");
    // The newest events, without a gap.
    assert_eq!(ns, (ns[0]..=*ns.last().unwrap()).collect::<Vec<_>>());
    // Those more than 1 s older than the call are left out (there are some: the
    // backlog spans 3 s) ...
    let old: Vec<u64> = all
        .iter()
        .filter(|(_, ts)| *ts < start - SECOND)
        .map(|(n, _)| *n)
        .collect();
    assert!(!old.is_empty(), "no event older than 1 s in {all:?}");
    assert!(
        old.iter().all(|n| !ns.contains(n)),
        "older than 1 s: {old:?}; printed: {ns:?}"
    );
    // ... those less than 1 s older than its end are there (the daemon had them
    // when asked: 200 ms from emit to backlog is plenty) ...
    for (n, ts) in &all {
        if *ts >= end - SECOND && *ts + SECOND / 5 <= start {
            assert!(ns.contains(n), "n={n} at {ts} missing from {ns:?}");
        }
    }
    // ... and no printed time is more than 1 s older than the call.
    let cutoff = utc(start - SECOND);
    assert!(
        recent.iter().all(|l| l.time >= cutoff),
        "{cutoff} {recent:?}"
    );

    // A time: the events from that one on, then live ones with --follow.
    let text: Vec<Line> = events(&d, &[]).iter().map(|l| parse(l)).collect();
    let from = &text[text.len() / 2];
    let follow = Follow::start(&d, &["--since", &from.time]);
    let last = text.last().unwrap().n + 3;
    let got = follow.until(last);
    let got_ns: Vec<u64> = got.iter().map(|l| l.n).collect();
    assert_eq!(
        got_ns,
        (from.n..=last).collect::<Vec<_>>(),
        "since {}",
        from.time
    );

    // An RFC 3339 time with an offset is the same instant.
    let text: Vec<Line> = events(&d, &[]).iter().map(|l| parse(l)).collect();
    let from = &text[text.len() / 2];
    let local = Command::new("date")
        .args(["-d", &from.time, "+%FT%T.%3N%:z"])
        .env("TZ", "UTC-05:30")
        .output()
        .unwrap();
    let local = String::from_utf8_lossy(&local.stdout).trim().to_string();
    let got: Vec<u64> = events(&d, &["--since", &local])
        .iter()
        .map(|l| parse(l).n)
        .collect();
    assert_eq!(got.first(), Some(&from.n), "since {local} ({})", from.time);
}

#[test]
fn no_backlog_follows_only_events_after_connecting() {
    if !require_root("no_backlog_follows_only_events_after_connecting") {
        return;
    }
    let d = start("events-nobacklog");
    wait_for_backlog(&d, 10);

    // Without it: the backlog first, from its oldest event.
    let held = backlog_ns(&d);
    let follow = Follow::start(&d, &[]);
    let got = follow.until(held.last().unwrap() + 2);
    assert_eq!(got[0].n, held[0], "{got:?}");
    drop(follow);

    // With it: nothing the daemon held when the client connected.
    let connecting = utc(now_ns());
    let held = backlog_ns(&d);
    let follow = Follow::start(&d, &["--no-backlog"]);
    let newest_held = *held.last().unwrap();
    let got = follow.until(newest_held + 20);
    assert!(
        got[0].n > newest_held,
        "held up to n={newest_held}, got {got:?}"
    );
    assert!(got[0].time >= connecting, "{connecting} {got:?}");
    // Live events from then on, without a gap.
    let ns: Vec<u64> = got.iter().map(|l| l.n).collect();
    assert_eq!(ns, (ns[0]..=*ns.last().unwrap()).collect::<Vec<_>>());
}

#[test]
fn bad_since_and_no_backlog_without_follow_are_usage_errors() {
    // Refused before any connection: no daemon needed.
    let run = |args: &[&str]| {
        let out = Command::new(sonde_bin())
            .arg("events")
            .args(args)
            .args(["--addr", "127.0.0.1:9"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--since", "yesterday"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "\"yesterday\": expected a duration like 5m or 1h30m (units ms, s, m, h) or a time \
             like 2026-12-06T07:00:00Z"
        ),
        "{err}"
    );
    let (code, err) = run(&["--since", "2026-12-06T07:00:00"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no UTC offset (Z or +HH:MM)"), "{err}");
    let (code, err) = run(&["--no-backlog"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--follow"), "{err}");
    let (code, err) = run(&["-f", "--no-backlog", "--since", "5m"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}
