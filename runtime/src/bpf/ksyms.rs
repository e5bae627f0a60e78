//! Kernel symbols from `/proc/kallsyms`, for stacks and code addresses.
//!
//! Loaded once per process, on first need ([`Ksyms::shared`]), into a sorted table of
//! addresses pointing into one string of names (about 16 bytes per symbol plus its
//! name, rather than an allocation per symbol); a lookup is a binary search.
//!
//! ```
//! use sonde::bpf::ksyms::Ksyms;
//! let k = Ksyms::parse("ffffffff81000000 T _stext\nffffffff81000100 t do_one\n");
//! assert_eq!(k.format(0xffffffff81000104), "do_one+0x4");
//! ```

/// Where decoding gets kernel symbols from.
#[derive(Debug, Clone)]
pub enum Symbols {
    /// The running kernel's, read on the first symbol a record asks for (so a program
    /// whose records could carry a symbol costs nothing until one is read).
    Kernel,
    /// A given table (empty, or the symbols saved in a recording).
    Table(std::sync::Arc<Ksyms>),
}

impl Symbols {
    pub fn none() -> Self {
        Symbols::Table(Default::default())
    }

    pub fn get(&self) -> &Ksyms {
        match self {
            Symbols::Kernel => Ksyms::shared(),
            Symbols::Table(t) => t,
        }
    }
}

/// A sorted kernel symbol table.
#[derive(Debug, Default)]
pub struct Ksyms {
    /// `(address, start, end)`: the name is `names[start..end]`.
    syms: Vec<(u64, u32, u32)>,
    names: String,
    /// Addresses already formatted elsewhere (a recording): used as given.
    exact: std::collections::HashMap<u64, Box<str>>,
}

impl Ksyms {
    /// An empty table: every address prints as hex.
    pub fn empty() -> Self {
        Ksyms::default()
    }

    /// The process-wide table, read from `/proc/kallsyms` on first use and shared by
    /// every program (symbols of modules loaded later are not seen).
    pub fn shared() -> &'static Ksyms {
        static SHARED: std::sync::OnceLock<Ksyms> = std::sync::OnceLock::new();
        SHARED.get_or_init(Ksyms::load)
    }

    /// Reads `/proc/kallsyms`. Without root the addresses read as zero and the table
    /// is empty.
    pub fn load() -> Self {
        match std::fs::read_to_string("/proc/kallsyms") {
            Ok(text) => Self::parse(&text),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/kallsyms, stacks print as addresses");
                Self::empty()
            }
        }
    }

    /// Parses kallsyms text: `address type name [module]` per line.
    pub fn parse(text: &str) -> Self {
        let mut names = String::new();
        let mut syms: Vec<(u64, u32, u32)> = text
            .lines()
            .filter_map(|line| {
                let mut it = line.split_ascii_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                if addr == 0 || !matches!(kind, "T" | "t" | "W" | "w") {
                    return None;
                }
                let start = names.len() as u32;
                names.push_str(name);
                Some((addr, start, names.len() as u32))
            })
            .collect();
        syms.sort_unstable_by_key(|(a, _, _)| *a);
        syms.shrink_to_fit();
        names.shrink_to_fit();
        Ksyms {
            syms,
            names,
            exact: Default::default(),
        }
    }

    fn name(&self, start: u32, end: u32) -> &str {
        self.names.get(start as usize..end as usize).unwrap_or("")
    }

    /// A table of addresses formatted by another system, for replaying records.
    pub fn from_exact(exact: impl IntoIterator<Item = (u64, String)>) -> Self {
        Ksyms {
            syms: Vec::new(),
            names: String::new(),
            exact: exact
                .into_iter()
                .map(|(a, s)| (a, s.into_boxed_str()))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// Whether a kernel function of this exact name exists (a linear scan: for the
    /// few checks made before attaching kprobes, not for the per-event path).
    pub fn has_function(&self, name: &str) -> bool {
        self.syms.iter().any(|(_, s, e)| self.name(*s, *e) == name)
    }

    /// The symbol containing `addr` and the offset into it.
    pub fn resolve(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|(a, _, _)| *a <= addr);
        let (start, s, e) = self.syms.get(i.checked_sub(1)?)?;
        Some((self.name(*s, *e), addr - start))
    }

    /// `sym+0xoff`, or `0xaddr` when unknown.
    pub fn format(&self, addr: u64) -> String {
        if let Some(s) = self.exact.get(&addr) {
            return s.to_string();
        }
        match self.resolve(addr) {
            Some((name, off)) => format!("{name}+0x{off:x}"),
            None => format!("0x{addr:x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_skips_data_symbols() {
        let k = Ksyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t do_one\nffffffff82000000 D data\n",
        );
        assert_eq!(k.len(), 2);
        assert_eq!(k.resolve(0xffffffff810000ff), Some(("_stext", 0xff)));
        assert_eq!(k.format(0x10), "0x10");
        assert!(k.has_function("do_one"));
        assert!(!k.has_function("data"));
    }
}
