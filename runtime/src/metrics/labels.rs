//! Label values: anything that reads as a string, looked up without allocating.
//!
//! A series is found by hashing its label values as borrowed `&str`s; only a new
//! series copies them. Integers are formatted into a stack buffer, so
//! `[ev.pod.namespace, ev.pod.name, ev.dport]` costs no allocation on the hot path.

use std::hash::{BuildHasher, Hasher};

use rhai::{Dynamic, ImmutableString};

/// A label value: something that can be read as a `&str` for the duration of a call.
pub trait LabelValue {
    /// Calls `f` with the value as text.
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R;
}

impl LabelValue for str {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(self)
    }
}

impl<T: LabelValue + ?Sized> LabelValue for &T {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        (**self).with_str(f)
    }
}

impl LabelValue for String {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(self)
    }
}

impl LabelValue for Box<str> {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(self)
    }
}

impl LabelValue for ImmutableString {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(self)
    }
}

macro_rules! int_label {
    ($($t:ty),*) => {$(
        impl LabelValue for $t {
            fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
                let mut buf = IntBuf::new();
                f(buf.format(*self as i128))
            }
        }
    )*};
}
int_label!(i64, i32, u64, u32, u16, u8, usize);

impl LabelValue for bool {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(if *self { "true" } else { "false" })
    }
}

/// Script values: strings as they are, integers in decimal, `()` as the empty string,
/// anything else as Rhai prints it.
impl LabelValue for Dynamic {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        if let Some(s) = self.read_lock::<ImmutableString>() {
            return f(&s);
        }
        if let Ok(i) = self.as_int() {
            return i.with_str(f);
        }
        if let Ok(b) = self.as_bool() {
            return b.with_str(f);
        }
        if self.is_unit() {
            return f("");
        }
        if let Ok(c) = self.as_char() {
            let mut buf = [0u8; 4];
            return f(c.encode_utf8(&mut buf));
        }
        f(&self.to_string())
    }
}

/// Decimal formatting of an integer into a stack buffer.
struct IntBuf {
    buf: [u8; 40],
}

impl IntBuf {
    fn new() -> Self {
        IntBuf { buf: [0; 40] }
    }

    fn format(&mut self, v: i128) -> &str {
        let neg = v < 0;
        let mut n = v.unsigned_abs();
        let mut i = self.buf.len();
        loop {
            i -= 1;
            self.buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if neg {
            i -= 1;
            self.buf[i] = b'-';
        }
        // Only ASCII digits and '-' were written.
        std::str::from_utf8(&self.buf[i..]).unwrap_or("")
    }
}

/// Hashes a list of label values; a 0xff byte (never in UTF-8) separates them.
pub(crate) fn hash_values<S: BuildHasher, V: LabelValue>(state: &S, values: &[V]) -> u64 {
    let mut h = state.build_hasher();
    for v in values {
        v.with_str(|s| h.write(s.as_bytes()));
        h.write_u8(0xff);
    }
    h.finish()
}

/// Whether stored label values equal the given ones.
pub(crate) fn values_eq<V: LabelValue>(stored: &[Box<str>], values: &[V]) -> bool {
    stored.len() == values.len()
        && stored
            .iter()
            .zip(values)
            .all(|(s, v)| v.with_str(|v| v == &**s))
}

/// Copies label values into owned strings (only when a series is created).
pub(crate) fn to_owned<V: LabelValue>(values: &[V]) -> Box<[Box<str>]> {
    values
        .iter()
        .map(|v| v.with_str(|s| Box::<str>::from(s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_without_allocating() {
        assert_eq!(42i64.with_str(str::to_string), "42");
        assert_eq!((-7i64).with_str(str::to_string), "-7");
        assert_eq!(0u64.with_str(str::to_string), "0");
        assert_eq!(i64::MIN.with_str(str::to_string), i64::MIN.to_string());
        assert_eq!(u64::MAX.with_str(str::to_string), u64::MAX.to_string());
    }

    #[test]
    fn script_values_read_as_text() {
        assert_eq!(Dynamic::from("web-1").with_str(str::to_string), "web-1");
        assert_eq!(Dynamic::from_int(443).with_str(str::to_string), "443");
        assert_eq!(Dynamic::from_bool(true).with_str(str::to_string), "true");
        assert_eq!(Dynamic::UNIT.with_str(str::to_string), "");
        assert_eq!(Dynamic::from_float(1.5).with_str(str::to_string), "1.5");
    }

    #[test]
    fn hash_separates_values() {
        let s = hashbrown::DefaultHashBuilder::default();
        assert_ne!(hash_values(&s, &["ab", "c"]), hash_values(&s, &["a", "bc"]));
        assert_eq!(
            hash_values(&s, &["a", "1"]),
            hash_values(&s, &[Dynamic::from("a"), Dynamic::from_int(1)])
        );
    }
}
