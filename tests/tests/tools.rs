//! Every program a test, a bench helper or a guest step runs comes from a package that
//! `tests/run-all.sh` installs, or from the base system of a fresh machine.
//!
//! A green run on a machine where a tool was installed by hand hides the missing install
//! step until CI runs on a fresh machine. This test finds the programs the suite runs
//! (`Command::new("…")`, the helpers that wrap it, `which("…")`, and the commands of the
//! shell scripts and Makefile recipes the suite calls), resolves each on `PATH` and asks
//! dpkg which package owns it. It fails, naming the program and where it is run, when
//! that package is neither in the `packages=(…)` list of `tests/run-all.sh` nor in
//! [`BASE`].
//!
//! A `Command::new` whose program is not a literal, and is not a parameter of the helper
//! it is in, needs a `// runs: NAME…` comment on one of the three lines above it (or on
//! the same line), unless it runs sonde itself or cargo. Such a comment anywhere names
//! programs run in ways the scan does not follow (argv built in a `vec!`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use sonde_tests::repo_root;

/// Packages of Debian's base system that a fresh machine of this project has (its
/// stock image). A tool from one of these needs no install step.
const BASE: &[&str] = &[
    "apt",
    "bash",
    "binutils",
    "bsdutils",
    "coreutils",
    "dash",
    "debianutils",
    "diffutils",
    "dpkg",
    "findutils",
    "grep",
    "gzip",
    "iproute2",
    "libc-bin",
    "mawk",
    "mount",
    "procps",
    "python3-minimal",
    "sed",
    "tar",
    "util-linux",
];

/// Programs that come with the machine's toolchain rather than from a Debian package.
/// (`cargo fuzz` is cargo's: tests/run-all.sh installs cargo-fuzz with cargo.)
const TOOLCHAIN: &[&str] = &["cargo", "rustc", "rustup", "git"];

/// Names looked up only as an alternative to another that is installed (the bench tries
/// Debian's `prometheus-node-exporter` first, then the upstream binary's name).
const ALTERNATIVES: &[&str] = &["node_exporter"];

/// Shell words that are not programs: keywords, builtins.
const SHELL_WORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "case",
    "esac", "function", "return", "exit", "local", "export", "set", "shift", "exec", "eval",
    "echo", "printf", "read", "cd", "trap", "test", "true", "false", "wait", "break", "continue",
    "unset", "declare", "readonly", "source", "command", "compgen", "type", "builtin", "let",
    "time", "shopt", "umask", "mapfile", "pushd", "popd", "kill", "ulimit", "hash", "getopts",
    "alias", "jobs", "disown",
];

#[derive(Debug)]
struct Use {
    program: String,
    at: String,
}

#[test]
fn every_external_program_comes_from_a_listed_package() {
    let root = repo_root();
    let listed = run_all_packages(&root);
    assert!(
        listed.contains("clang") && listed.contains("iproute2"),
        "could not read the packages=(…) list of tests/run-all.sh: {listed:?}"
    );
    let mut uses = Vec::new();
    let mut problems = Vec::new();
    for dir in ["runtime/src", "tests/src", "tests/tests", "bench/src"] {
        for f in files(&root.join(dir), &|p| {
            p.extension().is_some_and(|e| e == "rs")
        }) {
            rust_uses(&root, &f, &mut uses, &mut problems);
        }
    }
    // Scripts and recipes the suite runs on this machine. tests/guest/init and
    // tests/guest/driver run inside the guest, on busybox's applets.
    for f in [
        "tests/run-all.sh",
        ".ci/run",
        "tests/guest/run",
        "tests/guest/fetch-kernels",
        "tests/guest/mkinitramfs",
        "packaging/image/build",
        "fuzz/smoke",
    ] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        shell_uses(f, &text, &mut uses);
    }
    for f in ["kernel-progs/Makefile", "btfhub/Makefile"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        // Variables holding a program (`CLANG ?= clang`) stand for it in the recipes.
        let vars: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                let k = k.trim_end_matches(['?', ':', ' ']);
                let v = v.trim();
                (k.chars().all(|c| c.is_ascii_uppercase() || c == '_') && is_word(v))
                    .then(|| (format!("$({k})"), v.to_string()))
            })
            .chain([("$(MAKE)".to_string(), "make".to_string())])
            .collect();
        let recipes: String = text
            .lines()
            .map(|l| l.strip_prefix('\t').unwrap_or(""))
            .map(|l| {
                let mut l = l.replace("$$", "$").replace('@', "");
                for (k, v) in &vars {
                    l = l.replace(k, v);
                }
                l + "\n"
            })
            .collect();
        shell_uses(f, &recipes, &mut uses);
    }
    assert!(
        uses.iter().any(|u| u.program == "pahole") && uses.iter().any(|u| u.program == "ctr"),
        "the scan missed programs it must find: {uses:?}"
    );

    let mut by_program: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for u in &uses {
        by_program.entry(&u.program).or_default().push(&u.at);
    }
    for (program, at) in &by_program {
        if TOOLCHAIN.contains(program) || program.starts_with("sonde") {
            continue;
        }
        let where_ = at.first().unwrap();
        let Some(path) = resolve(program) else {
            if ALTERNATIVES.contains(program) {
                continue;
            }
            problems.push(format!(
                "{program} (run at {where_}) is not installed: add the Debian package that \
                 provides it to packages=(…) in tests/run-all.sh"
            ));
            continue;
        };
        match owner(&path) {
            Some(pkg) if listed.contains(&pkg) || BASE.contains(&pkg.as_str()) => {}
            Some(pkg) => problems.push(format!(
                "{program} ({}, package {pkg}) is run at {where_} but {pkg} is not in \
                 packages=(…) in tests/run-all.sh: add it",
                path.display()
            )),
            None => problems.push(format!(
                "{program} ({}) is run at {where_} but no Debian package owns it: install it \
                 from a package listed in tests/run-all.sh",
                path.display()
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    eprintln!(
        "{} programs checked: {}",
        by_program.len(),
        by_program.keys().copied().collect::<Vec<_>>().join(" ")
    );
}

/// The words of the `packages=(…)` array in tests/run-all.sh.
fn run_all_packages(root: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root.join("tests/run-all.sh")).unwrap();
    let start = text
        .find("\npackages=(")
        .expect("packages=( in tests/run-all.sh")
        + 11;
    let end = start + text[start..].find(')').unwrap();
    text[start..end]
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

fn files(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, keep));
        } else if keep(&p) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The first string literal at the start of `s` (after `&`, `[` and spaces).
fn leading_literal(s: &str) -> Option<&str> {
    let s = s.trim_start_matches(['&', '[', ' ', '\n']);
    let rest = s.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

fn rust_uses(root: &Path, file: &Path, uses: &mut Vec<Use>, problems: &mut Vec<String>) {
    let rel = file.strip_prefix(root).unwrap().display().to_string();
    let text = std::fs::read_to_string(file).unwrap();
    if rel.ends_with("tests/tools.rs") {
        return; // this file names programs in its messages only
    }
    let lines: Vec<&str> = text.lines().collect();
    let line_of = |off: usize| text[..off].matches('\n').count();
    let fns = functions(&text);
    // Helpers that run one of their parameters (as a program, or as argv with the
    // program first), by name and parameter index; their call sites name the program.
    let mut wrappers: BTreeMap<String, usize> = BTreeMap::from([("which".to_string(), 0)]);
    for (off, _) in text.match_indices("Command::new(") {
        let line = line_of(off);
        let at = format!("{rel}:{}", line + 1);
        let arg = &text[off + 13..];
        if let Some(lit) = leading_literal(arg) {
            uses.push(Use {
                program: lit.to_string(),
                at,
            });
            continue;
        }
        let expr = &arg[..arg.find(')').unwrap_or(0)];
        if ["sonde", "CARGO", "cargo", "guest_dir(", "current_exe("]
            .iter()
            .any(|own| expr.contains(own))
        {
            continue;
        }
        if lines[line.saturating_sub(3)..=line]
            .iter()
            .any(|l| l.contains("// runs:"))
        {
            continue; // named by the comment, read below
        }
        let param = expr.split('[').next().unwrap().trim();
        match fns
            .iter()
            .filter(|f| f.body.contains(&off))
            .min_by_key(|f| f.body.len())
            .and_then(|f| Some((f, f.params.iter().position(|p| p == param)?)))
        {
            Some((f, i)) => {
                wrappers.insert(f.name.clone(), i);
            }
            None => problems.push(format!(
                "{at}: Command::new({expr}) runs a program this check cannot name: add a \
                 `// runs: PROGRAM` comment above it"
            )),
        }
    }
    // `// runs: NAME…` names programs run through an expression or a helper this
    // check does not follow.
    for (n, l) in lines.iter().enumerate() {
        for p in l.split("// runs:").skip(1).flat_map(str::split_whitespace) {
            uses.push(Use {
                program: p.to_string(),
                at: format!("{rel}:{}", n + 1),
            });
        }
    }
    // A helper that hands its parameter to a wrapper is one too (`tool(ns, args)`
    // calling `sh(args)`).
    loop {
        let mut found = Vec::new();
        for f in &fns {
            if wrappers.contains_key(&f.name) {
                continue;
            }
            for (name, &i) in &wrappers {
                for args in calls(&text[f.body.clone()], name) {
                    let arg = args.get(i).map(|a| a.trim_start_matches('&').trim());
                    if let Some(j) = f.params.iter().position(|p| Some(p.as_str()) == arg) {
                        found.push((f.name.clone(), j));
                    }
                }
            }
        }
        if found.is_empty() {
            break;
        }
        wrappers.extend(found);
    }
    for (name, &i) in &wrappers {
        for (off, _) in text.match_indices(&format!("{name}(")) {
            let before = text[..off].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                || text[..off].ends_with("fn ")
            {
                continue; // another name ending the same way, or the definition
            }
            let Some(args) = split_args(&text[off + name.len() + 1..]) else {
                continue;
            };
            if let Some(lit) = args.get(i).and_then(|a| leading_literal(a)) {
                uses.push(Use {
                    program: lit.to_string(),
                    at: format!("{rel}:{}", line_of(off) + 1),
                });
            }
        }
    }
}

/// A function or closure of a source file: its name, parameter names and body.
struct Function {
    name: String,
    params: Vec<String>,
    body: std::ops::Range<usize>,
}

/// `fn NAME(…) … {…}` and `let NAME = |…| {…}` in `text`.
fn functions(text: &str) -> Vec<Function> {
    let mut out = Vec::new();
    for (off, _) in text.match_indices("fn ") {
        let sig = &text[off + 3..];
        let Some(open) = sig.find('(') else { continue };
        let name = &sig[..open];
        if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(args) = split_args(&sig[open + 1..]) else {
            continue;
        };
        let Some(brace) = sig.find('{') else { continue };
        let start = off + 3 + brace;
        out.push(Function {
            name: name.to_string(),
            params: args.iter().map(|a| param_name(a)).collect(),
            body: start..start + block_len(&text[start..]),
        });
    }
    for (off, _) in text.match_indices("= |") {
        let Some(let_) = text[..off].rfind("let ") else {
            continue;
        };
        let name = text[let_ + 4..off].trim();
        if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let sig = &text[off + 3..];
        let Some(close) = sig.find('|') else { continue };
        let params = sig[..close].split(',').map(param_name).collect();
        let start = off + 3 + close;
        let end = text[start..].find(";\n").map_or(text.len(), |e| start + e);
        out.push(Function {
            name: name.to_string(),
            params,
            body: start..end,
        });
    }
    out
}

fn param_name(p: &str) -> String {
    p.split(':')
        .next()
        .unwrap()
        .trim()
        .trim_start_matches("mut ")
        .to_string()
}

/// The length of the `{…}` block `s` starts with.
fn block_len(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// The arguments of each call `name(…)` in `s`.
fn calls<'a>(s: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    s.match_indices(&format!("{name}("))
        .filter(|(off, _)| {
            !s[..*off]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .filter_map(|(off, _)| split_args(&s[off + name.len() + 1..]))
        .collect()
}

/// The top-level comma-separated arguments up to the `)` that closes the list `s`
/// starts inside of.
fn split_args(s: &str) -> Option<Vec<&str>> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut out = Vec::new();
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        if in_str {
            in_str = !(c == '"' && prev != '\\');
        } else {
            match c {
                '"' => in_str = true,
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' if depth > 0 => depth -= 1,
                ')' => {
                    out.push(s[start..i].trim());
                    return Some(out.into_iter().filter(|a| !a.is_empty()).collect());
                }
                ',' if depth == 0 => {
                    out.push(s[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        prev = c;
    }
    None
}

/// The commands of a shell script: the first word of each simple command, leaving out
/// keywords, builtins, assignments, the script's own functions and variables.
fn shell_uses(file: &str, text: &str, uses: &mut Vec<Use>) {
    let functions: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let name = l.split("()").next()?;
            (l.contains("()") && is_word(name)).then(|| name.to_string())
        })
        .collect();
    let mut continued = false;
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        let starts_command = !continued;
        continued = line.trim_end().ends_with('\\');
        let mut segments = vec![];
        // A line that continues the one before starts with arguments, not a command.
        let mut rest = line.as_str();
        if !starts_command {
            match rest.find(['|', ';', '&']) {
                Some(i) => rest = &rest[i..],
                None => continue,
            }
        }
        let mut cur = String::new();
        let mut quote: Option<char> = None;
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && quote != Some('\'') {
                // ${…} and $((…)) expand to words, $(…) runs a command.
                match chars.peek() {
                    Some('{') => {
                        chars.by_ref().find(|&c| c == '}');
                        cur.push('V');
                        continue;
                    }
                    Some('(') => {
                        chars.next();
                        if chars.peek() == Some(&'(') {
                            chars.by_ref().find(|&c| c == ')');
                            chars.next();
                            cur.push('V');
                        } else {
                            segments.push(std::mem::take(&mut cur));
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            match (quote, c) {
                (Some('\''), '\'') => quote = None,
                (Some('\''), _) => {}
                (Some('"'), '"') => quote = None,
                (Some('"'), _) => cur.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    cur.push('Q');
                }
                (None, '|' | ';' | '&' | '(' | '`' | '{' | '}' | ')') => {
                    segments.push(std::mem::take(&mut cur));
                }
                (None, _) => cur.push(c),
                _ => {}
            }
        }
        segments.push(cur);
        for seg in segments {
            let mut words = seg.split_whitespace().peekable();
            while let Some(&w) = words.peek() {
                let assignment = w.contains('=') && is_word(w.split('=').next().unwrap());
                if assignment
                    || [
                        "!", "if", "then", "else", "elif", "do", "while", "until", "exec",
                        "command", "time",
                    ]
                    .contains(&w)
                {
                    words.next();
                } else {
                    break;
                }
            }
            let Some(w) = words.next() else { continue };
            if is_word(w) && !SHELL_WORDS.contains(&w) && !functions.contains(w) {
                uses.push(Use {
                    program: w.to_string(),
                    at: format!("{file}:{}", n + 1),
                });
            }
        }
    }
}

fn strip_comment(line: &str) -> String {
    let t = line.trim_start();
    if t.starts_with('#') {
        return String::new();
    }
    match line.find(" #") {
        Some(i) if !line[..i].contains(['\'', '"']) => line[..i].to_string(),
        _ => line.to_string(),
    }
}

/// A program name as a script writes one: lowercase letters, digits, `-`, `_`, `.`, `+`.
fn is_word(w: &str) -> bool {
    w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && w.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.+".contains(c))
}

/// The file `PATH` runs for `program` (or `program` itself when it is a path).
fn resolve(program: &str) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Path::new(program).exists().then(|| program.into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    // Root's PATH has the sbin directories; a test run by another user may not.
    let dirs = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
    for d in dirs {
        let p = Path::new(d).join(program);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// The Debian package that owns `path`, trying the path as written, its target, and
/// the other half of the merged /usr (a package may own /bin/x while PATH finds /usr/bin/x).
fn owner(path: &Path) -> Option<String> {
    let mut candidates = vec![path.to_path_buf()];
    if let Ok(c) = path.canonicalize() {
        candidates.push(c);
    }
    for c in candidates.clone() {
        let s = c.display().to_string();
        if let Some(r) = s.strip_prefix("/usr") {
            candidates.push(r.into());
        } else {
            candidates.push(format!("/usr{s}").into());
        }
    }
    for c in candidates {
        let Ok(out) = Command::new("dpkg").arg("-S").arg(&c).output() else {
            panic!("dpkg is not runnable: this check needs a Debian machine");
        };
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| !l.starts_with("diversion")) {
            let pkg = line
                .split(':')
                .next()
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .trim();
            return Some(pkg.to_string());
        }
    }
    None
}
