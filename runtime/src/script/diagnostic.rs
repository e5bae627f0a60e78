//! How a script's mistakes read: where they are (file:line:column) and what they
//! say, for every path that reports them (`sonde run`, `sonde check`, the daemon's
//! log and `/status`).
//!
//! Rhai hands an error out of a function with the position of the call; for a
//! limit (operations, sizes, call depth) or a failing `module::` call that is all
//! the position there is, and a handler's call has none. [`fn_offset`] finds the
//! handler's own line for those.
//!
//! ```text
//! on_tick: x.rhai:3:1: stopped: a string grew past 65536 bytes (limits.max_string_size)
//! x.rhai:3:5: PROBE: program: unknown kernel program `tcp_resets` (did you mean `tcp_reset`?); ...
//! ```

use rhai::{EvalAltResult, Position};

use super::engine::{DEADLINE_TOKEN, MEMORY_TOKEN, STACK_TOKEN};
use super::Limits;

/// Where `fn name` is declared (byte offset): `fn`, blanks, the name, then `(`.
pub(crate) fn fn_offset(source: &str, name: &str) -> Option<usize> {
    source.match_indices("fn").find_map(|(i, _)| {
        let word_start = source[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let rest = source[i + 2..].strip_prefix(|c: char| c.is_whitespace())?;
        let rest = rest.trim_start().strip_prefix(name)?;
        (word_start && rest.trim_start().starts_with('(')).then_some(i)
    })
}

/// The position nearest to where `e` happened: its own, else that of the innermost
/// call around it (the call site of the function it happened in).
pub(crate) fn position_of(e: &EvalAltResult) -> Position {
    let mut best = Position::NONE;
    let mut cur = e;
    loop {
        if !cur.position().is_none() {
            best = cur.position();
        }
        match cur {
            EvalAltResult::ErrorInFunctionCall(.., inner, _)
            | EvalAltResult::ErrorInModule(.., inner, _) => cur = inner,
            _ => return best,
        }
    }
}

/// What the innermost cause of `e` says, without Rhai's own position suffix.
pub(crate) fn message_of(e: &EvalAltResult, limits: &Limits) -> String {
    match e.unwrap_inner() {
        EvalAltResult::ErrorTooManyOperations(..) => format!(
            "stopped: more than {} operations in one call (limits.max_operations); does a loop never end?",
            limits.max_operations
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => match what.as_str() {
            "Length of string" => format!(
                "stopped: a string grew past {} bytes (limits.max_string_size)",
                limits.max_string_size
            ),
            "Size of array/BLOB" => format!(
                "stopped: an array grew past {} items (limits.max_array_size)",
                limits.max_array_size
            ),
            "Size of object map" => format!(
                "stopped: a map grew past {} entries (limits.max_map_size)",
                limits.max_map_size
            ),
            other => format!("stopped: {other} too large"),
        },
        EvalAltResult::ErrorStackOverflow(..) => format!(
            "stopped: calls nested deeper than {} (limits.max_call_levels); recurse less deeply",
            limits.max_call_levels
        ),
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN => {
            format!(
                "stopped: the call ran past its deadline ({:?}, limits.call_deadline)",
                limits.call_deadline
            )
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == MEMORY_TOKEN => {
            "stopped: the call kept more memory than the script's budget (limits.memory)"
                .to_string()
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == STACK_TOKEN => format!(
            "stopped: calls nested too deep for the stack ({} KiB left); recurse less deeply",
            super::stack::STACK_RESERVE >> 10
        ),
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        other => {
            // Rhai appends " (line l, position c)"; the position is printed first instead.
            let s = other.to_string();
            match s.rfind(" (line ") {
                Some(i) if s.ends_with(')') => s[..i].to_string(),
                _ => s,
            }
        }
    }
}

/// ` (did you mean `x`?)` when one of `known` is a typo away from `name`, else "".
pub(crate) fn did_you_mean(name: &str, known: &[&str]) -> String {
    let limit = (name.chars().count() / 3).max(1);
    known
        .iter()
        // Names are short; a long one is no typo (and costs length² to compare).
        .filter(|k| name.len() <= 64 && k.len() <= 64)
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
