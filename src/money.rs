//! Amounts of money (prices, spend limits) as whole micro-units: sums of many small charges stay
//! exact, which floating point would not.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Micro-units in one unit of the currency.
pub const MICROS: i64 = 1_000_000;

/// The largest amount accepted (a thousand billion units), far from overflowing sums.
const MAX_UNITS: i64 = 1_000_000_000_000;

/// A non-negative amount written `12`, `0.05` or `100.125` (at most six decimals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(pub i64);

impl Money {
    pub fn micros(self) -> i64 {
        self.0
    }
}

impl FromStr for Money {
    type Err = String;
    fn from_str(s: &str) -> Result<Money, String> {
        let bad = || format!("`{s}` is not an amount like 12, 0.05 or 100.50");
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || (s.contains('.') && fraction.is_empty())
        {
            return Err(bad());
        }
        if fraction.len() > 6 {
            return Err(format!("`{s}` has more than six decimals"));
        }
        let units: i64 = whole.parse().map_err(|_| format!("`{s}` is too large"))?;
        if units > MAX_UNITS {
            return Err(format!("`{s}` is too large"));
        }
        let mut micros_part = 0i64;
        for (i, b) in fraction.bytes().enumerate() {
            micros_part += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
        }
        Ok(Money(units * MICROS + micros_part))
    }
}

impl fmt::Display for Money {
    /// Two decimals at least, more only when the amount has them: `12.00`, `0.055`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let units = self.0 / MICROS;
        let fraction = format!("{:06}", self.0 % MICROS);
        let trimmed = fraction.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &fraction[..2]
        } else {
            trimmed
        };
        write!(f, "{units}.{shown}")
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an amount like \"0.05\" or 12")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                // The shortest text that reads back as `v`: 0.05 stays 0.05.
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Minutes with two decimals from milliseconds, rounded down: what `totalBillableMinutes` shows.
pub fn minutes_text(ms: i64) -> String {
    let hundredths = ms.max(0) / 600;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The cost of `ms` milliseconds at `per_minute`, in micro-units, rounded down.
pub fn cost_of_ms(ms: i64, per_minute: Money) -> i64 {
    let cost = i128::from(ms.max(0)) * i128::from(per_minute.0) / 60_000;
    i64::try_from(cost).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts() {
        assert_eq!("12".parse(), Ok(Money(12 * MICROS)));
        assert_eq!("0.05".parse(), Ok(Money(50_000)));
        assert_eq!("100.125".parse(), Ok(Money(100_125_000)));
        assert_eq!("007.5".parse(), Ok(Money(7_500_000)));
        assert_eq!("0".parse(), Ok(Money(0)));
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e3",
            "1.2345678",
            "a",
            "1.2.3",
            " 1",
            "+1",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad}");
        }
        assert!("99999999999999999999".parse::<Money>().is_err());
        assert_eq!(Money(12 * MICROS).to_string(), "12.00");
        assert_eq!(Money(55_000).to_string(), "0.055");
        assert_eq!(Money(1_500_000).to_string(), "1.50");
    }

    #[test]
    fn billable_minutes_are_participant_minutes() {
        // Two people for 43 minutes bill 86.00.
        assert_eq!(minutes_text(2 * 43 * 60_000), "86.00");
        assert_eq!(minutes_text(0), "0.00");
        assert_eq!(minutes_text(30_000), "0.50");
        assert_eq!(minutes_text(599), "0.00");
        assert_eq!(cost_of_ms(60_000, Money(MICROS)), MICROS);
        assert_eq!(cost_of_ms(30_000, Money(2 * MICROS)), MICROS);
    }

    proptest! {
        #[test]
        fn parser_never_panics_and_round_trips(s in "\\PC{0,24}") {
            if let Ok(m) = s.parse::<Money>() {
                prop_assert!(m.0 >= 0);
                prop_assert_eq!(m.to_string().parse::<Money>(), Ok(m));
            }
        }

        #[test]
        fn display_reads_back(micros in 0i64..=MAX_UNITS * MICROS) {
            let m = Money(micros);
            prop_assert_eq!(m.to_string().parse::<Money>(), Ok(m));
        }
    }
}
