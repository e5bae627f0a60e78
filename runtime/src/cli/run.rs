//! `sonde run`: one script, once, like a bpftrace one-liner with no compiler.
//!
//! Live: load the script's kernel program, feed its records through `on_event` as
//! they arrive, `on_tick` at the manifest's interval, then at the end (--for or
//! Ctrl-C) a last `on_tick`, `on_exit`, and a summary of the script's metrics.
//! With `--record` the raw records are saved (handed to the kernel at every drain,
//! at most 100 ms apart: a killed run keeps all but its last ~200 ms); with
//! `--replay` they are fed again with no kernel involved. A recording cut short is
//! replayed up to its last complete frame, with a warning.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::bpf;
use crate::bpf::decode::{DecodeEnv, Decoder, Note, ObjectTypes};
use crate::bpf::live::Live;
use crate::bpf::maps::{decode_entries, Layout, MapReadError, MapTable, RawEntries};
use crate::btf::KernelBtf;
use crate::cli::{Output, RunArgs};
use crate::event::{Event, EventSink};
use crate::metrics::Registry;
use crate::pods::{self, HostResolver, PodResolver};
use crate::record::{self, Frame, FrameRef};
use crate::script::{
    Instance, Limits, MapReader, NoMaps, ParamValue, Script, ScriptContext, EVENTS_PER_CALL,
};

/// Prints events and script output to stdout, buffered, flushed per batch.
pub struct Printer {
    /// The output, and a line buffer reused for every event.
    out: Mutex<(std::io::BufWriter<std::io::Stdout>, String)>,
    format: Output,
    quiet: bool,
    pub events: AtomicU64,
}

impl Printer {
    pub fn new(format: Output, quiet: bool) -> Self {
        Printer {
            out: Mutex::new((
                std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
                String::with_capacity(256),
            )),
            format,
            quiet,
            events: AtomicU64::new(0),
        }
    }

    pub fn line(&self, s: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.0.write_all(s.as_bytes());
        let _ = out.0.write_all(b"\n");
    }

    pub fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).0.flush();
    }
}

impl EventSink for Printer {
    fn emit(&self, event: Event) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if self.quiet {
            return;
        }
        match self.format {
            Output::Text => {
                let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
                let (out, line) = &mut *out;
                line.clear();
                event.write_text(line);
                line.push('\n');
                let _ = out.write_all(line.as_bytes());
            }
            Output::Json => self.line(&event.to_json()),
        }
    }
}

/// Maps as last snapshotted in a recording.
struct ReplayMaps {
    latest: Mutex<HashMap<String, RawEntries>>,
    layouts: HashMap<String, (Layout, Option<Decoder>, Option<Decoder>)>,
    env: Arc<DecodeEnv>,
}

impl MapReader for ReplayMaps {
    fn entries(&self, map: &str) -> Result<rhai::Array, MapReadError> {
        let (layout, key, value) =
            self.layouts
                .get(map)
                .ok_or_else(|| MapReadError::NotRecorded {
                    map: map.to_string(),
                })?;
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let entries = latest.get(map).map(Vec::as_slice).unwrap_or(&[]);
        decode_entries(layout, key.as_ref(), value.as_ref(), entries, &self.env)
            .map(crate::script::record::entries_array)
    }
}

/// What a live run and a replay share.
struct RunCtx<'a> {
    script: &'a Script,
    params: &'a [(String, ParamValue)],
    name: &'a str,
    node: &'a str,
    printer: &'a Arc<Printer>,
    registry: &'a Arc<Registry>,
    limits: &'a Limits,
    /// Who a namespace belongs to, named as the daemon names it (live), or the host
    /// only (a replay).
    pods: Arc<dyn PodResolver>,
}

impl RunCtx<'_> {
    fn start(&self, maps: Arc<dyn MapReader>) -> anyhow::Result<Instance> {
        let p = self.printer.clone();
        let ctx = ScriptContext {
            name: self.name.to_string(),
            node: self.node.to_string(),
            maps,
            events: self.printer.clone(),
            registry: self.registry.clone(),
            print: Arc::new(move |s: &str| p.line(s)),
            pods: self.pods.clone(),
        };
        Instance::start(self.script, self.params, ctx, self.limits).map_err(|e| anyhow!("{e}"))
    }
}

#[derive(Default)]
struct Stats {
    records: u64,
    decode_errors: u64,
    /// Records not handled: the script was behind by more than max_backlog.
    dropped: u64,
    lost: u64,
    /// Hook hits the kernel skipped: the program was already running on that CPU.
    missed: u64,
    script_errors: std::collections::BTreeMap<&'static str, u64>,
    /// A replay stopped by a damaged frame (after replaying what came before).
    replay_error: Option<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (label, source) = match (&args.file, &args.expr) {
        (Some(f), _) => (
            f.display().to_string(),
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        (None, Some(code)) => ("-e".to_string(), code.clone()),
        (None, None) => bail!("give a script file or -e CODE"),
    };
    let name = script_name(&args, &label);
    let limits = Limits::default();
    let script = Script::compile(&label, &source, &limits).map_err(|e| anyhow!("{e}"))?;
    let params = script
        .manifest()
        .resolve_params(&args.params)
        .map_err(|e| anyhow!("{}", script.override_error(&e)))?;
    let node = pods::node_name();
    let printer = Arc::new(Printer::new(args.output, args.quiet));
    let registry = Arc::new(Registry::new(&node));

    let started = Instant::now();
    let rc = RunCtx {
        script: &script,
        params: &params,
        name: &name,
        node: &node,
        printer: &printer,
        registry: &registry,
        limits: &limits,
        // The daemon's resolver with its default config: the container runtime when
        // there is one, else cgroup container ids and `ip netns` names.
        pods: match &args.replay {
            None => pods::CriResolver::start(pods::ResolverOptions::new(
                pods::CriSocket::Auto,
                pods::PodsConfig::default().refresh,
                &node,
            )),
            Some(_) => Arc::new(HostResolver::new(&node)),
        },
    };
    let stats = match args.replay.clone() {
        Some(path) => replay(&path, &rc)?,
        None => live(&args, &rc)?,
    };
    printer.flush();
    let summary = registry.summary(&name);
    print!("{summary}");
    if !summary.is_empty() && !summary.ends_with('\n') {
        println!();
    }
    let _ = std::io::stdout().flush();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "sonde: {} records ({:.0}/s), {} events emitted, {} lost in the kernel, {} undecodable, in {:.2}s",
        stats.records,
        stats.records as f64 / secs.max(1e-9),
        printer.events.load(Ordering::Relaxed),
        stats.lost,
        stats.decode_errors,
        secs
    );
    if !stats.script_errors.is_empty() {
        let kinds: Vec<String> = stats
            .script_errors
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        eprintln!(
            "sonde: script errors: {} (each handler call that failed was skipped)",
            kinds.join(", ")
        );
    }
    if stats.dropped > 0 {
        eprintln!(
            "sonde: warning: {} records were dropped because the script was behind by more than 1s",
            stats.dropped
        );
    }
    if stats.lost > 0 {
        eprintln!(
            "sonde: warning: {} records were lost because the ring buffer was full",
            stats.lost
        );
    }
    if stats.missed > 0 {
        eprintln!(
            "sonde: warning: the kernel skipped the program {} times because it was already running on that CPU",
            stats.missed
        );
    }
    if let Some(e) = &stats.replay_error {
        eprintln!("sonde: {e}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn script_name(args: &RunArgs, label: &str) -> String {
    match &args.file {
        Some(f) => f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| label.into()),
        None => "oneliner".into(),
    }
}

fn live(args: &RunArgs, rc: &RunCtx<'_>) -> anyhow::Result<Stats> {
    let manifest = rc.script.manifest();
    let printer = rc.printer;
    let pods = rc.pods.clone();
    let mut stats = Stats::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut stop = {
        let _in = rt.enter();
        Stop::listen()?
    };

    let Some(program) = manifest.program else {
        // No kernel side: init, ticks, exit.
        let mut inst = rc.start(Arc::new(NoMaps))?;
        wait_loop(
            args,
            manifest.interval,
            &mut inst,
            None,
            None,
            &mut stats,
            printer,
            &rt,
            &mut stop,
        )?;
        stats.script_errors = inst.errors().clone();
        return Ok(stats);
    };

    let spec = program.spec();
    let btf = KernelBtf::locate(args.btf.as_deref())?;
    let mut live = Live::start(spec, rc.params, &btf, pods, args.record.is_some())?;
    for s in &live.loaded.skipped {
        tracing::info!(program = spec.name, variant = s.variant, reason = %s.reason, "variant skipped");
    }
    eprintln!(
        "sonde: {} attached (variant {})",
        spec.name, live.loaded.variant.name
    );
    let table = live.loaded.maps.clone();

    let mut writer = match &args.record {
        Some(path) => {
            let maps: Vec<(String, Layout)> = table
                .names()
                .into_iter()
                .filter(|n| n != "stacks")
                .filter_map(|n| table.layout(&n).map(|l| (n, l)))
                .collect();
            let header = record::Header {
                program: spec.name.into(),
                variant: live.loaded.variant.name.into(),
                kernel: bpf::features::kernel_release(),
                node: rc.node.into(),
                host_netns: pods::own_netns(),
                sources: live.sources.clone(),
                maps,
                drop_reasons: live
                    .drop_reasons
                    .iter()
                    .map(|(k, v)| (*k, v.to_string()))
                    .collect(),
                started_ns: crate::event::now_ns(),
            };
            Some(Recording {
                writer: record::Writer::create(path, &header)?,
                maps: header.maps,
                table: table.clone(),
                symbols: HashSet::new(),
            })
        }
        None => None,
    };

    let mut inst = rc.start(table.clone())?;
    wait_loop(
        args,
        manifest.interval,
        &mut inst,
        Some(&mut live),
        writer.as_mut(),
        &mut stats,
        printer,
        &rt,
        &mut stop,
    )?;
    stats.lost = live.loaded.lost();
    stats.missed = crate::bpf::run_stats(&live.loaded.programs)
        .iter()
        .map(|(_, st)| st.recursion_misses)
        .sum();
    stats.script_errors = inst.errors().clone();
    if let Some(rec) = writer {
        rec.writer.finish()?;
    }
    drop(live);
    Ok(stats)
}

/// Where a recorded run writes.
struct Recording {
    writer: record::Writer,
    maps: Vec<(String, Layout)>,
    table: Arc<MapTable>,
    /// Symbols already written: each address is written once.
    symbols: HashSet<u64>,
}

impl Recording {
    fn notes(&mut self, env: &DecodeEnv) {
        let Some(notes) = &env.notes else { return };
        let notes = std::mem::take(&mut *notes.lock().unwrap_or_else(|e| e.into_inner()));
        for n in notes {
            let r = match n {
                Note::Symbol(addr, name) => {
                    if !self.symbols.insert(addr) {
                        continue;
                    }
                    self.writer.symbol(addr, &name)
                }
                Note::Stack(id, frames) => self.writer.stack(id, &frames),
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "recording failed");
            }
        }
    }
}

type RecordTo<'a> = &'a mut Recording;

/// SIGTERM and SIGINT, listened to from before anything is attached: a signal during
/// start-up ends the run like one later (programs detached, summary printed) instead
/// of killing the process with its TC filters still on the interfaces.
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn listen() -> std::io::Result<Stop> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// What `sonde run` adds around the runner: the recording and the printer.
struct RunObserver<'a> {
    record: Option<RecordTo<'a>>,
    printer: &'a Printer,
}

impl crate::script::runner::Observer for RunObserver<'_> {
    fn record(&mut self, env: &DecodeEnv, source: usize, bytes: &[u8]) {
        if let Some(rec) = self.record.as_deref_mut() {
            rec.notes(env);
            if let Err(e) = rec.writer.record(source as u16, bytes) {
                tracing::error!(error = %e, "recording failed");
            }
        }
    }

    fn tick(&mut self) {
        let Some(rec) = self.record.as_deref_mut() else {
            return;
        };
        for (i, (name, _)) in rec.maps.iter().enumerate() {
            if let Some(Ok(entries)) = rec.table.raw_entries(name) {
                if let Err(e) = rec.writer.snapshot(i as u16, &entries) {
                    tracing::error!(error = %e, "recording failed");
                }
            }
        }
        if let Err(e) = rec.writer.tick() {
            tracing::error!(error = %e, "recording failed");
        }
    }

    fn pass(&mut self) {
        self.printer.flush();
        if let Some(rec) = self.record.as_deref_mut() {
            // What was drained reaches the file: a killed run keeps it.
            if let Err(e) = rec.writer.flush_if_due() {
                tracing::error!(error = %e, "recording failed");
            }
        }
    }
}

/// Runs the script on the runner's thread until --for expires, a signal comes, or
/// the runner stops it; ends with a last drain, `on_tick` and `on_exit`. This
/// thread only waits: a handler that loops cannot delay Ctrl-C or --for by more than
/// one interrupted call.
#[allow(clippy::too_many_arguments)]
fn wait_loop(
    args: &RunArgs,
    interval: Duration,
    inst: &mut Instance,
    live: Option<&mut Live>,
    record: Option<RecordTo<'_>>,
    stats: &mut Stats,
    printer: &Printer,
    rt: &tokio::runtime::Runtime,
    stop: &mut Stop,
) -> anyhow::Result<()> {
    use crate::script::runner::{self, Control, Outcome, RunStats, Settings};
    let settings = Settings {
        interval,
        max_backlog: crate::daemon::config::LimitsConfig::default().max_backlog,
        memory: None,
        tick_at_start: false,
    };
    let ctl = Control::new(inst)?;
    let run_stats = RunStats::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let outcome = std::thread::scope(|scope| -> anyhow::Result<Outcome> {
        let runner = std::thread::Builder::new()
            .name("script".into())
            .stack_size(crate::script::stack::SCRIPT_STACK_SIZE)
            .spawn_scoped(scope, || {
                let mut obs = RunObserver { record, printer };
                let o = runner::run(inst, live, &settings, &run_stats, &ctl, &mut obs);
                let _ = done_tx.send(());
                o
            })?;
        let waited: anyhow::Result<()> = rt.block_on(async {
            let until = async {
                match args.duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = until => {}
                _ = stop.recv() => {}
                _ = done_rx => {}
            }
            Ok(())
        });
        ctl.stop(true);
        let outcome = runner
            .join()
            .map_err(|_| anyhow!("the script's thread panicked"))?;
        waited?;
        Ok(outcome)
    })?;
    stats.records = run_stats.records.load(Ordering::Relaxed);
    stats.decode_errors = run_stats.undecodable.load(Ordering::Relaxed);
    stats.dropped = run_stats.dropped.load(Ordering::Relaxed);
    printer.flush();
    if let Outcome::Failed(reason) = outcome {
        bail!("script stopped: {reason}");
    }
    Ok(())
}

fn replay(path: &std::path::Path, rc: &RunCtx<'_>) -> anyhow::Result<Stats> {
    let printer = rc.printer;
    let mut reader = record::Reader::open(path)?;
    let header = reader.header.clone();
    if let Some(p) = rc.script.manifest().program {
        if p.name() != header.program {
            bail!(
                "{}: recorded from program `{}`, but the script's PROBE.program is `{p}`",
                path.display(),
                header.program
            );
        }
    }
    let spec = bpf::Program::find(&header.program)
        .with_context(|| {
            format!(
                "{}: recorded from a program this sonde lacks",
                path.display()
            )
        })?
        .spec();
    let types = ObjectTypes::parse(spec.object)?;
    let decoders: Vec<Decoder> = header
        .sources
        .iter()
        .map(|s| types.record_decoder(s))
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "{}: recording does not match this sonde's objects",
                path.display()
            )
        })?;
    let pods: Arc<dyn PodResolver> =
        Arc::new(HostResolver::with_host_netns(header.host_netns, rc.node));
    // Symbols as the recording host printed them: a first pass collects them.
    let mut symbols = Vec::new();
    // A cut or damaged tail is reported by the second pass.
    let mut first = record::Reader::open(path)?;
    while let Ok(Some(frame)) = first.next_ref() {
        if let FrameRef::Other(Frame::Symbol { addr, name }) = frame {
            symbols.push((addr, name));
        }
    }
    let (env, stacks) = header.replay_env(pods, symbols);
    // Each source's record type bound once to the replay's environment.
    let bound: Vec<_> = decoders.iter().map(|d| d.bind(&env)).collect();
    let layouts = header
        .maps
        .iter()
        .map(|(n, l)| {
            let (k, v) = types
                .map_decoders(n)
                .map(|(k, v)| (Some(k), Some(v)))
                .unwrap_or((None, None));
            (n.clone(), (*l, k, v))
        })
        .collect();
    let maps = Arc::new(ReplayMaps {
        latest: Mutex::new(HashMap::new()),
        layouts,
        env: env.clone(),
    });
    let mut inst = rc.start(maps.clone())?;
    let mut stats = Stats::default();
    let mut batch = 0u32;
    // Records for a script's `on_events`, handed over before anything that is not a
    // record (a tick, a snapshot) so the order stays the recorded one.
    let batching = inst.has_on_events();
    let mut pending = Vec::new();
    loop {
        // Records are lent from the reader's buffer and decoded from it.
        let frame = match reader.next_ref() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) if e.is_truncated() => {
                // Every complete frame was replayed: that is the recording.
                tracing::warn!(file = %path.display(), frames = reader.frames(), "{e}; the complete frames were replayed");
                break;
            }
            Err(e) => {
                stats.replay_error = Some(format!(
                    "{e}; the {} frames before it were replayed",
                    reader.frames()
                ));
                break;
            }
        };
        if !pending.is_empty()
            && (pending.len() >= EVENTS_PER_CALL || !matches!(frame, FrameRef::Record { .. }))
        {
            inst.on_records(&mut pending);
        }
        let frame = match frame {
            FrameRef::Record { source, bytes, .. } => {
                stats.records += 1;
                let Some(d) = bound.get(source as usize) else {
                    stats.decode_errors += 1;
                    continue;
                };
                // A copy the handler may keep (inline up to 64 bytes).
                match d.record(bytes) {
                    Ok(ev) if batching => pending.push(ev),
                    Ok(ev) => inst.on_record(ev),
                    Err(_) => stats.decode_errors += 1,
                }
                batch += 1;
                if batch == 4096 {
                    batch = 0;
                    printer.flush();
                }
                continue;
            }
            FrameRef::Other(frame) => frame,
        };
        match frame {
            Frame::Record { .. } => {}
            Frame::Snapshot { map, entries, .. } => {
                if let Some((name, _)) = header.maps.get(map as usize) {
                    if name == "dropped" {
                        stats.lost = entries
                            .iter()
                            .flat_map(|(_, v)| v.chunks_exact(8))
                            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
                            .sum();
                    }
                    maps.latest
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), entries);
                }
            }
            Frame::Tick { .. } => inst.on_tick(),
            Frame::Symbol { .. } => {}
            Frame::Stack { id, frames } => {
                stacks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, frames);
            }
        }
    }
    inst.on_records(&mut pending);
    inst.on_exit();
    stats.script_errors = inst.errors().clone();
    Ok(stats)
}
