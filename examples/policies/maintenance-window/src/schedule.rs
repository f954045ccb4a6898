//! Weekly windows on a UTC clock in milliseconds, and the RFC 3339 form of an instant.

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;
const WEEK_MS: u64 = 7 * DAY_MS;
/// 1970-01-01 was a Thursday: the Unix epoch is three days into a Monday-based week.
const EPOCH_INTO_WEEK_MS: u64 = 3 * DAY_MS;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One window a week: its start and length, in milliseconds from Monday 00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u64,
    length: u64,
}

impl Window {
    /// The windows that start on each of `days` at `from` and end at `to` (the next day
    /// when `to` is not after `from`).
    pub fn parse(days: &[String], from: &str, to: &str) -> Result<Vec<Window>, String> {
        let from = time_of_day(from).ok_or_else(|| format!("`from`: {from:?} is not HH:MM"))?;
        let to = time_of_day(to).ok_or_else(|| format!("`to`: {to:?} is not HH:MM"))?;
        let length = if to > from { to - from } else { to + DAY_MS - from };
        if days.is_empty() {
            return Err("`days`: at least one day".to_owned());
        }
        days.iter()
            .map(|day| {
                let index = DAYS
                    .iter()
                    .position(|d| d.eq_ignore_ascii_case(day))
                    .ok_or_else(|| format!("`days`: {day:?} is not one of {}", DAYS.join(", ")))?;
                Ok(Window { start: index as u64 * DAY_MS + from, length })
            })
            .collect()
    }

    /// How long until the window ends, when `now` (Unix ms) is inside it.
    pub fn remaining(&self, now: u64) -> Option<u64> {
        let into = (into_week(now) + WEEK_MS - self.start) % WEEK_MS;
        (into < self.length).then(|| self.length - into)
    }

    /// How long until the window next starts.
    pub fn until_start(&self, now: u64) -> u64 {
        (self.start + WEEK_MS - into_week(now)) % WEEK_MS
    }
}

fn into_week(now: u64) -> u64 {
    (now + EPOCH_INTO_WEEK_MS) % WEEK_MS
}

fn time_of_day(text: &str) -> Option<u64> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (u64, u64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60 && text.len() == 5).then_some((hours * 60 + minutes) * MINUTE_MS)
}

/// `2024-01-06T02:00:00Z` for a Unix time in milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let days = ms / DAY_MS;
    let seconds = (ms % DAY_MS) / 1000;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-06, a Saturday, 00:00 UTC.
    const SATURDAY: u64 = 1_704_499_200_000;

    #[test]
    fn dates_are_formatted() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(SATURDAY + 2 * 3_600_000), "2024-01-06T02:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn windows_know_when_they_are_open() {
        let window = Window::parse(&["sat".to_owned()], "02:00", "04:00").unwrap()[0];
        assert_eq!(window.remaining(SATURDAY + 3 * 3_600_000), Some(3_600_000));
        assert_eq!(window.remaining(SATURDAY + 4 * 3_600_000), None);
        assert_eq!(window.until_start(SATURDAY), 2 * 3_600_000);
        let overnight = Window::parse(&["sun".to_owned()], "23:00", "01:00").unwrap()[0];
        // Monday 00:30 is inside Sunday's window, across the end of the week.
        assert_eq!(overnight.remaining(SATURDAY + 2 * DAY_MS + 30 * MINUTE_MS), Some(30 * MINUTE_MS));
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(Window::parse(&["someday".to_owned()], "02:00", "04:00").unwrap_err().contains("someday"));
        assert!(Window::parse(&["mon".to_owned()], "2:00", "04:00").unwrap_err().contains("`from`"));
        assert!(Window::parse(&[], "02:00", "04:00").is_err());
    }
}
