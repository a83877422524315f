//! Domain types and their validation from Lago input. No I/O here.

use crate::input::{Fields, decimal_of};
use crate::proto::{ApiError, FieldErrors};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    CountAgg,
    SumAgg,
    MaxAgg,
    UniqueCountAgg,
    LatestAgg,
    WeightedSumAgg,
}

impl Aggregation {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::CountAgg => "count_agg",
            Aggregation::SumAgg => "sum_agg",
            Aggregation::MaxAgg => "max_agg",
            Aggregation::UniqueCountAgg => "unique_count_agg",
            Aggregation::LatestAgg => "latest_agg",
            Aggregation::WeightedSumAgg => "weighted_sum_agg",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub lago_id: String,
    pub name: String,
    pub code: String,
    pub description: Option<String>,
    pub aggregation_type: Aggregation,
    pub field_name: Option<String>,
    pub recurring: bool,
    pub rounding_function: Option<String>,
    pub rounding_precision: Option<i64>,
    pub weighted_interval: Option<String>,
    pub expression: Option<String>,
    pub filters: Vec<Value>,
    pub created_at: i64,
}

impl Metric {
    /// Builds a metric from a `billable_metric` object; `base` is the stored one on update.
    pub fn from_input(
        m: &Map<String, Value>,
        base: Option<&Metric>,
        lago_id: String,
        now: i64,
    ) -> Result<Metric, ApiError> {
        let mut f = Fields::new(m);
        let pick = |f: &mut Fields, k: &str, old: Option<String>| -> Option<String> {
            if f.map.contains_key(k) { f.str(k) } else { old }
        };
        let name = if base.is_none() || f.map.contains_key("name") {
            f.req_str("name")
        } else {
            base.map(|b| b.name.clone())
        };
        let code = if base.is_none() || f.map.contains_key("code") {
            f.req_str("code")
        } else {
            base.map(|b| b.code.clone())
        };
        let aggregation = if base.is_none() || f.map.contains_key("aggregation_type") {
            match f.req_str("aggregation_type") {
                Some(s) => match Aggregation::parse(&s) {
                    Some(a) => Some(a),
                    None => {
                        f.err("aggregation_type", "value_is_invalid");
                        None
                    }
                },
                None => None,
            }
        } else {
            base.map(|b| b.aggregation_type)
        };
        let description = pick(
            &mut f,
            "description",
            base.and_then(|b| b.description.clone()),
        );
        let mut field_name = pick(
            &mut f,
            "field_name",
            base.and_then(|b| b.field_name.clone()),
        );
        let recurring = if f.map.contains_key("recurring") {
            f.bool("recurring").unwrap_or(false)
        } else {
            base.map(|b| b.recurring).unwrap_or(false)
        };
        let rounding_function = if f.map.contains_key("rounding_function") {
            f.one_of("rounding_function", &["ceil", "floor", "round"])
        } else {
            base.and_then(|b| b.rounding_function.clone())
        };
        let rounding_precision = if f.map.contains_key("rounding_precision") {
            f.int("rounding_precision")
        } else {
            base.and_then(|b| b.rounding_precision)
        };
        let weighted_interval = if f.map.contains_key("weighted_interval") {
            f.one_of("weighted_interval", &["seconds"])
        } else {
            base.and_then(|b| b.weighted_interval.clone())
        };
        let expression = pick(
            &mut f,
            "expression",
            base.and_then(|b| b.expression.clone()),
        );
        let filters = if f.map.contains_key("filters") {
            let mut out = Vec::new();
            for v in f.array("filters").cloned().unwrap_or_default() {
                let ok = v.get("key").and_then(Value::as_str).is_some()
                    && v.get("values")
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
                if ok {
                    out.push(json!({"key": v["key"], "values": v["values"]}));
                } else {
                    f.err("filters", "invalid_format");
                }
            }
            out
        } else {
            base.map(|b| b.filters.clone()).unwrap_or_default()
        };
        if let Some(c) = &code
            && !valid_code(c)
        {
            f.err("code", "value_is_invalid");
        }
        let mut weighted_interval = weighted_interval;
        if let Some(a) = aggregation {
            match a {
                Aggregation::CountAgg => field_name = None,
                _ => {
                    if field_name.as_deref().is_none_or(|s| s.trim().is_empty()) {
                        f.err("field_name", "value_is_mandatory");
                    }
                }
            }
            if recurring
                && matches!(
                    a,
                    Aggregation::CountAgg | Aggregation::MaxAgg | Aggregation::LatestAgg
                )
            {
                f.err("recurring", "not_compatible_with_aggregation_type");
            }
            if a == Aggregation::WeightedSumAgg {
                weighted_interval.get_or_insert_with(|| "seconds".to_string());
            } else {
                weighted_interval = None;
            }
        }
        if rounding_precision.is_some() && rounding_function.is_none() {
            f.err("rounding_function", "value_is_mandatory");
        }
        let errors = std::mem::take(&mut f.errors);
        errors.into_result()?;
        Ok(Metric {
            lago_id: base.map(|b| b.lago_id.clone()).unwrap_or(lago_id),
            name: name.unwrap_or_default(),
            code: code.unwrap_or_default(),
            description,
            aggregation_type: aggregation.unwrap_or(Aggregation::CountAgg),
            field_name,
            recurring,
            rounding_function,
            rounding_precision,
            weighted_interval,
            expression,
            filters,
            created_at: base.map(|b| b.created_at).unwrap_or(now),
        })
    }

    /// Rounds aggregated units as the metric asks.
    pub fn round_units(&self, units: Decimal) -> Decimal {
        use rust_decimal::RoundingStrategy as R;
        let p = self.rounding_precision.unwrap_or(0).clamp(0, 15) as u32;
        match self.rounding_function.as_deref() {
            Some("ceil") => units.round_dp_with_strategy(p, R::ToPositiveInfinity),
            Some("floor") => units.round_dp_with_strategy(p, R::ToNegativeInfinity),
            Some("round") => units.round_dp_with_strategy(p, R::MidpointAwayFromZero),
            _ => units,
        }
    }
}

/// Codes are identifiers that also appear in URLs.
pub fn valid_code(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 255
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | ':'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Weekly,
    Monthly,
    Quarterly,
    Semiannual,
    Yearly,
}

impl Interval {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Weekly => "weekly",
            Interval::Monthly => "monthly",
            Interval::Quarterly => "quarterly",
            Interval::Semiannual => "semiannual",
            Interval::Yearly => "yearly",
        }
    }

    /// How many of this interval make a year, to compare plans by yearly amount.
    pub fn per_year(self) -> i64 {
        match self {
            Interval::Weekly => 52,
            Interval::Monthly => 12,
            Interval::Quarterly => 4,
            Interval::Semiannual => 2,
            Interval::Yearly => 1,
        }
    }
}

/// One tier of a graduated or volume charge.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub from: Decimal,
    pub to: Option<Decimal>,
    pub flat: Decimal,
    pub per_unit: Decimal,
}

/// A charge model with its parsed properties.
#[derive(Debug, Clone, PartialEq)]
pub enum Pricing {
    Standard {
        amount: Decimal,
    },
    Graduated(Vec<Range>),
    Volume(Vec<Range>),
    Package {
        amount: Decimal,
        size: Decimal,
        free_units: Decimal,
    },
    Percentage {
        rate: Decimal,
        fixed_amount: Option<Decimal>,
        free_units_per_events: Option<i64>,
        free_units_per_total_aggregation: Option<Decimal>,
        per_transaction_max_amount: Option<Decimal>,
        per_transaction_min_amount: Option<Decimal>,
    },
}

pub const CHARGE_MODELS: &[&str] = &["standard", "graduated", "volume", "package", "percentage"];

fn dec_prop(
    props: &Map<String, Value>,
    k: &str,
    e: &mut FieldErrors,
    required: bool,
) -> Option<Decimal> {
    match props.get(k) {
        None | Some(Value::Null) => {
            if required {
                e.add(k, "value_is_mandatory");
            }
            None
        }
        Some(v) => match decimal_of(v) {
            Some(d) if d >= Decimal::ZERO => Some(d),
            _ => {
                e.add(k, &format!("invalid_{k}"));
                None
            }
        },
    }
}

fn parse_ranges(v: Option<&Value>, key: &str, e: &mut FieldErrors) -> Vec<Range> {
    let Some(Value::Array(items)) = v else {
        e.add(key, &format!("missing_{key}"));
        return vec![];
    };
    let mut out: Vec<Range> = Vec::new();
    for it in items {
        let Some(m) = it.as_object() else {
            e.add(key, &format!("invalid_{key}"));
            return vec![];
        };
        let from = m.get("from_value").and_then(decimal_of);
        let to = match m.get("to_value") {
            None | Some(Value::Null) => None,
            Some(v) => match decimal_of(v) {
                Some(d) => Some(d),
                None => {
                    e.add(key, &format!("invalid_{key}"));
                    return vec![];
                }
            },
        };
        let flat = m.get("flat_amount").and_then(decimal_of);
        let per_unit = m.get("per_unit_amount").and_then(decimal_of);
        match (from, flat, per_unit) {
            (Some(from), Some(flat), Some(per_unit))
                if flat >= Decimal::ZERO && per_unit >= Decimal::ZERO =>
            {
                out.push(Range {
                    from,
                    to,
                    flat,
                    per_unit,
                })
            }
            (_, f, p) => {
                if f.is_none_or(|f| f < Decimal::ZERO) {
                    e.add("flat_amount", "invalid_amount");
                }
                if p.is_none_or(|p| p < Decimal::ZERO) {
                    e.add("per_unit_amount", "invalid_amount");
                }
                e.add(key, &format!("invalid_{key}"));
                return vec![];
            }
        }
    }
    // Lago's rule: starts at 0, each next from = previous to + 1, only the last is open.
    let mut ok = !out.is_empty() && out[0].from.is_zero();
    for (i, r) in out.iter().enumerate() {
        let last = i + 1 == out.len();
        match r.to {
            None if !last => ok = false,
            Some(_) if last => ok = false,
            Some(to) if to < r.from => ok = false,
            _ => {}
        }
        if i > 0 {
            match out[i - 1].to {
                Some(prev) if r.from == prev + Decimal::ONE => {}
                _ => ok = false,
            }
        }
    }
    if !ok {
        e.add(key, &format!("invalid_{key}"));
    }
    out
}

impl Pricing {
    /// Parses and validates a charge's `properties` for its model.
    pub fn parse(model: &str, props: &Map<String, Value>) -> Result<Pricing, FieldErrors> {
        let mut e = FieldErrors::default();
        let p = match model {
            "standard" => Pricing::Standard {
                amount: dec_prop(props, "amount", &mut e, true).unwrap_or_default(),
            },
            "graduated" => Pricing::Graduated(parse_ranges(
                props.get("graduated_ranges"),
                "graduated_ranges",
                &mut e,
            )),
            "volume" => Pricing::Volume(parse_ranges(
                props.get("volume_ranges"),
                "volume_ranges",
                &mut e,
            )),
            "package" => {
                let amount = dec_prop(props, "amount", &mut e, true).unwrap_or_default();
                let size = dec_prop(props, "package_size", &mut e, true).unwrap_or_default();
                if size.is_zero() && !e.0.contains_key("package_size") {
                    e.add("package_size", "invalid_package_size");
                }
                let free_units = dec_prop(props, "free_units", &mut e, false).unwrap_or_default();
                Pricing::Package {
                    amount,
                    size,
                    free_units,
                }
            }
            "percentage" => {
                let rate = dec_prop(props, "rate", &mut e, true).unwrap_or_default();
                let fixed_amount = dec_prop(props, "fixed_amount", &mut e, false);
                let free_units_per_events = match props.get("free_units_per_events") {
                    None | Some(Value::Null) => None,
                    Some(v) => match decimal_of(v) {
                        Some(d) if d >= Decimal::ZERO && d.fract().is_zero() => {
                            i64::try_from(d.trunc().mantissa()).ok()
                        }
                        _ => {
                            e.add("free_units_per_events", "invalid_free_units_per_events");
                            None
                        }
                    },
                };
                let free_units_per_total_aggregation =
                    dec_prop(props, "free_units_per_total_aggregation", &mut e, false);
                let per_transaction_max_amount =
                    dec_prop(props, "per_transaction_max_amount", &mut e, false);
                let per_transaction_min_amount =
                    dec_prop(props, "per_transaction_min_amount", &mut e, false);
                if let (Some(mx), Some(mn)) =
                    (per_transaction_max_amount, per_transaction_min_amount)
                    && mx < mn
                {
                    e.add("per_transaction_max_amount", "invalid_amount");
                }
                Pricing::Percentage {
                    rate,
                    fixed_amount,
                    free_units_per_events,
                    free_units_per_total_aggregation,
                    per_transaction_max_amount,
                    per_transaction_min_amount,
                }
            }
            _ => {
                e.add("charge_model", "value_is_invalid");
                return Err(e);
            }
        };
        if e.is_empty() { Ok(p) } else { Err(e) }
    }

    pub fn needs_per_event_values(&self) -> bool {
        matches!(
            self,
            Pricing::Percentage {
                per_transaction_max_amount: Some(_),
                ..
            } | Pricing::Percentage {
                per_transaction_min_amount: Some(_),
                ..
            } | Pricing::Percentage {
                free_units_per_events: Some(_),
                ..
            }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub lago_id: String,
    pub billable_metric_id: String,
    pub code: Option<String>,
    pub charge_model: String,
    pub pay_in_advance: bool,
    pub invoiceable: bool,
    pub prorated: bool,
    pub min_amount_cents: i64,
    pub invoice_display_name: Option<String>,
    pub properties: Map<String, Value>,
    pub regroup_paid_fees: Option<String>,
    pub created_at: i64,
}

impl Charge {
    pub fn pricing(&self) -> Pricing {
        Pricing::parse(&self.charge_model, &self.properties).unwrap_or(Pricing::Standard {
            amount: Decimal::ZERO,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub lago_id: String,
    pub name: String,
    pub code: String,
    pub invoice_display_name: Option<String>,
    pub description: Option<String>,
    pub interval: Interval,
    pub amount_cents: i64,
    pub amount_currency: String,
    pub trial_period: Decimal,
    pub pay_in_advance: bool,
    pub bill_charges_monthly: Option<bool>,
    pub charges: Vec<Charge>,
    pub created_at: i64,
}

pub fn valid_currency(c: &str) -> bool {
    c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase())
}

impl Plan {
    /// Builds a plan from a `plan` object. `metric_of` resolves a `billable_metric_id` (or, as
    /// our extension, a `billable_metric_code`) to the metric, `new_id` makes ids.
    pub fn from_input(
        m: &Map<String, Value>,
        base: Option<&Plan>,
        metric_of: &dyn Fn(Option<&str>, Option<&str>) -> Option<Metric>,
        new_id: &mut dyn FnMut() -> String,
        now: i64,
    ) -> Result<Plan, ApiError> {
        let mut f = Fields::new(m);
        let is_new = base.is_none();
        let sent = |k: &str| m.contains_key(k);
        let name = if is_new || sent("name") {
            f.req_str("name")
        } else {
            base.map(|b| b.name.clone())
        };
        let code = if is_new || sent("code") {
            f.req_str("code")
        } else {
            base.map(|b| b.code.clone())
        };
        if code.as_deref().is_some_and(|c| !valid_code(c)) {
            f.err("code", "value_is_invalid");
        }
        let interval = if is_new || sent("interval") {
            match f.req_str("interval") {
                Some(s) => match Interval::parse(&s) {
                    Some(i) => Some(i),
                    None => {
                        f.err("interval", "value_is_invalid");
                        None
                    }
                },
                None => None,
            }
        } else {
            base.map(|b| b.interval)
        };
        let amount_cents = if is_new || sent("amount_cents") {
            match f.non_negative_int("amount_cents") {
                Some(v) => Some(v),
                None => {
                    if !f.errors.0.contains_key("amount_cents") {
                        f.err("amount_cents", "value_is_mandatory");
                    }
                    None
                }
            }
        } else {
            base.map(|b| b.amount_cents)
        };
        let amount_currency = if is_new || sent("amount_currency") {
            let c = f.req_str("amount_currency");
            if c.as_deref().is_some_and(|c| !valid_currency(c)) {
                f.err("amount_currency", "value_is_invalid");
            }
            c
        } else {
            base.map(|b| b.amount_currency.clone())
        };
        let pay_in_advance = if sent("pay_in_advance") {
            f.bool("pay_in_advance").unwrap_or(false)
        } else {
            base.map(|b| b.pay_in_advance).unwrap_or(false)
        };
        let trial_period = if sent("trial_period") {
            match f.decimal("trial_period") {
                Some(d) if d >= Decimal::ZERO => d,
                Some(_) => {
                    f.err("trial_period", "value_is_out_of_range");
                    Decimal::ZERO
                }
                None => Decimal::ZERO,
            }
        } else {
            base.map(|b| b.trial_period).unwrap_or_default()
        };
        let opt =
            |f: &mut Fields, k: &str, old: Option<String>| if sent(k) { f.str(k) } else { old };
        let invoice_display_name = opt(
            &mut f,
            "invoice_display_name",
            base.and_then(|b| b.invoice_display_name.clone()),
        );
        let description = opt(
            &mut f,
            "description",
            base.and_then(|b| b.description.clone()),
        );
        let bill_charges_monthly = if sent("bill_charges_monthly") {
            f.bool("bill_charges_monthly")
        } else {
            base.and_then(|b| b.bill_charges_monthly)
        };
        let charges = if sent("charges") {
            let items = f.array("charges").cloned().unwrap_or_default();
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(cm) = item.as_object() else {
                    f.err("charges", "value_is_invalid");
                    continue;
                };
                let old = cm
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| base.and_then(|b| b.charges.iter().find(|c| c.lago_id == id)));
                match Charge::from_input(cm, old, metric_of, new_id, now) {
                    Ok(c) => out.push(c),
                    Err(e) => {
                        for (k, codes) in e.0 {
                            for c in codes {
                                f.errors.add(&format!("charges.{i}.{k}"), &c);
                                let _ = &c;
                            }
                        }
                    }
                }
            }
            out
        } else {
            base.map(|b| b.charges.clone()).unwrap_or_default()
        };
        let errors = std::mem::take(&mut f.errors);
        errors.into_result()?;
        Ok(Plan {
            lago_id: base.map(|b| b.lago_id.clone()).unwrap_or_else(&mut *new_id),
            name: name.unwrap_or_default(),
            code: code.unwrap_or_default(),
            invoice_display_name,
            description,
            interval: interval.unwrap_or(Interval::Monthly),
            amount_cents: amount_cents.unwrap_or(0),
            amount_currency: amount_currency.unwrap_or_default(),
            trial_period,
            pay_in_advance,
            bill_charges_monthly,
            charges,
            created_at: base.map(|b| b.created_at).unwrap_or(now),
        })
    }
}

impl Charge {
    fn from_input(
        m: &Map<String, Value>,
        base: Option<&Charge>,
        metric_of: &dyn Fn(Option<&str>, Option<&str>) -> Option<Metric>,
        new_id: &mut dyn FnMut() -> String,
        now: i64,
    ) -> Result<Charge, FieldErrors> {
        let mut f = Fields::new(m);
        let by_id = f.str("billable_metric_id");
        let by_code = f.str("billable_metric_code");
        let metric = if by_id.is_none() && by_code.is_none() {
            match base {
                Some(b) => metric_of(Some(&b.billable_metric_id), None),
                None => {
                    f.err("billable_metric_id", "value_is_mandatory");
                    None
                }
            }
        } else {
            let m = metric_of(by_id.as_deref(), by_code.as_deref());
            if m.is_none() {
                f.err("billable_metric", "not_found");
            }
            m
        };
        let model = match f
            .str("charge_model")
            .or_else(|| base.map(|b| b.charge_model.clone()))
        {
            Some(s) if CHARGE_MODELS.contains(&s.as_str()) => Some(s),
            Some(_) => {
                f.err("charge_model", "value_is_invalid");
                None
            }
            None => {
                f.err("charge_model", "value_is_mandatory");
                None
            }
        };
        let props = match f.get("properties") {
            Some(Value::Object(p)) => p.clone(),
            Some(_) => {
                f.err("properties", "value_is_invalid");
                Map::new()
            }
            None => base.map(|b| b.properties.clone()).unwrap_or_default(),
        };
        let pay_in_advance = f
            .bool("pay_in_advance")
            .or(base.map(|b| b.pay_in_advance))
            .unwrap_or(false);
        let invoiceable = f
            .bool("invoiceable")
            .or(base.map(|b| b.invoiceable))
            .unwrap_or(true);
        let prorated = f
            .bool("prorated")
            .or(base.map(|b| b.prorated))
            .unwrap_or(false);
        let min_amount_cents = f
            .non_negative_int("min_amount_cents")
            .or(base.map(|b| b.min_amount_cents))
            .unwrap_or(0);
        let code = f.str("code").or_else(|| base.and_then(|b| b.code.clone()));
        let invoice_display_name = f
            .str("invoice_display_name")
            .or_else(|| base.and_then(|b| b.invoice_display_name.clone()));
        let regroup_paid_fees = f.str("regroup_paid_fees");
        if let Some(model) = &model {
            if let Err(e) = Pricing::parse(model, &props) {
                for (k, codes) in e.0 {
                    for c in codes {
                        f.errors.add(&format!("properties.{k}"), &c);
                    }
                }
            }
            if let Some(metric) = &metric
                && pay_in_advance
                && !matches!(
                    metric.aggregation_type,
                    Aggregation::CountAgg | Aggregation::SumAgg | Aggregation::UniqueCountAgg
                )
            {
                f.err("pay_in_advance", "invalid_aggregation_type_or_charge_model");
            }
        }
        if !f.errors.is_empty() {
            return Err(f.errors);
        }
        Ok(Charge {
            lago_id: base.map(|b| b.lago_id.clone()).unwrap_or_else(&mut *new_id),
            billable_metric_id: metric.map(|m| m.lago_id).unwrap_or_default(),
            code,
            charge_model: model.unwrap_or_default(),
            pay_in_advance,
            invoiceable,
            prorated,
            min_amount_cents,
            invoice_display_name,
            properties: normalize_props(props),
            regroup_paid_fees,
            created_at: base.map(|b| b.created_at).unwrap_or(now),
        })
    }
}

/// Lago answers decimal properties as strings; numbers sent are kept as their exact text.
fn normalize_props(props: Map<String, Value>) -> Map<String, Value> {
    fn norm(v: Value) -> Value {
        match v {
            Value::Number(n) => Value::String(n.to_string()),
            Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| {
                        let keep_int = matches!(
                            k.as_str(),
                            "from_value" | "to_value" | "free_units_per_events"
                        );
                        let v = if keep_int { v } else { norm(v) };
                        (k, v)
                    })
                    .collect(),
            ),
            other => other,
        }
    }
    match norm(Value::Object(props)) {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(a: &str, field: Option<&str>, recurring: bool) -> Result<Metric, ApiError> {
        let mut v = json!({"name":"n","code":"c","aggregation_type":a,"recurring":recurring});
        if let Some(f) = field {
            v["field_name"] = json!(f);
        }
        Metric::from_input(v.as_object().unwrap(), None, "id".into(), 0)
    }

    #[test]
    fn metric_rules_follow_lago() {
        assert!(
            metric("count_agg", None, false)
                .unwrap()
                .field_name
                .is_none()
        );
        assert!(
            metric("count_agg", Some("x"), false)
                .unwrap()
                .field_name
                .is_none()
        );
        assert!(metric("sum_agg", None, false).is_err());
        assert!(metric("sum_agg", Some("x"), true).is_ok());
        assert!(metric("max_agg", Some("x"), true).is_err());
        assert!(metric("latest_agg", Some("x"), true).is_err());
        assert!(metric("nope_agg", Some("x"), false).is_err());
        assert_eq!(
            metric("weighted_sum_agg", Some("x"), false)
                .unwrap()
                .weighted_interval
                .as_deref(),
            Some("seconds")
        );
    }

    #[test]
    fn graduated_ranges_must_chain() {
        let ok = json!({"graduated_ranges":[
            {"from_value":0,"to_value":10,"flat_amount":"0","per_unit_amount":"1"},
            {"from_value":11,"to_value":null,"flat_amount":"2","per_unit_amount":"0.5"}]});
        assert!(Pricing::parse("graduated", ok.as_object().unwrap()).is_ok());
        let gap = json!({"graduated_ranges":[
            {"from_value":0,"to_value":10,"flat_amount":"0","per_unit_amount":"1"},
            {"from_value":12,"to_value":null,"flat_amount":"2","per_unit_amount":"0.5"}]});
        assert!(Pricing::parse("graduated", gap.as_object().unwrap()).is_err());
        let open_middle = json!({"volume_ranges":[
            {"from_value":0,"to_value":null,"flat_amount":"0","per_unit_amount":"1"},
            {"from_value":11,"to_value":null,"flat_amount":"2","per_unit_amount":"0.5"}]});
        assert!(Pricing::parse("volume", open_middle.as_object().unwrap()).is_err());
        assert!(
            Pricing::parse(
                "package",
                json!({"amount":"1","package_size":0}).as_object().unwrap()
            )
            .is_err()
        );
        assert!(Pricing::parse("standard", json!({"amount":"-1"}).as_object().unwrap()).is_err());
    }
}
