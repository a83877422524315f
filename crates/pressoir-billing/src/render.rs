//! Lago's response shapes, built from stored rows. No I/O here.

use crate::aggregate::from_fixed;
use crate::input::parse_decimal;
use crate::model::{Metric, Plan};
use crate::store::{CustomerRow, EndpointRow, EventRow, InvoiceRow, Page};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use time::OffsetDateTime;

/// `2026-12-04T14:32:13Z`, as Lago shows most times.
pub fn iso(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn iso_opt(ms: Option<i64>) -> Value {
    ms.map(|m| Value::String(iso(m))).unwrap_or(Value::Null)
}

/// `2026-12-04T14:32:13.120Z`, as Lago shows event timestamps.
pub fn iso_ms(ms: i64) -> String {
    let base = iso(ms);
    format!("{}.{:03}Z", &base[..base.len() - 1], ms.rem_euclid(1000))
}

pub fn meta(page: Page, total: i64) -> Value {
    if total == 0 {
        return json!({"current_page": 0, "next_page": null, "prev_page": null, "total_pages": 0, "total_count": 0});
    }
    let pages = (total + page.per_page - 1) / page.per_page;
    json!({
        "current_page": page.page,
        "next_page": if page.page < pages { json!(page.page + 1) } else { Value::Null },
        "prev_page": if page.page > 1 { json!(page.page - 1) } else { Value::Null },
        "total_pages": pages,
        "total_count": total,
    })
}

pub const CUSTOMER_STRINGS: &[&str] = &[
    "name",
    "firstname",
    "lastname",
    "email",
    "currency",
    "country",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "zipcode",
    "phone",
    "url",
    "legal_name",
    "legal_number",
    "tax_identification_number",
    "timezone",
    "customer_type",
    "finalize_zero_amount_invoice",
    "billing_entity_code",
    "logo_url",
    "account_type",
];

pub fn customer(c: &CustomerRow) -> Value {
    let mut o = Map::new();
    o.insert("lago_id".into(), json!(c.lago_id));
    o.insert("sequential_id".into(), json!(c.sequential_id));
    o.insert("slug".into(), json!(format!("CUS-{:04}", c.sequential_id)));
    o.insert("external_id".into(), json!(c.external_id));
    for k in CUSTOMER_STRINGS {
        o.insert((*k).into(), c.data.get(*k).cloned().unwrap_or(Value::Null));
    }
    o.insert(
        "net_payment_term".into(),
        c.data
            .get("net_payment_term")
            .cloned()
            .unwrap_or(Value::Null),
    );
    let tz = c
        .data
        .get("timezone")
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    o.insert("applicable_timezone".into(), json!(tz));
    let mut bc = json!({
        "invoice_grace_period": null, "payment_provider": null, "payment_provider_code": null,
        "provider_customer_id": null, "sync": null, "sync_with_provider": null, "document_locale": null,
    });
    if let Some(Value::Object(m)) = c.data.get("billing_configuration") {
        for (k, v) in m {
            bc[k] = v.clone();
        }
    }
    let grace = bc["invoice_grace_period"].as_i64().unwrap_or(0);
    o.insert("billing_configuration".into(), bc);
    o.insert("applicable_invoice_grace_period".into(), json!(grace));
    let mut sa = json!({"address_line1": null, "address_line2": null, "city": null, "zipcode": null,
                        "state": null, "country": null});
    if let Some(Value::Object(m)) = c.data.get("shipping_address") {
        for (k, v) in m {
            sa[k] = v.clone();
        }
    }
    o.insert("shipping_address".into(), sa);
    o.insert(
        "metadata".into(),
        c.data.get("metadata").cloned().unwrap_or(json!([])),
    );
    o.insert(
        "tax_codes".into(),
        c.data.get("tax_codes").cloned().unwrap_or(json!([])),
    );
    o.insert("taxes".into(), json!([]));
    o.insert("integration_customers".into(), json!([]));
    o.insert("created_at".into(), json!(iso(c.created_at)));
    o.insert("updated_at".into(), json!(iso(c.updated_at)));
    o.insert("deleted_at".into(), iso_opt(c.deleted_at));
    Value::Object(o)
}

pub fn metric(m: &Metric) -> Value {
    json!({
        "lago_id": m.lago_id,
        "name": m.name,
        "code": m.code,
        "description": m.description,
        "aggregation_type": m.aggregation_type.as_str(),
        "field_name": m.field_name,
        "recurring": m.recurring,
        "rounding_function": m.rounding_function,
        "rounding_precision": m.rounding_precision,
        "weighted_interval": m.weighted_interval,
        "expression": m.expression,
        "filters": m.filters,
        "created_at": iso(m.created_at),
        "active_subscriptions_count": 0,
        "draft_invoices_count": 0,
        "plans_count": 0,
    })
}

pub fn plan(p: &Plan, metrics: &HashMap<String, Metric>) -> Value {
    let charges: Vec<Value> = p
        .charges
        .iter()
        .map(|c| {
            let m = metrics.get(&c.billable_metric_id);
            json!({
                "lago_id": c.lago_id,
                "lago_billable_metric_id": c.billable_metric_id,
                "billable_metric_code": m.map(|m| m.code.clone()),
                "code": c.code,
                "invoice_display_name": c.invoice_display_name,
                "created_at": iso(c.created_at),
                "charge_model": c.charge_model,
                "pay_in_advance": c.pay_in_advance,
                "invoiceable": c.invoiceable,
                "regroup_paid_fees": c.regroup_paid_fees,
                "prorated": c.prorated,
                "min_amount_cents": c.min_amount_cents,
                "properties": c.properties,
                "filters": [],
                "taxes": [],
                "applied_pricing_unit": null,
                "accepts_target_wallet": false,
                "lago_parent_id": null,
            })
        })
        .collect();
    json!({
        "lago_id": p.lago_id,
        "name": p.name,
        "invoice_display_name": p.invoice_display_name,
        "created_at": iso(p.created_at),
        "code": p.code,
        "interval": p.interval.as_str(),
        "description": p.description,
        "amount_cents": p.amount_cents,
        "amount_currency": p.amount_currency,
                "trial_period": trial_json(p.trial_period),
        "pay_in_advance": p.pay_in_advance,
        "bill_charges_monthly": p.bill_charges_monthly,
        "bill_fixed_charges_monthly": null,
        "minimum_commitment": null,
        "charges": charges,
        "fixed_charges": [],
        "taxes": [],
        "usage_thresholds": [],
        "entitlements": [],
        "metadata": null,
        "active_subscriptions_count": 0,
        "draft_invoices_count": 0,
    })
}

pub fn event(e: &EventRow, lago_subscription_id: Option<&str>) -> Value {
    let properties = match serde_json::from_str::<Value>(&e.properties) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    };
    event_with(e, properties, lago_subscription_id)
}

/// [`event`] with the properties already parsed (ingest has them).
pub fn event_with(e: &EventRow, properties: Value, lago_subscription_id: Option<&str>) -> Value {
    json!({
        "lago_id": e.lago_id,
        "transaction_id": e.transaction_id,
        "lago_customer_id": null,
        "code": e.code,
        "timestamp": iso_ms(e.timestamp),
        "precise_total_amount_cents": e.precise_total_amount_cents,
        "properties": properties,
        "lago_subscription_id": lago_subscription_id,
        "external_subscription_id": e.external_subscription_id,
        "created_at": iso(e.created_at),
    })
}

pub fn endpoint(e: &EndpointRow, org_id: &str) -> Value {
    json!({
        "lago_id": e.lago_id,
        "lago_organization_id": org_id,
        "webhook_url": e.webhook_url,
        "signature_algo": e.signature_algo,
        "name": e.name,
        "event_types": e.event_types,
        "created_at": iso(e.created_at),
    })
}

/// An invoice is stored as its full Lago body; status fields live in columns too.
pub fn invoice(i: &InvoiceRow) -> Value {
    let mut o = i.data.clone();
    o.insert("status".into(), json!(i.status));
    o.insert("payment_status".into(), json!(i.payment_status));
    o.insert("updated_at".into(), json!(iso(i.updated_at)));
    Value::Object(o)
}

/// Fixed-point units as Lago's decimal text.
pub fn units_of_fixed(v: i64) -> String {
    crate::money::units_text(from_fixed(v))
}

pub fn decimal_text(s: &str) -> Option<String> {
    parse_decimal(s).map(|d| d.normalize().to_string())
}

/// A decimal as a JSON number, through its exact text.
pub fn trial_json(d: rust_decimal::Decimal) -> Value {
    let t = d.normalize().to_string();
    let t = if t.contains('.') { t } else { format!("{t}.0") };
    serde_json::from_str(&t).unwrap_or(Value::Null)
}
