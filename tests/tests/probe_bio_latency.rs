//! bio_latency (root): direct I/O to a loop device of our own, from a thread in a
//! private network namespace; the exported histogram for that disk counts exactly
//! those requests (and agrees with /sys/block/<loop>/stat), and with slow_ns=0 every
//! request is an event with the disk name, operation, size and the issuing pod.

use sonde::script::record::DecodedEntries;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;

use rhai::Map;
use sonde::script::ParamValue;
use sonde_tests::kernel::{drain, entries, int, load, s, struct_entries};
use sonde_tests::run::{event_field as field, finish, start, summary_hist_count};
use sonde_tests::{cannot_run, require_root, NetnsThread};

const READS: usize = 8;
const READ_SIZE: usize = 4096;
const WRITES: usize = 3;
const WRITE_SIZE: usize = 8192;

/// A loop device backed by a file, detached and removed on drop.
struct Loop {
    dev: String,
    file: PathBuf,
}

impl Loop {
    fn new() -> Option<Loop> {
        let file = std::env::temp_dir().join(format!("sonde-bio-{}.img", std::process::id()));
        std::fs::write(&file, vec![0u8; 4 << 20]).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("losetup: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::remove_file(&file).ok();
            return None;
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(Loop { dev, file })
    }

    /// "loop3"
    fn name(&self) -> String {
        self.dev.trim_start_matches("/dev/").to_string()
    }

    /// (reads completed, writes completed) from /sys/block/<name>/stat.
    fn stat(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/sys/block/{}/stat", self.name())).unwrap();
        let f: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (f[0], f[4])
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        std::fs::remove_file(&self.file).ok();
    }
}

/// READS direct reads of READ_SIZE and WRITES direct writes of WRITE_SIZE, one
/// request each (O_DIRECT, aligned, synchronous), at distinct offsets.
fn direct_io(dev: &str) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .unwrap();
    let layout = std::alloc::Layout::from_size_align(WRITE_SIZE, 4096).unwrap();
    // SAFETY: a non-zero-sized layout; freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!ptr.is_null());
    // SAFETY: ptr points to WRITE_SIZE initialised bytes we own.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, WRITE_SIZE) };
    for i in 0..READS {
        let n = f
            .read_at(&mut buf[..READ_SIZE], (i * 65536) as u64)
            .unwrap();
        assert_eq!(n, READ_SIZE);
    }
    for i in 0..WRITES {
        let n = f
            .write_at(&buf[..WRITE_SIZE], (1 << 20) + (i * 65536) as u64)
            .unwrap();
        assert_eq!(n, WRITE_SIZE);
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
}

#[test]
fn bio_latency_counts_direct_io_to_a_loop_device() {
    if !require_root("bio_latency_counts_direct_io_to_a_loop_device") {
        return;
    }
    let Some(lo) = Loop::new() else {
        cannot_run(
            "bio_latency_counts_direct_io_to_a_loop_device",
            "no loop device (losetup -f failed: loop driver missing?)",
        );
        return;
    };
    let disk = lo.name();
    let run = start(&[
        "run",
        "scripts/bio_latency.rhai",
        "--for",
        "3s",
        "-p",
        "slow_ns=0",
    ]);
    let before = lo.stat();
    let ns = NetnsThread::new().unwrap();
    let dev = lo.dev.clone();
    ns.run(move || direct_io(&dev));
    let after = lo.stat();
    let (out, _) = finish(run);

    // The disk's own accounting saw exactly our requests.
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (READS as u64, WRITES as u64),
        "/sys/block/{disk}/stat"
    );
    assert_eq!(
        summary_hist_count(
            &out,
            &format!("sonde_bio_latency_seconds{{disk={disk},op=READ}}")
        )
        .unwrap_or(0),
        READS as u64
    );
    assert_eq!(
        summary_hist_count(
            &out,
            &format!("sonde_bio_latency_seconds{{disk={disk},op=WRITE}}")
        )
        .unwrap_or(0),
        WRITES as u64
    );

    // slow_ns=0: every request is an event, with the disk, op and size.
    let events: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("type=BIOLAT_") && field(l, "disk") == Some(&disk))
        .collect();
    let reads: Vec<&&str> = events
        .iter()
        .filter(|l| field(l, "op") == Some("READ"))
        .collect();
    let writes: Vec<&&str> = events
        .iter()
        .filter(|l| field(l, "op") == Some("WRITE"))
        .collect();
    assert_eq!(reads.len(), READS, "{out}");
    assert_eq!(writes.len(), WRITES, "{out}");
    for l in &reads {
        assert_eq!(field(l, "bytes"), Some("4096"), "{l}");
        assert_eq!(
            field(l, "dev").map(|d| d.starts_with("7:")),
            Some(true),
            "{l}"
        );
    }
    for l in &writes {
        assert_eq!(field(l, "bytes"), Some("8192"), "{l}");
    }
    // Synchronous direct I/O is issued from the submitting thread: its pod.
    let pod = format!("pod=netns:{}", ns.inode);
    assert!(
        events
            .iter()
            .all(|l| l.contains(&pod) && l.contains("comm=")),
        "events not attributed to the issuing namespace {pod}:\n{}",
        events.join("\n")
    );
    assert!(
        out.lines()
            .any(|l| l.contains("sonde_bio_latency_requests_total")),
        "{out}"
    );
}

/// The kernel side on its own: the start entries are deleted on completion, the
/// totals agree with the histogram, and the default threshold reports nothing for
/// fast loop I/O.
#[test]
fn bio_latency_kernel_maps_are_consistent() {
    if !require_root("bio_latency_kernel_maps_are_consistent") {
        return;
    }
    let Some(lo) = Loop::new() else {
        cannot_run(
            "bio_latency_kernel_maps_are_consistent",
            "no loop device (losetup -f failed: loop driver missing?)",
        );
        return;
    };
    let disk = lo.name();
    let (mut loaded, env) = load("bio_latency", &[("very_slow_ns", ParamValue::Int(1 << 40))]);
    assert_eq!(loaded.variant.name, "raw_tracepoint");
    let dev = lo.dev.clone();
    std::thread::spawn(move || direct_io(&dev)).join().unwrap();

    let this = |k: &Map, op: &str| s(k, "disk") == disk && s(k, "op") == op;
    for (op, n, size) in [("READ", READS, READ_SIZE), ("WRITE", WRITES, WRITE_SIZE)] {
        let hist: i64 = entries(&loaded, "hist")
            .iter()
            .filter(|(k, _)| this(k, op))
            .map(|(_, v)| v.as_int().unwrap())
            .sum();
        assert_eq!(hist, n as i64, "{op} histogram count");
        let totals: Vec<(Map, Map)> = struct_entries(&loaded, "totals")
            .into_iter()
            .filter(|(k, _)| this(k, op))
            .collect();
        assert_eq!(totals.len(), 1);
        let v = &totals[0].1;
        assert_eq!(int(v, "ios"), n as i64);
        assert_eq!(int(v, "bytes"), (n * size) as i64);
        assert!(int(v, "latency_ns") > 0);
        assert_eq!(int(v, "very_slow"), 0);
    }
    // Default slow_ns (10 ms): loop I/O to a page-cache-backed file is far below.
    let ours: Vec<Map> = drain(&mut loaded, &env)
        .into_iter()
        .filter(|e| s(e, "disk") == disk)
        .collect();
    assert!(ours.len() <= 1, "slow loop requests at 10 ms: {ours:#?}");
    // No request of ours is left in flight.
    let inflight = loaded.maps.decoded_entries("start").unwrap().len();
    assert!(inflight < 64, "start entries left behind: {inflight}");
}
