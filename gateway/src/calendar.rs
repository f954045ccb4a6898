//! Calendar days and months in a time zone: the periods of quotas "per day" and "per month"
//! that start over at midnight where the operator is, as WSO2's tiers do.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _, Zoned};

/// A period of the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// From midnight to midnight.
    Day,
    /// From midnight of the first day to midnight of the first day of the next month.
    Month,
}

/// The `period` that `now_ms` (milliseconds since the Unix epoch) falls in, in the IANA time
/// zone `zone`, as `(start, end)` in milliseconds since the Unix epoch, `end` excluded.
pub fn period(now_ms: u64, period: Period, zone: &str) -> Result<(u64, u64), String> {
    let tz = TimeZone::get(zone)
        .map_err(|_| format!("`{zone}` is not a time zone this gateway knows (an IANA name such as `Europe/Paris`, or `UTC`)"))?;
    let now = i64::try_from(now_ms).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()).ok_or("the clock is out of range")?;
    let zoned = now.to_zoned(tz);
    let span = |zoned: &Zoned| -> Result<(u64, u64), jiff::Error> {
        let start = match period {
            Period::Day => zoned.start_of_day()?,
            Period::Month => zoned.first_of_month()?.start_of_day()?,
        };
        let next = match period {
            Period::Day => start.checked_add(1.day())?,
            Period::Month => start.checked_add(1.month())?,
        };
        // Midnight may not exist where a zone's clocks jump at it: `start_of_day` then
        // answers the first instant of that day, and so again for the next period.
        let end = next.start_of_day()?;
        Ok((millis(&start), millis(&end)))
    };
    span(&zoned).map_err(|e| format!("no {period:?} around {now} in `{zone}`: {e}"))
}

fn millis(zoned: &Zoned) -> u64 {
    u64::try_from(zoned.timestamp().as_millisecond()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn a_day_in_utc() {
        let (start, end) = period(ms("2026-12-03T09:30:00Z"), Period::Day, "UTC").unwrap();
        assert_eq!((start, end), (ms("2026-12-03T00:00:00Z"), ms("2026-12-04T00:00:00Z")));
    }

    #[test]
    fn a_day_starts_at_midnight_in_its_zone() {
        // 23:30 UTC on the 2nd is 00:30 on the 3rd in Paris (UTC+1 in winter).
        let (start, end) = period(ms("2026-12-02T23:30:00Z"), Period::Day, "Europe/Paris").unwrap();
        assert_eq!((start, end), (ms("2026-12-02T23:00:00Z"), ms("2026-12-03T23:00:00Z")));
        let (start, _) = period(ms("2026-12-02T22:59:59.999Z"), Period::Day, "Europe/Paris").unwrap();
        assert_eq!(start, ms("2026-12-01T23:00:00Z"));
    }

    #[test]
    fn days_when_summer_time_changes_are_23_or_25_hours() {
        let hour = 3_600_000;
        let (start, end) = period(ms("2026-03-29T12:00:00Z"), Period::Day, "Europe/Paris").unwrap();
        assert_eq!(end - start, 23 * hour);
        let (start, end) = period(ms("2026-10-25T12:00:00Z"), Period::Day, "Europe/Paris").unwrap();
        assert_eq!(end - start, 25 * hour);
    }

    #[test]
    fn a_month_in_its_zone() {
        let (start, end) = period(ms("2026-02-15T00:00:00Z"), Period::Month, "Asia/Colombo").unwrap();
        // Colombo is UTC+05:30.
        assert_eq!((start, end), (ms("2026-01-31T18:30:00Z"), ms("2026-02-28T18:30:00Z")));
        let (start, end) = period(ms("2026-12-31T20:00:00Z"), Period::Month, "Asia/Colombo").unwrap();
        assert_eq!((start, end), (ms("2026-12-31T18:30:00Z"), ms("2027-01-31T18:30:00Z")));
    }

    #[test]
    fn an_unknown_zone_is_named() {
        let error = period(0, Period::Day, "Mars/Olympus").unwrap_err();
        assert!(error.contains("`Mars/Olympus` is not a time zone"), "{error}");
    }
}
