//! The daemon: the node agent mode.
pub mod serde_util;

use std::process::ExitCode;

pub fn main(_args: crate::cli::DaemonArgs) -> ExitCode {
    eprintln!("sonde daemon: not built yet");
    ExitCode::from(1)
}
