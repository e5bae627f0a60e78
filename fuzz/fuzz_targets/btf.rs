//! BTF from an untrusted file, the way the chain takes it, then aya's use of it.
//!
//! The bytes are what `--btf FILE` (or a kernel image in `/boot`, or an archive entry)
//! holds. They go through:
//! - `btf::image::extract`, the in-memory path the embedded archive takes;
//! - `BtfSearch::locate` with the bytes as the explicit file: `image::extract_file`
//!   (ELF read by section, else whole and unwrapped), then the chain's acceptance
//!   (aya's parse, and whatever validation the chain does before it);
//! - on a `KernelBtf`: the name lookups sonde makes (`enum skb_drop_reason`, the
//!   variants' required structs), then CO-RE relocation of every committed object
//!   against it with aya-obj, as `EbpfLoader::load` does before it calls the kernel.
//!   Nothing is loaded into the kernel.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sonde::bpf::catalog::PROGRAMS;
use sonde::btf::{image, raw, BtfSearch, KernelBtf};
use sonde_fuzz::scratch_file;

/// The committed objects, parsed once; each input relocates fresh clones.
fn objects() -> &'static [(&'static str, aya_obj::Object)] {
    static OBJECTS: OnceLock<Vec<(&'static str, aya_obj::Object)>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        PROGRAMS
            .iter()
            .map(|p| {
                let obj = aya_obj::Object::parse(p.object)
                    .unwrap_or_else(|e| panic!("committed object {} does not parse: {e}", p.name));
                (p.name, obj)
            })
            .collect()
    })
}

/// The explicit file (one per process, removed after each input), and an empty root
/// (no os-release, no `/boot`) so the chain looks at nothing of this machine.
fn scratch() -> &'static (PathBuf, PathBuf) {
    static DIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let file = scratch_file("btf", "btf");
        let root = file.with_file_name("empty-root");
        std::fs::create_dir_all(&root).expect("scratch directory");
        (file, root)
    })
}

fn search(file: PathBuf, root: PathBuf) -> BtfSearch {
    BtfSearch {
        explicit: Some(file),
        archive: None,
        sysfs: root.join("no-sysfs-vmlinux"),
        root,
        release: "6.18.0-fuzz".into(),
        machine: "x86_64".into(),
        embedded: &[],
    }
}

/// What sonde does with a kernel BTF short of loading programs.
fn use_btf(btf: &KernelBtf) {
    let _ = btf.to_json();
    let _ = sonde::bpf::drop_reason_names(btf);
    for spec in PROGRAMS {
        for variant in spec.variants {
            for req in variant.requires {
                let _ = sonde::bpf::features::check_require(req, btf);
            }
        }
    }
    for (_, obj) in objects() {
        let mut obj = obj.clone();
        let _ = obj.relocate_btf(btf.aya());
    }
}

fuzz_target!(|data: &[u8]| {
    // Cheap readers of raw bytes, on the input as it is.
    let _ = raw::enum_members(data, "skb_drop_reason");
    let _ = sonde::btf::extract_btf_section(data);
    let _ = image::banner_release(data);
    if data.starts_with(b"\x7fELF") {
        // The chain reads an ELF file by section; the embedded archive path reads
        // it in memory. Anything else takes the same in-memory path in both.
        let _ = image::extract(data);
    }

    let (file, root) = scratch();
    if std::fs::write(file, data).is_err() {
        return;
    }
    let found = search(file.clone(), root.clone()).locate();
    let _ = std::fs::remove_file(file);
    if let Ok(btf) = found {
        use_btf(&btf);
    }
});
