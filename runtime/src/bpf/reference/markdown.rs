//! The reference as Markdown: `docs/probes-reference.md`.

use super::{FieldRef, ProgramRef};

/// The reference as Markdown: `docs/probes-reference.md`.
pub fn markdown(programs: &[ProgramRef]) -> String {
    let mut out = String::from(MARKDOWN_HEAD);
    out.push('\n');
    for p in programs {
        out.push_str(&format!("- [{0}](#{0})\n", p.program));
    }
    for p in programs {
        out.push_str(&format!("\n## {}\n\n{}\n", p.program, p.summary));
        for r in &p.records {
            out.push_str(&format!(
                "\n### Record `{}` (`struct {}`): `on_event(ev)`\n\n",
                r.map, r.ty
            ));
            paragraph(&mut out, &r.about);
            markdown_table(&mut out, &r.fields);
        }
        for m in &p.maps {
            out.push_str(&format!("\n### Map `{}`: {}\n\n", m.name, m.summary()));
            paragraph(&mut out, &m.about);
            if let Some(r) = &m.record {
                out.push_str(&format!("Carries the `struct {r}` records above.\n"));
                continue;
            }
            match (&m.key, &m.value) {
                (Some(k), Some(v)) => {
                    out.push_str(&format!("Key `{}`{}\n\n", k.ty, colon(&k.about)));
                    markdown_table(&mut out, &k.fields);
                    out.push_str(&format!("\nValue `{}`{}\n\n", v.ty, colon(&v.about)));
                    markdown_table(&mut out, &v.fields);
                }
                _ => out.push_str(&format!("{}.\n", capitalized(m.undecoded()))),
            }
        }
    }
    out
}

const MARKDOWN_HEAD: &str = "\
# Kernel programs: what a script gets

Generated from the embedded objects and their C sources by
`sonde probes --fields all --markdown > docs/probes-reference.md`; a test fails
when this file and the objects disagree. Units are those of the C headers'
trailing `/* [unit] ... */` comments (see `kernel-progs/README.md`).

A record's fields are read as `ev.<field>` in `on_event(ev)`; a map's entries
with `bpf::map(\"<map>\")`, an array of `#{key, value}` (struct keys and values
as maps of their fields; per-CPU values summed over the CPUs).
";

/// `about` as a paragraph of its own, when there is one.
fn paragraph(out: &mut String, about: &str) {
    if !about.is_empty() {
        out.push_str(about);
        out.push_str("\n\n");
    }
}

/// `: about`, or `:` alone.
fn colon(about: &str) -> String {
    if about.is_empty() {
        ":".into()
    } else {
        format!(": {about}")
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn markdown_table(out: &mut String, fields: &[FieldRef]) {
    out.push_str("| field | type | unit | about |\n|---|---|---|---|\n");
    for f in fields {
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.name,
            cell(&f.ty),
            cell(f.unit.as_deref().unwrap_or("(not documented)")),
            cell(&f.about)
        ));
    }
}
