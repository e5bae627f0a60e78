//! The `PROBE` manifest: what a script needs from the kernel, read at compile time.
//!
//! ```rhai
//! //! One line per `//!` at the top of the file: the description `sonde check` shows.
//! const PROBE = #{
//!     program: "tcp_reset",                       // a built-in kernel program
//!     params: #{ threshold_ms: 10, stack: false }, // defaults, overridable by --param / config
//!     interval: "10s",                            // on_tick period (default 10s)
//! };
//! ```
//!
//! `const PROBE = "tcp_reset";` is shorthand for `#{ program: "tcp_reset" }`; no
//! `PROBE` at all is a script with no kernel program (ticks only). The manifest must
//! be a literal: it is read without running the script.

use std::time::Duration;

use rhai::{Dynamic, Map, AST};

use super::diagnostic::did_you_mean;
use super::ScriptError;

/// A param value: the type of the default decides how an override is parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl ParamValue {
    fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "a bool (true/false/1/0)",
            ParamValue::Int(_) => "an integer",
            ParamValue::Float(_) => "a number",
            ParamValue::Str(_) => "a string",
        }
    }

    /// The value for a person: `the string "yes"`, `the integer 3`.
    pub fn describe(&self) -> String {
        match self {
            ParamValue::Bool(b) => format!("the bool {b}"),
            ParamValue::Int(i) => format!("the integer {i}"),
            ParamValue::Float(x) => format!("the number {x}"),
            ParamValue::Str(s) => format!("the string {s:?}"),
        }
    }

    /// The value as the script sees it in `init(params)`.
    pub fn to_dynamic(&self) -> Dynamic {
        match self {
            ParamValue::Bool(b) => Dynamic::from_bool(*b),
            ParamValue::Int(i) => Dynamic::from_int(*i),
            ParamValue::Float(f) => Dynamic::from_float(*f),
            ParamValue::Str(s) => Dynamic::from(s.clone()),
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Str(s) => write!(f, "{s}"),
        }
    }
}

/// What a script declares about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The built-in kernel program, if any.
    pub program: Option<crate::bpf::Program>,
    /// Param defaults, in declaration order.
    pub params: Vec<(String, ParamValue)>,
    /// How often `on_tick` runs.
    pub interval: Duration,
    /// The `//!` lines at the top of the file.
    pub description: String,
    /// Where each param is declared (1-based line and column), in `params` order.
    pub param_at: Vec<(usize, usize)>,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The longest `interval`: a day. Longer ones overflowed the clock arithmetic of the
/// tick timer (a panic) and have no use.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const KEYS: &str = "program, params, interval, description";

impl Manifest {
    /// Applies `name=value` overrides to the defaults. Each value is parsed as the
    /// type of its default:
    ///
    /// - bool: `true`/`false`/`1`/`0`/`yes`/`no`/`on`/`off`;
    /// - int: decimal (`_` separators allowed) or `0x` hex; a param whose name ends
    ///   in `_ns`, `_us`, `_ms`, `_secs` or `_seconds` also takes a duration
    ///   (`threshold_ms=1s` is 1000), which must be a whole number of that unit;
    /// - float: any number;
    /// - string: the text as given.
    ///
    /// An error names the param but not the file: the caller knows where the
    /// override came from ([`Manifest::param_position`] says where it is declared).
    pub fn resolve_params(
        &self,
        overrides: &[(String, String)],
    ) -> Result<Vec<(String, ParamValue)>, ScriptError> {
        let mut out = self.params.clone();
        for (name, text) in overrides {
            let Some((_, slot)) = out.iter_mut().find(|(n, _)| n == name) else {
                let known: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
                let message = if known.is_empty() {
                    format!("unknown param `{name}`: this script declares no params (PROBE.params)")
                } else {
                    format!(
                        "unknown param `{name}`{}; known params: {}",
                        did_you_mean(name, &known),
                        known.join(", ")
                    )
                };
                return Err(ScriptError::Param {
                    name: name.clone(),
                    message,
                });
            };
            *slot = parse_param(name, slot, text)?;
            // The kernel side takes it as it is: a knob's width, a variant's name.
            if let Some(program) = self.program {
                kernel_fit(program.spec(), name, slot).map_err(|m| ScriptError::Param {
                    name: name.clone(),
                    message: format!("param `{name}`: {m}"),
                })?;
            }
        }
        Ok(out)
    }
}

/// Whether a param's value fits what the program's kernel side makes of it: the
/// knob of the same name, or the variant it picks.
fn kernel_fit(
    spec: &crate::bpf::catalog::ProgramSpec,
    name: &str,
    value: &ParamValue,
) -> Result<(), String> {
    if name == crate::bpf::VARIANT_PARAM {
        return crate::bpf::check_variant(spec, value)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    match crate::bpf::knobs(spec).iter().find(|k| k.name == name) {
        Some(knob) => crate::bpf::check_knob(knob, value)
            .map_err(|m| format!("{m} (it sets the kernel knob `{name}` of {})", spec.name)),
        None => Ok(()),
    }
}

impl Manifest {
    /// Where `name` is declared in `PROBE.params`.
    pub fn param_position(&self, name: &str) -> Option<(usize, usize)> {
        let i = self.params.iter().position(|(n, _)| n == name)?;
        self.param_at.get(i).copied()
    }
}

fn parse_param(name: &str, default: &ParamValue, text: &str) -> Result<ParamValue, ScriptError> {
    let t = text.trim();
    let parsed = match default {
        ParamValue::Bool(_) => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(ParamValue::Bool(true)),
            "false" | "0" | "no" | "off" => Some(ParamValue::Bool(false)),
            _ => None,
        },
        ParamValue::Int(_) => parse_int(t)
            .or_else(|| int_from_duration(name, t))
            .map(ParamValue::Int),
        ParamValue::Float(_) => t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(ParamValue::Float),
        ParamValue::Str(_) => Some(ParamValue::Str(text.to_string())),
    };
    parsed.ok_or_else(|| {
        let hint = match default {
            ParamValue::Int(_) if duration_unit(name).is_some() => " or a duration like \"10ms\"",
            _ => "",
        };
        ScriptError::Param {
            name: name.to_string(),
            message: format!(
                "param `{name}`: expected {}{hint} (the default is {default}), got `{text}`",
                default.type_name()
            ),
        }
    })
}

fn parse_int(t: &str) -> Option<i64> {
    let clean: String = t.chars().filter(|c| *c != '_').collect();
    if let Some(hex) = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        return i64::from_str_radix(hex, 16).ok();
    }
    clean.parse().ok()
}

/// The unit an int param is in, from its name's suffix.
fn duration_unit(name: &str) -> Option<Duration> {
    [
        ("_ns", Duration::from_nanos(1)),
        ("_us", Duration::from_micros(1)),
        ("_ms", Duration::from_millis(1)),
        ("_secs", Duration::from_secs(1)),
        ("_seconds", Duration::from_secs(1)),
    ]
    .into_iter()
    .find(|(suffix, _)| name.ends_with(suffix))
    .map(|(_, unit)| unit)
}

fn int_from_duration(name: &str, t: &str) -> Option<i64> {
    let unit = duration_unit(name)?;
    let d = parse_duration(t).ok()?;
    let (n, u) = (d.as_nanos(), unit.as_nanos());
    if n % u != 0 {
        return None;
    }
    i64::try_from(n / u).ok()
}

/// Parses `"10s"`, `"250ms"`, `"1.5s"`, `"1m30s"`; units `ns`, `us` (or `µs`), `ms`,
/// `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err =
        || format!("expected a duration like \"10s\" (units ns, us, ms, s, m, h), got \"{text}\"");
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

/// The `//!` lines at the top of a file (blank lines before them allowed).
pub(crate) fn description(source: &str) -> String {
    let mut lines = Vec::new();
    for line in source.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("//!") {
            lines.push(rest.strip_prefix(' ').unwrap_or(rest).trim_end());
        } else if t.is_empty() && lines.is_empty() || t.starts_with("#!") {
            continue;
        } else {
            break;
        }
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Where `const PROBE` is declared (byte offset), skipping comments crudely: the
/// first occurrence at the start of a line.
fn probe_offset(source: &str) -> Option<usize> {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("const PROBE") || t.starts_with("let PROBE") {
            return Some(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    None
}

/// Reads the manifest from a compiled script.
pub(crate) fn parse(file: &str, source: &str, ast: &AST) -> Result<Manifest, ScriptError> {
    let description = description(source);
    let at = probe_offset(source);
    let err_at = |offset: Option<usize>, message: String| {
        let (line, column) = offset.map(|o| line_col(source, o)).unwrap_or((1, 1));
        ScriptError::Manifest {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    // Position of `key` inside the PROBE literal, for errors about it.
    let key_at = |key: &str| -> Option<usize> {
        let start = at?;
        let body = &source[start..];
        let mut from = 0;
        while let Some(i) = body[from..].find(key) {
            let pos = from + i;
            let after = body[pos + key.len()..].trim_start();
            let before_ok =
                pos == 0 || !body[..pos].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            if before_ok && after.starts_with(':') {
                return Some(start + pos);
            }
            from = pos + key.len();
        }
        None
    };

    let value = ast
        .iter_literal_variables(true, false)
        .find(|(name, _, _)| *name == "PROBE")
        .map(|(_, _, v)| v);
    let Some(value) = value else {
        if let Some(o) = at {
            let message = if source[o..].starts_with("let") {
                "declare it with `const PROBE = ...`, not `let`".to_string()
            } else {
                "must be a literal: a program name string or a #{ program, params, interval } map of literals"
                    .to_string()
            };
            return Err(err_at(Some(o), message));
        }
        return Ok(Manifest {
            program: None,
            params: Vec::new(),
            interval: DEFAULT_INTERVAL,
            description,
            param_at: Vec::new(),
        });
    };

    let mut manifest = Manifest {
        program: None,
        params: Vec::new(),
        interval: DEFAULT_INTERVAL,
        description,
        param_at: Vec::new(),
    };
    if let Some(s) = value.read_lock::<rhai::ImmutableString>() {
        manifest.program = Some(resolve_program(&s).map_err(|m| err_at(at, m))?);
        check_kernel_side(&manifest).map_err(|(_, m)| err_at(at, m))?;
        return Ok(manifest);
    }
    let Some(map) = value.read_lock::<Map>().map(|m| m.clone()) else {
        return Err(err_at(
            at,
            format!(
                "expected a program name string or a #{{ {KEYS} }} map, got {}",
                value.type_name()
            ),
        ));
    };
    let mut program_at = None;
    for (key, v) in &map {
        let key = key.as_str();
        match key {
            "program" => {
                let s = v.read_lock::<rhai::ImmutableString>().ok_or_else(|| {
                    err_at(
                        key_at(key),
                        format!(
                            "program: expected a string like \"tcp_reset\", got {}",
                            v.type_name()
                        ),
                    )
                })?;
                manifest.program = Some(
                    resolve_program(&s)
                        .map_err(|m| err_at(key_at(key), format!("program: {m}")))?,
                );
                program_at = key_at(key);
            }
            "interval" => {
                let d = if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
                    parse_duration(&s).map_err(|m| err_at(key_at(key), format!("interval: {m}")))?
                } else if let Ok(secs) = v.as_int() {
                    Duration::from_secs(secs.max(0) as u64)
                } else {
                    return Err(err_at(
                        key_at(key),
                        format!(
                            "interval: expected a duration string like \"10s\", got {}",
                            v.type_name()
                        ),
                    ));
                };
                if d < MIN_INTERVAL {
                    return Err(err_at(
                        key_at(key),
                        format!("interval: {d:?} is too short; at least 10ms"),
                    ));
                }
                if d > MAX_INTERVAL {
                    return Err(err_at(
                        key_at(key),
                        format!("interval: {d:?} is too long; at most 24h"),
                    ));
                }
                manifest.interval = d;
            }
            "description" => {
                let s = v.read_lock::<rhai::ImmutableString>().ok_or_else(|| {
                    err_at(
                        key_at(key),
                        format!("description: expected a string, got {}", v.type_name()),
                    )
                })?;
                manifest.description = s.to_string();
            }
            "params" => {
                let params = v.read_lock::<Map>().ok_or_else(|| {
                    err_at(
                        key_at(key),
                        format!("params: expected a map of defaults like #{{ threshold_ms: 10 }}, got {}", v.type_name()),
                    )
                })?;
                let mut list = Vec::new();
                for (name, d) in params.iter() {
                    let p = if let Ok(b) = d.as_bool() {
                        ParamValue::Bool(b)
                    } else if let Ok(i) = d.as_int() {
                        ParamValue::Int(i)
                    } else if let Ok(f) = d.as_float() {
                        ParamValue::Float(f)
                    } else if let Some(s) = d.read_lock::<rhai::ImmutableString>() {
                        ParamValue::Str(s.to_string())
                    } else {
                        return Err(err_at(
                            key_at(name).or(key_at(key)),
                            format!("params.{name}: expected a bool, integer, float or string default, got {}", d.type_name()),
                        ));
                    };
                    list.push((name.to_string(), p));
                }
                // Rhai maps are sorted; keep the order the author wrote them in.
                list.sort_by_key(|(name, _)| key_at(name).unwrap_or(usize::MAX));
                manifest.param_at = list
                    .iter()
                    .map(|(name, _)| {
                        key_at(name)
                            .or(key_at(key))
                            .map(|o| line_col(source, o))
                            .unwrap_or((1, 1))
                    })
                    .collect();
                manifest.params = list;
            }
            other => {
                return Err(err_at(
                    key_at(other).or(at),
                    format!("unknown key `{other}`; expected one of: {KEYS}"),
                ));
            }
        }
    }
    // After the loop: the keys come sorted, `params` before `program`.
    check_kernel_side(&manifest).map_err(|(param, m)| match param {
        Some(name) => err_at(key_at(&name).or(at), format!("params.{name}: {m}")),
        None => err_at(program_at.or(at), format!("program: {m}")),
    })?;
    Ok(manifest)
}

/// Each param default fits what the kernel side makes of it. On error, the param at
/// fault (`None`: the program).
fn check_kernel_side(manifest: &Manifest) -> Result<(), (Option<String>, String)> {
    let Some(program) = manifest.program else {
        return Ok(());
    };
    for (name, value) in &manifest.params {
        kernel_fit(program.spec(), name, value).map_err(|m| (Some(name.clone()), m))?;
    }
    Ok(())
}

/// The built-in program `name` names: looked up here, once, for every later user
/// of the manifest.
fn resolve_program(name: &str) -> Result<crate::bpf::Program, String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(format!("expected a kernel program name like \"tcp_reset\" (lowercase, digits, `_`), got \"{name}\""));
    }
    crate::bpf::Program::find(name).map_err(|_| {
        let known = crate::bpf::catalog::names();
        format!(
            "unknown kernel program `{name}`{}; built-in programs: {} (`sonde probes` lists them)",
            did_you_mean(name, &known),
            known.join(", ")
        )
    })
}
