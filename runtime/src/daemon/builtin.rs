//! The built-in scripts, embedded in the binary: `scripts/*.rhai`.

/// `(name, source)` of every built-in script.
pub const SCRIPTS: &[(&str, &str)] = &[
    // procfs and netlink sources (no kernel program).
    ("netdev", include_str!("../../../scripts/netdev.rhai")),
    ("snmp", include_str!("../../../scripts/snmp.rhai")),
    ("tcpext", include_str!("../../../scripts/tcpext.rhai")),
    ("sock", include_str!("../../../scripts/sock.rhai")),
    ("softnet", include_str!("../../../scripts/softnet.rhai")),
    (
        "tcpsummary",
        include_str!("../../../scripts/tcpsummary.rhai"),
    ),
    ("conntrack", include_str!("../../../scripts/conntrack.rhai")),
    ("qdisc", include_str!("../../../scripts/qdisc.rhai")),
    ("ipvs", include_str!("../../../scripts/ipvs.rhai")),
    ("fd", include_str!("../../../scripts/fd.rhai")),
    ("io", include_str!("../../../scripts/io.rhai")),
    ("tcp_reset", include_str!("../../../scripts/tcp_reset.rhai")),
    (
        "packet_loss",
        include_str!("../../../scripts/packet_loss.rhai"),
    ),
    (
        "tcp_retrans",
        include_str!("../../../scripts/tcp_retrans.rhai"),
    ),
    ("tcp_state", include_str!("../../../scripts/tcp_state.rhai")),
    ("softirq", include_str!("../../../scripts/softirq.rhai")),
    ("flow", include_str!("../../../scripts/flow.rhai")),
    (
        "virtcmd_latency",
        include_str!("../../../scripts/virtcmd_latency.rhai"),
    ),
    (
        "bio_latency",
        include_str!("../../../scripts/bio_latency.rhai"),
    ),
    (
        "socket_latency",
        include_str!("../../../scripts/socket_latency.rhai"),
    ),
    (
        "sock_pressure",
        include_str!("../../../scripts/sock_pressure.rhai"),
    ),
    (
        "netif_txlat",
        include_str!("../../../scripts/netif_txlat.rhai"),
    ),
    (
        "kernel_latency",
        include_str!("../../../scripts/kernel_latency.rhai"),
    ),
];

/// The source of a built-in script.
pub fn find(name: &str) -> Option<&'static str> {
    SCRIPTS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Names of the built-in scripts.
pub fn names() -> Vec<&'static str> {
    SCRIPTS.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    /// Every script in `scripts/` is built in, so the daemon's default runs them all.
    #[test]
    fn every_script_file_is_built_in() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "rhai")
                    .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        files.sort();
        let mut names = super::names();
        names.sort();
        assert_eq!(files, names);
    }
}
