//! Invoices: issued when a billing period ends (and at the start of each period for plans paid
//! in advance, and when a subscription terminates), with one fee for the subscription and one
//! per charge. Each is keyed by (subscription, period) so issuing twice is impossible.

use crate::Error;
use crate::model::Plan;
use crate::money;
use crate::period::{self, Period};
use crate::proto::{ApiError, Code, FieldErrors};
use crate::render;
use crate::service::{App, ChargeFee, new_id, trial_end};
use crate::store::{self, Conn, InvoiceRow, Page, SubRow};
use pressoir_core::clock::now_ms;
use serde_json::{Map, Value, json};

/// The subscription fee for the covered part `[from, to)` of a full period, prorated by days
/// and free during the plan's trial.
pub fn subscription_fee(plan: &Plan, started_at: i64, full: (i64, i64), from: i64, to: i64) -> i64 {
    let charged_from = match trial_end(plan, started_at) {
        Some(t) => from.max(t),
        None => from,
    };
    if charged_from >= to {
        return 0;
    }
    let days = |a: i64, b: i64| ((b - a) + period::DAY_MS - 1).div_euclid(period::DAY_MS);
    let used = days(period::day_floor(charged_from), to);
    let total = days(full.0, full.1);
    money::prorate(plan.amount_cents, used, total)
}

struct Draft<'a> {
    sub: &'a SubRow,
    plan: &'a Plan,
    key: String,
    from: i64,
    to: i64,
    fee_cents: Option<(i64, i64, i64)>,
    charges: Vec<ChargeFee>,
    reason: &'static str,
}

async fn issue(app: &App, c: &mut Conn, d: Draft<'_>) -> Result<(), Error> {
    let customer = store::customer_by_id(c, &d.sub.customer_id)
        .await?
        .ok_or(ApiError::Code(Code::CustomerNotFound))?;
    let now = now_ms();
    let id = new_id();
    let currency = d.plan.amount_currency.clone();
    let mut fees = Vec::new();
    let fee_base = |amount: i64| {
        json!({
            "lago_invoice_id": id,
            "lago_subscription_id": d.sub.lago_id,
            "external_subscription_id": d.sub.external_id,
            "lago_customer_id": customer.lago_id,
            "external_customer_id": customer.external_id,
            "amount_cents": amount,
            "amount_currency": currency,
            "taxes_amount_cents": 0,
            "taxes_rate": 0,
            "total_amount_cents": amount,
            "total_amount_currency": currency,
            "payment_status": "pending",
            "created_at": render::iso(now),
            "invoiceable": true,
        })
    };
    let mut total: i64 = 0;
    if let Some((cents, from, to)) = d.fee_cents {
        let mut f = fee_base(cents);
        f["lago_id"] = json!(new_id());
        f["lago_charge_id"] = Value::Null;
        f["units"] = json!("1.0");
        f["total_aggregated_units"] = json!("1.0");
        f["events_count"] = Value::Null;
        f["precise_amount"] = json!(
            (rust_decimal::Decimal::new(cents, 2))
                .normalize()
                .to_string()
        );
        f["pay_in_advance"] = json!(d.plan.pay_in_advance);
        f["from_date"] = json!(render::iso(from));
        f["to_date"] = json!(render::iso(to - 1000));
        f["item"] = json!({"type": "subscription", "code": d.plan.code, "name": d.plan.name,
                           "invoice_display_name": d.plan.invoice_display_name.clone().unwrap_or(d.plan.name.clone()),
                           "lago_item_id": d.sub.lago_id, "item_type": "Subscription"});
        total += cents;
        fees.push(f);
    }
    for ch in &d.charges {
        if !ch.charge.invoiceable {
            continue;
        }
        let amount = if d.reason == "subscription_periodic" {
            ch.amount_cents.max(ch.charge.min_amount_cents)
        } else {
            ch.amount_cents
        };
        let mut f = fee_base(amount);
        f["lago_id"] = json!(new_id());
        f["lago_charge_id"] = json!(ch.charge.lago_id);
        f["units"] = json!(money::units_text(ch.units));
        f["total_aggregated_units"] = json!(money::units_text(ch.units));
        f["events_count"] = json!(ch.events_count);
        f["precise_amount"] = json!(ch.precise_amount.normalize().to_string());
        f["pay_in_advance"] = json!(false);
        f["from_date"] = json!(render::iso(d.from));
        f["to_date"] = json!(render::iso(d.to - 1000));
        f["item"] = json!({"type": "charge", "code": ch.metric.code, "name": ch.metric.name,
                           "invoice_display_name": ch.charge.invoice_display_name.clone().unwrap_or(ch.metric.name.clone()),
                           "lago_item_id": ch.metric.lago_id, "item_type": "BillableMetric"});
        total += amount;
        fees.push(f);
    }
    let grace = customer
        .data
        .get("billing_configuration")
        .and_then(|b| b.get("invoice_grace_period"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = if grace > 0 { "draft" } else { "finalized" };
    let net_term = customer
        .data
        .get("net_payment_term")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let issuing = period::iso_date(d.to.min(now.max(d.from)));
    let issuing_ms = period::day_floor(d.to.min(now.max(d.from)));
    let seq = store::next_invoice_seq(c).await?;
    let sub_json = app.sub_view(c, d.sub.clone()).await?.json(now);
    let mut data = Map::new();
    let body = json!({
        "lago_id": id,
        "billing_entity_code": null,
        "sequential_id": seq,
        "number": format!("PRS-{}-{:03}", &app.org_id[..4].to_ascii_uppercase(), seq),
        "issuing_date": issuing,
        "payment_due_date": period::iso_date(issuing_ms + net_term * period::DAY_MS),
        "net_payment_term": net_term,
        "invoice_type": "subscription",
        "payment_overdue": false,
        "currency": currency,
        "fees_amount_cents": total,
        "taxes_amount_cents": 0,
        "coupons_amount_cents": 0,
        "credit_notes_amount_cents": 0,
        "progressive_billing_credit_amount_cents": 0,
        "prepaid_credit_amount_cents": 0,
        "sub_total_excluding_taxes_amount_cents": total,
        "sub_total_including_taxes_amount_cents": total,
        "total_amount_cents": total,
        "total_due_amount_cents": total,
        "total_paid_amount_cents": 0,
        "file_url": null,
        "version_number": 4,
        "self_billed": false,
        "created_at": render::iso(now),
        "voided_at": null,
        "customer": render::customer(&customer),
        "subscriptions": [sub_json],
        "billing_periods": [{
            "lago_subscription_id": d.sub.lago_id,
            "external_subscription_id": d.sub.external_id,
            "lago_plan_id": d.plan.lago_id,
            "subscription_from_datetime": render::iso(d.from),
            "subscription_to_datetime": render::iso(d.to - 1000),
            "charges_from_datetime": render::iso(d.from),
            "charges_to_datetime": render::iso(d.to - 1000),
            "invoicing_reason": d.reason,
        }],
        "fees": fees,
        "credits": [],
        "metadata": [],
        "applied_taxes": [],
    });
    if let Value::Object(m) = body {
        data = m;
    }
    let row = InvoiceRow {
        lago_id: id,
        sequential_id: seq,
        customer_id: customer.lago_id.clone(),
        subscription_id: Some(d.sub.lago_id.clone()),
        period_key: Some(d.key),
        status: status.into(),
        payment_status: "pending".into(),
        issuing_date: issuing,
        total_amount_cents: total,
        currency,
        data,
        created_at: now,
        updated_at: now,
    };
    if store::insert_invoice(c, &row).await? {
        let kind = if status == "draft" {
            "invoice.drafted"
        } else {
            "invoice.created"
        };
        app.emit(c, kind, "invoice", render::invoice(&row)).await?;
    }
    Ok(())
}

/// The invoice at the end of period `p`: its charges, and the subscription fee when paid in
/// arrears.
pub async fn period(
    app: &App,
    c: &mut Conn,
    sub: &SubRow,
    plan: &Plan,
    p: Period,
) -> Result<(), Error> {
    let started = sub.started_at.unwrap_or(sub.subscription_at);
    let charges = app
        .charge_fees(c, &sub.external_id, plan, p.from, p.to)
        .await?;
    let fee = (!plan.pay_in_advance).then(|| {
        (
            subscription_fee(plan, started, (p.full_from, p.to), p.from, p.to),
            p.from,
            p.to,
        )
    });
    let d = Draft {
        sub,
        plan,
        key: format!("period:{}", p.from),
        from: p.from,
        to: p.to,
        fee_cents: fee,
        charges,
        reason: "subscription_periodic",
    };
    issue(app, c, d).await
}

/// The invoice at the start of period `p` for a plan paid in advance.
pub async fn advance(
    app: &App,
    c: &mut Conn,
    sub: &SubRow,
    plan: &Plan,
    p: Period,
) -> Result<(), Error> {
    let started = sub.started_at.unwrap_or(sub.subscription_at);
    let cents = subscription_fee(plan, started, (p.full_from, p.to), p.from, p.to);
    if cents == 0 {
        return Ok(());
    }
    let d = Draft {
        sub,
        plan,
        key: format!("advance:{}", p.from),
        from: p.from,
        to: p.to,
        fee_cents: Some((cents, p.from, p.to)),
        charges: vec![],
        reason: "subscription_starting",
    };
    issue(app, c, d).await
}

/// The closing invoice when a subscription terminates at `at`, mid-period.
pub async fn close(app: &App, c: &mut Conn, sub: &SubRow, at: i64) -> Result<(), Error> {
    let plan = crate::service::plan_by_id_pub(app, c, &sub.plan_id).await?;
    let started = sub.started_at.unwrap_or(sub.subscription_at);
    let bt = period::BillingTime::parse(&sub.billing_time).unwrap_or(period::BillingTime::Calendar);
    let cursor = sub.billed_until.unwrap_or(started);
    if at <= cursor {
        return Ok(());
    }
    let p = period::containing(plan.interval, bt, started, cursor);
    let charges = app
        .charge_fees(c, &sub.external_id, &plan, p.from, at)
        .await?;
    let fee = (!plan.pay_in_advance).then(|| {
        (
            subscription_fee(&plan, started, (p.full_from, p.to), p.from, at),
            p.from,
            at,
        )
    });
    let d = Draft {
        sub,
        plan: &plan,
        key: "close".into(),
        from: p.from,
        to: at,
        fee_cents: fee,
        charges,
        reason: "subscription_terminating",
    };
    issue(app, c, d).await
}

impl App {
    pub async fn invoice(&self, id: &str) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let i = store::invoice_by_id(&mut c, id)
            .await?
            .ok_or(ApiError::Code(Code::InvoiceNotFound))?;
        Ok(render::invoice(&i))
    }

    pub async fn invoices(
        &self,
        external_customer_id: Option<&str>,
        status: Option<&str>,
        payment_status: Option<&str>,
        page: Page,
    ) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let customer_id = match external_customer_id {
            Some(e) => match store::customer_by_external(&mut c, e).await? {
                Some(r) => Some(r.lago_id),
                None => return Ok(json!({"invoices": [], "meta": render::meta(page, 0)})),
            },
            None => None,
        };
        let (rows, total) =
            store::list_invoices(&mut c, customer_id.as_deref(), status, payment_status, page)
                .await?;
        Ok(
            json!({"invoices": rows.iter().map(render::invoice).collect::<Vec<_>>(),
                  "meta": render::meta(page, total)}),
        )
    }

    async fn change_invoice(
        &self,
        id: &str,
        f: impl FnOnce(&mut InvoiceRow) -> Result<Option<&'static str>, ApiError>,
    ) -> Result<Value, Error> {
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let mut i = store::invoice_by_id(c, id)
            .await?
            .ok_or(ApiError::Code(Code::InvoiceNotFound))?;
        let webhook = f(&mut i)?;
        i.updated_at = now_ms();
        store::update_invoice(c, &i).await?;
        if let Some(w) = webhook {
            self.emit(c, w, "invoice", render::invoice(&i)).await?;
        }
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(render::invoice(&i))
    }

    /// Finalizes the drafts whose customer's grace period has run out.
    pub async fn finalize_due_drafts(&self, now: i64) -> Result<(), Error> {
        let drafts = {
            let mut c = self.store.read().await?;
            store::list_invoices(
                &mut c,
                None,
                Some("draft"),
                None,
                Page {
                    page: 1,
                    per_page: 1000,
                },
            )
            .await?
            .0
        };
        for d in drafts {
            let grace = d
                .data
                .get("customer")
                .and_then(|c| c.get("applicable_invoice_grace_period"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if d.created_at + grace * period::DAY_MS <= now {
                self.finalize_invoice(&d.lago_id).await?;
            }
        }
        Ok(())
    }

    pub async fn finalize_invoice(&self, id: &str) -> Result<Value, Error> {
        self.change_invoice(id, |i| match i.status.as_str() {
            "draft" => {
                i.status = "finalized".into();
                Ok(Some("invoice.created"))
            }
            "finalized" => Ok(None),
            _ => Err(ApiError::Code(Code::InvoiceNotFinalizable)),
        })
        .await
    }

    pub async fn void_invoice(&self, id: &str) -> Result<Value, Error> {
        self.change_invoice(id, |i| {
            if i.status != "finalized" || i.payment_status == "succeeded" {
                return Err(ApiError::Code(Code::InvoiceNotVoidable));
            }
            i.status = "voided".into();
            i.data
                .insert("voided_at".into(), json!(render::iso(now_ms())));
            Ok(Some("invoice.voided"))
        })
        .await
    }

    /// `PUT /invoices/{id}`: `payment_status` and `metadata`.
    pub async fn update_invoice(&self, id: &str, m: &Map<String, Value>) -> Result<Value, Error> {
        let status = match m.get("payment_status") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if ["pending", "succeeded", "failed"].contains(&s.as_str()) => {
                Some(s.clone())
            }
            Some(_) => {
                return Err(ApiError::Validation(FieldErrors::one(
                    "payment_status",
                    "value_is_invalid",
                ))
                .into());
            }
        };
        let metadata = m.get("metadata").cloned();
        self.change_invoice(id, move |i| {
            let mut hook = None;
            if let Some(s) = status
                && s != i.payment_status
            {
                i.payment_status = s.clone();
                hook = Some("invoice.payment_status_updated");
                if s == "succeeded" {
                    i.data.insert(
                        "total_paid_amount_cents".into(),
                        json!(i.total_amount_cents),
                    );
                    i.data.insert("total_due_amount_cents".into(), json!(0));
                }
            }
            if let Some(Value::Array(md)) = metadata {
                let items: Vec<Value> = md
                    .iter()
                    .filter_map(|it| {
                        Some(json!({"lago_id": new_id(), "key": it.get("key")?.as_str()?,
                                    "value": it.get("value").and_then(Value::as_str).unwrap_or(""),
                                    "created_at": render::iso(now_ms())}))
                    })
                    .collect();
                i.data.insert("metadata".into(), Value::Array(items));
            }
            Ok(hook)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interval;
    use rust_decimal::Decimal;

    fn plan(trial_days: i64) -> Plan {
        Plan {
            lago_id: "p".into(),
            name: "P".into(),
            code: "p".into(),
            invoice_display_name: None,
            description: None,
            interval: Interval::Monthly,
            amount_cents: 3100,
            amount_currency: "USD".into(),
            trial_period: Decimal::from(trial_days),
            pay_in_advance: false,
            bill_charges_monthly: None,
            charges: vec![],
            created_at: 0,
        }
    }

    #[test]
    fn subscription_fee_is_prorated_by_days_and_free_in_trial() {
        let day = period::DAY_MS;
        let m = 1_798_761_600_000; // 2027-01-01, a 31-day month
        let full = (m, m + 31 * day);
        assert_eq!(subscription_fee(&plan(0), m, full, m, full.1), 3100);
        // started on the 11th at noon: 21 days billed
        let start = m + 10 * day + day / 2;
        assert_eq!(subscription_fee(&plan(0), start, full, start, full.1), 2100);
        // a 5-day trial from the 1st: 26 days billed
        assert_eq!(subscription_fee(&plan(5), m, full, m, full.1), 2600);
        // a trial longer than the period: nothing
        assert_eq!(subscription_fee(&plan(40), m, full, m, full.1), 0);
        // terminated on the 3rd: 3 days
        assert_eq!(subscription_fee(&plan(0), m, full, m, m + 2 * day + 5), 300);
    }
}
