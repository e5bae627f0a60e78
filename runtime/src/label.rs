//! The shared string of the whole agent: label values, pod names, the names a
//! decoded record carries (`bpf::value::Value::Str`).
//!
//! A [`Label`] is cloned by reference count and reads as a `&str`. It is built on
//! the script engine's shared string, so handing one to a script, or taking one
//! from a script, copies nothing; nothing else here depends on the engine.

use rhai::ImmutableString;

/// A label value: a shared, immutable string. Events of one pod share one copy of
/// its names (cloning is a reference count), and it reads as a `&str`:
///
/// ```
/// use sonde::label::Label;
/// let pod: Label = "web-1".into();
/// assert!(pod == "web-1" && pod.len() == 5 && pod.clone() == pod);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(ImmutableString);

impl Label {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::ops::Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label(s.into())
    }
}

impl From<String> for Label {
    fn from(s: String) -> Self {
        Label(s.into())
    }
}

impl From<ImmutableString> for Label {
    fn from(s: ImmutableString) -> Self {
        Label(s)
    }
}

impl From<Label> for ImmutableString {
    fn from(l: Label) -> Self {
        l.0
    }
}

impl PartialEq<str> for Label {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl PartialEq<String> for Label {
    fn eq(&self, o: &String) -> bool {
        self.as_str() == o.as_str()
    }
}

impl PartialEq<Label> for str {
    fn eq(&self, o: &Label) -> bool {
        self == o.as_str()
    }
}

impl PartialEq<Label> for &str {
    fn eq(&self, o: &Label) -> bool {
        *self == o.as_str()
    }
}

impl PartialEq<Label> for String {
    fn eq(&self, o: &Label) -> bool {
        self.as_str() == o.as_str()
    }
}
