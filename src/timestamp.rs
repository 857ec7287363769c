//! Points in time as the gateway writes them: unix seconds in tokens and
//! stored records, UTC timestamps in RFC 3339 form for the audit trail and
//! the CLI's listings (without a date crate).

use std::time::{SystemTime, UNIX_EPOCH};

/// Whole seconds since the epoch; a time before it reads as 0.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a point in time.
pub(crate) fn utc_timestamp_millis(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = utc_timestamp(since.as_secs());
    let (date_time, _) = seconds.split_at(seconds.len().saturating_sub(1));
    format!("{date_time}.{:03}Z", since.subsec_millis())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds, without a date crate (the
/// days-to-civil algorithm from Howard Hinnant's "chrono-Compatible
/// Low-Level Date Algorithms").
pub(crate) fn utc_timestamp(unix: u64) -> String {
    let days = unix / 86_400;
    let seconds = unix % 86_400;
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3_600,
        seconds % 3_600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(utc_timestamp(4_102_444_799), "2099-12-31T23:59:59Z");
        let at = UNIX_EPOCH + Duration::from_millis(1_709_210_096_042);
        assert_eq!(utc_timestamp_millis(at), "2024-02-29T12:34:56.042Z");
    }
}
