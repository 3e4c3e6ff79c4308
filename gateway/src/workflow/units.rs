//! Humane units in files admins write: durations (`500ms`, `30s`, `5m`,
//! `1h`, `1h30m`) and sizes (`16MiB`). The grammar matches the `duration`
//! and `size` definitions of `schemas/workflow.schema.json`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a duration or size could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not `<number><unit>` repeated.
    #[error(
        "`{text}` is not a duration: write a whole number and a unit (ms, s, m, h), e.g. `30s`"
    )]
    Duration {
        /// What was written.
        text: String,
    },
    /// Not `<number><KiB|MiB|GiB>`.
    #[error(
        "`{text}` is not a size: write a whole number and a unit (KiB, MiB, GiB), e.g. `16MiB`"
    )]
    Size {
        /// What was written.
        text: String,
    },
}

/// Parses a duration: one or more `<digits><unit>` with units `ms`, `s`,
/// `m`, `h` (at most 9 digits each), e.g. `500ms`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration {
        text: text.to_owned(),
    };
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(n), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(n), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(n * 60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(n * 3600), 1)
        } else {
            return Err(err());
        };
        rest = &rest[len..];
        total = total.checked_add(unit).ok_or_else(err)?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, e.g. `1h30m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Parses a size: `<digits><KiB|MiB|GiB>` (at most 6 digits), e.g. `16MiB`.
pub fn parse_size(text: &str) -> Result<usize, UnitError> {
    let err = || UnitError::Size {
        text: text.to_owned(),
    };
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 6 {
        return Err(err());
    }
    let n: usize = text[..digits].parse().map_err(|_| err())?;
    let shift = match &text[digits..] {
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(err()),
    };
    n.checked_mul(1 << shift).ok_or_else(err)
}

/// Formats a size the way [`parse_size`] reads it, in the largest exact unit.
pub fn format_size(bytes: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// A duration read from a humane string while deserialising.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// A size read from a humane string while deserialising.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanSize(pub usize);

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_size(&text)
            .map(HumanSize)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("1m500ms", 60_500),
            ("0s", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "5",
            "m",
            "5 m",
            "5min",
            "1.5s",
            "-1s",
            "5M",
            "1234567890s",
            "1h ",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for text in ["500ms", "30s", "5m", "1h", "1h30m", "1m500ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        for bad in ["16", "16MB", "MiB", "1.5MiB", "1234567MiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000 bytes");
    }
}
