//! The script functions over the sources: `proc::` (procfs) and `netlink::`.
//!
//! Every reader takes a network namespace as `proc::netns()` lists it (the entry
//! map, or its `netns` inode) and returns a map, or `()` when that namespace could
//! not be read this time: it vanished mid-read, or the kernel lacks the source
//! (no conntrack, no IPVS). A script skips `()` and carries on with the next
//! namespace. Each failure is counted in
//! `sonde_source_errors_total{source, reason}` (`reason`: `gone`, `missing`, `io`,
//! `format`) and logged, at most once per source every 10 seconds; a missing source
//! is logged once, at WARN.
//!
//! ```rhai
//! fn on_tick() {
//!     for ns in proc::netns() {
//!         let dev = proc::netdev(ns);
//!         if dev == () { continue; }
//!         for name in dev.keys() {
//!             this.rx.set_total([ns.pod.namespace, ns.pod.name, name], dev[name].rx_bytes);
//!         }
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, INT};

use super::{netlink, procfs, Netns, SourceError};
use crate::metrics::Counter;
use crate::script::ScriptContext;

type Res<T> = Result<T, Box<EvalAltResult>>;

fn int(v: u64) -> Dynamic {
    Dynamic::from_int(v.min(i64::MAX as u64) as INT)
}

/// The inode of a namespace argument: an int, or a map with `netns`.
fn inode_of(v: &Dynamic) -> Res<u64> {
    if let Ok(i) = v.as_int() {
        return Ok(i as u64);
    }
    if let Some(m) = v.read_lock::<Map>() {
        if let Some(i) = m.get("netns").and_then(|i| i.as_int().ok()) {
            return Ok(i as u64);
        }
    }
    Err(EvalAltResult::ErrorRuntime(
        format!(
            "expected a namespace from proc::netns() (a map with `netns`) or its inode, got {}",
            v.type_name()
        )
        .into(),
        rhai::Position::NONE,
    )
    .into())
}

/// Counts and logs read failures of one script.
struct Failures {
    ctx: ScriptContext,
    counter: OnceLock<Option<Counter>>,
}

/// When each source was last logged (and how many failures since), shared by
/// every script, and the sources already reported missing.
#[derive(Default)]
struct LogState {
    last: HashMap<&'static str, (Instant, u64)>,
    missing: Vec<&'static str>,
}

fn log_state() -> &'static Mutex<LogState> {
    static S: OnceLock<Mutex<LogState>> = OnceLock::new();
    S.get_or_init(Default::default)
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Failures {
    fn record(&self, source: &'static str, e: &SourceError) {
        let c = self.counter.get_or_init(|| {
            self.ctx
                .registry
                .for_script(&self.ctx.name)
                .counter(
                    "source_errors_total",
                    "Reads of a procfs or netlink source that failed, by reason (gone: the namespace vanished mid-read; missing: the kernel lacks the source).",
                    &["source", "reason"],
                    64,
                )
                .ok()
        });
        if let Some(c) = c {
            let _ = c.inc(&[source, e.reason()]);
        }
        let mut st = log_state().lock().unwrap_or_else(|e| e.into_inner());
        if let SourceError::Missing { .. } = e {
            if !st.missing.contains(&source) {
                st.missing.push(source);
                tracing::warn!(script = %self.ctx.name, source, error = %e, "source not available on this node; its metrics stay empty");
            }
            return;
        }
        let entry = st
            .last
            .entry(source)
            .or_insert((Instant::now() - LOG_EVERY * 2, 0));
        if entry.0.elapsed() >= LOG_EVERY {
            let suppressed = entry.1;
            *entry = (Instant::now(), 0);
            match e {
                SourceError::Gone { .. } => {
                    tracing::debug!(script = %self.ctx.name, source, error = %e, suppressed, "namespace skipped for this read")
                }
                _ => {
                    tracing::warn!(script = %self.ctx.name, source, error = %e, suppressed, "source read failed; namespace skipped for this read")
                }
            }
        } else {
            entry.1 += 1;
        }
    }
}

/// Runs `read` on the namespace `arg` names; `()` (and a counted failure) when it
/// fails.
fn read_ns(
    f: &Failures,
    source: &'static str,
    arg: &Dynamic,
    read: impl FnOnce(&Netns) -> Result<Dynamic, SourceError>,
) -> Res<Dynamic> {
    let inode = inode_of(arg)?;
    let list = super::script_netns_list();
    let r = match list.iter().find(|n| n.inode == inode) {
        Some(ns) => read(ns),
        None => Err(SourceError::Gone { inode }),
    };
    Ok(r.unwrap_or_else(|e| {
        f.record(source, &e);
        Dynamic::UNIT
    }))
}

/// A map of section -> name -> value from a table callback reader.
fn sections(
    read: impl FnOnce(&mut dyn FnMut(&str, &str, i64)) -> Result<(), SourceError>,
) -> Result<Dynamic, SourceError> {
    let mut out = Map::new();
    let mut cur: Option<(String, Map)> = None;
    read(&mut |sec, name, v| {
        if cur.as_ref().map(|(s, _)| s.as_str()) != Some(sec) {
            if let Some((s, m)) = cur.take() {
                merge(&mut out, s, m);
            }
            cur = Some((sec.to_string(), Map::new()));
        }
        if let Some((_, m)) = cur.as_mut() {
            m.insert(name.into(), Dynamic::from_int(v));
        }
    })?;
    if let Some((s, m)) = cur.take() {
        merge(&mut out, s, m);
    }
    Ok(out.into())
}

fn merge(out: &mut Map, sec: String, m: Map) {
    match out
        .get_mut(sec.as_str())
        .and_then(|d| d.write_lock::<Map>().map(|mut e| e.extend(m.clone())))
    {
        Some(()) => {}
        None => {
            out.insert(sec.into(), m.into());
        }
    }
}

/// The `(namespace, pod)` pairs of `live` (entries of `proc::netns()`).
fn live_pods(live: &Array) -> Vec<(String, String)> {
    live.iter()
        .filter_map(|e| {
            let m = e.read_lock::<Map>()?;
            let pod = m.get("pod")?.read_lock::<Map>()?.clone();
            let s = |k: &str| pod.get(k).map(|v| v.to_string()).unwrap_or_default();
            Some((s("namespace"), s("name")))
        })
        .collect()
}

/// Whether a series' first two label values are the `(namespace, pod)` of a live
/// namespace.
fn is_live(v: &[Box<str>], live: &[(String, String)]) -> bool {
    v.len() < 2 || live.iter().any(|(ns, pod)| *v[0] == **ns && *v[1] == **pod)
}

/// `handles.set_all(labels, values)`: see [`register`].
fn set_all(handles: &mut Map, labels: Array, values: Map) -> Res<Array> {
    let mut unknown = Array::new();
    for (name, v) in values {
        let Some(h) = handles.get(name.as_str()) else {
            unknown.push(Dynamic::from(name.to_string()));
            continue;
        };
        let n = match v.as_int() {
            Ok(i) => i as f64,
            Err(_) => match v.as_float() {
                Ok(f) => f,
                Err(_) => continue,
            },
        };
        let r = if let Some(c) = h.read_lock::<Counter>() {
            c.set_total(&labels, n)
        } else if let Some(g) = h.read_lock::<crate::metrics::Gauge>() {
            g.set(&labels, n)
        } else {
            continue; // `()`: a value the script does not export
        };
        r.map_err(|e| EvalAltResult::ErrorRuntime(e.to_string().into(), rhai::Position::NONE))?;
    }
    Ok(unknown)
}

pub(crate) fn register(engine: &mut Engine, ctx: &ScriptContext) {
    // handle.keep_pods(proc::netns()): removes the series of pods whose network
    // namespace is gone. The family's first two labels must be `namespace` and `pod`.
    //   let live = proc::netns(); ...; this.rx.keep_pods(live);
    // handles.set_all(labels, values) -> [names without a handle]
    //
    // Exports a whole table in one call: for every `name: value` of `values` (a map
    // from a source, e.g. `proc::snmp(ns).Tcp`), sets `handles[name]` (a Counter:
    // set_total, a Gauge: set) for `labels`; a `()` handle skips the value. Returns the
    // names that have no entry in `handles`, for the script to create families for
    // (or put `()`).
    //   let missing = this.fam.Tcp.set_all([ns.pod.namespace, ns.pod.name], s.Tcp);
    engine.register_fn("set_all", set_all);
    engine.register_fn("keep_pods", |c: &mut Counter, live: Array| {
        let live = live_pods(&live);
        c.retain(|v| is_live(v, &live));
    });
    engine.register_fn("keep_pods", |g: &mut crate::metrics::Gauge, live: Array| {
        let live = live_pods(&live);
        g.retain(|v| is_live(v, &live));
    });
    let failures = Arc::new(Failures {
        ctx: ctx.clone(),
        counter: OnceLock::new(),
    });
    engine.register_static_module("proc", proc_module(ctx, &failures).into());
    engine.register_static_module("netlink", netlink_module(&failures).into());
}

fn proc_module(ctx: &ScriptContext, failures: &Arc<Failures>) -> Module {
    let mut m = Module::new();

    // proc::netns() -> [#{netns, pid, pod: #{name, namespace}}]
    //
    // Every network namespace of the node, sorted by inode: its inode, the lowest pid
    // inside it (0 for an `ip netns` namespace no process is in) and its pod (the host
    // is pod "" namespace ""). From a scan at most 1 s old.
    //   for ns in proc::netns() { print(`${ns.netns} ${ns.pod.name}`); }
    let pods = ctx.pods.clone();
    m.set_native_fn("netns", move || -> Res<Array> {
        Ok(super::script_netns_list()
            .iter()
            .map(|n| {
                let pod = pods.by_netns(n.inode as u32);
                let mut p = Map::new();
                p.insert("name".into(), pod.name.clone().into());
                p.insert("namespace".into(), pod.namespace.clone().into());
                let mut e = Map::new();
                e.insert("netns".into(), int(n.inode));
                e.insert("pid".into(), int(n.pid as u64));
                e.insert("pod".into(), p.into());
                e.into()
            })
            .collect())
    });

    // proc::netdev(ns) -> #{ifname: #{rx_bytes, rx_packets, rx_errors, rx_dropped,
    //   rx_fifo, rx_frame, rx_compressed, rx_multicast, tx_bytes, tx_packets,
    //   tx_errors, tx_dropped, tx_fifo, tx_collisions, tx_carrier, tx_compressed}} | ()
    //
    // /proc/<pid>/net/dev of the namespace (what `ip -s link` shows).
    //   let d = proc::netdev(ns); if d != () { print(d.lo.rx_bytes); }
    let f = failures.clone();
    m.set_native_fn("netdev", move |ns: Dynamic| {
        read_ns(&f, "netdev", &ns, |ns| {
            let mut out = Map::new();
            for d in procfs::netdev(ns)? {
                let mut e = Map::new();
                for (k, v) in procfs::NETDEV_FIELDS.iter().zip(d.values) {
                    e.insert((*k).into(), int(v));
                }
                out.insert(d.name.into(), e.into());
            }
            Ok(out.into())
        })
    });

    // proc::snmp(ns) -> #{Ip: #{Forwarding, InReceives, ...}, Icmp, IcmpMsg, Tcp, Udp, UdpLite} | ()
    //
    // /proc/<pid>/net/snmp, names as the kernel writes them (what `nstat -az` shows
    // as IpInReceives, TcpActiveOpens...).
    //   let s = proc::snmp(ns); if s != () { print(s.Tcp.RetransSegs); }
    let f = failures.clone();
    m.set_native_fn("snmp", move |ns: Dynamic| {
        read_ns(&f, "snmp", &ns, |ns| sections(|cb| procfs::snmp(ns, cb)))
    });

    // proc::netstat(ns) -> #{TcpExt: #{ListenDrops, ...}, IpExt: #{InOctets, ...}, MPTcpExt} | ()
    //
    // /proc/<pid>/net/netstat, names as the kernel writes them.
    //   let s = proc::netstat(ns); if s != () { print(s.TcpExt.ListenOverflows); }
    let f = failures.clone();
    m.set_native_fn("netstat", move |ns: Dynamic| {
        read_ns(&f, "netstat", &ns, |ns| {
            sections(|cb| procfs::netstat(ns, cb))
        })
    });

    // proc::sockstat(ns) -> #{sockets: #{used}, TCP: #{inuse, orphan, tw, alloc, mem},
    //   UDP: #{inuse, mem}, UDPLITE, RAW, FRAG: #{inuse, memory}, TCP6, UDP6, UDPLITE6,
    //   RAW6, FRAG6, page_size} | ()
    //
    // /proc/<pid>/net/sockstat and sockstat6; `mem` values are pages of `page_size`
    // bytes (the kernel accounts TCP/UDP memory node-wide: the same in every namespace).
    //   let s = proc::sockstat(ns); if s != () { print(s.TCP.mem * s.page_size); }
    let f = failures.clone();
    m.set_native_fn("sockstat", move |ns: Dynamic| {
        read_ns(&f, "sockstat", &ns, |ns| {
            let mut d = sections(|cb| procfs::sockstat(ns, cb))?;
            if let Some(mut m) = d.write_lock::<Map>() {
                m.insert("page_size".into(), Dynamic::from_int(procfs::page_size()));
            }
            Ok(d)
        })
    });

    // proc::softnet() -> [#{cpu, processed, dropped, time_squeeze, received_rps, flow_limit_count}] | ()
    //
    // /proc/net/softnet_stat: per CPU, for the whole node (it is not per namespace).
    //   for c in proc::softnet() { print(`${c.cpu} ${c.dropped}`); }
    let f = failures.clone();
    m.set_native_fn("softnet", move || -> Res<Dynamic> {
        Ok(match procfs::softnet() {
            Ok(v) => v
                .into_iter()
                .map(|c| {
                    let mut e = Map::new();
                    e.insert("cpu".into(), int(c.cpu as u64));
                    e.insert("processed".into(), int(c.processed));
                    e.insert("dropped".into(), int(c.dropped));
                    e.insert("time_squeeze".into(), int(c.time_squeeze));
                    e.insert("received_rps".into(), int(c.received_rps));
                    e.insert("flow_limit_count".into(), int(c.flow_limit_count));
                    Dynamic::from(e)
                })
                .collect::<Array>()
                .into(),
            Err(e) => {
                f.record("softnet", &e);
                Dynamic::UNIT
            }
        })
    });

    // proc::ipvs(ns) -> #{connections, in_packets, out_packets, in_bytes, out_bytes} | ()
    //
    // /proc/<pid>/net/ip_vs_stats totals; () where IPVS is not loaded.
    //   let v = proc::ipvs(ns); if v != () { print(v.connections); }
    let f = failures.clone();
    m.set_native_fn("ipvs", move |ns: Dynamic| {
        read_ns(&f, "ipvs", &ns, |ns| {
            let v = procfs::ipvs(ns)?;
            let mut e = Map::new();
            e.insert("connections".into(), int(v.connections));
            e.insert("in_packets".into(), int(v.in_packets));
            e.insert("out_packets".into(), int(v.out_packets));
            e.insert("in_bytes".into(), int(v.in_bytes));
            e.insert("out_bytes".into(), int(v.out_bytes));
            Ok(e.into())
        })
    });

    // proc::fd(ns) -> #{processes, fds, sockets} | ()
    //
    // Open descriptors summed over the processes in the namespace (the pod's
    // processes, on cgroup v1 and v2 alike).
    //   let f = proc::fd(ns); if f != () { print(f.sockets); }
    let f = failures.clone();
    m.set_native_fn("fd", move |ns: Dynamic| {
        read_ns(&f, "fd", &ns, |ns| {
            let s = procfs::pod_fds(ns);
            let mut e = Map::new();
            e.insert("processes".into(), int(s.processes));
            e.insert("fds".into(), int(s.fds));
            e.insert("sockets".into(), int(s.sockets));
            Ok(e.into())
        })
    });

    // proc::io(ns) -> #{processes, rchar, wchar, syscr, syscw, read_bytes, write_bytes,
    //   cancelled_write_bytes} | ()
    //
    // /proc/<pid>/io summed over the processes in the namespace. A process that exits
    // takes its share with it: the sums can go down (a counter reset).
    //   let io = proc::io(ns); if io != () { print(io.syscr); }
    let f = failures.clone();
    m.set_native_fn("io", move |ns: Dynamic| {
        read_ns(&f, "io", &ns, |ns| {
            let s = procfs::pod_io(ns);
            let mut e = Map::new();
            e.insert("processes".into(), int(s.processes));
            e.insert("rchar".into(), int(s.rchar));
            e.insert("wchar".into(), int(s.wchar));
            e.insert("syscr".into(), int(s.syscr));
            e.insert("syscw".into(), int(s.syscw));
            e.insert("read_bytes".into(), int(s.read_bytes));
            e.insert("write_bytes".into(), int(s.write_bytes));
            e.insert("cancelled_write_bytes".into(), int(s.cancelled_write_bytes));
            Ok(e.into())
        })
    });

    m.build_index();
    m
}

fn netlink_module(failures: &Arc<Failures>) -> Module {
    let mut m = Module::new();

    // netlink::tcp_summary(ns) -> #{states: #{ESTABLISHED: n, LISTEN: n, ...},
    //   rx_queue, tx_queue, accept_queue} | ()
    //
    // Every TCP socket of the namespace (IPv4 and IPv6) from sock_diag: counts per
    // state (every state, zeros included), bytes in receive and send queues of the
    // sockets that are not listening, and connections waiting to be accepted.
    //   let t = netlink::tcp_summary(ns); if t != () { print(t.states.ESTABLISHED); }
    let f = failures.clone();
    m.set_native_fn("tcp_summary", move |ns: Dynamic| {
        read_ns(&f, "tcpsummary", &ns, |ns| {
            let s = netlink::tcp_summary(ns)?;
            let mut states = Map::new();
            for (i, name) in netlink::TCP_STATES.iter().enumerate().skip(1) {
                // Requests are reported as SYN_RECV; NEW_SYN_RECV never appears,
                // nor BOUND_INACTIVE (a bound socket, not a connection state).
                if i >= 12 {
                    continue;
                }
                states.insert((*name).into(), int(s.states[i]));
            }
            let mut e = Map::new();
            e.insert("states".into(), states.into());
            e.insert("rx_queue".into(), int(s.rx_queue));
            e.insert("tx_queue".into(), int(s.tx_queue));
            e.insert("accept_queue".into(), int(s.accept_queue));
            Ok(e.into())
        })
    });

    // netlink::qdiscs(ns) -> [#{ifname, ifindex, kind, handle, parent, bytes, packets,
    //   drops, requeues, overlimits, qlen, backlog}] | ()
    //
    // Every qdisc of the namespace with its statistics (what `tc -s qdisc` shows),
    // interface names resolved in that namespace.
    //   for q in netlink::qdiscs(ns) { print(`${q.ifname} ${q.kind} ${q.drops}`); }
    let f = failures.clone();
    m.set_native_fn("qdiscs", move |ns: Dynamic| {
        read_ns(&f, "qdisc", &ns, |ns| {
            Ok(netlink::qdiscs(ns)?
                .into_iter()
                .map(|q| {
                    let mut e = Map::new();
                    e.insert("ifname".into(), q.ifname.into());
                    e.insert("ifindex".into(), Dynamic::from_int(q.ifindex as INT));
                    e.insert("kind".into(), q.kind.into());
                    e.insert("handle".into(), q.handle.into());
                    e.insert("parent".into(), q.parent.into());
                    e.insert("bytes".into(), int(q.bytes));
                    e.insert("packets".into(), int(q.packets));
                    e.insert("drops".into(), int(q.drops));
                    e.insert("requeues".into(), int(q.requeues));
                    e.insert("overlimits".into(), int(q.overlimits));
                    e.insert("qlen".into(), int(q.qlen));
                    e.insert("backlog".into(), int(q.backlog));
                    Dynamic::from(e)
                })
                .collect::<Array>()
                .into())
        })
    });

    // netlink::conntrack(ns) -> #{found, invalid, insert, insert_failed, drop,
    //   early_drop, error, search_restart, clash_resolve, chaintoolong, entries, max} | ()
    //
    // Conntrack statistics of the namespace from ctnetlink, summed over CPUs (what
    // `conntrack -S` shows per CPU, and `conntrack -C`); () without conntrack.
    //   let c = netlink::conntrack(ns); if c != () { print(c.insert_failed); }
    let f = failures.clone();
    m.set_native_fn("conntrack", move |ns: Dynamic| {
        read_ns(&f, "conntrack", &ns, |ns| {
            let c = netlink::conntrack(ns)?;
            let mut e = Map::new();
            for (i, name) in netlink::CONNTRACK_STATS.iter().enumerate() {
                if !name.is_empty() {
                    e.insert((*name).into(), int(c.stats[i]));
                }
            }
            e.insert("entries".into(), int(c.entries));
            e.insert("max".into(), int(c.max));
            Ok(e.into())
        })
    });

    m.build_index();
    m
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::metrics::Registry;
    use crate::script::{Instance, Limits, Script, ScriptContext};

    fn start(src: &str) -> (Instance, Arc<Registry>) {
        let limits = Limits::default();
        let script = Script::compile("t.rhai", src, &limits).unwrap();
        let params = script.manifest().resolve_params(&[]).unwrap();
        let registry = Arc::new(Registry::new("n1"));
        let mut ctx = ScriptContext::detached("t");
        ctx.registry = registry.clone();
        ctx.pods = Arc::new(crate::pods::HostResolver::new("n1"));
        (
            Instance::start(&script, &params, ctx, &limits).unwrap(),
            registry,
        )
    }

    #[test]
    fn a_namespace_that_is_not_there_reads_as_unit_and_is_counted() {
        let (mut inst, registry) = start(
            r#"
            fn on_tick() {
                this.r = [proc::netdev(1), proc::snmp(#{ netns: 2 }), netlink::tcp_summary(3)];
            }
            "#,
        );
        inst.on_tick();
        assert!(inst.errors().is_empty(), "{:?}", inst.errors());
        let state = inst.state().read_lock::<rhai::Map>().unwrap().clone();
        let r = state["r"].clone().into_array().unwrap();
        assert!(r.iter().all(|v| v.is_unit()), "{r:?}");
        let text = registry.render_prometheus();
        for source in ["netdev", "snmp", "tcpsummary"] {
            let line = format!(
                "sonde_source_errors_total{{source=\"{source}\",reason=\"gone\",node=\"n1\"}} 1"
            );
            assert!(
                text.lines().any(|l| l == line
                    || (l.starts_with("sonde_source_errors_total")
                        && l.contains(source)
                        && l.contains("gone")
                        && l.ends_with(" 1"))),
                "{line} not in:\n{text}"
            );
        }
    }

    #[test]
    fn the_own_namespace_is_listed_as_the_host() {
        let (mut inst, _) = start(
            r#"
            fn on_tick() {
                this.host = proc::netns().filter(|n| n.pod.name == "" && n.pod.namespace == "");
                this.dev = proc::netdev(this.host[0]);
            }
            "#,
        );
        inst.on_tick();
        assert!(inst.errors().is_empty(), "{:?}", inst.errors());
        let state = inst.state().read_lock::<rhai::Map>().unwrap().clone();
        assert_eq!(state["host"].clone().into_array().unwrap().len(), 1);
        let dev = state["dev"].read_lock::<rhai::Map>().unwrap().clone();
        assert!(dev.contains_key("lo"), "{dev:?}");
    }

    #[test]
    fn set_all_sets_known_names_and_returns_the_others() {
        let (mut inst, registry) = start(
            r#"
            fn on_tick() {
                let h = #{ A: metrics::counter("t_a_total", "a", ["namespace", "pod"]), B: () };
                this.missing = h.set_all(["", "p"], #{ A: 5, B: 6, C: 7 });
            }
            "#,
        );
        inst.on_tick();
        assert!(inst.errors().is_empty(), "{:?}", inst.errors());
        let state = inst.state().read_lock::<rhai::Map>().unwrap().clone();
        let missing: Vec<String> = state["missing"]
            .clone()
            .into_array()
            .unwrap()
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(missing, ["C"]);
        let text = registry.render_prometheus();
        assert!(
            text.lines().any(|l| l.starts_with("sonde_t_a_total{")
                && l.contains("pod=\"p\"")
                && l.ends_with(" 5")),
            "{text}"
        );
    }
}
