fn main() {
    eprintln!("sonde-bench: see bench/README.md");
}
