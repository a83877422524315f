//! Billing periods in UTC, as Lago draws them: calendar periods start on the first day of the
//! week (Monday), month, quarter, half-year or year; anniversary periods repeat from the day
//! the subscription started, clamped to the month's last day and anchored on the original
//! day. A subscription's first period starts when it starts. Times are Unix milliseconds.

use crate::model::Interval;
use time::{Date, Duration, Month, OffsetDateTime, Time};

pub const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingTime {
    Calendar,
    Anniversary,
}

impl BillingTime {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "calendar" => Some(BillingTime::Calendar),
            "anniversary" => Some(BillingTime::Anniversary),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BillingTime::Calendar => "calendar",
            BillingTime::Anniversary => "anniversary",
        }
    }
}

/// A half-open period `[from, to)`; `full_from` is where the full period would start (before a
/// late start cut it), used to prorate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: i64,
    pub to: i64,
    pub full_from: i64,
}

impl Period {
    /// Whole days in the full period and in the part actually covered, for proration.
    pub fn days(&self) -> (i64, i64) {
        let full = days_between(self.full_from, self.to);
        let used = days_between(day_floor(self.from), self.to);
        (used, full)
    }
}

fn days_between(a: i64, b: i64) -> i64 {
    ((b - a) + DAY_MS - 1).div_euclid(DAY_MS)
}

pub fn day_floor(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

fn date_of(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

fn ms_of(d: Date) -> i64 {
    d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000
}

fn months_of(i: Interval) -> Option<i32> {
    match i {
        Interval::Weekly => None,
        Interval::Monthly => Some(1),
        Interval::Quarterly => Some(3),
        Interval::Semiannual => Some(6),
        Interval::Yearly => Some(12),
    }
}

/// The date `months` after `(year, month0, day)`, with the day clamped to the month's end.
fn add_months(year: i32, month0: i32, day: u8, months: i32) -> Date {
    let total = year * 12 + month0 + months;
    let (y, m0) = (total.div_euclid(12), total.rem_euclid(12));
    let month = Month::try_from((m0 + 1) as u8).unwrap_or(Month::January);
    let last = month.length(y);
    Date::from_calendar_date(y, month, day.min(last)).unwrap_or(Date::MIN)
}

/// The period containing `t` for a subscription started at `started_at`.
pub fn containing(interval: Interval, billing: BillingTime, started_at: i64, t: i64) -> Period {
    let t = t.max(started_at);
    let d = date_of(t);
    let (full_from, to) = match (billing, months_of(interval)) {
        (BillingTime::Calendar, None) => {
            let monday = d - Duration::days(d.weekday().number_days_from_monday() as i64);
            (ms_of(monday), ms_of(monday + Duration::days(7)))
        }
        (BillingTime::Calendar, Some(n)) => {
            let m0 = d.month() as i32 - 1;
            let start_m0 = m0 - m0 % n;
            let start = add_months(d.year(), start_m0, 1, 0);
            (ms_of(start), ms_of(add_months(d.year(), start_m0, 1, n)))
        }
        (BillingTime::Anniversary, None) => {
            let anchor = day_floor(started_at);
            let week = 7 * DAY_MS;
            let k = (t - anchor).div_euclid(week);
            (anchor + k * week, anchor + (k + 1) * week)
        }
        (BillingTime::Anniversary, Some(n)) => {
            let a = date_of(started_at);
            let (ay, am0, ad) = (a.year(), a.month() as i32 - 1, a.day());
            let mut k = ((d.year() - ay) * 12 + (d.month() as i32 - 1 - am0)) / n;
            loop {
                let from = ms_of(add_months(ay, am0, ad, k * n));
                let next = ms_of(add_months(ay, am0, ad, (k + 1) * n));
                if t < from {
                    k -= 1;
                } else if t >= next {
                    k += 1;
                } else {
                    break (from, next);
                }
            }
        }
    };
    Period {
        from: full_from.max(started_at),
        to,
        full_from,
    }
}

/// ISO date (`2026-12-04`) of a millisecond time.
pub fn iso_date(ms: i64) -> String {
    let d = date_of(ms);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressoir_core::clock::parse_rfc3339_ms;

    fn t(s: &str) -> i64 {
        parse_rfc3339_ms(s).unwrap()
    }

    #[test]
    fn calendar_months_and_first_partial_period() {
        let start = t("2026-03-15T10:00:00Z");
        let p = containing(Interval::Monthly, BillingTime::Calendar, start, start);
        assert_eq!(p.from, start);
        assert_eq!(p.full_from, t("2026-03-01T00:00:00Z"));
        assert_eq!(p.to, t("2026-04-01T00:00:00Z"));
        assert_eq!(p.days(), (17, 31));
        let p = containing(
            Interval::Monthly,
            BillingTime::Calendar,
            start,
            t("2026-12-31T23:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z"))
        );
        let p = containing(
            Interval::Quarterly,
            BillingTime::Calendar,
            start,
            t("2026-05-02T00:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2026-04-01T00:00:00Z"), t("2026-07-01T00:00:00Z"))
        );
        let p = containing(
            Interval::Yearly,
            BillingTime::Calendar,
            start,
            t("2027-05-02T00:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2027-01-01T00:00:00Z"), t("2028-01-01T00:00:00Z"))
        );
        // 2026-12-04 is a Friday
        let p = containing(
            Interval::Weekly,
            BillingTime::Calendar,
            start,
            t("2026-12-04T12:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2026-11-30T00:00:00Z"), t("2026-12-07T00:00:00Z"))
        );
    }

    #[test]
    fn anniversary_clamps_to_month_end_and_keeps_the_day() {
        let start = t("2026-01-31T08:00:00Z");
        let p = containing(
            Interval::Monthly,
            BillingTime::Anniversary,
            start,
            t("2026-02-15T00:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2026-01-31T08:00:00Z"), t("2026-02-28T00:00:00Z"))
        );
        let p = containing(
            Interval::Monthly,
            BillingTime::Anniversary,
            start,
            t("2026-03-01T00:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2026-02-28T00:00:00Z"), t("2026-03-31T00:00:00Z"))
        );
        let p = containing(
            Interval::Weekly,
            BillingTime::Anniversary,
            start,
            t("2026-02-10T00:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2026-02-07T00:00:00Z"), t("2026-02-14T00:00:00Z"))
        );
        let p = containing(
            Interval::Yearly,
            BillingTime::Anniversary,
            start,
            t("2027-06-01T00:00:00Z"),
        );
        assert_eq!(
            (p.from, p.to),
            (t("2027-01-31T00:00:00Z"), t("2028-01-31T00:00:00Z"))
        );
    }
}
