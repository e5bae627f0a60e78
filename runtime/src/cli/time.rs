//! Times on the command line: event timestamps printed in UTC as RFC 3339 with
//! milliseconds (the same text on every node, sortable, what `date -u
//! +%FT%T.%3NZ` prints), and `--since` read as a duration or an RFC 3339 time.
//!
//! ```text
//! timestamp(1_700_000_000_123_456_789)   2023-11-14T22:13:20.123Z
//! parse_since("5m")                      Since::Ago(300 s)
//! parse_since("2023-11-14T23:13:20+01:00")  Since::At(1_700_000_000_000_000_000)
//! ```

use std::time::Duration;

/// Where `--since` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the daemon's clock says it is now.
    Ago(Duration),
    /// An absolute time, nanoseconds since the Unix epoch.
    At(u64),
}

/// Parses `--since`: a duration (`5m`, `1h30m`, `90s`; plain digits are seconds) or
/// an RFC 3339 time (`2026-12-06T07:00:00Z`, `2026-12-06 08:00:00.5+01:00`).
pub fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if s.len() >= 10 && s.as_bytes()[4] == b'-' {
        return parse_rfc3339(s).map(Since::At);
    }
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        crate::script::parse_duration(&format!("{s}s"))
    } else {
        crate::script::parse_duration(s)
    };
    d.map(Since::Ago).map_err(|_| {
        format!(
            "\"{s}\": expected a duration like 5m or 1h30m (units ms, s, m, h) or a time \
             like 2026-12-06T07:00:00Z"
        )
    })
}

/// `2026-12-06T07:01:02.345Z`: UTC, milliseconds, what `date -u +%FT%T.%3NZ` prints.
/// A zero timestamp (an event without one) prints as `-`.
pub(crate) fn timestamp(ns: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    let secs = ns / 1_000_000_000;
    let ms = (ns % 1_000_000_000) / 1_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // A u64 of nanoseconds reaches the year 2554: days fit an i64 easily.
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// `2026-12-06T08:01:02.345+01:00`: [`timestamp`] in the local time zone (`TZ`,
/// else `/etc/localtime`) with its UTC offset at that instant, still RFC 3339.
pub(crate) fn local_timestamp(ns: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    let Ok(secs) = libc::time_t::try_from(ns / 1_000_000_000) else {
        return timestamp(ns);
    };
    // SAFETY: an all-zero `tm` is a valid value of a plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r keeps neither and
    // is thread-safe.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return timestamp(ns);
    }
    let ms = (ns % 1_000_000_000) / 1_000_000;
    let off = tm.tm_gmtoff / 60;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}{}{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec.min(59),
        if off < 0 { '-' } else { '+' },
        off.abs() / 60,
        off.abs() % 60
    )
}

/// Parses an RFC 3339 time (`T` or a space between date and time, fraction
/// optional, `Z` or `±HH:MM`) to nanoseconds since the Unix epoch.
fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let err = |why: &str| {
        format!("\"{s}\": {why}; expected a time like 2026-12-06T07:00:00Z or 2026-12-06T08:00:00+01:00")
    };
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(range)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let shape_ok = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return Err(err("not a time"));
    };
    if !shape_ok {
        return Err(err("not a time"));
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(err("no such date"));
    }
    if hour > 23 || min > 59 || sec > 59 {
        return Err(err("no such time of day"));
    }
    let mut rest = &s[19..];
    let mut frac_ns = 0u64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("no digits after the decimal point"));
        }
        for (i, c) in f.bytes().take(digits.min(9)).enumerate() {
            frac_ns += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
        }
        rest = &f[digits..];
    }
    let offset_secs: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if h > 23 || m > 59 {
                return Err(err("no such UTC offset"));
            }
            let off = h * 3600 + m * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        [] => return Err(err("no UTC offset (Z or +HH:MM)")),
        _ => return Err(err("not a time")),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec) - offset_secs;
    u64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|ns| ns.checked_add(frac_ns))
        .ok_or_else(|| err("outside 1970 to 2554"))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339_with_milliseconds() {
        // date -u -d @1700000000 +%FT%T.%3NZ
        assert_eq!(
            timestamp(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(timestamp(1_000_000), "1970-01-01T00:00:00.001Z");
        assert_eq!(
            timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            timestamp(1_709_251_199_999_000_000),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            timestamp(1_767_225_600_000_000_000),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(timestamp(u64::MAX), "2554-07-21T23:34:33.709Z");
        assert_eq!(timestamp(0), "-");
    }

    #[test]
    fn local_times_name_the_same_instant() {
        // Whatever the machine's time zone: the offset makes it the same instant.
        for ns in [
            1_000_000u64,
            951_782_400_000_000_000,
            1_700_000_000_123_456_789,
            1_765_004_462_345_000_000,
        ] {
            let local = local_timestamp(ns);
            assert_eq!(
                parse_rfc3339(&local),
                Ok(ns / 1_000_000 * 1_000_000),
                "{local}"
            );
        }
        assert_eq!(local_timestamp(0), "-");
    }

    #[test]
    fn since_is_a_duration_or_an_rfc3339_time() {
        let ago = |s| Since::Ago(Duration::from_secs(s));
        assert_eq!(parse_since("5m"), Ok(ago(300)));
        assert_eq!(parse_since("1h30m"), Ok(ago(5400)));
        assert_eq!(parse_since("90"), Ok(ago(90)));
        assert_eq!(
            parse_since("250ms"),
            Ok(Since::Ago(Duration::from_millis(250)))
        );
        fn at(s: &str) -> Result<u64, String> {
            parse_since(s).map(|t| match t {
                Since::At(ns) => ns,
                Since::Ago(d) => panic!("{s}: a duration {d:?}"),
            })
        }
        assert_eq!(at("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000_000_000));
        assert_eq!(at("2023-11-14t22:13:20z"), Ok(1_700_000_000_000_000_000));
        assert_eq!(
            at("2023-11-14 23:13:20.5+01:00"),
            Ok(1_700_000_000_500_000_000)
        );
        assert_eq!(
            at("2023-11-14T20:43:20.123456789-01:30"),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(at("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000_000_000));
        assert_eq!(at("1970-01-01T00:00:00Z"), Ok(0));
        // Every millisecond timestamp() prints parses back to itself.
        for ns in [
            1_000_000u64,
            951_782_400_000_000_000,
            1_765_004_462_345_000_000,
        ] {
            assert_eq!(at(&timestamp(ns)), Ok(ns));
        }

        let err = |s| parse_since(s).unwrap_err();
        let expected = "expected a time like 2026-12-06T07:00:00Z or 2026-12-06T08:00:00+01:00";
        assert_eq!(
            err("2023-11-14T22:13:20"),
            format!("\"2023-11-14T22:13:20\": no UTC offset (Z or +HH:MM); {expected}")
        );
        assert_eq!(
            err("2023-02-29T00:00:00Z"),
            format!("\"2023-02-29T00:00:00Z\": no such date; {expected}")
        );
        assert_eq!(
            err("2023-11-14T24:00:00Z"),
            format!("\"2023-11-14T24:00:00Z\": no such time of day; {expected}")
        );
        assert_eq!(
            err("1969-12-31T23:59:59Z"),
            format!("\"1969-12-31T23:59:59Z\": outside 1970 to 2554; {expected}")
        );
        assert_eq!(
            err("2023-11-14"),
            format!("\"2023-11-14\": not a time; {expected}")
        );
        assert_eq!(
            err("2023-11-14T22:13:20.Z"),
            format!("\"2023-11-14T22:13:20.Z\": no digits after the decimal point; {expected}")
        );
        assert_eq!(
            err("2023-11-14T22:13:20+0100"),
            format!("\"2023-11-14T22:13:20+0100\": not a time; {expected}")
        );
        assert_eq!(
            err("yesterday"),
            "\"yesterday\": expected a duration like 5m or 1h30m (units ms, s, m, h) or a \
             time like 2026-12-06T07:00:00Z"
        );
        assert!(parse_since("").is_err());
        assert!(parse_since("2023-11-14T22:13:20Zé").is_err());
    }
}
