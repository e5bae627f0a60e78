//! The kernel program catalog, read from the objects: every
//! `kernel-progs/obj/<arch>/<stem>.bpf.o` is one program, described by the
//! declarations its source writes into the object's `.sonde.catalog` section
//! (`SONDE_PROGRAM`, `SONDE_VARIANT`, ... in `kernel-progs/include/sonde.h`) and
//! by the `SEC()` name of each of its programs (the hook). Generates
//! `$OUT_DIR/catalog.rs` (the `PROGRAMS` table with the objects embedded) and
//! `$OUT_DIR/c_sources.rs` (each program's `.h` and `.bpf.c`, for the field
//! reference). A declaration that does not match the object fails the build,
//! naming the source to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// The section the `SONDE_*` catalog macros write to.
const SECTION: &str = ".sonde.catalog";

/// The kernel-progs architecture directory of a Rust target architecture (the
/// names of the kernel's `arch/` and of libbpf's `__TARGET_ARCH_*`).
fn kernel_arch(target_arch: &str) -> &str {
    match target_arch {
        "x86_64" | "x86" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "powerpc64" => "powerpc",
        "loongarch64" => "loongarch",
        other => other,
    }
}

struct Program {
    stem: String,
    object: PathBuf,
    summary: String,
    variants: Vec<Variant>,
}

struct Variant {
    name: String,
    summary: String,
    attach: Vec<(String, String)>,
    requires: Vec<String>,
    knobs: Vec<(String, bool)>,
}

/// Writes the generated files; `root` is the repository.
pub fn generate(root: &Path, out_dir: &Path) {
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let arch = kernel_arch(&target_arch);
    let dir = root.join("kernel-progs/obj").join(arch);
    let src = root.join("kernel-progs/src");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed={}", src.display());
    let mut objects: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".bpf.o"))
                .collect()
        })
        .unwrap_or_default();
    objects.sort();
    if objects.is_empty() {
        println!(
            "cargo:warning=no kernel objects in {} (target {target_arch}): sonde builds with no kernel programs",
            dir.display()
        );
    }
    let programs: Vec<Program> = objects
        .iter()
        .map(|path| {
            println!("cargo:rerun-if-changed={}", path.display());
            read_program(path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (declared in kernel-progs/src/{}.bpf.c, see kernel-progs/include/sonde.h)",
                    path.display(),
                    stem_of(path)
                )
            })
        })
        .collect();
    std::fs::write(out_dir.join("catalog.rs"), catalog_rs(&programs)).expect("write catalog.rs");
    std::fs::write(out_dir.join("c_sources.rs"), c_sources_rs(&programs, &src))
        .expect("write c_sources.rs");
}

fn stem_of(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.trim_end_matches(".bpf.o").to_string()
}

fn read_program(path: &Path) -> Result<Program, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let file = object::File::parse(&*data).map_err(|e| format!("not an ELF object: {e}"))?;
    // Every program: function symbol -> its section name (the hook).
    let mut sections = BTreeMap::new();
    for sym in file.symbols().filter(|s| s.kind() == SymbolKind::Text) {
        let Some(index) = sym.section_index() else {
            continue;
        };
        let section = file.section_by_index(index).map_err(|e| e.to_string())?;
        let section = section.name().map_err(|e| e.to_string())?;
        if section == ".text" {
            continue; // a BPF-to-BPF function, not a program
        }
        let name = sym.name().map_err(|e| e.to_string())?;
        sections.insert(name.to_string(), section.to_string());
    }
    let rodata: BTreeSet<String> = file
        .symbols()
        .filter(|s| {
            s.section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .and_then(|sec| sec.name().ok().map(|n| n.starts_with(".rodata")))
                .unwrap_or(false)
        })
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect();
    let raw = file
        .section_by_name(SECTION)
        .ok_or_else(|| {
            format!(
                "no {SECTION} section: declare the program with SONDE_PROGRAM and SONDE_VARIANT"
            )
        })?
        .data()
        .map_err(|e| e.to_string())?;

    let mut summary = None;
    let mut variants: Vec<Variant> = Vec::new();
    for entry in raw.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry =
            std::str::from_utf8(entry).map_err(|_| "a declaration is not UTF-8".to_string())?;
        let fields: Vec<&str> = entry.split('\n').collect();
        let variant_mut = |variants: &mut Vec<Variant>, name: &str| -> Result<usize, String> {
            variants.iter().position(|v| v.name == name).ok_or_else(|| {
                format!("`{entry}` names variant `{name}`, not declared before it by SONDE_VARIANT")
            })
        };
        match fields.as_slice() {
            ["program", text] => {
                if summary.replace(text.to_string()).is_some() {
                    return Err("SONDE_PROGRAM appears twice".into());
                }
            }
            ["variant", name, programs, text] => {
                if variants.iter().any(|v| v.name == *name) {
                    return Err(format!("variant `{name}` is declared twice"));
                }
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(format!("variant name `{name}`: expected one word"));
                }
                let mut attach = Vec::new();
                for program in programs.split_whitespace() {
                    let section = sections.get(program).ok_or_else(|| {
                        format!(
                            "variant `{name}` attaches `{program}`, which is not a program of the object (programs: {})",
                            sections.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })?;
                    attach.push((
                        program.to_string(),
                        hook(section).map_err(|e| format!("program `{program}`: {e}"))?,
                    ));
                }
                if attach.is_empty() {
                    return Err(format!("variant `{name}` attaches no program"));
                }
                variants.push(Variant {
                    name: name.to_string(),
                    summary: text.to_string(),
                    attach,
                    requires: Vec::new(),
                    knobs: Vec::new(),
                });
            }
            ["require", variant, kind, kernel_struct, why] => {
                let i = variant_mut(&mut variants, variant)?;
                let require = match *kind {
                    "kernel_struct" => format!("Require::KernelStruct({kernel_struct:?}, {why:?})"),
                    "no_kernel_struct" => {
                        format!("Require::NoKernelStruct({kernel_struct:?}, {why:?})")
                    }
                    "kernel_field" => {
                        let Some((name, field)) = kernel_struct.split_once('.') else {
                            return Err(format!(
                                "requirement `{kernel_struct}`: expected struct.member"
                            ));
                        };
                        format!("Require::KernelField({name:?}, {field:?}, {why:?})")
                    }
                    other => return Err(format!("unknown requirement `{other}`")),
                };
                variants[i].requires.push(require);
            }
            ["knob", variant, knob, value] => {
                let i = variant_mut(&mut variants, variant)?;
                if !rodata.contains(*knob) {
                    return Err(format!(
                        "variant `{variant}` forces knob `{knob}`, which is not a `const volatile` global of the object"
                    ));
                }
                let value = match *value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(format!(
                            "knob `{knob}`: expected true or false, got `{other}`"
                        ))
                    }
                };
                variants[i].knobs.push((knob.to_string(), value));
            }
            _ => {
                return Err(format!(
                    "unknown declaration `{}`",
                    entry.replace('\n', " | ")
                ))
            }
        }
    }
    let summary = summary.ok_or("no SONDE_PROGRAM summary")?;
    if variants.is_empty() {
        return Err("no SONDE_VARIANT: a program needs at least one".into());
    }
    let attached: BTreeSet<&str> = variants
        .iter()
        .flat_map(|v| v.attach.iter().map(|(p, _)| p.as_str()))
        .collect();
    if let Some(orphan) = sections.keys().find(|p| !attached.contains(p.as_str())) {
        return Err(format!("program `{orphan}` is in no SONDE_VARIANT"));
    }
    Ok(Program {
        stem: stem_of(path),
        object: path.to_path_buf(),
        summary,
        variants,
    })
}

/// The `Hook` expression of a program section name.
fn hook(section: &str) -> Result<String, String> {
    let parts: Vec<&str> = section.split('/').collect();
    Ok(match parts.as_slice() {
        ["tracepoint" | "tp", category, name] => {
            format!("Hook::Tracepoint {{ category: {category:?}, name: {name:?} }}")
        }
        ["raw_tp" | "raw_tracepoint", name] => format!("Hook::RawTracepoint {{ name: {name:?} }}"),
        ["tp_btf", name] => format!("Hook::BtfTracepoint {{ name: {name:?} }}"),
        ["kprobe", function] => format!("Hook::Kprobe {{ function: {function:?} }}"),
        ["kretprobe", function] => format!("Hook::Kretprobe {{ function: {function:?} }}"),
        ["classifier", "ingress"] => "Hook::Tc { direction: TcDirection::Ingress }".into(),
        ["classifier", "egress"] => "Hook::Tc { direction: TcDirection::Egress }".into(),
        _ => {
            return Err(format!(
                "section `{section}` is no hook sonde attaches (tracepoint/<category>/<event>, raw_tp/<event>, tp_btf/<event>, kprobe/<fn>, kretprobe/<fn>, classifier/ingress, classifier/egress)"
            ))
        }
    })
}

fn catalog_rs(programs: &[Program]) -> String {
    let mut out =
        String::from("// Generated by runtime/build/catalog.rs from kernel-progs/obj/<arch>/.\n\n");
    for p in programs {
        writeln!(
            out,
            "static OBJ_{}: &[u8] = aya::include_bytes_aligned!({:?});",
            p.stem.to_uppercase(),
            p.object
                .canonicalize()
                .unwrap_or_else(|_| p.object.clone())
                .display()
                .to_string()
        )
        .unwrap();
    }
    out.push_str(
        "\n/// Every built-in program, by name.\npub static PROGRAMS: &[ProgramSpec] = &[\n",
    );
    for p in programs {
        writeln!(out, "    ProgramSpec {{\n        name: {:?},\n        summary: {:?},\n        object: OBJ_{},\n        variants: &[", p.stem, p.summary, p.stem.to_uppercase()).unwrap();
        for v in &p.variants {
            writeln!(out, "            Variant {{\n                name: {:?},\n                summary: {:?},\n                attach: &[", v.name, v.summary).unwrap();
            for (program, hook) in &v.attach {
                writeln!(
                    out,
                    "                    Attach {{ program: {program:?}, hook: {hook} }},"
                )
                .unwrap();
            }
            out.push_str("                ],\n                requires: &[");
            out.push_str(&v.requires.join(", "));
            out.push_str("],\n                knobs: &[");
            let knobs: Vec<String> = v
                .knobs
                .iter()
                .map(|(k, b)| format!("({k:?}, {b})"))
                .collect();
            out.push_str(&knobs.join(", "));
            out.push_str("],\n            },\n");
        }
        out.push_str("        ],\n    },\n");
    }
    out.push_str("];\n");
    out
}

fn c_sources_rs(programs: &[Program], src: &Path) -> String {
    let mut out = String::from(
        "// Generated by runtime/build/catalog.rs: each program's header and source, by stem.\n\
         pub(super) const SOURCES: &[(&str, &str, &str)] = &[\n",
    );
    for p in programs {
        let h = src.join(format!("{}.h", p.stem));
        let c = src.join(format!("{}.bpf.c", p.stem));
        for f in [&h, &c] {
            println!("cargo:rerun-if-changed={}", f.display());
            if !f.is_file() {
                panic!(
                    "{}: missing, the source of {}",
                    f.display(),
                    p.object.display()
                );
            }
        }
        let abs = |f: &Path| {
            f.canonicalize()
                .unwrap_or_else(|_| f.to_path_buf())
                .display()
                .to_string()
        };
        writeln!(
            out,
            "    ({:?}, include_str!({:?}), include_str!({:?})),",
            p.stem,
            abs(&h),
            abs(&c)
        )
        .unwrap();
    }
    out.push_str("];\n");
    out
}
