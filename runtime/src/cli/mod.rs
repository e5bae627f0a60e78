//! The command line: `sonde run`, `sonde daemon`, `sonde events`, `sonde probes`,
//! `sonde check`, `sonde btf`.
//!
//! ```text
//! sonde daemon --config /etc/sonde/config.yaml
//! sonde events --follow --type TCPRESET_NOSOCK
//! sonde run scripts/tcp_reset.rhai --for 10s
//! sonde run -e 'const PROBE = "tcp_reset"; fn on_event(ev) { count("resets_by_dport", ev.dport) }' --for 10s
//! sonde probes
//! sonde probes --fields tcp_reset
//! sonde check my.rhai other.rhai
//! sonde btf --btf-archive /var/lib/sonde/btf
//! ```

mod btf;
mod check;
mod events;
pub mod probes;
mod run;
mod time;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "sonde",
    version,
    about = "Network observability node agent: eBPF probes driven by Rhai scripts"
)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info`, `sonde=debug`.
    #[arg(long, global = true, env = "SONDE_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one script until --for expires or Ctrl-C, printing its events, then what
    /// on_exit prints and a summary of its metrics.
    Run(RunArgs),
    /// List every kernel program, its variants, and whether and why each can run here.
    Probes(ProbesArgs),
    /// Compile and validate scripts without loading anything (no privileges needed).
    Check(CheckArgs),
    /// Run as the node agent: a script directory, hot reload, /metrics and event sinks.
    Daemon(DaemonArgs),
    /// Read a running daemon's events (recent ones, then live with --follow).
    ///
    /// Text lines start with the event's time in UTC (RFC 3339, milliseconds). The
    /// daemon sends its last events first (`sinks.stream.backlog`, 1024 by default);
    /// --since 5m or --no-backlog ask it for fewer. `sonde events -f --no-backlog -t
    /// TCPRESET_NOSOCK` prints resets from now on.
    Events(EventsArgs),
    /// Show which kernel BTF would be used, its kernel, size and time, and every
    /// step of the fallback chain.
    Btf(BtfArgs),
}

#[derive(clap::Args, Debug)]
pub struct BtfArgs {
    /// Kernel BTF to use before anything else (raw BTF, an ELF with .BTF, or a
    /// vmlinuz), or a directory of BTFs searched after /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE|DIR")]
    pub btf: Option<PathBuf>,
    /// Directory of BTFs laid out `<ID>/<VERSION_ID>/<arch>/<release>.btf[.xz]`
    /// (default: /var/lib/sonde/btf when it exists).
    #[arg(long, value_name = "DIR")]
    pub btf_archive: Option<PathBuf>,
    /// Machine-readable output (the same object as /status `last_reload.btf`).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// YAML configuration; without it the embedded default runs (built-in scripts,
    /// 0.0.0.0:9102, events on stdout). `packaging/config.yaml` documents every key.
    #[arg(long, short = 'c', value_name = "FILE", env = "SONDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, the kernel BTF and every script, print what
    /// would run, and exit.
    #[arg(long)]
    pub check: bool,
    /// A Prometheus web configuration file (TLS, basic auth), as node_exporter's
    /// --web.config.file; overrides `web_config` of the config.
    #[arg(long, value_name = "FILE", env = "SONDE_WEB_CONFIG")]
    pub web_config: Option<PathBuf>,
    /// Kernel BTF to use before anything else (a file), or a directory searched
    /// after /sys/kernel/btf/vmlinux; overrides the config's `btf:`.
    #[arg(long, value_name = "FILE|DIR")]
    pub btf: Option<PathBuf>,
    /// Directory of BTFs laid out `<ID>/<VERSION_ID>/<arch>/<release>.btf[.xz]`;
    /// overrides the config's `btf_archive:`.
    #[arg(long, value_name = "DIR")]
    pub btf_archive: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// The daemon's HTTP address.
    #[arg(
        long,
        short = 'a',
        value_name = "HOST:PORT",
        env = "SONDE_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub addr: String,
    /// Keep the connection open and print events as they happen.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events at or after this time: a duration back from the daemon's clock
    /// (30s, 5m, 1h30m) or an RFC 3339 time (2026-12-06T07:00:00Z, or with an
    /// offset such as +01:00). Without it the daemon's whole backlog comes first.
    #[arg(long, short = 'S', value_name = "DURATION|TIME", value_parser = time::parse_since)]
    pub since: Option<time::Since>,
    /// With --follow: only events that happen after connecting, no backlog.
    #[arg(long, requires = "follow", conflicts_with = "since")]
    pub no_backlog: bool,
    /// Text lines start with the local time and its UTC offset
    /// (2026-12-06T08:01:02.345+01:00) instead of UTC.
    #[arg(long)]
    pub local: bool,
    /// Only events of this type, e.g. TCPRESET_NOSOCK (repeatable).
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only events of this pod (the `pod` label; `namespace/pod` also matches).
    #[arg(long, short = 'p', value_name = "POD")]
    pub pod: Option<String>,
    /// Event format: `text` lines start with the event's UTC time, `json` is the
    /// daemon's object with `timestamp` in nanoseconds since the Unix epoch.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("script").required(true).args(["file", "expr"]))]
pub struct RunArgs {
    /// The script file (or -e 'CODE').
    pub file: Option<PathBuf>,
    /// Script source given inline.
    #[arg(short = 'e', alias = "expr", value_name = "CODE")]
    pub expr: Option<String>,
    /// Stop after this long (e.g. 30s, 5m, 500ms). Default: until Ctrl-C.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Set a script param, overriding its default (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Event format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Save the raw records of this run to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Feed the records saved in FILE through the script; no kernel involved.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Kernel BTF file to use instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// Do not print events (metrics summary and on_exit output only).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct ProbesArgs {
    /// Kernel BTF file to use instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// What PROGRAM gives a script instead: each record's fields and each map's key
    /// and value, with their types, units and meaning (`all` or no name: every
    /// program).
    #[arg(long, value_name = "PROGRAM", num_args = 0..=1, default_missing_value = "all")]
    pub fields: Option<String>,
    /// With --fields: Markdown tables, as in docs/probes-reference.md.
    #[arg(long, requires = "fields", conflicts_with = "json")]
    pub markdown: bool,
    /// Load each variant of PROGRAM for real (root), detach it again, and print what
    /// the kernel said: the verifier's whole log when it rejected a program.
    #[arg(long, value_name = "PROGRAM", conflicts_with = "fields")]
    pub verbose: Option<String>,
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("script").required(true).multiple(true).args(["files", "expr"]))]
pub struct CheckArgs {
    /// Script files to check (and/or -e 'CODE').
    pub files: Vec<PathBuf>,
    /// Script source given inline, checked after the files.
    #[arg(short = 'e', alias = "expr", value_name = "CODE")]
    pub expr: Option<String>,
    /// Param overrides to validate against each script (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// The longest `--for`: a year (longer ones overflowed the clock arithmetic of the
/// deadline, a panic).
const MAX_FOR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `500ms`, `10s`, `5m`, `1m30s`, or plain seconds (`30`); at most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        crate::script::parse_duration(&format!("{s}s"))?
    } else {
        crate::script::parse_duration(s)?
    };
    if d > MAX_FOR {
        return Err(format!(
            "\"{s}\" is longer than a year (8760h); leave --for out to run until Ctrl-C"
        ));
    }
    Ok(d)
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}`: empty param name"));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: journald, log files and pipes get plain text.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .try_init();
}

/// Entry point of the `sonde` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Probes(args) => probes::probes(args),
        Command::Check(args) => check::check(args),
        Command::Daemon(args) => return crate::daemon::main(args),
        Command::Events(args) => events::events(args),
        Command::Btf(args) => btf::btf(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sonde: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999h")
            .unwrap_err()
            .contains("longer than a year"));
    }

    #[test]
    fn params() {
        assert_eq!(parse_param("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_param("novalue").is_err());
    }
}
