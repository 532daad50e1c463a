//! Small value syntaxes that Kubernetes manifests use: Go durations, resource quantities,
//! timestamps.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
// k8s-openapi already compiles jiff for its own `metav1.Time`: the same parser, no new crate.
use k8s_openapi::jiff;

/// A string that is not a Go duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration ({problem}; e.g. 500ms, 10s, 1m30s)")]
pub struct InvalidDuration {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// A string that is not a Kubernetes quantity usable as a weight.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a weight ({problem}; e.g. 900m, 1, 50)")]
pub struct InvalidQuantity {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a duration or a quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Nothing was given.
    #[error("empty")]
    Empty,
    /// It starts with `-`.
    #[error("negative")]
    Negative,
    /// A unit or suffix where a number belongs.
    #[error("expected a number")]
    ExpectedNumber,
    /// A duration's number has no unit.
    #[error("missing unit")]
    MissingUnit,
    /// Not one of `ns`, `us`, `ms`, `s`, `m`, `h`.
    #[error("unknown unit")]
    UnknownUnit,
    /// Not one of `m`, `k`, `M`, `G`, `Ki`, `Mi`.
    #[error("unknown suffix")]
    UnknownSuffix,
    /// Two dots, or a dot alone.
    #[error("malformed number")]
    Malformed,
    /// A duration's number does not fit in 128 bits.
    #[error("number too large")]
    NumberTooLarge,
    /// The value does not fit in 64 bits (nanoseconds, milli-units).
    #[error("too large")]
    TooLarge,
}

/// Parses a Go `time.ParseDuration` string, as Linkerd and Gateway API use them:
/// `500ms`, `2s`, `1m30s`, `1.5h`, `300us`. A bare `0` is zero. Negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, InvalidDuration> {
    let bad = |problem| InvalidDuration {
        input: s.to_owned(),
        problem,
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad(Problem::Empty));
    }
    if s.starts_with('-') {
        return Err(bad(Problem::Negative));
    }
    let s2 = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s2;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad(Problem::ExpectedNumber));
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad(Problem::MissingUnit)),
            _ => return Err(bad(Problem::UnknownUnit)),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(bad(Problem::Malformed));
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad(Problem::NumberTooLarge))?
        };
        let mut ns = int
            .checked_mul(unit_ns)
            .ok_or_else(|| bad(Problem::TooLarge))?;
        let mut scale = unit_ns;
        for d in frac.bytes().take(18) {
            scale /= 10;
            ns += u128::from(d - b'0') * scale;
        }
        total_ns = total_ns
            .checked_add(ns)
            .filter(|&t| t <= u128::from(u64::MAX))
            .ok_or_else(|| bad(Problem::TooLarge))?;
        rest = tail;
    }
    let total = u64::try_from(total_ns).map_err(|_| bad(Problem::TooLarge))?;
    Ok(Duration::from_nanos(total))
}

/// Parses a Kubernetes quantity used as a weight into milli-units: `900m` → 900, `1` → 1000,
/// `1.5` → 1500, `2k` → 2,000,000. Negative values are refused.
pub fn parse_milli_quantity(s: &str) -> Result<u64, InvalidQuantity> {
    let bad = |problem| InvalidQuantity {
        input: s.to_owned(),
        problem,
    };
    let s = s.trim();
    if s.starts_with('-') {
        return Err(bad(Problem::Negative));
    }
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_len);
    // Multiplier from the suffix, in thousandths, so that `m` is exact.
    let milli_per_unit: u128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "Ki" => 1_024_000,
        "Mi" => 1_048_576_000,
        _ => return Err(bad(Problem::UnknownSuffix)),
    };
    if num.is_empty() {
        return Err(bad(Problem::ExpectedNumber));
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') || int.is_empty() && frac.is_empty() {
        return Err(bad(Problem::Malformed));
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad(Problem::TooLarge))?
    };
    let mut milli = int
        .checked_mul(milli_per_unit)
        .ok_or_else(|| bad(Problem::TooLarge))?;
    let mut scale = milli_per_unit;
    for d in frac.bytes().take(30) {
        scale /= 10;
        milli += u128::from(d - b'0') * scale;
    }
    u64::try_from(milli).map_err(|_| bad(Problem::TooLarge))
}

/// An instant as Kubernetes writes it in `metadata.creationTimestamp` (`metav1.Time`, RFC 3339
/// with any offset and optional fractional seconds). Precedence between objects compares these
/// as instants: `2024-01-01T01:00:00+01:00` is `2024-01-01T00:00:00Z`, and
/// `2024-01-01T00:00:00.5Z` comes after `2024-01-01T00:00:00Z`, which text comparison gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(jiff::Timestamp);

/// A string that is not an RFC 3339 timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an RFC 3339 timestamp ({reason}; e.g. 2024-01-01T00:00:00Z)")]
pub struct InvalidTimestamp {
    /// What was given.
    pub input: String,
    /// What the parser found wrong with it.
    pub reason: String,
}

// === impl Timestamp ===

impl FromStr for Timestamp {
    type Err = InvalidTimestamp;

    fn from_str(s: &str) -> Result<Self, InvalidTimestamp> {
        s.parse::<jiff::Timestamp>()
            .map(Self)
            .map_err(|e| InvalidTimestamp {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500_000_000),
            ("2s", 2_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5s", 1_500_000_000),
            ("0", 0),
            ("0s", 0),
            ("300us", 300_000),
            ("1h", 3_600_000_000_000),
        ];
        for (s, ns) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_nanos(ns)), "{s}");
        }
        for s in ["one-second", "", "10", "-1s", "1x", "s", "1..2s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn errors_say_what_was_given_and_why_as_before() {
        let cases = [
            (
                parse_duration("1x").unwrap_err().to_string(),
                r#""1x" is not a duration (unknown unit; e.g. 500ms, 10s, 1m30s)"#,
            ),
            (
                parse_duration("").unwrap_err().to_string(),
                r#""" is not a duration (empty; e.g. 500ms, 10s, 1m30s)"#,
            ),
            (
                parse_milli_quantity("-1").unwrap_err().to_string(),
                r#""-1" is not a weight (negative; e.g. 900m, 1, 50)"#,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert_eq!(
            parse_duration("10").unwrap_err().problem,
            Problem::MissingUnit
        );
    }

    #[test]
    fn quantities() {
        let ok = [
            ("900m", 900),
            ("100m", 100),
            ("1", 1000),
            ("0", 0),
            ("1500m", 1500),
            ("1.5", 1500),
            ("2k", 2_000_000),
        ];
        for (s, m) in ok {
            assert_eq!(parse_milli_quantity(s), Ok(m), "{s}");
        }
        for s in ["-1", "abc", "1x", "", "m"] {
            assert!(parse_milli_quantity(s).is_err(), "{s}");
        }
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t("2024-01-01T01:00:00+01:00"), t("2024-01-01T00:00:00Z"));
        assert!(t("2024-01-01T00:00:00.5Z") > t("2024-01-01T00:00:00Z"));
        // As text "…T00:30:00-01:00" sorts before "…T01:00:00Z"; as instants it is after.
        assert!(t("2024-01-01T00:30:00-01:00") > t("2024-01-01T01:00:00Z"));
        assert_eq!(
            t("2024-01-01T01:00:00+01:00").to_string(),
            "2024-01-01T00:00:00Z"
        );
    }

    #[test]
    fn a_timestamp_without_a_date_time_and_offset_is_refused() {
        for s in [
            "",
            "yesterday",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
        ] {
            let e = s.parse::<Timestamp>().expect_err(s);
            assert_eq!(e.input, s);
            assert!(
                e.to_string().contains("is not an RFC 3339 timestamp"),
                "{e}"
            );
        }
    }
}
