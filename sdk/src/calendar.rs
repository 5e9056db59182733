//! Region-local calendar helpers: weekdays, month ranges that wrap the year, seasons and holiday
//! lists. The host works out each region's local time (a plugin has no time-zone database and no
//! clock); these helpers only read the [`LocalTime`] records it hands over.

use crate::{LocalTime, Weekday};

/// A day of the year, e.g. `MonthDay::new(12, 25)`; the year is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonthDay {
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
}

impl MonthDay {
    /// A day of the year (not checked; see [`MonthDay::parse`] for checked input).
    pub const fn new(month: u8, day: u8) -> Self {
        MonthDay { month, day }
    }

    /// Parses `"MM-DD"` (e.g. `"12-25"`), checking the month and the day (Feb 29 is allowed).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a day of the year (expected MM-DD, e.g. \"12-25\")");
        let (m, d) = text.trim().split_once('-').ok_or_else(bad)?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        let day: u8 = d.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(2024, month) {
            return Err(bad());
        }
        Ok(MonthDay { month, day })
    }
}

/// Inclusive months `start..=end`; when `start > end` the range wraps the year (`11..=2` is
/// November, December, January, February).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MonthRange {
    /// First month, 1–12.
    pub start: u8,
    /// Last month, 1–12.
    pub end: u8,
}

impl MonthRange {
    /// Months `start..=end`, wrapping the year when `start > end`.
    pub const fn new(start: u8, end: u8) -> Self {
        MonthRange { start, end }
    }

    /// Checked constructor: both months in 1–12.
    pub fn checked(start: u8, end: u8) -> Result<Self, String> {
        if (1..=12).contains(&start) && (1..=12).contains(&end) {
            Ok(MonthRange { start, end })
        } else {
            Err(format!("month range {start}..{end}: months must be 1-12"))
        }
    }

    /// `month` (1–12) falls in the range.
    pub const fn contains(&self, month: u8) -> bool {
        if self.start <= self.end {
            month >= self.start && month <= self.end
        } else {
            month >= self.start || month <= self.end
        }
    }

    /// Number of months covered (1–12).
    pub const fn len(&self) -> u8 {
        if self.start <= self.end { self.end - self.start + 1 } else { 12 - self.start + 1 + self.end }
    }

    /// Never empty; here for clippy's `len_without_is_empty`.
    pub const fn is_empty(&self) -> bool {
        false
    }
}

/// A named season: a month range and a demand multiplier (e.g. 1.4 for +40%).
#[derive(Debug, Clone, PartialEq)]
pub struct Season {
    /// Its name, for logs and reasons.
    pub name: String,
    /// The months it covers.
    pub months: MonthRange,
    /// Demand multiplier while it holds.
    pub multiplier: f64,
}

impl Season {
    /// A season.
    pub fn new(name: impl Into<String>, months: MonthRange, multiplier: f64) -> Self {
        Season { name: name.into(), months, multiplier }
    }

    /// The season holds at `time`.
    pub fn holds(&self, time: &LocalTime) -> bool {
        self.months.contains(time.month)
    }

    /// The South Asian wedding season, November–February.
    pub fn south_asia(multiplier: f64) -> Self {
        Season::new("south-asia", MonthRange::new(11, 2), multiplier)
    }

    /// The southern-hemisphere wedding season, October–March.
    pub fn southern_hemisphere(multiplier: f64) -> Self {
        Season::new("southern-hemisphere", MonthRange::new(10, 3), multiplier)
    }

    /// The northern-hemisphere wedding season, April–October.
    pub fn northern_hemisphere(multiplier: f64) -> Self {
        Season::new("northern-hemisphere", MonthRange::new(4, 10), multiplier)
    }
}

/// The largest multiplier among the seasons that hold at `time` (1.0 when none does).
pub fn season_multiplier(seasons: &[Season], time: &LocalTime) -> f64 {
    seasons.iter().filter(|s| s.holds(time)).map(|s| s.multiplier).fold(1.0, f64::max)
}

impl Weekday {
    /// Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }

    /// Monday = 0 … Sunday = 6.
    pub fn index_from_monday(self) -> u8 {
        self as u8
    }
}

impl LocalTime {
    /// Its day of the year.
    pub fn month_day(&self) -> MonthDay {
        MonthDay { month: self.month, day: self.day }
    }

    /// A Saturday.
    pub fn is_saturday(&self) -> bool {
        self.weekday == Weekday::Saturday
    }

    /// A Saturday or Sunday.
    pub fn is_weekend(&self) -> bool {
        self.weekday.is_weekend()
    }

    /// The month falls in `months`.
    pub fn in_months(&self, months: MonthRange) -> bool {
        months.contains(self.month)
    }

    /// The day is one of `holidays`.
    pub fn is_one_of(&self, holidays: &[MonthDay]) -> bool {
        holidays.contains(&self.month_day())
    }

    /// Minutes since local midnight (0–1439).
    pub fn minute_of_day(&self) -> u32 {
        u32::from(self.hour) * 60 + u32::from(self.minute)
    }
}

/// Builds a [`LocalTime`] with its weekday worked out (UTC offset 0; set
/// `utc_offset_minutes` afterwards if it matters). Used by tests and the [`crate::testing`] harness.
pub fn local_time(year: i32, month: u8, day: u8, hour: u8, minute: u8) -> LocalTime {
    LocalTime { year, month, day, weekday: weekday_of(year, month, day), hour, minute, utc_offset_minutes: 0 }
}

/// The weekday of a proleptic Gregorian date (month 1–12).
pub fn weekday_of(year: i32, month: u8, day: u8) -> Weekday {
    // Days since 1970-01-01 (a Thursday), Howard Hinnant's days_from_civil.
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    weekday_of_days(days)
}

/// The weekday `days` days after 1970-01-01 (a Thursday).
fn weekday_of_days(days: i64) -> Weekday {
    match (days + 3).rem_euclid(7) {
        0 => Weekday::Monday,
        1 => Weekday::Tuesday,
        2 => Weekday::Wednesday,
        3 => Weekday::Thursday,
        4 => Weekday::Friday,
        5 => Weekday::Saturday,
        _ => Weekday::Sunday,
    }
}

/// Calendar time at `unix_ms` in a zone `utc_offset_minutes` ahead of UTC (Howard Hinnant's
/// civil_from_days; proleptic Gregorian).
pub fn civil_time(unix_ms: i64, utc_offset_minutes: i32) -> LocalTime {
    let local_minutes = unix_ms.div_euclid(60_000) + i64::from(utc_offset_minutes);
    let days = local_minutes.div_euclid(1440);
    let minute_of_day = local_minutes.rem_euclid(1440);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = weekday_of_days(days);
    // Every cast below is in range by construction (month 1–12, day 1–31, hour < 24).
    LocalTime {
        year: i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX }),
        month: month as u8,
        day: day as u8,
        weekday,
        hour: (minute_of_day / 60) as u8,
        minute: (minute_of_day % 60) as u8,
        utc_offset_minutes,
    }
}

/// Days in `month` (1–12) of `year`; 0 for a month outside 1–12.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays() {
        assert_eq!(weekday_of(1970, 1, 1), Weekday::Thursday);
        assert_eq!(weekday_of(2026, 11, 27), Weekday::Friday);
        assert_eq!(weekday_of(2026, 11, 28), Weekday::Saturday);
        assert_eq!(weekday_of(2000, 2, 29), Weekday::Tuesday);
        assert_eq!(weekday_of(1900, 3, 1), Weekday::Thursday);
        assert!(local_time(2026, 6, 13, 10, 0).is_saturday());
        assert!(local_time(2026, 6, 14, 10, 0).is_weekend());
        assert!(!local_time(2026, 6, 15, 10, 0).is_weekend());
    }

    #[test]
    fn civil_times() {
        let t = civil_time(1_781_092_800_000, 0); // 2026-06-10T12:00:00Z
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute), (2026, 6, 10, 12, 0));
        assert_eq!(t.weekday, Weekday::Wednesday);
        let t = civil_time(1_781_092_800_000, 330);
        assert_eq!((t.day, t.hour, t.minute, t.utc_offset_minutes), (10, 17, 30, 330));
        let t = civil_time(1_781_092_800_000, -13 * 60);
        assert_eq!((t.day, t.hour, t.weekday), (9, 23, Weekday::Tuesday));
        assert_eq!(civil_time(0, 0), local_time(1970, 1, 1, 0, 0));
        let t = civil_time(-1, 0);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute), (1969, 12, 31, 23, 59));
        let t = civil_time(951_782_400_000, 0); // 2000-02-29
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, Weekday::Tuesday));
        for days in (-800_000i64..800_000).step_by(997) {
            let t = civil_time(days * 86_400_000, 0);
            assert_eq!(weekday_of(t.year, t.month, t.day), t.weekday, "{t:?}");
            assert!(t.day >= 1 && t.day <= days_in_month(t.year, t.month));
        }
    }

    #[test]
    fn month_ranges_wrap() {
        let winter = MonthRange::new(11, 2);
        assert!(winter.contains(11) && winter.contains(12) && winter.contains(1) && winter.contains(2));
        assert!(!winter.contains(3) && !winter.contains(10));
        assert_eq!(winter.len(), 4);
        let summer = MonthRange::new(4, 10);
        assert!(summer.contains(4) && summer.contains(10) && !summer.contains(11));
        assert_eq!(summer.len(), 7);
        assert_eq!(MonthRange::new(5, 5).len(), 1);
        assert!(MonthRange::checked(0, 5).is_err() && MonthRange::checked(1, 13).is_err());
    }

    #[test]
    fn seasons_and_holidays() {
        let seasons = [Season::south_asia(1.8), Season::northern_hemisphere(1.4)];
        assert_eq!(season_multiplier(&seasons, &local_time(2026, 1, 10, 0, 0)), 1.8);
        assert_eq!(season_multiplier(&seasons, &local_time(2026, 6, 10, 0, 0)), 1.4);
        assert_eq!(season_multiplier(&seasons, &local_time(2026, 3, 10, 0, 0)), 1.0);
        let t = local_time(2026, 12, 25, 23, 59);
        assert!(t.is_one_of(&[MonthDay::new(12, 25)]));
        assert_eq!(t.minute_of_day(), 1439);
        assert_eq!(MonthDay::parse("02-29"), Ok(MonthDay::new(2, 29)));
        assert!(
            MonthDay::parse("02-30").is_err() && MonthDay::parse("13-01").is_err() && MonthDay::parse("x").is_err()
        );
    }
}
