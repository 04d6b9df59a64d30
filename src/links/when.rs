//! Wall-clock times of call links: milliseconds since the epoch in the store, ISO 8601 UTC on the
//! wire.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, Time};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2025-01-29T14:26:01.000Z`: always UTC, always milliseconds.
pub fn iso(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// An ISO 8601 date and time with its offset (RFC 3339: `2025-01-29T11:26:01-03:00`, `...Z`).
pub fn parse_date_time(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A calendar day `YYYY-MM-DD`: the millisecond it starts at, UTC.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    let t = date.with_time(Time::MIDNIGHT).assume_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The first millisecond of the UTC month `ms` falls in: spend limits are per calendar month.
pub fn month_start_ms(ms: i64) -> i64 {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Date::from_calendar_date(t.year(), t.month(), 1)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000)
        .unwrap_or(0)
}

pub const DAY_MS: i64 = 24 * 3600 * 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_738_160_761_123), "2025-01-29T14:26:01.123Z");
        assert_eq!(
            parse_date_time("2025-01-29T11:26:01-03:00"),
            Some(1_738_160_761_000)
        );
        assert_eq!(
            parse_date_time("2025-01-29T14:26:01.123Z"),
            Some(1_738_160_761_123)
        );
        assert_eq!(parse_date_time("2025-01-29"), None);
        assert_eq!(parse_date_time("tomorrow"), None);
        assert_eq!(parse_date("2025-01-29"), Some(1_738_108_800_000));
        for bad in [
            "2025-1-29",
            "2025-02-30",
            "20250129",
            "2025-01-29T00:00:00Z",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(month_start_ms(1_738_160_761_123), 1_735_689_600_000);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_date_time(&s);
            let _ = parse_date(&s);
        }

        #[test]
        fn iso_reads_back(ms in 0i64..253_402_300_799_999) {
            prop_assert_eq!(parse_date_time(&iso(ms)), Some(ms));
        }
    }
}
