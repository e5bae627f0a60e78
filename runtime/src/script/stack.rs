//! The stack a script runs on, and the guard that stops a script before it runs
//! out of it.
//!
//! Rhai evaluates recursively: every call level, and every level of expression
//! nesting inside a function, is a few Rust frames. Measured here (x86_64, the
//! engine of [`super::engine`], bytes of stack per script call level):
//!
//! | a level that ... | release | debug |
//! |---|---|---|
//! | calls itself (`f(n - 1)`) | 6.2 KB | 42 KB |
//! | passes an array, a map, a string and a float | 10.8 KB | 69 KB |
//! | nests 25-27 expressions (`1 + (1 + (... f(n - 1)))`, the most `max_expr_depth` 64 compiles) | 48 KB | 196 KB |
//!
//! So the depth a stack allows depends on the script by a factor of eight, and a
//! 2 MiB tokio worker overflowed (an abort, nothing to catch) at 700 plain levels
//! or 40 nested ones. Two things keep a script from doing that:
//!
//! - scripts run on threads of [`SCRIPT_STACK_SIZE`] (8 MiB, reserved, not committed:
//!   an idle script touches a few pages of it), and `limits.max_call_levels` is at
//!   most [`MAX_CALL_LEVELS`] (128): 128 of the heaviest levels above take 6.1 MB in
//!   a release build;
//! - every [`CHECK_EVERY`] (8) operations the engine checks the stack left on the
//!   thread it runs on ([`remaining`]); below [`STACK_RESERVE`] (512 KiB) the call is
//!   stopped with a `call_depth` error, like a call past `max_call_levels`. A call
//!   level is five operations or more and one nested expression one, so 8
//!   operations take at most ~100 KB of stack even in a debug build: the reserve
//!   is never crossed between two checks. That also covers a thread smaller than planned
//!   (`sonde run` runs on the main thread, sized by `ulimit -s`) and debug builds.
//!
//! ```
//! let left = sonde::script::stack::remaining().unwrap();
//! assert!(left > sonde::script::stack::STACK_RESERVE);
//! ```

use std::cell::Cell;

/// The stack size of a thread that runs script handlers.
pub const SCRIPT_STACK_SIZE: usize = 8 << 20;

/// The most `limits.max_call_levels` may be (see the module docs for why).
pub const MAX_CALL_LEVELS: usize = 128;

/// Stack kept free: a handler is stopped when less than this is left.
pub const STACK_RESERVE: usize = 512 << 10;

/// Operations between two checks of the stack (a check costs ~1 ns in a release
/// build, ~50 ns in a debug one).
pub const CHECK_EVERY: u64 = 8;

thread_local! {
    /// The lowest usable address of this thread's stack; `usize::MAX` until read,
    /// 0 when it cannot be known.
    static LOW: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Bytes of stack left below the caller on this thread; `None` when the thread's
/// stack bounds cannot be read.
#[inline]
pub fn remaining() -> Option<usize> {
    let low = LOW.with(|l| {
        if l.get() == usize::MAX {
            l.set(stack_low().unwrap_or(0));
        }
        l.get()
    });
    if low == 0 {
        return None;
    }
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    Some(sp.saturating_sub(low))
}

/// Whether a script may go on: more than [`STACK_RESERVE`] left (or unknown).
#[inline]
pub fn enough() -> bool {
    remaining().is_none_or(|r| r >= STACK_RESERVE)
}

/// The low end of the calling thread's stack (glibc and musl both have
/// `pthread_getattr_np`; for the main thread it reports the `ulimit -s` size).
fn stack_low() -> Option<usize> {
    // SAFETY: attr is initialised by pthread_getattr_np before it is read, and
    // destroyed once; addr and size are plain out-parameters.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then_some(addr as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_knows_its_stack() {
        let left = std::thread::Builder::new()
            .stack_size(SCRIPT_STACK_SIZE)
            .spawn(|| remaining().unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert!(
            left > SCRIPT_STACK_SIZE - (256 << 10) && left <= SCRIPT_STACK_SIZE,
            "{left}"
        );
        assert!(enough());
    }
}
