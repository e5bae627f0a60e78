//! The script API: metrics, events, kernel maps and logging (one-liner tables,
//! `count()` and `hist()`, are in `tables.rs`).
//!
//! Each function is documented here, where it is registered, and in
//! `stdlib/README.md` with an example.

use std::sync::Arc;

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Module, NativeCallContext,
    Position, FLOAT, INT,
};

use super::engine::Host;
use crate::event::{now_ns, Event, Label, Labels};
use crate::metrics::{BucketCounts, Counter, Gauge, Histogram, LabelValue, MetricsError};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A script-visible runtime error (counted as kind `runtime`).
pub(crate) fn runtime_error(msg: impl std::fmt::Display) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.to_string().into(), Position::NONE).into()
}

/// `r` with its error placed at the call in the script. Rhai gives an error out of a
/// namespaced call (`metrics::counter(...)`, `bpf::map(...)`) no position of its own:
/// without this it would point at the enclosing handler's `fn` line.
pub(crate) fn at_call<T>(ctx: &NativeCallContext, r: Res<T>) -> Res<T> {
    r.map_err(|mut e| {
        if e.position().is_none() {
            e.set_position(ctx.call_position());
        }
        e
    })
}

fn metrics_err(e: MetricsError) -> Box<EvalAltResult> {
    runtime_error(e)
}

/// Default highest slot of `metrics::log2_histogram` (bound `2^32` raw units).
pub(crate) const LOG2_DEFAULT_MAX_SLOT: u32 = 32;

pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    super::record::register(engine);
    register_handles(engine);
    engine.register_static_module("metrics", metrics_module(host).into());
    engine.register_static_module("bpf", bpf_module(host).into());
    register_emit(engine, host);
    super::tables::register(engine, host);
    register_log(engine, host);
    crate::sources::script::register(engine, &host.ctx);
    engine.register_static_module("pods", pods_module(host).into());

    // `sleep` blocks the thread that runs every handler: replaced by an error.
    engine.register_fn("sleep", |_: INT| -> Res<()> {
        Err(runtime_error("sleep() is not available to scripts"))
    });
    engine.register_fn("sleep", |_: FLOAT| -> Res<()> {
        Err(runtime_error("sleep() is not available to scripts"))
    });
}

fn label_names(what: &str, labels: &Array) -> Res<Vec<String>> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.read_lock::<ImmutableString>()
                .map(|s| s.to_string())
                .ok_or_else(|| {
                    runtime_error(format!(
                        "{what}: label names are strings; item {i} is {}",
                        l.type_name()
                    ))
                })
        })
        .collect()
}

fn number(v: &Dynamic) -> Option<f64> {
    v.as_int()
        .map(|i| i as f64)
        .ok()
        .or_else(|| v.as_float().ok())
}

/// `pods::`: who an address or a network namespace belongs to.
fn pods_module(host: &Arc<Host>) -> Module {
    fn pod_map(p: Option<&crate::pods::Pod>, node: &str) -> Map {
        let mut m = Map::new();
        m.insert(
            "name".into(),
            p.map(|p| p.name.as_str()).unwrap_or("").into(),
        );
        m.insert(
            "namespace".into(),
            p.map(|p| p.namespace.as_str()).unwrap_or("").into(),
        );
        m.insert(
            "node".into(),
            p.map(|p| p.node.as_str()).unwrap_or(node).into(),
        );
        m
    }
    let mut m = Module::new();

    // pods::by_ip(addr) -> #{name, namespace, node}
    //
    // The pod on this node that has the address (a string, v4 or v6, as decoded
    // records write them): the remote end of a tuple. Addresses of no pod here (other
    // nodes, the internet, the host, host-network pods) give name "" and namespace "".
    //   let peer = pods::by_ip(ev.daddr);
    //   this.flows.inc([ev.pod.namespace, ev.pod.name, peer.namespace, peer.name]);
    let pods = host.ctx.pods.clone();
    let node = host.ctx.node.clone();
    m.set_native_fn("by_ip", move |addr: ImmutableString| -> Res<Map> {
        let pod = addr
            .trim()
            .parse::<std::net::IpAddr>()
            .ok()
            .and_then(|ip| pods.by_ip(ip.to_canonical()));
        Ok(pod_map(pod.as_deref(), &node))
    });

    // pods::by_netns(inode) -> #{name, namespace, node}
    //
    // The pod of a network namespace inode (what `ev.pod` is for a record's
    // `sonde_netns` field): the host is name "" namespace "", a namespace nothing
    // names is `netns:<inode>`.
    //   let p = pods::by_netns(4026532001);
    let pods = host.ctx.pods.clone();
    let node = host.ctx.node.clone();
    m.set_native_fn("by_netns", move |inode: INT| -> Res<Map> {
        let p = pods.by_netns(inode as u32);
        Ok(pod_map(Some(&p), &node))
    });
    m
}

fn metrics_module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let budget = host.limits.series_budget;

    // metrics::counter(name, help, [label names]) -> Counter
    //
    // Registers (or finds, after a reload) a counter `sonde_<name>`; `name` must end
    // in `_total`.
    //
    // Every metric::* registration is the script's: a script holds at most
    // limits.families_per_script families (default 256). Past it, registering a *new*
    // one is a runtime error (counted in sonde_metric_families_dropped_total{script});
    // finding one the script already holds always works. Catch it to carry on:
    //   try { this.extra = metrics::counter(name, "Extra.", []); } catch (e) { log("warn", e); }
    //   this.resets = metrics::counter("tcp_resets_total", "TCP RST segments.", ["namespace", "pod"]);
    //
    // metrics::counter(name, help, [label names], #{ detail: true })
    // metrics::gauge(name, help, [label names], #{ detail: true })
    //   detail: the family is detail for pods: its pod series are exported only for
    //   the pods the daemon's metrics.pod_detail / metrics.detail_namespaces select
    //   (the host's series always are). For what a closer look needs, not the first
    //   one; `sonde run` shows everything.
    let h = host.clone();
    let f = move |name: &str, help: &str, labels: Array, opts: Map| -> Res<Counter> {
        let detail = detail_opt("metrics::counter", &opts)?;
        let c = h
            .ctx
            .registry
            .for_script(&h.ctx.name)
            .counter(
                name,
                help,
                &label_names("metrics::counter", &labels)?,
                budget,
            )
            .map_err(metrics_err)?;
        c.set_detail(detail);
        Ok(c)
    };
    let f3 = f.clone();
    m.set_native_fn(
        "counter",
        move |ctx: NativeCallContext, name: &str, help: &str, labels: Array| {
            at_call(&ctx, f3(name, help, labels, Map::new()))
        },
    );
    m.set_native_fn(
        "counter",
        move |ctx: NativeCallContext, name: &str, help: &str, labels: Array, opts: Map| {
            at_call(&ctx, f(name, help, labels, opts))
        },
    );

    // metrics::gauge(name, help, [label names]) -> Gauge
    //   this.queue = metrics::gauge("socket_queue_bytes", "Bytes queued.", ["pod"]);
    let h = host.clone();
    let f = move |name: &str, help: &str, labels: Array, opts: Map| -> Res<Gauge> {
        let detail = detail_opt("metrics::gauge", &opts)?;
        let g = h
            .ctx
            .registry
            .for_script(&h.ctx.name)
            .gauge(name, help, &label_names("metrics::gauge", &labels)?, budget)
            .map_err(metrics_err)?;
        g.set_detail(detail);
        Ok(g)
    };
    let f3 = f.clone();
    m.set_native_fn(
        "gauge",
        move |ctx: NativeCallContext, name: &str, help: &str, labels: Array| {
            at_call(&ctx, f3(name, help, labels, Map::new()))
        },
    );
    m.set_native_fn(
        "gauge",
        move |ctx: NativeCallContext, name: &str, help: &str, labels: Array, opts: Map| {
            at_call(&ctx, f(name, help, labels, opts))
        },
    );

    // metrics::histogram(name, help, [label names], [bucket bounds]) -> Histogram
    //   this.lat = metrics::histogram("rtt_seconds", "RTT.", ["pod"], [0.001, 0.01, 0.1, 1.0]);
    let h = host.clone();
    let f = move |name: &str, help: &str, labels: Array, buckets: Array| -> Res<Histogram> {
        let bounds = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                number(b).ok_or_else(|| {
                    runtime_error(format!(
                        "metrics::histogram: bucket bounds are numbers; item {i} is {}",
                        b.type_name()
                    ))
                })
            })
            .collect::<Res<Vec<f64>>>()?;
        h.ctx
            .registry
            .for_script(&h.ctx.name)
            .histogram(
                name,
                help,
                &label_names("metrics::histogram", &labels)?,
                bounds,
                budget,
            )
            .map_err(metrics_err)
    };
    m.set_native_fn(
        "histogram",
        move |ctx: NativeCallContext, name: &str, help: &str, labels: Array, buckets: Array| {
            at_call(&ctx, f(name, help, labels, buckets))
        },
    );

    // metrics::log2_histogram(name, help, [label names]) -> Histogram
    // metrics::log2_histogram(name, help, [label names], #{ scale: 1e-9, max_slot: 32, detail: true })
    //
    // Power-of-two buckets, the layout of kernel log2 maps: slot i holds raw values in
    // (2^(i-1), 2^i]; bounds are exported as scale * 2^i (scale 1e-9 turns
    // nanoseconds into seconds). Observe raw values; `set_buckets` takes slot counts.
    // detail: pods not selected for detail get it as a native histogram only (the
    // protobuf format, one series), without the classic bucket series.
    //   this.lat = metrics::log2_histogram("connect_latency_seconds", "Connect latency.", ["pod"], #{ scale: 1e-9 });
    let h = host.clone();
    let log2 = move |name: &str, help: &str, labels: Array, opts: Map| -> Res<Histogram> {
        let mut scale = 1.0;
        let mut max_slot = LOG2_DEFAULT_MAX_SLOT;
        let mut detail = false;
        for (k, v) in &opts {
            match k.as_str() {
                "detail" => {
                    detail = v.as_bool().map_err(|_| {
                        runtime_error("metrics::log2_histogram: detail is true or false")
                    })?;
                }
                "scale" => {
                    scale = number(v).ok_or_else(|| {
                        runtime_error("metrics::log2_histogram: scale is a number")
                    })?;
                }
                "max_slot" => {
                    max_slot = v
                        .as_int()
                        .ok()
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| {
                            runtime_error("metrics::log2_histogram: max_slot is an integer 0..=63")
                        })?;
                }
                other => {
                    return Err(runtime_error(format!(
                    "metrics::log2_histogram: unknown option `{other}`; expected scale, max_slot, detail"
                )))
                }
            }
        }
        let hist = h
            .ctx
            .registry
            .for_script(&h.ctx.name)
            .log2_histogram(
                name,
                help,
                &label_names("metrics::log2_histogram", &labels)?,
                max_slot,
                scale,
                budget,
            )
            .map_err(metrics_err)?;
        hist.set_detail(detail);
        Ok(hist)
    };
    let log2b = log2.clone();
    m.set_native_fn(
        "log2_histogram",
        move |ctx: NativeCallContext, name: &str, help: &str, labels: Array| {
            at_call(&ctx, log2b(name, help, labels, Map::new()))
        },
    );
    m.set_native_fn(
        "log2_histogram",
        move |ctx: NativeCallContext, name: &str, help: &str, labels: Array, opts: Map| {
            at_call(&ctx, log2(name, help, labels, opts))
        },
    );
    m.build_index();
    m
}

/// The options map of `metrics::counter` and `metrics::gauge`: `detail` only.
fn detail_opt(func: &str, opts: &Map) -> Res<bool> {
    let mut detail = false;
    for (k, v) in opts {
        match k.as_str() {
            "detail" => {
                detail = v
                    .as_bool()
                    .map_err(|_| runtime_error(format!("{func}: detail is true or false")))?;
            }
            other => {
                return Err(runtime_error(format!(
                    "{func}: unknown option `{other}`; expected detail"
                )))
            }
        }
    }
    Ok(detail)
}

/// Methods on the handles `metrics::*` return. Labels are an array of values in the
/// order the label names were declared; strings are used as they are, integers in
/// decimal, `()` as the empty string. A wrong number of values is a runtime error.
fn register_handles(engine: &mut Engine) {
    engine.register_type_with_name::<Counter>("Counter");
    engine.register_type_with_name::<Gauge>("Gauge");
    engine.register_type_with_name::<Histogram>("Histogram");
    engine.register_fn("to_string", |c: &mut Counter| {
        format!("Counter({})", c.name())
    });
    engine.register_fn("to_string", |g: &mut Gauge| format!("Gauge({})", g.name()));
    engine.register_fn("to_string", |h: &mut Histogram| {
        format!("Histogram({})", h.name())
    });
    engine.register_fn("to_debug", |c: &mut Counter| {
        format!("Counter({})", c.name())
    });
    engine.register_fn("to_debug", |g: &mut Gauge| format!("Gauge({})", g.name()));
    engine.register_fn("to_debug", |h: &mut Histogram| {
        format!("Histogram({})", h.name())
    });

    // counter.inc(labels): adds one.        this.resets.inc([ev.pod.namespace, ev.pod.name]);
    engine.register_fn("inc", |c: &mut Counter, labels: Array| -> Res<()> {
        c.inc(&labels).map_err(metrics_err)
    });
    engine.register_fn("inc", |c: &mut Counter| -> Res<()> {
        c.inc::<Dynamic>(&[]).map_err(metrics_err)
    });
    // counter.add(labels, n): adds n >= 0.  this.bytes.add([ev.pod.name], ev.len);
    engine.register_fn("add", |c: &mut Counter, labels: Array, n: INT| -> Res<()> {
        c.add(&labels, n).map_err(metrics_err)
    });
    engine.register_fn(
        "add",
        |c: &mut Counter, labels: Array, n: FLOAT| -> Res<()> {
            c.add(&labels, n).map_err(metrics_err)
        },
    );
    // counter.set_total(labels, n): a total counted elsewhere (a kernel map); lower = reset.
    engine.register_fn(
        "set_total",
        |c: &mut Counter, labels: Array, n: INT| -> Res<()> {
            c.set_total(&labels, n).map_err(metrics_err)
        },
    );
    engine.register_fn(
        "set_total",
        |c: &mut Counter, labels: Array, n: FLOAT| -> Res<()> {
            c.set_total(&labels, n).map_err(metrics_err)
        },
    );
    // gauge.set(labels, v) / gauge.add(labels, delta)
    engine.register_fn("set", |g: &mut Gauge, labels: Array, v: INT| -> Res<()> {
        g.set(&labels, v).map_err(metrics_err)
    });
    engine.register_fn("set", |g: &mut Gauge, labels: Array, v: FLOAT| -> Res<()> {
        g.set(&labels, v).map_err(metrics_err)
    });
    engine.register_fn("add", |g: &mut Gauge, labels: Array, v: INT| -> Res<()> {
        g.add(&labels, v).map_err(metrics_err)
    });
    engine.register_fn("add", |g: &mut Gauge, labels: Array, v: FLOAT| -> Res<()> {
        g.add(&labels, v).map_err(metrics_err)
    });
    // histogram.observe(labels, v): one raw value.
    engine.register_fn(
        "observe",
        |h: &mut Histogram, labels: Array, v: INT| -> Res<()> {
            h.observe(&labels, v).map_err(metrics_err)
        },
    );
    engine.register_fn(
        "observe",
        |h: &mut Histogram, labels: Array, v: FLOAT| -> Res<()> {
            h.observe(&labels, v).map_err(metrics_err)
        },
    );
    // histogram.set_buckets(labels, [per-bucket counts], raw_sum): replace a series with
    // counts kept in the kernel (slot i of a log2 map = bucket i); lower = reset.
    let set_buckets = |h: &mut Histogram, labels: Array, counts: Array, sum: f64| -> Res<()> {
        let counts = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.as_int()
                    .ok()
                    .and_then(|c| u64::try_from(c).ok())
                    .ok_or_else(|| {
                        runtime_error(format!(
                            "set_buckets: counts are integers >= 0; item {i} is {c}"
                        ))
                    })
            })
            .collect::<Res<Vec<u64>>>()?;
        h.set_buckets(&labels, BucketCounts::PerBucket(&counts), sum)
            .map_err(metrics_err)
    };
    engine.register_fn(
        "set_buckets",
        move |h: &mut Histogram, labels: Array, counts: Array, sum: INT| {
            set_buckets(h, labels, counts, sum as f64)
        },
    );
    engine.register_fn(
        "set_buckets",
        move |h: &mut Histogram, labels: Array, counts: Array, sum: FLOAT| {
            set_buckets(h, labels, counts, sum)
        },
    );
    // handle.remove(labels) -> bool: drop a series (a pod is gone).
    engine.register_fn("remove", |c: &mut Counter, labels: Array| -> Res<bool> {
        c.remove(&labels).map_err(metrics_err)
    });
    engine.register_fn("remove", |g: &mut Gauge, labels: Array| -> Res<bool> {
        g.remove(&labels).map_err(metrics_err)
    });
    engine.register_fn("remove", |h: &mut Histogram, labels: Array| -> Res<bool> {
        h.remove(&labels).map_err(metrics_err)
    });
}

fn bpf_module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    // bpf::map(name) -> [#{key, value}, ...]
    //
    // A snapshot of one of the program's maps, keys and values decoded by field name,
    // per-CPU values summed. A read failure is a runtime error with its reason.
    //   for e in bpf::map("counts") { this.drops.set_total([e.key.pod.name, e.key.reason], e.value); }
    let h = host.clone();
    m.set_native_fn(
        "map",
        move |ctx: NativeCallContext, name: &str| -> Res<Array> {
            at_call(
                &ctx,
                h.ctx
                    .maps
                    .entries(name)
                    .map_err(|e| runtime_error(format!("bpf::map(\"{name}\"): {e}"))),
            )
        },
    );
    // bpf::hist(name) / bpf::hist(name, slot_field) -> [#{key, buckets}, ...]
    //
    // A kernel log2 histogram map (key: labels + a slot, value: a count) grouped
    // natively: one item per distinct key without its slot field (default `slot`),
    // `buckets[i]` the count of slot i (slots clamped to 0..=64), in first-seen order.
    // What `hist::from_map` does in Rhai, for maps of hundreds of slots.
    //   for h in bpf::hist("hist") { this.lat.set_buckets([h.key.pod.name], h.buckets, 0); }
    let h = host.clone();
    let hist = move |name: &str, slot_field: &str| -> Res<Array> {
        let entries = h
            .ctx
            .maps
            .entries(name)
            .map_err(|e| runtime_error(format!("bpf::hist(\"{name}\"): {e}")))?;
        group_log2(name, slot_field, entries)
    };
    let hist2 = hist.clone();
    m.set_native_fn("hist", move |ctx: NativeCallContext, name: &str| {
        at_call(&ctx, hist(name, "slot"))
    });
    m.set_native_fn(
        "hist",
        move |ctx: NativeCallContext, name: &str, slot_field: &str| {
            at_call(&ctx, hist2(name, slot_field))
        },
    );
    m.build_index();
    m
}

/// Groups `#{key, value}` entries of a log2 map by their key without `slot_field`.
fn group_log2(name: &str, slot_field: &str, entries: Array) -> Res<Array> {
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut out: Vec<(Map, Vec<INT>)> = Vec::new();
    for e in entries {
        let Some(e) = e.read_lock::<Map>() else {
            continue;
        };
        let (Some(key), Some(value)) = (e.get("key"), e.get("value")) else {
            continue;
        };
        let bad = || {
            runtime_error(format!(
                "bpf::hist(\"{name}\"): the map's key has no integer field `{slot_field}`"
            ))
        };
        let Some(key) = key.read_lock::<Map>() else {
            return Err(bad());
        };
        let slot = key
            .get(slot_field)
            .and_then(|s| s.as_int().ok())
            .ok_or_else(bad)?
            .clamp(0, 64) as usize;
        let mut rest = key.clone();
        rest.remove(slot_field);
        let at = *index.entry(format!("{rest:?}")).or_insert_with(|| {
            out.push((rest, Vec::new()));
            out.len() - 1
        });
        let buckets = &mut out[at].1;
        if buckets.len() <= slot {
            buckets.resize(slot + 1, 0);
        }
        buckets[slot] += value.as_int().unwrap_or(0);
    }
    Ok(out
        .into_iter()
        .map(|(key, buckets)| {
            let mut m = Map::new();
            m.insert("key".into(), Dynamic::from_map(key));
            m.insert(
                "buckets".into(),
                Dynamic::from_array(buckets.into_iter().map(Dynamic::from_int).collect()),
            );
            Dynamic::from_map(m)
        })
        .collect())
}

/// A label from a script value: a string is shared, not copied.
fn label(v: &Dynamic) -> Label {
    match v.read_lock::<ImmutableString>() {
        Some(s) => Label::from(s.clone()),
        None => v.with_str(|s| Label::from(s)),
    }
}

/// Pod labels from a `pod` value: a `#{name, namespace}` map, or a string
/// `"namespace/name"` or `"name"`.
fn pod_labels(pod: &Dynamic, labels: &mut Labels) {
    if let Some(m) = pod.read_lock::<Map>() {
        if let Some(n) = m.get("name") {
            labels.pod = label(n);
        }
        if let Some(n) = m.get("namespace") {
            labels.namespace = label(n);
        }
    } else if let Some(s) = pod.read_lock::<ImmutableString>() {
        match s.split_once('/') {
            Some((ns, name)) => {
                labels.namespace = ns.into();
                labels.pod = name.into();
            }
            None => labels.pod = Label::from(s.clone()),
        }
    }
}

fn register_emit(engine: &mut Engine, host: &Arc<Host>) {
    // emit(type, fields)
    //
    // Sends an event: `type` (e.g. "TCPRESET_NOSOCK"), the fields as given, the time
    // now, and labels {namespace, pod, node}. The pod comes from `fields.pod` (a
    // #{name, namespace} map or a "namespace/name" string; not repeated in the
    // fields), else from the `ev.pod` of the on_event call in progress.
    //   emit("TCPRESET_" + ev.kind, #{ saddr: ev.saddr, sport: ev.sport, daddr: ev.daddr, dport: ev.dport });
    //
    // The node and script labels are shared by every event of the script, and a
    // pod's names by every event of that pod: an event allocates its type and what
    // the script built, little else.
    let h = host.clone();
    let emit = move |ctx: NativeCallContext, kind: &str, mut fields: Map| {
        let mut labels = Labels {
            node: h.node.clone(),
            ..Labels::default()
        };
        match fields.remove("pod") {
            Some(pod) => pod_labels(&pod, &mut labels),
            None => match ctx.tag() {
                // The record in progress: its network namespace, named only now.
                Some(tag) if tag.is_int() => {
                    if let Some(env) = h.record_env() {
                        let (namespace, pod) = env.pod_names(tag.as_int().unwrap_or(0) as u32);
                        labels.namespace = namespace;
                        labels.pod = pod;
                    }
                }
                Some(pod) => pod_labels(pod, &mut labels),
                None => {}
            },
        }
        h.ctx.events.emit(Event {
            timestamp_ns: now_ns(),
            kind: kind.to_string(),
            labels,
            fields,
            script: h.name.clone(),
        });
    };
    let emit2 = emit.clone();
    engine.register_fn("emit", emit);
    engine.register_fn("emit", move |ctx: NativeCallContext, kind: &str| {
        emit2(ctx, kind, Map::new())
    });
}

fn register_log(engine: &mut Engine, host: &Arc<Host>) {
    // log(level, message): to sonde's log with the field `script`; level is "debug",
    // "info", "warn" or "error". Handlers run per event: prefer debug there.
    //   log("warn", `map ${name} is empty`);
    let name = host.ctx.name.clone();
    engine.register_fn("log", move |level: &str, msg: Dynamic| -> Res<()> {
        let msg = msg.with_str(str::to_string);
        match level {
            "debug" => tracing::debug!(script = %name, "{msg}"),
            "info" => tracing::info!(script = %name, "{msg}"),
            "warn" => tracing::warn!(script = %name, "{msg}"),
            "error" => tracing::error!(script = %name, "{msg}"),
            other => {
                return Err(runtime_error(format!(
                    "log: level `{other}`; expected debug, info, warn or error"
                )))
            }
        }
        Ok(())
    });
}
