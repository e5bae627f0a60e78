//! The built-in scripts, embedded in the binary: `scripts/*.rhai`.

/// `(name, source)` of every built-in script.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("tcp_reset", include_str!("../../../scripts/tcp_reset.rhai")),
    (
        "packet_loss",
        include_str!("../../../scripts/packet_loss.rhai"),
    ),
    ("softirq", include_str!("../../../scripts/softirq.rhai")),
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
