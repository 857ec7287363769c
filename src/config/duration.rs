//! Human-friendly durations in the config file ("500ms", "30s", "15m", "7d").
//!
//! The newtype fails inside serde, so a bad value is reported by the TOML
//! parser with the file, line and key it came from.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// A duration written as an integer followed by one unit: `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Parses "30s"-style text; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {text:?} has no unit (use ms, s, m, h or d)"))?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!("duration {text:?} must start with a number"));
        }
        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("duration {text:?} is too large"))?;
        let seconds_per_unit = match unit {
            "ms" => return Ok(Self(Duration::from_millis(amount))),
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => {
                return Err(format!(
                    "duration {text:?} has unknown unit {unit:?} (use ms, s, m, h or d)"
                ))
            }
        };
        amount
            .checked_mul(seconds_per_unit)
            .map(|secs| Self(Duration::from_secs(secs)))
            .ok_or_else(|| format!("duration {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"15m\" or \"7d\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ConfigDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A [`ConfigDuration`] the loader accepts only from `MIN_MS` to `MAX_MS`
/// milliseconds, so an absurd value is refused at its line instead of
/// overflowing a deadline later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationIn<const MIN_MS: u64, const MAX_MS: u64>(pub Duration);

impl<const MIN_MS: u64, const MAX_MS: u64> DurationIn<MIN_MS, MAX_MS> {
    /// Parses and bounds "30s"-style text; the error names the allowed range.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ConfigDuration(duration) = ConfigDuration::parse(text)?;
        let range = Duration::from_millis(MIN_MS)..=Duration::from_millis(MAX_MS);
        if !range.contains(&duration) {
            return Err(format!(
                "duration {:?} is out of range: use {} to {}",
                text.trim(),
                human(MIN_MS),
                human(MAX_MS)
            ));
        }
        Ok(Self(duration))
    }
}

impl<'de, const MIN_MS: u64, const MAX_MS: u64> Deserialize<'de> for DurationIn<MIN_MS, MAX_MS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<const MIN_MS: u64, const MAX_MS: u64>;
        impl<const MIN_MS: u64, const MAX_MS: u64> de::Visitor<'_> for Visitor<MIN_MS, MAX_MS> {
            type Value = DurationIn<MIN_MS, MAX_MS>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a duration string from {} to {}",
                    human(MIN_MS),
                    human(MAX_MS)
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                DurationIn::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor::<MIN_MS, MAX_MS>)
    }
}

/// `ms` written in its largest exact unit: 86400000 → "1d", 1500 → "1500ms".
fn human(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(
            ConfigDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            ConfigDuration::parse("30s").unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            ConfigDuration::parse("15m").unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(
            ConfigDuration::parse("2h").unwrap().0,
            Duration::from_secs(7200)
        );
        assert_eq!(
            ConfigDuration::parse("7d").unwrap().0,
            Duration::from_secs(604_800)
        );
        assert_eq!(ConfigDuration::parse("0s").unwrap().0, Duration::ZERO);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "s",
            "15",
            "15x",
            "-1s",
            "1.5s",
            "99999999999999999999d",
            "1 s",
        ] {
            assert!(
                ConfigDuration::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn bounded_durations_refuse_values_outside_their_range() {
        type Timeout = DurationIn<1, 86_400_000>;
        assert_eq!(Timeout::parse("1d").unwrap().0, Duration::from_secs(86_400));
        assert_eq!(Timeout::parse("1ms").unwrap().0, Duration::from_millis(1));
        for bad in [
            "0s",
            "25h",
            "2d",
            "18446744073709551615s",
            "18446744073709551615ms",
        ] {
            let message = Timeout::parse(bad).unwrap_err();
            assert!(message.contains("1ms to 1d"), "{bad:?}: {message}");
        }
        assert_eq!(human(0), "0ms");
        assert_eq!(human(1_500), "1500ms");
        assert_eq!(human(90_000), "90s");
        assert_eq!(human(7 * 86_400_000), "7d");
    }
}
