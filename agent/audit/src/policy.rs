//! [`FsyncPolicy`] and its string form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// When appended entries are forced to stable storage (`fsync`).
///
/// The string form (used by [`FromStr`], [`fmt::Display`] and serde) is `"always"`, `"never"`, or a duration
/// such as `"100ms"`, `"1s"` or `"250ms"` (optionally prefixed with `"interval:"`), meaning [`FsyncPolicy::Interval`].
/// Accepted duration units are `ns`, `us`, `ms` and `s`; a bare number without a unit is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FsyncPolicy {
    /// Every append is fsynced before it returns; every [`Receipt`](crate::Receipt) is durable.
    #[default]
    Always,
    /// Appends are written but not fsynced; [`AuditLog::sync_if_due`](crate::AuditLog::sync_if_due) fsyncs
    /// pending entries once this much time has passed since its previous fsync.
    Interval(Duration),
    /// The log never fsyncs on its own; only explicit [`AuditLog::sync`](crate::AuditLog::sync) calls (and
    /// rotations, which always fsync the file being retired) make entries durable.
    Never,
}

/// The string could not be parsed as an [`FsyncPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync policy {input:?}: expected \"always\", \"never\" or a duration such as \"100ms\" or \"1s\"")]
pub struct ParseFsyncPolicyError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => {
                let spec = other.strip_prefix("interval:").unwrap_or(other).trim();
                parse_duration(spec).map(Self::Interval).ok_or_else(|| ParseFsyncPolicyError { input: s.to_owned() })
            }
        }
    }
}

/// Parses `<digits><unit>` with unit `ns`, `us`, `ms` or `s` (whitespace between number and unit allowed).
fn parse_duration(s: &str) -> Option<Duration> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() {
        return None;
    }
    let n: u128 = digits.parse().ok()?;
    let nanos_per_unit: u128 = match unit.trim_start() {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return None,
    };
    let total = n.checked_mul(nanos_per_unit)?;
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::Interval(d) => {
                let sub = d.subsec_nanos();
                if sub == 0 {
                    write!(f, "{}s", d.as_secs())
                } else if sub % 1_000_000 == 0 {
                    write!(f, "{}ms", d.as_millis())
                } else if sub % 1_000 == 0 {
                    write!(f, "{}us", d.as_micros())
                } else {
                    write!(f, "{}ns", d.as_nanos())
                }
            }
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keywords_and_durations() {
        assert_eq!("always".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Always);
        assert_eq!(" Never ".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Never);
        assert_eq!("100ms".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_millis(100)));
        assert_eq!("250ms".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_millis(250)));
        assert_eq!("1s".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_secs(1)));
        assert_eq!("interval:5s".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_secs(5)));
        assert_eq!("10 ms".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_millis(10)));
        assert_eq!("7us".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::from_micros(7)));
        assert_eq!("0ms".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "sometimes", "100", "ms", "1.5s", "-1s", "10m", "1h", "99999999999999999999999999999999s"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad:?} should be rejected");
        }
        let err = "100".parse::<FsyncPolicy>().unwrap_err();
        assert_eq!(err.input, "100");
    }

    #[test]
    fn display_round_trips() {
        for p in [
            FsyncPolicy::Always,
            FsyncPolicy::Never,
            FsyncPolicy::Interval(Duration::from_millis(100)),
            FsyncPolicy::Interval(Duration::from_secs(3)),
            FsyncPolicy::Interval(Duration::from_micros(1500)),
            FsyncPolicy::Interval(Duration::from_nanos(1_000_000_001)),
        ] {
            assert_eq!(p.to_string().parse::<FsyncPolicy>().unwrap(), p);
        }
        assert_eq!(FsyncPolicy::Interval(Duration::from_millis(250)).to_string(), "250ms");
    }

    #[test]
    fn serde_uses_string_form() {
        let json = serde_json::to_string(&FsyncPolicy::Interval(Duration::from_millis(100))).unwrap();
        assert_eq!(json, "\"100ms\"");
        let back: FsyncPolicy = serde_json::from_str("\"always\"").unwrap();
        assert_eq!(back, FsyncPolicy::Always);
        assert!(serde_json::from_str::<FsyncPolicy>("\"often\"").is_err());
    }
}
