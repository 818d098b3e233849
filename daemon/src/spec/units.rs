//! Human units in config files: sizes with binary units (`"64MiB"`) and humantime
//! durations (`"60s"`, `"24h"`).

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// Why a unit string does not parse (a config error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// A size with a unit not listed.
    #[error("invalid size `{0}`: unknown unit `{1}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB)")]
    SizeUnit(String, String),
    /// A size without a number.
    #[error("invalid size `{0}`: expected a number followed by a unit, like \"64MiB\"")]
    SizeNumber(String),
    /// A size past `u64`.
    #[error("invalid size `{0}`: out of range")]
    SizeRange(String),
    /// `interval:<duration>` with a bad duration.
    #[error("invalid fsync interval `{0}`: {1}")]
    FsyncInterval(String, String),
    /// Neither `batch`, `none` nor `interval:`.
    #[error("invalid fsync `{0}`: use \"batch\", \"none\" or \"interval:<duration>\"")]
    Fsync(String),
}

/// A size in bytes, written `"512"`, `"64KiB"`, `"64MiB"`, `"1GiB"` (also `KB`/`MB`/`GB`
/// as decimal units, and a bare integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size string.
    pub fn parse(s: &str) -> Result<ByteSize, UnitError> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => return Err(UnitError::SizeUnit(s.to_string(), other.to_string())),
        };
        let n: f64 = num
            .parse()
            .map_err(|_| UnitError::SizeNumber(s.to_string()))?;
        let bytes = n * mult as f64;
        if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
            return Err(UnitError::SizeRange(s.to_string()));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"64MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written the humantime way: `"500ms"`, `"60s"`, `"24h"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration `{s}`: {e} (use e.g. \"500ms\", \"60s\", \"24h\")"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1 GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("1.5KiB"), Ok(ByteSize(1536)));
        assert_eq!(ByteSize::parse("5MB"), Ok(ByteSize(5_000_000)));
        assert!(ByteSize::parse("12 parsecs")
            .unwrap_err()
            .to_string()
            .contains("unknown unit `parsecs`"));
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }
}
