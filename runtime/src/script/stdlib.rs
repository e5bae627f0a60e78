//! The stdlib namespaces every script sees: `net::`, `fmt::`, `hist::`.
//!
//! Helpers written in Rhai live in `stdlib/<name>.rhai` (embedded, compiled once
//! into a module); helpers where speed or exactness matters are native functions
//! added to the same namespace here. `stdlib/README.md` documents each one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, Module, NativeCallContext, Scope, Shared, FLOAT, INT,
};

use super::api::{at_call, runtime_error};
use crate::metrics::{log2_slot, log2_slot_f64};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Rhai sources of the stdlib modules, by namespace.
const SOURCES: [(&str, &str); 2] = [
    ("fmt", include_str!("../../../stdlib/fmt.rhai")),
    ("hist", include_str!("../../../stdlib/hist.rhai")),
];

pub(crate) fn register(engine: &mut Engine) {
    for (name, module) in modules() {
        engine.register_static_module(*name, module.clone());
    }
}

fn modules() -> &'static [(&'static str, Shared<Module>)] {
    static MODULES: OnceLock<Vec<(&'static str, Shared<Module>)>> = OnceLock::new();
    MODULES.get_or_init(|| {
        let mut compiler = Engine::new_raw();
        compiler.register_global_module(rhai::packages::StandardPackage::new().as_shared_module());
        compiler.set_max_expr_depths(0, 0);
        let mut out = Vec::new();
        let mut net = Module::new();
        add_net(&mut net);
        net.build_index();
        out.push(("net", net.into()));
        for (name, source) in SOURCES {
            let ast = compiler
                .compile(source)
                .unwrap_or_else(|e| panic!("stdlib/{name}.rhai does not compile: {e}"));
            let mut module = Module::eval_ast_as_new(Scope::new(), &ast, &compiler)
                .unwrap_or_else(|e| panic!("stdlib/{name}.rhai does not evaluate: {e}"));
            if name == "hist" {
                add_hist(&mut module);
            }
            module.build_index();
            out.push((name, module.into()));
        }
        out
    })
}

use rhai::packages::Package as _;

/// Parses an address; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) counts as IPv4.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
        ),
        v4 => Some(v4),
    }
}

fn v4_private(ip: Ipv4Addr) -> bool {
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64
}

fn v6_private(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

fn in_cidr(ip: &str, cidr: &str) -> Res<bool> {
    let bad = || {
        runtime_error(format!(
            "net::in_cidr: `{cidr}` is not a CIDR like \"10.0.0.0/8\" or \"fd00::/8\""
        ))
    };
    let (net, len) = cidr.split_once('/').ok_or_else(bad)?;
    let len: u32 = len.trim().parse().map_err(|_| bad())?;
    let net = parse_ip(net).ok_or_else(bad)?;
    let Some(ip) = parse_ip(ip) else {
        return Ok(false);
    };
    Ok(match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            if len > 32 {
                return Err(bad());
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            if len > 128 {
                return Err(bad());
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    })
}

/// Well-known ports, by the name people use for them.
const PORTS: [(i64, &str); 24] = [
    (22, "ssh"),
    (25, "smtp"),
    (53, "dns"),
    (80, "http"),
    (123, "ntp"),
    (179, "bgp"),
    (443, "https"),
    (2181, "zookeeper"),
    (2379, "etcd"),
    (2380, "etcd-peer"),
    (3306, "mysql"),
    (4789, "vxlan"),
    (5432, "postgresql"),
    (5672, "amqp"),
    (6379, "redis"),
    (6443, "kube-apiserver"),
    (8080, "http-alt"),
    (8443, "https-alt"),
    (9090, "prometheus"),
    (9092, "kafka"),
    (9100, "node-exporter"),
    (10250, "kubelet"),
    (11211, "memcached"),
    (27017, "mongodb"),
];

fn add_net(m: &mut Module) {
    // net::is_private(ip) -> bool: RFC 1918, CGNAT 100.64/10, loopback, link-local,
    // IPv6 ULA fc00::/7 and fe80::/10 (v4-mapped addresses as IPv4). Not an address: false.
    m.set_native_fn("is_private", |ip: &str| -> Res<bool> {
        Ok(match parse_ip(ip) {
            Some(IpAddr::V4(v4)) => v4_private(v4),
            Some(IpAddr::V6(v6)) => v6_private(v6),
            None => false,
        })
    });
    // net::in_cidr(ip, cidr) -> bool: v4 and v6; a malformed CIDR is a runtime error,
    // an address that does not parse is simply not in it.
    m.set_native_fn("in_cidr", |ctx: NativeCallContext, ip: &str, cidr: &str| {
        at_call(&ctx, in_cidr(ip, cidr))
    });
    // net::family(ip) -> "ipv4" | "ipv6" | "" (not an address).
    m.set_native_fn("family", |ip: &str| -> Res<String> {
        Ok(match parse_ip(ip) {
            Some(IpAddr::V4(_)) => "ipv4".into(),
            Some(IpAddr::V6(_)) => "ipv6".into(),
            None => String::new(),
        })
    });
    // net::port_name(port) -> "https" for 443..., else the number as a string.
    m.set_native_fn("port_name", |port: INT| -> Res<String> {
        Ok(PORTS
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| port.to_string()))
    });
    // net::endpoint(ip, port) -> "10.0.0.1:80" / "[fd00::1]:80".
    m.set_native_fn("endpoint", |ip: &str, port: INT| -> Res<String> {
        Ok(match parse_ip(ip) {
            Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            Some(IpAddr::V4(v4)) => format!("{v4}:{port}"),
            None => format!("{ip}:{port}"),
        })
    });
}

fn add_hist(m: &mut Module) {
    // hist::log2_bucket(v) -> slot: 0 for v <= 1, else ceil(log2(v)); slot i holds
    // (2^(i-1), 2^i], as metrics::log2_histogram and the kernel programs count.
    m.set_native_fn("log2_bucket", |v: INT| -> Res<INT> {
        Ok(log2_slot(v.max(0) as u64) as INT)
    });
    m.set_native_fn("log2_bucket", |v: FLOAT| -> Res<INT> {
        Ok(log2_slot_f64(v) as INT)
    });
    // hist::bucket_bounds(i) -> [lo, hi]: slot i holds values v with lo < v <= hi
    // (slot 0: [0, 1]).
    m.set_native_fn("bucket_bounds", |ctx: NativeCallContext, i: INT| {
        at_call(&ctx, bucket_bounds(i))
    });
}

/// `hist::bucket_bounds(i)`.
fn bucket_bounds(i: INT) -> Res<Array> {
    if !(0..=63).contains(&i) {
        return Err(runtime_error(format!(
            "hist::bucket_bounds: slot {i} is not in 0..=63"
        )));
    }
    let hi = 1i128 << i;
    let lo = if i == 0 { 0 } else { hi / 2 };
    let int = |v: i128| {
        i64::try_from(v)
            .map(Dynamic::from_int)
            .unwrap_or_else(|_| Dynamic::from_float(v as f64))
    };
    Ok(vec![int(lo), int(hi)])
}
