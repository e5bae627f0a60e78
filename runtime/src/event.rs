//! Events: what a script hands to people and sinks with `emit(type, fields)`.
//!
//! An event is `{timestamp, type, labels: {namespace, pod, node}, fields}`. The text
//! form follows KubeSkoop's style so existing habits carry over:
//!
//! ```text
//! type=TCPRESET_NOSOCK pod=web-1 namespace=shop saddr=10.1.2.3 sport=443 daddr=10.1.9.8 dport=33488
//! ```
//!
//! A field named `stack` holding an array of frames is printed last as
//! `stacktrace:frame frame ...`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rhai::{Dynamic, Map};

pub use crate::label::Label;

/// Where an event comes from: the pod (or host) it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Kubernetes namespace; empty for the host and for unknown network namespaces.
    pub namespace: Label,
    /// Pod name; empty for the host network namespace, `netns:<inode>` when unknown.
    pub pod: Label,
    /// Node name (the host name by default).
    pub node: Label,
}

/// One event emitted by a script.
#[derive(Debug, Clone)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The event type, e.g. `TCPRESET_NOSOCK`.
    pub kind: String,
    pub labels: Labels,
    /// Fields in the order the script gave them (Rhai maps are sorted by key).
    pub fields: Map,
    /// The script that emitted it.
    pub script: Label,
}

/// Current wall-clock time in nanoseconds since the Unix epoch.
/// CLOCK_MONOTONIC_COARSE in ns: a few ns to read (no syscall, no TSC), a few ms of
/// resolution: for budgets and caches checked per record.
pub fn coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Receives events. Implemented by the one-shot printer and the daemon's event bus.
/// Must not block: a full queue drops and counts.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

impl Event {
    /// KubeSkoop-style `key=value` line (no trailing newline).
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_text(&mut out);
        out
    }

    /// Appends the [`to_text`](Self::to_text) line to `out`, allocating nothing of
    /// its own (for printers that reuse one buffer).
    pub fn write_text(&self, out: &mut String) {
        out.push_str("type=");
        out.push_str(&self.kind);
        if !self.labels.pod.is_empty() {
            out.push_str(" pod=");
            out.push_str(&self.labels.pod);
        }
        if !self.labels.namespace.is_empty() {
            out.push_str(" namespace=");
            out.push_str(&self.labels.namespace);
        }
        let stack = self.fields.get("stack").filter(|v| v.is_array());
        let field = |out: &mut String, k: &str, v: &Dynamic| {
            if k == "stack" && v.is_array() {
                return; // printed last
            }
            out.push(' ');
            out.push_str(k);
            out.push('=');
            write_text_value(out, v);
        };
        // Rhai maps are sorted by key; people read tuples as saddr sport daddr dport:
        // the well-known fields first, in that order, then the rest (sorted).
        for k in TEXT_ORDER {
            if let Some(v) = self.fields.get(k) {
                field(out, k, v);
            }
        }
        for (k, v) in &self.fields {
            if !TEXT_ORDER.contains(&k.as_str()) {
                field(out, k, v);
            }
        }
        if let Some(stack) = stack {
            out.push_str(" stacktrace:");
            if let Some(frames) = stack.read_lock::<rhai::Array>() {
                for (i, f) in frames.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    write_text_value(out, f);
                }
            }
        }
    }

    /// One JSON object (no trailing newline): `{"timestamp":..,"type":..,"labels":{..},"fields":{..}}`.
    pub fn to_json(&self) -> String {
        let fields: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.to_string(), dynamic_to_json(v)))
            .collect();
        let mut labels = serde_json::Map::new();
        labels.insert("namespace".into(), self.labels.namespace.as_str().into());
        labels.insert("pod".into(), self.labels.pod.as_str().into());
        labels.insert("node".into(), self.labels.node.as_str().into());
        serde_json::json!({
            "timestamp": self.timestamp_ns,
            "type": self.kind,
            "labels": labels,
            "fields": fields,
        })
        .to_string()
    }
}

/// Well-known fields come first, in the order KubeSkoop prints them; the rest follow
/// alphabetically.
const TEXT_ORDER: [&str; 8] = [
    "protocol", "family", "saddr", "sport", "daddr", "dport", "state", "reason",
];

fn write_text_value(out: &mut String, v: &Dynamic) {
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        out.push_str(&s);
    } else if v.is_map() || v.is_array() {
        out.push_str(&dynamic_to_json(v).to_string());
    } else if v.is_unit() {
        out.push('-');
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Converts a Rhai value to JSON, recursively.
pub fn dynamic_to_json(v: &Dynamic) -> serde_json::Value {
    use serde_json::Value;
    if v.is_unit() {
        Value::Null
    } else if let Ok(b) = v.as_bool() {
        Value::Bool(b)
    } else if let Ok(i) = v.as_int() {
        Value::from(i)
    } else if let Ok(f) = v.as_float() {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    } else if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        Value::String(s.to_string())
    } else if let Some(a) = v.read_lock::<rhai::Array>() {
        Value::Array(a.iter().map(dynamic_to_json).collect())
    } else if let Some(m) = v.read_lock::<Map>() {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), dynamic_to_json(v)))
                .collect(),
        )
    } else {
        Value::String(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut fields = Map::new();
        fields.insert("saddr".into(), "10.0.0.1".into());
        fields.insert("sport".into(), Dynamic::from_int(443));
        fields.insert(
            "stack".into(),
            Dynamic::from_array(vec!["tcp_v4_rcv+0x12".into(), "ip_rcv+0x4".into()]),
        );
        Event {
            timestamp_ns: 1,
            kind: "TCPRESET_NOSOCK".into(),
            labels: Labels {
                namespace: "shop".into(),
                pod: "web-1".into(),
                node: "n1".into(),
            },
            fields,
            script: "tcp_reset".into(),
        }
    }

    #[test]
    fn text_form_is_kubeskoop_style_with_stack_last() {
        assert_eq!(
            sample().to_text(),
            "type=TCPRESET_NOSOCK pod=web-1 namespace=shop saddr=10.0.0.1 sport=443 \
             stacktrace:tcp_v4_rcv+0x12 ip_rcv+0x4"
        );
    }

    #[test]
    fn json_form_carries_labels_and_fields() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["type"], "TCPRESET_NOSOCK");
        assert_eq!(v["labels"]["pod"], "web-1");
        assert_eq!(v["fields"]["sport"], 443);
        assert_eq!(v["fields"]["stack"][1], "ip_rcv+0x4");
    }
}
