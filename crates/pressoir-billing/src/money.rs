//! Charge-model math as Lago computes it (`app/services/charge_models/*`), in exact decimals.
//! Amounts in charge properties are in currency units ("0.10"); fees are integer cents,
//! rounded half away from zero once, at the end.

use crate::model::{Pricing, Range};
use rust_decimal::{Decimal, RoundingStrategy};

/// What a charge is computed from: the aggregated units, and for percentage charges the
/// number of events and (when per-event rules apply) each event's value in time order.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub units: Decimal,
    pub events_count: i64,
    pub values: Option<Vec<Decimal>>,
}

/// The amount of a charge, in currency units, unrounded.
pub fn amount(p: &Pricing, u: &Usage) -> Decimal {
    let units = u.units;
    match p {
        Pricing::Standard { amount } => units * amount,
        Pricing::Package {
            amount,
            size,
            free_units,
        } => {
            let paid = units - free_units;
            if paid <= Decimal::ZERO || size.is_zero() {
                return Decimal::ZERO;
            }
            (paid / size).ceil() * amount
        }
        Pricing::Graduated(ranges) => graduated(ranges, units),
        Pricing::Volume(ranges) => volume(ranges, units),
        Pricing::Percentage {
            rate,
            fixed_amount,
            free_units_per_events,
            free_units_per_total_aggregation,
            per_transaction_max_amount,
            per_transaction_min_amount,
        } => {
            let hundred = Decimal::ONE_HUNDRED;
            // Free events: the first N events (in time order) are free, capped by the free
            // aggregated amount when both are set; otherwise only the free amount applies.
            let (free_amount, free_count) = match (free_units_per_events, &u.values) {
                (Some(n), Some(values)) => {
                    let n = (*n).max(0) as usize;
                    let mut total = Decimal::ZERO;
                    let mut count = 0i64;
                    for v in values.iter().take(n) {
                        let next = total + v;
                        if let Some(cap) = free_units_per_total_aggregation
                            && next > *cap
                        {
                            total = *cap;
                            break;
                        }
                        total = next;
                        count += 1;
                    }
                    (total, count)
                }
                _ => (free_units_per_total_aggregation.unwrap_or_default(), 0),
            };
            if units.is_zero() || free_amount > units {
                return Decimal::ZERO;
            }
            let bounded =
                per_transaction_max_amount.is_some() || per_transaction_min_amount.is_some();
            if let (true, Some(values)) = (bounded, &u.values) {
                // Per transaction: each paid event's percentage plus fixed amount, clamped.
                let mut remaining_free = free_amount;
                let mut sum = Decimal::ZERO;
                for (i, v) in values.iter().enumerate() {
                    let mut base = *v;
                    if remaining_free > Decimal::ZERO {
                        let used = remaining_free.min(base);
                        base -= used;
                        remaining_free -= used;
                    }
                    let fixed = if (i as i64) < free_count {
                        Decimal::ZERO
                    } else {
                        fixed_amount.unwrap_or_default()
                    };
                    let mut a = base * rate / hundred + fixed;
                    if let Some(mx) = per_transaction_max_amount {
                        a = a.min(*mx);
                    }
                    if let Some(mn) = per_transaction_min_amount {
                        a = a.max(*mn);
                    }
                    sum += a;
                }
                return sum;
            }
            let percentage = (units - free_amount) * rate / hundred;
            let fixed = match fixed_amount {
                Some(f) if u.events_count > free_count => {
                    Decimal::from(u.events_count - free_count) * f
                }
                _ => Decimal::ZERO,
            };
            percentage + fixed
        }
    }
}

fn graduated(ranges: &[Range], units: Decimal) -> Decimal {
    let mut total = Decimal::ZERO;
    for r in ranges {
        if !units.is_zero() {
            total += r.flat;
        }
        let lower = if r.from.is_zero() {
            Decimal::ONE
        } else {
            r.from
        };
        let in_range = match r.to {
            Some(to) if units >= to => to - lower + Decimal::ONE,
            _ => (units - lower + Decimal::ONE).max(Decimal::ZERO),
        };
        total += in_range * r.per_unit;
        let last = match r.to {
            None => true,
            Some(to) => r.from <= units && units <= to,
        };
        if last {
            break;
        }
        if let Some(to) = r.to
            && units < to
        {
            break;
        }
    }
    total
}

fn volume(ranges: &[Range], units: Decimal) -> Decimal {
    if units.is_zero() {
        return Decimal::ZERO;
    }
    let Some(r) = ranges.iter().find(|r| r.to.is_none_or(|to| units <= to)) else {
        return Decimal::ZERO;
    };
    units * r.per_unit + r.flat
}

/// Currency units to integer cents, rounded half away from zero.
pub fn to_cents(amount: Decimal) -> i64 {
    let c = (amount * Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(c.mantissa() / 10i128.pow(c.scale())).unwrap_or(i64::MAX)
}

/// `amount_cents * num / den`, rounded half away from zero (proration by days).
pub fn prorate(amount_cents: i64, num: i64, den: i64) -> i64 {
    if den <= 0 || num >= den {
        return amount_cents;
    }
    if num <= 0 {
        return 0;
    }
    let v = Decimal::from(amount_cents) * Decimal::from(num) / Decimal::from(den);
    to_cents(v / Decimal::ONE_HUNDRED)
}

/// Units as Lago shows them: a plain decimal string without trailing zeros.
pub fn units_text(d: Decimal) -> String {
    let n = d.normalize();
    if n.scale() == 0 {
        format!("{n}.0")
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Pricing;
    use serde_json::json;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn price(model: &str, props: serde_json::Value) -> Pricing {
        Pricing::parse(model, props.as_object().unwrap()).unwrap()
    }

    fn u(units: &str) -> Usage {
        Usage {
            units: d(units),
            events_count: 1,
            values: None,
        }
    }

    #[test]
    fn standard_is_exact() {
        let p = price("standard", json!({"amount":"0.1"}));
        assert_eq!(amount(&p, &u("3")), d("0.3"));
        assert_eq!(to_cents(amount(&p, &u("3"))), 30);
        assert_eq!(to_cents(d("0.005")), 1);
        assert_eq!(to_cents(d("0.0049")), 0);
    }

    #[test]
    fn package_rounds_packages_up() {
        let p = price(
            "package",
            json!({"amount":"10","package_size":100,"free_units":10}),
        );
        assert_eq!(amount(&p, &u("10")), d("0"));
        assert_eq!(amount(&p, &u("11")), d("10"));
        assert_eq!(amount(&p, &u("110")), d("10"));
        assert_eq!(amount(&p, &u("111")), d("20"));
    }

    fn tiers(key: &str) -> serde_json::Value {
        json!({key: [
            {"from_value":0,"to_value":10,"flat_amount":"2","per_unit_amount":"1"},
            {"from_value":11,"to_value":20,"flat_amount":"3","per_unit_amount":"0.5"},
            {"from_value":21,"to_value":null,"flat_amount":"0","per_unit_amount":"0.1"}]})
    }

    #[test]
    fn graduated_sums_each_tier() {
        let p = price("graduated", tiers("graduated_ranges"));
        assert_eq!(amount(&p, &u("0")), d("0"));
        assert_eq!(amount(&p, &u("5")), d("7"));
        assert_eq!(amount(&p, &u("10")), d("12"));
        // 10*1 + 2 + 5*0.5 + 3
        assert_eq!(amount(&p, &u("15")), d("17.5"));
        // 10 + 2 + 10*0.5 + 3 + 5*0.1 + 0
        assert_eq!(amount(&p, &u("25")), d("20.5"));
        assert_eq!(amount(&p, &u("10.5")), d("12") + d("3") + d("0.25"));
    }

    #[test]
    fn volume_prices_every_unit_at_the_tier_reached() {
        let p = price("volume", tiers("volume_ranges"));
        assert_eq!(amount(&p, &u("0")), d("0"));
        assert_eq!(amount(&p, &u("5")), d("7"));
        assert_eq!(amount(&p, &u("15")), d("10.5"));
        assert_eq!(amount(&p, &u("25")), d("2.5"));
    }

    #[test]
    fn percentage_with_fixed_and_free_units() {
        let p = price(
            "percentage",
            json!({"rate":"1.5","fixed_amount":"0.2","free_units_per_total_aggregation":"100"}),
        );
        let usage = Usage {
            units: d("1100"),
            events_count: 4,
            values: None,
        };
        assert_eq!(amount(&p, &usage), d("15") + d("0.8"));
        let p = price("percentage", json!({"rate":"10","free_units_per_events":2}));
        let usage = Usage {
            units: d("60"),
            events_count: 3,
            values: Some(vec![d("10"), d("20"), d("30")]),
        };
        assert_eq!(amount(&p, &usage), d("3"));
        let p = price(
            "percentage",
            json!({"rate":"10","per_transaction_max_amount":"2","per_transaction_min_amount":"1.5"}),
        );
        let usage = Usage {
            units: d("305"),
            events_count: 3,
            values: Some(vec![d("5"), d("100"), d("200")]),
        };
        assert_eq!(amount(&p, &usage), d("1.5") + d("2") + d("2"));
    }

    #[test]
    fn proration_and_units_text() {
        assert_eq!(prorate(1000, 15, 30), 500);
        assert_eq!(prorate(1000, 1, 3), 333);
        assert_eq!(prorate(1000, 2, 3), 667);
        assert_eq!(units_text(d("5.50")), "5.5");
        assert_eq!(units_text(d("3")), "3.0");
    }
}
