//! Serde helpers for config values people write by hand: durations (`"15s"`) and
//! sizes (`"64MiB"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `#[serde(with = "crate::daemon::serde_util::duration")]`: `"500ms"`, `"15s"`, `"1m30s"`.
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::script::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", v.as_millis()))
    }
}

/// `#[serde(with = "crate::daemon::serde_util::size")]`: a byte count, plain (`1048576`)
/// or with a unit (`"512KiB"`, `"64MiB"`, `"1GiB"`, `"10MB"`).
pub mod size {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(n),
            Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }
}

/// Parses `"64MiB"`, `"10MB"`, `"512k"`, `"1048576"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("expected a size like \"64MiB\" or \"10MB\", got \"{text}\""))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown size unit `{unit}` in \"{text}\" (use B, KB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    Ok((n * scale as f64) as u64)
}

/// Checks a number of the config against its documented range: `Err` is the message
/// that follows the config path, e.g. `sinks.queue: 18446744073709551615 is out of
/// range 1..=1048576 (events buffered per sink); set a value in that range (default
/// 4096)`.
pub fn check_range<T>(
    value: T,
    range: std::ops::RangeInclusive<T>,
    default: T,
    what: &str,
) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "{value} is out of range {}..={} ({what}); set a value in that range (default {default})",
        range.start(),
        range.end()
    ))
}

/// [`check_range`] for a duration, shown as the config writes it (`"500ms"`).
pub fn check_duration(
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
    default: Duration,
    what: &str,
) -> Result<(), String> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "{} is out of range {}..={} ({what}); set a value in that range (default {})",
        show_duration(value),
        show_duration(*range.start()),
        show_duration(*range.end()),
        show_duration(default)
    ))
}

/// [`check_range`] for a byte size, shown with a unit when it has an exact one.
pub fn check_size(
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
    what: &str,
) -> Result<(), String> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "{} is out of range {}..={} ({what}); set a value in that range (default {})",
        show_size(value),
        show_size(*range.start()),
        show_size(*range.end()),
        show_size(default)
    ))
}

/// `"1h"`, `"10s"`, `"500ms"`, `"250us"`: the largest unit that divides it.
pub fn show_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, n) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns >= n && ns.is_multiple_of(n) {
            return format!("{}{unit}", ns / n);
        }
    }
    format!("{ns}ns")
}

/// `"64MiB"`, `"4KiB"`, or the plain number of bytes.
pub fn show_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn ranges_say_value_range_and_default() {
        assert_eq!(
            check_range(u64::MAX, 1..=1 << 20, 4096, "events buffered per sink").unwrap_err(),
            "18446744073709551615 is out of range 1..=1048576 (events buffered per sink); \
             set a value in that range (default 4096)"
        );
        check_range(5, 1..=5, 2, "x").unwrap();
        let ms = Duration::from_millis;
        assert_eq!(
            check_duration(ms(0), ms(10)..=ms(300_000), ms(1000), "wait").unwrap_err(),
            "0ns is out of range 10ms..=5m (wait); set a value in that range (default 1s)"
        );
        assert_eq!(
            check_size(3, 4096..=1 << 40, 64 << 20, "rotate").unwrap_err(),
            "3 is out of range 4KiB..=1TiB (rotate); set a value in that range (default 64MiB)"
        );
        assert_eq!(show_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(show_size(1536), "1536");
    }
}
