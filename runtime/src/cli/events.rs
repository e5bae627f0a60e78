//! `sonde events`: reads a running daemon's `/events` stream.

use std::process::ExitCode;

use crate::cli::EventsArgs;

pub fn events(_args: EventsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("sonde events: not built yet")
}
