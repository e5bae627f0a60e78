//! Each script's memory, measured: every script allocates in a jemalloc arena of its
//! own, and the arena's live bytes are what the script holds.
//!
//! The daemon runs each script on a thread bound to the script's arena; the script's
//! `init` runs inside it too. Everything the script allocates lands there: its state
//! on `this`, its metric families and series, the records it decodes, the events it
//! emits until a sink sends them. A value freed by another thread (an event sent by a
//! sink) goes back to the arena it came from, so the count stays right. The count is
//! exact to jemalloc's thread caches (a few hundred KiB).
//!
//! Reading an arena's bytes costs ~30 µs (a statistics refresh), so the runner reads
//! it between batches of records, at most every [`MEASURE_EVERY`]. Inside one handler
//! call it watches the thread's own allocation counters instead (two loads), so a
//! call that allocates without bound is stopped before it ends.
//!
//! When the binary does not use jemalloc as its allocator (a library user, a test
//! harness), [`active`] is false and nothing is measured.
//!
//! ```no_run
//! let arena = sonde::memory::arena_for("tcp_reset").expect("jemalloc");
//! let v = arena.scoped(|| vec![0u8; 1 << 20]);
//! assert!(arena.live_bytes() >= 1 << 20);
//! # drop(v);
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tikv_jemalloc_ctl::raw;

/// How often, at most, the runner reads a script's arena between records.
pub const MEASURE_EVERY: Duration = Duration::from_millis(100);

/// At most this many arenas are made; past it, the arenas of removed scripts are
/// reused (jemalloc never frees an arena).
const MAX_ARENAS: usize = 512;

/// Whether allocations go through jemalloc (the `sonde` binary's allocator).
pub fn active() -> bool {
    static ACTIVE: OnceLock<bool> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let before = thread_allocated();
        let b = std::hint::black_box(vec![0u8; 4096]);
        let after = thread_allocated();
        drop(b);
        matches!((before, after), (Some(a), Some(b)) if b >= a + 4096)
    })
}

/// One script's arena.
#[derive(Debug, Clone)]
pub struct Arena {
    index: u32,
    small: Vec<u8>,
    large: Vec<u8>,
}

struct Pool {
    by_script: HashMap<String, u32>,
    free: Vec<u32>,
    made: usize,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Mutex::new(Pool {
            by_script: HashMap::new(),
            free: Vec::new(),
            made: 0,
        })
    })
}

/// The arena of `script` (the same one for every version of it), or `None` when
/// memory is not measured here.
pub fn arena_for(script: &str) -> Option<Arena> {
    if !active() {
        return None;
    }
    let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
    let index = match p.by_script.get(script) {
        Some(i) => *i,
        None => {
            let i = if p.made < MAX_ARENAS || p.free.is_empty() {
                // SAFETY: "arenas.create" returns an unsigned arena index.
                let i: u32 = unsafe { raw::read(b"arenas.create\0") }.ok()?;
                p.made += 1;
                i
            } else {
                p.free.pop()?
            };
            p.by_script.insert(script.to_string(), i);
            i
        }
    };
    Some(Arena::new(index))
}

/// Gives the arena of a removed script back for reuse.
pub fn release(script: &str) {
    let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = p.by_script.remove(script) {
        p.free.push(i);
    }
}

impl Arena {
    fn new(index: u32) -> Arena {
        Arena {
            index,
            small: format!("stats.arenas.{index}.small.allocated\0").into_bytes(),
            large: format!("stats.arenas.{index}.large.allocated\0").into_bytes(),
        }
    }

    /// Binds the calling thread to this arena for the rest of its life.
    pub fn bind(&self) {
        // SAFETY: "thread.arena" takes an unsigned arena index that exists.
        if let Err(e) = unsafe { raw::write(b"thread.arena\0", self.index) } {
            tracing::warn!(arena = self.index, error = %e, "cannot bind a script thread to its arena");
        }
    }

    /// Runs `f` with the calling thread's allocations going to this arena.
    pub fn scoped<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: as in `bind`; the previous index is read back from jemalloc.
        let before: Option<u32> = unsafe { raw::update(b"thread.arena\0", self.index) }.ok();
        let r = f();
        if let Some(b) = before {
            // SAFETY: `b` is the index jemalloc returned.
            let _ = unsafe { raw::write(b"thread.arena\0", b) };
        }
        r
    }

    /// Live bytes allocated from this arena (refreshes jemalloc's statistics).
    pub fn live_bytes(&self) -> u64 {
        let _ = tikv_jemalloc_ctl::epoch::advance();
        // SAFETY: both names are NUL-terminated statistics of type size_t.
        let read = |name: &[u8]| unsafe { raw::read::<usize>(name) }.unwrap_or(0) as u64;
        read(&self.small) + read(&self.large)
    }
}

thread_local! {
    static COUNTERS: Option<(
        tikv_jemalloc_ctl::thread::ThreadLocal<u64>,
        tikv_jemalloc_ctl::thread::ThreadLocal<u64>,
    )> = tikv_jemalloc_ctl::thread::allocatedp::read()
        .and_then(|a| Ok((a, tikv_jemalloc_ctl::thread::deallocatedp::read()?)))
        .ok();
}

fn thread_allocated() -> Option<u64> {
    tikv_jemalloc_ctl::thread::allocatedp::read()
        .ok()
        .map(|a| a.get())
}

/// Bytes the calling thread allocated minus bytes it freed, since it started: two
/// loads. The difference between two readings on one thread is what ran between
/// them allocated and kept (frees by other threads are not seen).
#[inline]
pub fn thread_net() -> i64 {
    COUNTERS.with(|c| match c {
        Some((a, d)) => a.get() as i64 - d.get() as i64,
        None => 0,
    })
}

/// Hands free pages of every arena back to the kernel (after a program load parsed the
/// kernel BTF, tens of MB freed at once).
pub fn purge() {
    if !active() {
        return;
    }
    // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5.
    // SAFETY: "arena.<i>.purge" reads and writes nothing: every pointer is null.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The library's tests use the system allocator: nothing is measured, and saying
    // so is the contract.
    #[test]
    fn without_jemalloc_nothing_is_measured() {
        assert!(!active());
        assert!(arena_for("x").is_none());
        assert_eq!(thread_net(), 0);
    }
}
