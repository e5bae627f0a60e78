//! What every test layer shares: saying that a test cannot run here.
//!
//! A test that cannot run on this machine (not root, a tool or a kernel feature is
//! missing) calls [`skip`] and returns: the skip is printed so that nobody mistakes
//! it for a pass, and under `CI=true` it fails instead, because CI machines are set up
//! to run everything.
//!
//! ```no_run
//! if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
//!     sonde::testkit::skip("this_machine", "no /sys/kernel/btf/vmlinux");
//!     return;
//! }
//! ```

/// Says loudly that `test` (or a part of it) cannot run here because of `why`;
/// panics when `CI=true`.
pub fn skip(test: &str, why: &str) {
    let msg = format!("SKIPPED {test}: {why}");
    eprintln!("\n!!!!! {msg} !!!!!\n");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}, and CI=true");
    }
}
