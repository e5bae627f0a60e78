//! The built-in scripts, embedded in the binary: every `scripts/*.rhai`, found by
//! the build (`runtime/build.rs`), so a script file dropped there is built in.

// `pub const SCRIPTS: &[(name, source)]`, every built-in script by name.
include!(concat!(env!("OUT_DIR"), "/scripts.rs"));

/// The source of a built-in script.
pub fn find(name: &str) -> Option<&'static str> {
    SCRIPTS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Names of the built-in scripts.
pub fn names() -> Vec<&'static str> {
    SCRIPTS.iter().map(|(n, _)| *n).collect()
}
