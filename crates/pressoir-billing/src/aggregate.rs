//! Aggregations of events into units (`BillableMetrics::Aggregations::*`). Event values are
//! held as fixed-point integers with six decimals so that SQL sums stay exact on both
//! backends; [`Agg`] is what SQL returns (associative, so hourly buckets and raw edges merge),
//! and the functions below turn it, or raw rows for the order-dependent aggregations, into
//! units.

use crate::model::Aggregation;
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::HashSet;

pub const SCALE_DP: u32 = 6;
pub const HOUR_MS: i64 = 3_600_000;

/// A property value as a fixed-point integer (six decimals), if it is a number in range.
pub fn to_fixed(d: Decimal) -> Option<i64> {
    let r = d.round_dp_with_strategy(SCALE_DP, RoundingStrategy::MidpointNearestEven);
    let scaled = r.mantissa().checked_mul(10i128.pow(SCALE_DP - r.scale()))?;
    i64::try_from(scaled).ok()
}

pub fn from_fixed(v: i64) -> Decimal {
    Decimal::new(v, SCALE_DP)
}

/// Count, sum, max and latest of a set of events, mergeable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Agg {
    pub events_count: i64,
    pub value_count: i64,
    pub value_sum: i64,
    pub value_max: Option<i64>,
    /// (timestamp, value) of the latest event carrying a value.
    pub latest: Option<(i64, i64)>,
}

impl Agg {
    pub fn merge(self, o: Agg) -> Agg {
        Agg {
            events_count: self.events_count + o.events_count,
            value_count: self.value_count + o.value_count,
            value_sum: self.value_sum.saturating_add(o.value_sum),
            value_max: match (self.value_max, o.value_max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            latest: match (self.latest, o.latest) {
                (Some(a), Some(b)) => Some(if b.0 >= a.0 { b } else { a }),
                (a, b) => a.or(b),
            },
        }
    }

    /// One event, as ingest adds it to its bucket.
    pub fn of_event(ts: i64, value: Option<i64>) -> Agg {
        Agg {
            events_count: 1,
            value_count: value.is_some() as i64,
            value_sum: value.unwrap_or(0),
            value_max: value,
            latest: value.map(|v| (ts, v)),
        }
    }

    /// Units for the aggregations that an [`Agg`] answers.
    pub fn units(&self, a: Aggregation) -> Decimal {
        match a {
            Aggregation::CountAgg => Decimal::from(self.events_count),
            Aggregation::SumAgg => from_fixed(self.value_sum),
            Aggregation::MaxAgg => self.value_max.map(from_fixed).unwrap_or_default(),
            Aggregation::LatestAgg => self
                .latest
                .map(|(_, v)| from_fixed(v.max(0)))
                .unwrap_or_default(),
            Aggregation::UniqueCountAgg | Aggregation::WeightedSumAgg => Decimal::ZERO,
        }
    }
}

/// The hour bucket of a timestamp.
pub fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(HOUR_MS) * HOUR_MS
}

/// Distinct values, where `operation_type: "remove"` takes a value out again. Rows are
/// (value_text, is_remove) in time order.
pub fn unique_count<'a>(rows: impl IntoIterator<Item = (&'a str, bool)>) -> Decimal {
    let mut set: HashSet<&str> = HashSet::new();
    for (v, remove) in rows {
        if remove {
            set.remove(v);
        } else {
            set.insert(v);
        }
    }
    Decimal::from(set.len() as i64)
}

/// Time-weighted sum over `[from, to)`: the running total (starting at `initial`, moved by
/// each event's value) weighted by how long it held, over the period's length.
pub fn weighted_sum(initial: Decimal, rows: &[(i64, i64)], from: i64, to: i64) -> Decimal {
    if to <= from {
        return Decimal::ZERO;
    }
    let mut total = initial;
    let mut at = from;
    let mut acc = Decimal::ZERO;
    for &(ts, v) in rows {
        let ts = ts.clamp(from, to);
        acc += total * Decimal::from(ts - at);
        at = ts;
        total += from_fixed(v);
    }
    acc += total * Decimal::from(to - at);
    (acc / Decimal::from(to - from)).round_dp(SCALE_DP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn fixed_point_round_trips() {
        let d = Decimal::from_str("5.5").unwrap();
        assert_eq!(to_fixed(d), Some(5_500_000));
        assert_eq!(from_fixed(5_500_000), d);
        assert_eq!(to_fixed(Decimal::from_str("0.0000005").unwrap()), Some(0));
        assert_eq!(
            to_fixed(Decimal::from_str("1e30").unwrap_or(Decimal::MAX)),
            None
        );
    }

    #[test]
    fn merge_is_associative_over_events() {
        let evs = [(10, Some(3)), (5, Some(7)), (20, None), (15, Some(-2))];
        let all = evs
            .iter()
            .fold(Agg::default(), |a, &(t, v)| a.merge(Agg::of_event(t, v)));
        let left = Agg::of_event(10, Some(3)).merge(Agg::of_event(5, Some(7)));
        let right = Agg::of_event(20, None).merge(Agg::of_event(15, Some(-2)));
        assert_eq!(left.merge(right), all);
        assert_eq!(all.units(Aggregation::CountAgg), Decimal::from(4));
        assert_eq!(all.units(Aggregation::SumAgg), from_fixed(8));
        assert_eq!(all.units(Aggregation::MaxAgg), from_fixed(7));
        assert_eq!(all.latest, Some((15, -2)));
        assert_eq!(all.units(Aggregation::LatestAgg), Decimal::ZERO);
    }

    #[test]
    fn unique_and_weighted() {
        assert_eq!(
            unique_count([("a", false), ("b", false), ("a", false), ("b", true)]),
            Decimal::ONE
        );
        // 0 for the first half, 10 for the second: average 5.
        let ws = weighted_sum(Decimal::ZERO, &[(50, 10_000_000)], 0, 100);
        assert_eq!(ws, Decimal::from(5));
        assert_eq!(
            weighted_sum(Decimal::from(2), &[], 0, 100),
            Decimal::from(2)
        );
    }
}
