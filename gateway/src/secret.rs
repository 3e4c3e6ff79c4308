//! A string that holds a password, answer, code or token.
//!
//! It has no `Display`, its `Debug` prints `[redacted]`, it is not
//! `Serialize`, and its memory is zeroised when it is dropped, so it cannot
//! reach a log line, an error, a panic message or a store by accident.

use zeroize::Zeroizing;

/// A secret string; see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Takes ownership of `value`.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret in clear. Every caller is a place the secret may leak
    /// from: pass it only to a plugin or a hash.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in Unicode code points.
    pub fn code_points(&self) -> usize {
        self.0.chars().count()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from("canary-7f3e");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.code_points(), 11);
    }
}
