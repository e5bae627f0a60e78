/// jemalloc, for its arenas: each script allocates in one of its own, whose live bytes
/// are its memory (`sonde::memory`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sonde::cli::main()
}
