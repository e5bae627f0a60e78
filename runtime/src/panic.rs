//! Containing a panic to the one piece of work that caused it.
//!
//! Inputs are validated before they reach code sonde does not own (aya-obj
//! relocating against a BTF, the Rhai engine), but a bug left in that code must
//! cost one script's load, not the agent. [`catch`] runs a closure and turns a
//! panic into an error message; the default hook has already printed where it
//! happened. A stack overflow is an abort and cannot be caught: validation (for
//! example [`crate::btf::validate`]) is what keeps those out.
//!
//! The release profile keeps `panic = "unwind"` (the workspace `Cargo.toml` says so
//! explicitly): with `abort`, nothing here would catch anything.
//!
//! ```
//! let r: Result<u32, String> = sonde::panic::catch(|| panic!("index 9 out of range"));
//! assert_eq!(r.unwrap_err(), "index 9 out of range");
//! assert_eq!(sonde::panic::catch(|| 7), Ok(7));
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic inside it becomes `Err(its message)`.
///
/// `f` is treated as unwind-safe: callers drop whatever `f` was building when it
/// fails, and the locks sonde shares recover from poisoning.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}
