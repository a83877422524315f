//! The billing service's operations: each reads and writes through the store inside one
//! transaction, and writes the webhooks it causes into the outbox in that same transaction.

use crate::Error;
use crate::aggregate::{self, Agg};
use crate::input::{Fields, decimal_of};
use crate::model::{Aggregation, Metric, Plan, valid_code, valid_currency};
use crate::money::{self, Usage};
use crate::period::{self, BillingTime, Period};
use crate::proto::{ApiError, Code, FieldErrors};
use crate::render;
use crate::store::{self, Conn, CustomerRow, Doc, EventRow, Page, Store, SubRow};
use pressoir_core::clock::{now_ms, parse_rfc3339_ms};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// A v4 UUID from the thread's generator (no system call per id: ingest makes a hundred a batch).
pub fn new_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

pub struct App {
    pub store: Store,
    pub org_id: String,
    pub hmac_key: String,
    pub signer: crate::webhook::Signer,
    /// Live billable metrics by code, refreshed after every metric write (used on ingest).
    pub metrics: RwLock<HashMap<String, Metric>>,
    /// Whether webhook endpoints exist, for the ingest path's `event.error` checks; refreshed
    /// from the store at most every few seconds (`endpoints_checked_at`), so replicas agree.
    pub has_endpoints: AtomicBool,
    pub endpoints_checked_at: std::sync::atomic::AtomicI64,
    pub webhook_wake: Notify,
    pub webhook: crate::webhook::Settings,
    /// Ingest goes through writers that commit concurrent requests together (see
    /// [`group_writer`]): one on SQLite, a few on PostgreSQL.
    pub ingest_queue: Option<tokio::sync::mpsc::Sender<IngestJob>>,
}

/// One request's events for the group writer, and where its outcome goes: the rows back
/// and the indexes refused as duplicates (nothing of that request is kept then).
pub struct IngestJob {
    pub rows: Vec<EventRow>,
    pub reply: tokio::sync::oneshot::Sender<Result<(Vec<EventRow>, Vec<usize>), String>>,
}

/// Group commit: a writer takes every ingest request waiting and writes them all in one
/// statement and one transaction. If any event of the group is a duplicate, the group is
/// rolled back and each request is written alone, so a duplicate refuses only its own
/// request. Several writers may share the queue (PostgreSQL). Ends when the service is
/// dropped.
pub async fn group_writer(
    store: Store,
    rx: std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<IngestJob>>>,
) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut count = first.rows.len();
            let mut jobs = vec![first];
            while count < 2_000 {
                match rx.try_recv() {
                    Ok(j) => {
                        count += j.rows.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        match write_group(&store, &jobs).await {
            Ok(outcomes) => {
                for (job, dups) in jobs.into_iter().zip(outcomes) {
                    let IngestJob { rows, reply } = job;
                    let _ = reply.send(Ok((rows, dups)));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// Writes rows in one transaction, committed only if none is a duplicate.
async fn write_one(store: &Store, rows: &[&EventRow]) -> Result<Vec<usize>, Error> {
    let mut tx = store.begin().await?;
    let dups = store::insert_event_refs(tx.conn(), rows).await?;
    if dups.is_empty() {
        tx.commit().await?;
    }
    Ok(dups)
}

async fn write_group(store: &Store, jobs: &[IngestJob]) -> Result<Vec<Vec<usize>>, Error> {
    if let [only] = jobs {
        return Ok(vec![
            write_one(store, &only.rows.iter().collect::<Vec<_>>()).await?,
        ]);
    }
    // In key order, so concurrent writers meeting the same keys lock them in one order.
    let mut all: Vec<&EventRow> = jobs.iter().flat_map(|j| j.rows.iter()).collect();
    all.sort_by(|a, b| {
        (&a.external_subscription_id, &a.transaction_id)
            .cmp(&(&b.external_subscription_id, &b.transaction_id))
    });
    match write_one(store, &all).await {
        Ok(dups) if dups.is_empty() => return Ok(vec![Vec::new(); jobs.len()]),
        // A duplicate somewhere, or a failure (a deadlock with another writer): one by one.
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "group write failed; writing requests one by one"),
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(write_one(store, &job.rows.iter().collect::<Vec<_>>()).await?);
    }
    Ok(outcomes)
}

pub const SUB_STATUSES: &[&str] = &["active", "pending", "canceled", "terminated", "incomplete"];

fn plan_of(text: &str) -> Result<Plan, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("plan: {e}")))
}

fn metric_of(text: &str) -> Result<Metric, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("metric: {e}")))
}

fn parse_time(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_rfc3339_ms(s).or_else(|| {
            let d =
                time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE).ok()?;
            Some(d.midnight().assume_utc().unix_timestamp() * 1000)
        }),
        _ => None,
    }
}

/// Lago's event timestamp: Unix seconds as an integer, a float, or a numeric string (ours
/// also takes RFC 3339 text). Exact: read through a decimal.
pub fn parse_event_timestamp(v: &Value) -> Option<i64> {
    if let Value::String(s) = v
        && let Some(ms) = parse_rfc3339_ms(s)
    {
        return Some(ms);
    }
    let d = decimal_of(v)?;
    let ms = (d * Decimal::from(1000)).trunc();
    i64::try_from(ms.mantissa() / 10i128.pow(ms.scale())).ok()
}

/// Everything a subscription's JSON needs.
pub struct SubView {
    pub sub: SubRow,
    pub plan: Plan,
    pub customer_external_id: String,
    pub previous_plan_code: Option<String>,
    pub next: Option<(String, i64)>,
}

impl SubView {
    pub fn json(&self, now: i64) -> Value {
        let s = &self.sub;
        let bt = BillingTime::parse(&s.billing_time).unwrap_or(BillingTime::Calendar);
        let (cur_from, cur_to) = match (s.status.as_str(), s.started_at) {
            ("active", Some(st)) => {
                let p = period::containing(self.plan.interval, bt, st, now);
                (
                    render::iso_opt(Some(p.from)),
                    render::iso_opt(Some(p.to - 1000)),
                )
            }
            _ => (Value::Null, Value::Null),
        };
        let trial_end = s.started_at.and_then(|st| trial_end(&self.plan, st));
        json!({
            "lago_id": s.lago_id,
            "external_id": s.external_id,
            "lago_customer_id": s.customer_id,
            "external_customer_id": self.customer_external_id,
            "billing_entity_code": null,
            "billing_time": s.billing_time,
            "name": s.name,
            "plan_code": self.plan.code,
            "plan_amount_cents": self.plan.amount_cents,
            "plan_amount_currency": self.plan.amount_currency,
            "status": s.status,
            "created_at": render::iso(s.created_at),
            "canceled_at": render::iso_opt(s.canceled_at),
            "started_at": render::iso_opt(s.started_at),
            "ending_at": render::iso_opt(s.ending_at),
            "subscription_at": render::iso(s.subscription_at),
            "terminated_at": render::iso_opt(s.terminated_at),
            "trial_ended_at": render::iso_opt(trial_end.filter(|t| *t <= now)),
            "previous_plan_code": self.previous_plan_code,
            "next_plan_code": self.next.as_ref().map(|n| n.0.clone()),
            "downgrade_plan_date": self.next.as_ref().map(|n| period::iso_date(n.1)),
            "current_billing_period_started_at": cur_from,
            "current_billing_period_ending_at": cur_to,
            "on_termination_credit_note": null,
            "on_termination_invoice": "generate",
            "consolidate_invoice": false,
            "purchase_order_number": null,
            "cancellation_reason": null,
            "activated_at": render::iso_opt(s.started_at),
            "activation_rules": [],
        })
    }
}

/// When a plan's trial ends for a subscription started at `started_at`, if it has one.
pub fn trial_end(plan: &Plan, started_at: i64) -> Option<i64> {
    if plan.trial_period <= Decimal::ZERO {
        return None;
    }
    let ms = (plan.trial_period * Decimal::from(period::DAY_MS)).trunc();
    let ms = i64::try_from(ms.mantissa() / 10i128.pow(ms.scale())).ok()?;
    Some(started_at + ms)
}

/// One computed charge: the numbers a usage line and an invoice fee both show.
#[derive(Debug, Clone)]
pub struct ChargeFee {
    pub charge: crate::model::Charge,
    pub metric: Metric,
    pub units: Decimal,
    pub events_count: i64,
    pub amount_cents: i64,
    pub precise_amount: Decimal,
}

fn customer_fields(m: &Map<String, Value>, errors: &mut FieldErrors) -> Map<String, Value> {
    let mut f = Fields::new(m);
    let mut out = Map::new();
    for k in render::CUSTOMER_STRINGS {
        if !m.contains_key(*k) {
            continue;
        }
        let v = match m.get(*k) {
            Some(Value::Null) => Value::Null,
            _ => match f.str(k) {
                Some(s) => Value::String(s),
                None => continue,
            },
        };
        out.insert((*k).to_string(), v);
    }
    let s =
        |out: &Map<String, Value>, k: &str| out.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(c) = s(&out, "currency")
        && !valid_currency(&c)
    {
        f.err("currency", "value_is_invalid");
    }
    if let Some(c) = s(&out, "country") {
        if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
            f.err("country", "not_a_valid_country_code");
        } else {
            out.insert("country".into(), json!(c.to_ascii_uppercase()));
        }
    }
    if let Some(e) = s(&out, "email")
        && !e.is_empty()
        && !e.split(',').all(|p| {
            let p = p.trim();
            p.split_once('@')
                .is_some_and(|(a, b)| !a.is_empty() && b.contains('.'))
        })
    {
        f.err("email", "invalid_email_format");
    }
    if let Some(t) = s(&out, "customer_type")
        && !["company", "individual"].contains(&t.as_str())
    {
        f.err("customer_type", "value_is_invalid");
    }
    if let Some(t) = s(&out, "finalize_zero_amount_invoice")
        && !["inherit", "skip", "finalize"].contains(&t.as_str())
    {
        f.err("finalize_zero_amount_invoice", "value_is_invalid");
    }
    if let Some(tz) = s(&out, "timezone")
        && tz != "UTC"
        && !tz.contains('/')
    {
        f.err("timezone", "invalid_timezone");
    }
    if m.contains_key("net_payment_term") {
        match f.get("net_payment_term") {
            None => {
                out.insert("net_payment_term".into(), Value::Null);
            }
            Some(_) => {
                if let Some(n) = f.non_negative_int("net_payment_term") {
                    out.insert("net_payment_term".into(), json!(n));
                }
            }
        }
    }
    if let Some(bc) = f.object("billing_configuration") {
        let mut b = Fields::nested(bc, "billing_configuration");
        let mut o = Map::new();
        if let Some(g) = b.non_negative_int("invoice_grace_period") {
            o.insert("invoice_grace_period".into(), json!(g));
        }
        for k in [
            "payment_provider",
            "payment_provider_code",
            "provider_customer_id",
            "document_locale",
        ] {
            if let Some(v) = b.str(k) {
                o.insert(k.into(), json!(v));
            }
        }
        for k in ["sync", "sync_with_provider"] {
            if let Some(v) = b.bool(k) {
                o.insert(k.into(), json!(v));
            }
        }
        f.absorb(b.errors);
        out.insert("billing_configuration".into(), Value::Object(o));
    }
    if let Some(sa) = f.object("shipping_address") {
        let mut o = Map::new();
        for k in [
            "address_line1",
            "address_line2",
            "city",
            "zipcode",
            "state",
            "country",
        ] {
            if let Some(Value::String(v)) = sa.get(k) {
                o.insert(k.into(), json!(v));
            }
        }
        out.insert("shipping_address".into(), Value::Object(o));
    }
    if let Some(md) = f.array("metadata") {
        let mut items = Vec::new();
        for it in md {
            match (it.get("key").and_then(Value::as_str), it.get("value")) {
                (Some(k), Some(v)) => items.push(json!({
                    "lago_id": new_id(),
                    "key": k,
                    "value": v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                    "display_in_invoice": it.get("display_in_invoice").and_then(Value::as_bool).unwrap_or(false),
                    "created_at": render::iso(now_ms()),
                })),
                _ => f.err("metadata", "invalid_format"),
            }
        }
        out.insert("metadata".into(), Value::Array(items));
    }
    if let Some(tc) = f.array("tax_codes") {
        out.insert("tax_codes".into(), Value::Array(tc.clone()));
    }
    for (k, v) in f.errors.0 {
        for c in v {
            errors.add(&k, &c);
        }
    }
    out
}

impl App {
    pub fn metric_by_code(&self, code: &str) -> Option<Metric> {
        self.metrics.read().ok()?.get(code).cloned()
    }

    pub async fn reload_metrics(&self) -> Result<(), Error> {
        let mut c = self.store.read().await?;
        let mut map = HashMap::new();
        for t in store::all_docs(&mut c, Doc::Metric).await? {
            let m = metric_of(&t)?;
            map.insert(m.code.clone(), m);
        }
        if let Ok(mut w) = self.metrics.write() {
            *w = map;
        }
        let eps = store::endpoints(&mut c).await?;
        self.has_endpoints.store(!eps.is_empty(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes `webhook_type` for `object` into the outbox for every endpoint that wants it.
    pub async fn emit(
        &self,
        c: &mut Conn,
        webhook_type: &str,
        object_type: &str,
        object: Value,
    ) -> Result<(), Error> {
        // Read inside the transaction every time: another replica may have added one.
        let eps = store::endpoints(c).await?;
        if eps.is_empty() {
            return Ok(());
        }
        let mut payload = Map::new();
        payload.insert("webhook_type".into(), json!(webhook_type));
        payload.insert("object_type".into(), json!(object_type));
        payload.insert("organization_id".into(), json!(self.org_id));
        payload.insert(object_type.into(), object);
        let body = Value::Object(payload).to_string();
        let now = now_ms();
        for e in eps {
            if let Some(types) = &e.event_types
                && !types.iter().any(|t| t == webhook_type)
            {
                continue;
            }
            store::enqueue_webhook(c, &new_id(), &e.lago_id, webhook_type, &body, now).await?;
        }
        Ok(())
    }

    // ---- customers ----

    pub async fn upsert_customer(&self, m: &Map<String, Value>) -> Result<Value, Error> {
        match self.upsert_customer_once(m).await {
            Err(Error::Sql(e)) if pressoir_core::db::is_unique_violation(&e) => {
                self.upsert_customer_once(m).await
            }
            other => other,
        }
    }

    async fn upsert_customer_once(&self, m: &Map<String, Value>) -> Result<Value, Error> {
        let mut errors = FieldErrors::default();
        let external_id = match m.get("external_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                errors.add("external_id", "value_is_mandatory");
                String::new()
            }
        };
        let fields = customer_fields(m, &mut errors);
        errors.into_result()?;
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let now = now_ms();
        let row = match store::customer_by_external(c, &external_id).await? {
            Some(mut row) => {
                for (k, v) in fields {
                    row.data.insert(k, v);
                }
                row.updated_at = now;
                store::save_customer(c, &row, false).await?;
                self.emit(c, "customer.updated", "customer", render::customer(&row))
                    .await?;
                row
            }
            None => self.create_customer(c, &external_id, fields, now).await?,
        };
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(render::customer(&row))
    }

    async fn create_customer(
        &self,
        c: &mut Conn,
        external_id: &str,
        data: Map<String, Value>,
        now: i64,
    ) -> Result<CustomerRow, Error> {
        let row = CustomerRow {
            lago_id: new_id(),
            sequential_id: store::next_customer_seq(c).await?,
            external_id: external_id.to_string(),
            data,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        // A unique violation here is a concurrent create of the same customer: callers run
        // again and find it.
        store::save_customer(c, &row, true).await?;
        self.emit(c, "customer.created", "customer", render::customer(&row))
            .await?;
        Ok(row)
    }

    pub async fn customer(&self, external_id: &str) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let row = store::customer_by_external(&mut c, external_id)
            .await?
            .ok_or(ApiError::Code(Code::CustomerNotFound))?;
        Ok(render::customer(&row))
    }

    pub async fn customers(&self, external_id: Option<&str>, page: Page) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let (rows, total) = store::list_customers(&mut c, external_id, page).await?;
        Ok(
            json!({"customers": rows.iter().map(render::customer).collect::<Vec<_>>(),
                  "meta": render::meta(page, total)}),
        )
    }

    pub async fn delete_customer(&self, external_id: &str) -> Result<Value, Error> {
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let mut row = store::customer_by_external(c, external_id)
            .await?
            .ok_or(ApiError::Code(Code::CustomerNotFound))?;
        let now = now_ms();
        for s in store::subs_of_customer(c, &row.lago_id).await? {
            match s.status.as_str() {
                "active" => self.terminate(c, s, now).await?,
                "pending" => self.cancel(c, s, now).await?,
                _ => {}
            }
        }
        row.deleted_at = Some(now);
        row.updated_at = now;
        store::save_customer(c, &row, false).await?;
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(render::customer(&row))
    }

    // ---- billable metrics ----

    pub async fn create_metric(&self, m: &Map<String, Value>) -> Result<Value, Error> {
        let now = now_ms();
        let metric = Metric::from_input(m, None, new_id(), now)?;
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        if store::doc_by_code(c, Doc::Metric, &metric.code)
            .await?
            .is_some()
        {
            return Err(ApiError::field("code", "value_already_exist").into());
        }
        let text = serde_json::to_string(&metric).map_err(|e| Error::Corrupt(e.to_string()))?;
        store::insert_doc(c, Doc::Metric, &metric.lago_id, &metric.code, &text, now)
            .await
            .map_err(unique_as("code"))?;
        self.emit(
            c,
            "billable_metric.created",
            "billable_metric",
            render::metric(&metric),
        )
        .await?;
        tx.commit().await?;
        self.reload_metrics().await?;
        self.webhook_wake.notify_one();
        Ok(render::metric(&metric))
    }

    async fn metric_doc(&self, c: &mut Conn, code: &str) -> Result<Metric, Error> {
        let t = store::doc_by_code(c, Doc::Metric, code)
            .await?
            .ok_or(ApiError::Code(Code::BillableMetricNotFound))?;
        metric_of(&t)
    }

    pub async fn metric(&self, code: &str) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        Ok(render::metric(&self.metric_doc(&mut c, code).await?))
    }

    pub async fn metrics(&self, page: Page) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let (rows, total) = store::list_docs(&mut c, Doc::Metric, page).await?;
        let items = rows
            .iter()
            .map(|t| metric_of(t).map(|m| render::metric(&m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({"billable_metrics": items, "meta": render::meta(page, total)}))
    }

    pub async fn update_metric(&self, code: &str, m: &Map<String, Value>) -> Result<Value, Error> {
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let old = self.metric_doc(c, code).await?;
        let new = Metric::from_input(m, Some(&old), old.lago_id.clone(), now_ms())?;
        if new.code != old.code
            && store::doc_by_code(c, Doc::Metric, &new.code)
                .await?
                .is_some()
        {
            return Err(ApiError::field("code", "value_already_exist").into());
        }
        if new.field_name != old.field_name || new.code != old.code {
            // Stored event values were extracted with the old field; keep them exact by
            // refusing rather than silently re-reading a million events.
            if new.field_name != old.field_name
                && old.field_name.is_some()
                && new.field_name.is_some()
            {
                // allowed only while no event has been received for this metric
                let (evs, _) = store::list_events(
                    c,
                    Some(&old.code),
                    None,
                    None,
                    None,
                    Page {
                        page: 1,
                        per_page: 1,
                    },
                )
                .await?;
                if !evs.is_empty() {
                    return Err(
                        ApiError::field("field_name", "value_already_exist_with_events").into(),
                    );
                }
            }
        }
        let text = serde_json::to_string(&new).map_err(|e| Error::Corrupt(e.to_string()))?;
        store::update_doc(c, Doc::Metric, &new.lago_id, &new.code, &text)
            .await
            .map_err(unique_as("code"))?;
        self.emit(
            c,
            "billable_metric.updated",
            "billable_metric",
            render::metric(&new),
        )
        .await?;
        tx.commit().await?;
        self.reload_metrics().await?;
        self.webhook_wake.notify_one();
        Ok(render::metric(&new))
    }

    /// Soft-deletes a metric and removes the charges that use it from every plan.
    pub async fn delete_metric(&self, code: &str) -> Result<Value, Error> {
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let m = self.metric_doc(c, code).await?;
        store::delete_doc(c, Doc::Metric, &m.lago_id, now_ms()).await?;
        for t in store::all_docs(c, Doc::Plan).await? {
            let mut p = plan_of(&t)?;
            let before = p.charges.len();
            p.charges.retain(|ch| ch.billable_metric_id != m.lago_id);
            if p.charges.len() != before {
                let text = serde_json::to_string(&p).map_err(|e| Error::Corrupt(e.to_string()))?;
                store::update_doc(c, Doc::Plan, &p.lago_id, &p.code, &text).await?;
            }
        }
        self.emit(
            c,
            "billable_metric.deleted",
            "billable_metric",
            render::metric(&m),
        )
        .await?;
        tx.commit().await?;
        self.reload_metrics().await?;
        self.webhook_wake.notify_one();
        Ok(render::metric(&m))
    }

    // ---- plans ----

    async fn metrics_by_id(
        &self,
        c: &mut Conn,
        p: &Plan,
    ) -> Result<HashMap<String, Metric>, Error> {
        let mut out = HashMap::new();
        for ch in &p.charges {
            if out.contains_key(&ch.billable_metric_id) {
                continue;
            }
            if let Some(t) = store::doc_by_id(c, Doc::Metric, &ch.billable_metric_id).await? {
                let m = metric_of(&t)?;
                out.insert(m.lago_id.clone(), m);
            }
        }
        Ok(out)
    }

    async fn plan_input(&self, m: &Map<String, Value>, base: Option<&Plan>) -> Result<Plan, Error> {
        let live: Vec<Metric> = self
            .metrics
            .read()
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        let lookup = |id: Option<&str>, code: Option<&str>| -> Option<Metric> {
            live.iter()
                .find(|mm| {
                    id.is_some_and(|i| i == mm.lago_id)
                        || (id.is_none() && code.is_some_and(|c| c == mm.code))
                })
                .cloned()
        };
        let mut ids = new_id;
        Ok(Plan::from_input(m, base, &lookup, &mut ids, now_ms())?)
    }

    pub async fn create_plan(&self, m: &Map<String, Value>) -> Result<Value, Error> {
        let plan = self.plan_input(m, None).await?;
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        if store::doc_by_code(c, Doc::Plan, &plan.code)
            .await?
            .is_some()
        {
            return Err(ApiError::field("code", "value_already_exist").into());
        }
        let text = serde_json::to_string(&plan).map_err(|e| Error::Corrupt(e.to_string()))?;
        store::insert_doc(
            c,
            Doc::Plan,
            &plan.lago_id,
            &plan.code,
            &text,
            plan.created_at,
        )
        .await
        .map_err(unique_as("code"))?;
        let metrics = self.metrics_by_id(c, &plan).await?;
        let body = render::plan(&plan, &metrics);
        self.emit(c, "plan.created", "plan", body.clone()).await?;
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(body)
    }

    async fn plan_doc(&self, c: &mut Conn, code: &str) -> Result<Plan, Error> {
        let t = store::doc_by_code(c, Doc::Plan, code)
            .await?
            .ok_or(ApiError::Code(Code::PlanNotFound))?;
        plan_of(&t)
    }

    async fn plan_by_id(&self, c: &mut Conn, id: &str) -> Result<Plan, Error> {
        let t = store::doc_by_id(c, Doc::Plan, id)
            .await?
            .ok_or(ApiError::Code(Code::PlanNotFound))?;
        plan_of(&t)
    }

    pub async fn plan(&self, code: &str) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let p = self.plan_doc(&mut c, code).await?;
        let metrics = self.metrics_by_id(&mut c, &p).await?;
        Ok(render::plan(&p, &metrics))
    }

    pub async fn plans(&self, page: Page) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let (rows, total) = store::list_docs(&mut c, Doc::Plan, page).await?;
        let mut items = Vec::new();
        for t in rows {
            let p = plan_of(&t)?;
            let metrics = self.metrics_by_id(&mut c, &p).await?;
            items.push(render::plan(&p, &metrics));
        }
        Ok(json!({"plans": items, "meta": render::meta(page, total)}))
    }

    pub async fn update_plan(&self, code: &str, m: &Map<String, Value>) -> Result<Value, Error> {
        let old = {
            let mut c = self.store.read().await?;
            self.plan_doc(&mut c, code).await?
        };
        let new = self.plan_input(m, Some(&old)).await?;
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        if new.code != old.code && store::doc_by_code(c, Doc::Plan, &new.code).await?.is_some() {
            return Err(ApiError::field("code", "value_already_exist").into());
        }
        let text = serde_json::to_string(&new).map_err(|e| Error::Corrupt(e.to_string()))?;
        store::update_doc(c, Doc::Plan, &new.lago_id, &new.code, &text)
            .await
            .map_err(unique_as("code"))?;
        let metrics = self.metrics_by_id(c, &new).await?;
        let body = render::plan(&new, &metrics);
        self.emit(c, "plan.updated", "plan", body.clone()).await?;
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(body)
    }

    /// Deletes a plan and terminates its subscriptions, as Lago does.
    pub async fn delete_plan(&self, code: &str) -> Result<Value, Error> {
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let p = self.plan_doc(c, code).await?;
        let now = now_ms();
        for s in store::subs_of_plan(c, &p.lago_id).await? {
            match s.status.as_str() {
                "active" => self.terminate(c, s, now).await?,
                "pending" => self.cancel(c, s, now).await?,
                _ => {}
            }
        }
        store::delete_doc(c, Doc::Plan, &p.lago_id, now).await?;
        let metrics = self.metrics_by_id(c, &p).await?;
        let body = render::plan(&p, &metrics);
        self.emit(c, "plan.deleted", "plan", body.clone()).await?;
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(body)
    }

    // ---- subscriptions ----

    pub async fn sub_view(&self, c: &mut Conn, sub: SubRow) -> Result<SubView, Error> {
        let plan = self.plan_by_id(c, &sub.plan_id).await?;
        let customer_external_id = store::customer_by_id(c, &sub.customer_id)
            .await?
            .map(|r| r.external_id)
            .unwrap_or_default();
        let previous_plan_code = match &sub.previous_id {
            Some(id) => match store::sub_by_id(c, id).await? {
                Some(prev) => Some(self.plan_by_id(c, &prev.plan_id).await?.code),
                None => None,
            },
            None => None,
        };
        let mut next = None;
        if sub.status == "active" {
            for s in store::subs_by_external(c, &sub.external_id).await? {
                if s.status == "pending" && s.previous_id.as_deref() == Some(&sub.lago_id) {
                    next = Some((
                        self.plan_by_id(c, &s.plan_id).await?.code,
                        s.subscription_at,
                    ));
                }
            }
        }
        Ok(SubView {
            sub,
            plan,
            customer_external_id,
            previous_plan_code,
            next,
        })
    }

    async fn sub_json(&self, c: &mut Conn, sub: SubRow) -> Result<Value, Error> {
        Ok(self.sub_view(c, sub).await?.json(now_ms()))
    }

    /// Creates a subscription (see [`Self::create_subscription_once`]). Two concurrent creates
    /// of one external id (a retry racing the original) meet the one-active index; the loser
    /// runs again and finds the winner's subscription, so the call stays idempotent.
    pub async fn create_subscription(&self, m: &Map<String, Value>) -> Result<Value, Error> {
        match self.create_subscription_once(m).await {
            Err(Error::Sql(e)) if pressoir_core::db::is_unique_violation(&e) => {
                self.create_subscription_once(m).await
            }
            other => other,
        }
    }

    async fn create_subscription_once(&self, m: &Map<String, Value>) -> Result<Value, Error> {
        let mut f = Fields::new(m);
        let ext_customer = f.req_str("external_customer_id");
        let plan_code = f.req_str("plan_code");
        let external_id = f.req_str("external_id");
        let name = f.str("name");
        let billing_time = f
            .one_of("billing_time", &["calendar", "anniversary"])
            .unwrap_or_else(|| "calendar".into());
        let subscription_at = match f.get("subscription_at") {
            None => None,
            Some(v) => match parse_time(v) {
                Some(t) => Some(t),
                None => {
                    f.err("subscription_at", "invalid_date");
                    None
                }
            },
        };
        let ending_at = match f.get("ending_at") {
            None => None,
            Some(v) => match parse_time(v) {
                Some(t) => Some(t),
                None => {
                    f.err("ending_at", "invalid_date");
                    None
                }
            },
        };
        f.finish()?;
        let (ext_customer, plan_code, external_id) = (
            ext_customer.unwrap_or_default(),
            plan_code.unwrap_or_default(),
            external_id.unwrap_or_default(),
        );
        let now = now_ms();
        if ending_at.is_some_and(|e| e <= subscription_at.unwrap_or(now)) {
            return Err(ApiError::field("ending_at", "invalid_date").into());
        }
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let plan = self.plan_doc(c, &plan_code).await?;
        let customer = match store::customer_by_external(c, &ext_customer).await? {
            Some(r) => r,
            None => {
                self.create_customer(c, &ext_customer, Map::new(), now)
                    .await?
            }
        };
        let existing = store::subs_by_external(c, &external_id).await?;
        let current = existing
            .iter()
            .find(|s| s.status == "active")
            .or_else(|| {
                existing
                    .iter()
                    .find(|s| s.status == "pending" && s.previous_id.is_none())
            })
            .cloned();
        let result = match current {
            Some(cur) if cur.customer_id != customer.lago_id => {
                return Err(ApiError::field("external_id", "value_already_exist").into());
            }
            Some(cur) if cur.plan_id == plan.lago_id => {
                // Idempotent: the same subscription. A pending downgrade back to this plan is dropped.
                for s in &existing {
                    if s.status == "pending" && s.previous_id.as_deref() == Some(&cur.lago_id) {
                        self.cancel(c, s.clone(), now).await?;
                    }
                }
                cur
            }
            Some(mut cur) if cur.status == "pending" => {
                cur.plan_id = plan.lago_id.clone();
                cur.updated_at = now;
                store::save_sub(c, &cur).await?;
                cur
            }
            Some(cur) => {
                let old_plan = self.plan_by_id(c, &cur.plan_id).await?;
                let upgrade = plan.amount_cents.saturating_mul(plan.interval.per_year())
                    >= old_plan
                        .amount_cents
                        .saturating_mul(old_plan.interval.per_year());
                if upgrade {
                    let cur_id = cur.lago_id.clone();
                    let bt = cur.billing_time.clone();
                    for s in &existing {
                        if s.status == "pending" && s.previous_id.as_deref() == Some(&cur_id) {
                            self.cancel(c, s.clone(), now).await?;
                        }
                    }
                    self.terminate(c, cur, now).await?;
                    let new = SubRow {
                        lago_id: new_id(),
                        external_id: external_id.clone(),
                        customer_id: customer.lago_id.clone(),
                        plan_id: plan.lago_id.clone(),
                        status: "active".into(),
                        billing_time: bt,
                        name: name.clone(),
                        subscription_at: now,
                        started_at: Some(now),
                        ending_at,
                        terminated_at: None,
                        canceled_at: None,
                        previous_id: Some(cur_id),
                        billed_until: None,
                        created_at: now,
                        updated_at: now,
                    };
                    store::save_sub(c, &new).await?;
                    let body = self.sub_json(c, new.clone()).await?;
                    self.emit(c, "subscription.started", "subscription", body)
                        .await?;
                    self.bill(c, new.clone(), now).await?;
                    new
                } else {
                    let bt = BillingTime::parse(&cur.billing_time).unwrap_or(BillingTime::Calendar);
                    let st = cur.started_at.unwrap_or(cur.subscription_at);
                    let end = period::containing(old_plan.interval, bt, st, now).to;
                    let pending = existing
                        .iter()
                        .find(|s| {
                            s.status == "pending" && s.previous_id.as_deref() == Some(&cur.lago_id)
                        })
                        .cloned();
                    let mut next = pending.unwrap_or(SubRow {
                        lago_id: new_id(),
                        external_id: external_id.clone(),
                        customer_id: customer.lago_id.clone(),
                        plan_id: plan.lago_id.clone(),
                        status: "pending".into(),
                        billing_time: cur.billing_time.clone(),
                        name: name.clone(),
                        subscription_at: end,
                        started_at: None,
                        ending_at: None,
                        terminated_at: None,
                        canceled_at: None,
                        previous_id: Some(cur.lago_id.clone()),
                        billed_until: None,
                        created_at: now,
                        updated_at: now,
                    });
                    next.plan_id = plan.lago_id.clone();
                    next.updated_at = now;
                    store::save_sub(c, &next).await?;
                    let body = self.sub_json(c, cur.clone()).await?;
                    self.emit(c, "subscription.updated", "subscription", body)
                        .await?;
                    cur
                }
            }
            None => {
                // A new subscription starts on a whole second, because clients (Press,
                // `lago-python-client`) send event timestamps in Unix seconds, and an event
                // stamped in the second a subscription started belongs to it. The second is
                // that of `now`, which decides `active`: another read of the clock could fall
                // in the next second and leave the subscription pending.
                let at = subscription_at.unwrap_or(now / 1000 * 1000);
                let active = at <= now;
                let s = SubRow {
                    lago_id: new_id(),
                    external_id: external_id.clone(),
                    customer_id: customer.lago_id.clone(),
                    plan_id: plan.lago_id.clone(),
                    status: if active { "active" } else { "pending" }.into(),
                    billing_time,
                    name,
                    subscription_at: at,
                    started_at: active.then_some(at),
                    ending_at,
                    terminated_at: None,
                    canceled_at: None,
                    previous_id: None,
                    billed_until: None,
                    created_at: now,
                    updated_at: now,
                };
                store::save_sub(c, &s).await?;
                if active {
                    let body = self.sub_json(c, s.clone()).await?;
                    self.emit(c, "subscription.started", "subscription", body)
                        .await?;
                    self.bill(c, s.clone(), now).await?;
                }
                store::sub_by_id(c, &s.lago_id).await?.unwrap_or(s)
            }
        };
        let body = self.sub_json(c, result).await?;
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(body)
    }

    /// Terminates an active subscription at `at`: bills what is unbilled up to then, issues the
    /// closing invoice, and sends `subscription.terminated`.
    pub async fn terminate(&self, c: &mut Conn, sub: SubRow, at: i64) -> Result<(), Error> {
        let mut sub = self.bill(c, sub, at).await?;
        if sub.status != "active" {
            return Ok(());
        }
        crate::invoice::close(self, c, &sub, at).await?;
        sub.status = "terminated".into();
        sub.terminated_at = Some(at);
        sub.billed_until = Some(at);
        sub.updated_at = now_ms();
        store::save_sub(c, &sub).await?;
        let body = self.sub_json(c, sub).await?;
        self.emit(c, "subscription.terminated", "subscription", body)
            .await?;
        Ok(())
    }

    async fn cancel(&self, c: &mut Conn, mut sub: SubRow, at: i64) -> Result<(), Error> {
        sub.status = "canceled".into();
        sub.canceled_at = Some(at);
        sub.updated_at = at;
        store::save_sub(c, &sub).await?;
        let body = self.sub_json(c, sub).await?;
        self.emit(c, "subscription.canceled", "subscription", body)
            .await?;
        Ok(())
    }

    /// Brings one subscription up to date at `now`: issues invoices for every period that has
    /// ended, applies a scheduled downgrade or end date, activates a pending start.
    pub async fn bill(&self, c: &mut Conn, mut sub: SubRow, now: i64) -> Result<SubRow, Error> {
        if sub.status == "pending" {
            if sub.previous_id.is_none() && sub.subscription_at <= now {
                sub.status = "active".into();
                sub.started_at = Some(sub.subscription_at);
                sub.updated_at = now;
                store::save_sub(c, &sub).await?;
                let body = self.sub_json(c, sub.clone()).await?;
                self.emit(c, "subscription.started", "subscription", body)
                    .await?;
            } else {
                return Ok(sub);
            }
        }
        if sub.status != "active" {
            return Ok(sub);
        }
        let plan = self.plan_by_id(c, &sub.plan_id).await?;
        let bt = BillingTime::parse(&sub.billing_time).unwrap_or(BillingTime::Calendar);
        let started = sub.started_at.unwrap_or(sub.subscription_at);
        loop {
            let cursor = sub.billed_until.unwrap_or(started);
            let p = period::containing(plan.interval, bt, started, cursor);
            if plan.pay_in_advance && p.from <= now {
                crate::invoice::advance(self, c, &sub, &plan, p).await?;
            }
            if let Some(end) = sub.ending_at
                && end <= now
                && end < p.to
            {
                let s = sub.clone();
                Box::pin(self.terminate(c, s, end)).await?;
                return Ok(store::sub_by_id(c, &sub.lago_id).await?.unwrap_or(sub));
            }
            if p.to > now {
                break;
            }
            crate::invoice::period(self, c, &sub, &plan, p).await?;
            sub.billed_until = Some(p.to);
            sub.updated_at = now;
            store::save_sub(c, &sub).await?;
            // A downgrade scheduled for this boundary takes over here.
            let pending = store::subs_by_external(c, &sub.external_id)
                .await?
                .into_iter()
                .find(|s| s.status == "pending" && s.previous_id.as_deref() == Some(&sub.lago_id));
            if let Some(mut next) = pending {
                sub.status = "terminated".into();
                sub.terminated_at = Some(p.to);
                store::save_sub(c, &sub).await?;
                let body = self.sub_json(c, sub.clone()).await?;
                self.emit(c, "subscription.terminated", "subscription", body)
                    .await?;
                next.status = "active".into();
                next.subscription_at = p.to;
                next.started_at = Some(p.to);
                next.updated_at = now;
                store::save_sub(c, &next).await?;
                let body = self.sub_json(c, next.clone()).await?;
                self.emit(c, "subscription.started", "subscription", body)
                    .await?;
                return Box::pin(self.bill(c, next, now)).await;
            }
        }
        Ok(sub)
    }

    /// Runs [`bill`](Self::bill), one transaction each, for the subscriptions that have
    /// something due: a pending start, an ended period, or an end date reached. The others
    /// are skipped without taking a write transaction.
    pub async fn bill_all(&self) -> Result<(), Error> {
        let now = now_ms();
        let due: Vec<SubRow> = {
            let mut c = self.store.read().await?;
            let subs = store::subs_with_status(&mut c, &["active", "pending"]).await?;
            let mut plans: HashMap<String, Plan> = HashMap::new();
            let mut due = Vec::new();
            for s in subs {
                if !plans.contains_key(&s.plan_id) {
                    let p = self.plan_by_id(&mut c, &s.plan_id).await?;
                    plans.insert(s.plan_id.clone(), p);
                }
                let plan = &plans[&s.plan_id];
                if is_due(&s, plan, now) {
                    due.push(s);
                }
            }
            due
        };
        self.finalize_due_drafts(now).await?;
        for s in due {
            let mut tx = self.store.begin().await?;
            let c = tx.conn();
            // Re-read inside the transaction: another writer may have moved it.
            let Some(fresh) = store::sub_for_update(c, self.store.backend(), &s.lago_id).await?
            else {
                continue;
            };
            if !matches!(fresh.status.as_str(), "active" | "pending") {
                continue;
            }
            self.bill(c, fresh, now).await?;
            tx.commit().await?;
        }
        self.webhook_wake.notify_one();
        Ok(())
    }

    pub async fn subscription(
        &self,
        external_id: &str,
        status: Option<&str>,
    ) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let subs = store::subs_by_external(&mut c, external_id).await?;
        let s = pick_sub(subs, status).ok_or(ApiError::Code(Code::SubscriptionNotFound))?;
        self.sub_json(&mut c, s).await
    }

    pub async fn subscriptions(
        &self,
        external_customer_id: Option<&str>,
        plan_code: Option<&str>,
        statuses: &[String],
        page: Page,
    ) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let customer_id = match external_customer_id {
            Some(e) => match store::customer_by_external(&mut c, e).await? {
                Some(r) => Some(r.lago_id),
                None => return Ok(json!({"subscriptions": [], "meta": render::meta(page, 0)})),
            },
            None => None,
        };
        let plan_id = match plan_code {
            Some(p) => match store::doc_by_code(&mut c, Doc::Plan, p).await? {
                Some(t) => Some(plan_of(&t)?.lago_id),
                None => return Ok(json!({"subscriptions": [], "meta": render::meta(page, 0)})),
            },
            None => None,
        };
        let statuses: Vec<String> = if statuses.is_empty() {
            vec!["active".into()]
        } else {
            statuses
                .iter()
                .filter(|s| SUB_STATUSES.contains(&s.as_str()))
                .cloned()
                .collect()
        };
        let (rows, total) = store::list_subs(
            &mut c,
            customer_id.as_deref(),
            plan_id.as_deref(),
            &statuses,
            page,
        )
        .await?;
        let mut items = Vec::new();
        for r in rows {
            items.push(self.sub_json(&mut c, r).await?);
        }
        Ok(json!({"subscriptions": items, "meta": render::meta(page, total)}))
    }

    /// `DELETE /subscriptions/{id}`: terminates the active one, or with `status=pending`
    /// cancels the pending one.
    pub async fn terminate_subscription(
        &self,
        external_id: &str,
        status: Option<&str>,
    ) -> Result<Value, Error> {
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let subs = store::subs_by_external(c, external_id).await?;
        let want = status.unwrap_or("active");
        let s = subs
            .into_iter()
            .find(|s| s.status == want && (want != "pending" || s.previous_id.is_none()))
            .ok_or(ApiError::Code(Code::SubscriptionNotFound))?;
        let id = s.lago_id.clone();
        let now = now_ms();
        if want == "pending" {
            self.cancel(c, s, now).await?;
        } else {
            for p in store::subs_by_external(c, external_id).await? {
                if p.status == "pending" && p.previous_id.as_deref() == Some(&id) {
                    self.cancel(c, p, now).await?;
                }
            }
            self.terminate(c, s, now).await?;
        }
        let s = store::sub_by_id(c, &id)
            .await?
            .ok_or(ApiError::Code(Code::SubscriptionNotFound))?;
        let body = self.sub_json(c, s).await?;
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(body)
    }

    /// `PUT /subscriptions/{id}`: name and ending_at.
    pub async fn update_subscription(
        &self,
        external_id: &str,
        m: &Map<String, Value>,
    ) -> Result<Value, Error> {
        let mut f = Fields::new(m);
        let name = f.str("name");
        let ending_at = match f.get("ending_at") {
            None => None,
            Some(v) => match parse_time(v) {
                Some(t) => Some(t),
                None => {
                    f.err("ending_at", "invalid_date");
                    None
                }
            },
        };
        f.finish()?;
        let mut tx = self.store.begin().await?;
        let c = tx.conn();
        let subs = store::subs_by_external(c, external_id).await?;
        let mut s = pick_sub(subs, None).ok_or(ApiError::Code(Code::SubscriptionNotFound))?;
        if m.contains_key("name") {
            s.name = name;
        }
        if m.contains_key("ending_at") {
            s.ending_at = ending_at;
        }
        s.updated_at = now_ms();
        store::save_sub(c, &s).await?;
        let body = self.sub_json(c, s).await?;
        self.emit(c, "subscription.updated", "subscription", body.clone())
            .await?;
        tx.commit().await?;
        self.webhook_wake.notify_one();
        Ok(body)
    }

    // ---- events ----

    fn event_row(
        &self,
        m: &Map<String, Value>,
        now: i64,
    ) -> Result<(EventRow, Value), FieldErrors> {
        let mut f = Fields::new(m);
        let transaction_id = f.req_str("transaction_id");
        let ext_sub = f.req_str("external_subscription_id");
        let code = f.req_str("code");
        let timestamp = match f.get("timestamp") {
            None => Some(now),
            Some(v) => match parse_event_timestamp(v) {
                Some(t) => Some(t),
                None => {
                    f.err("timestamp", "invalid_format");
                    None
                }
            },
        };
        let properties = match f.get("properties") {
            None => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => {
                f.err("properties", "value_is_invalid");
                Map::new()
            }
        };
        let precise = match f.get("precise_total_amount_cents") {
            None => None,
            Some(v) => match decimal_of(v) {
                Some(d) => Some(d.normalize().to_string()),
                None => {
                    f.err("precise_total_amount_cents", "value_is_invalid");
                    None
                }
            },
        };
        if !f.errors.is_empty() {
            return Err(f.errors);
        }
        let code = code.unwrap_or_default();
        let (mut value, mut value_text) = (None, None);
        let field_name = self
            .metrics
            .read()
            .ok()
            .and_then(|g| g.get(&code).and_then(|m| m.field_name.clone()));
        {
            if let Some(field) = &field_name {
                match properties.get(field) {
                    None | Some(Value::Null) => {}
                    Some(v) => {
                        value = decimal_of(v).and_then(aggregate::to_fixed);
                        value_text = Some(match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                    }
                }
            }
        }
        let properties = Value::Object(properties);
        let row = EventRow {
            lago_id: new_id(),
            transaction_id: transaction_id.unwrap_or_default(),
            external_subscription_id: ext_sub.unwrap_or_default(),
            code,
            timestamp: timestamp.unwrap_or(now),
            properties: properties.to_string(),
            value,
            value_text,
            precise_total_amount_cents: precise,
            created_at: now,
        };
        Ok((row, properties))
    }

    /// Makes sure the metric cache knows every code in `items` that the store knows (a metric
    /// created through another replica), and that the endpoints flag is fresh.
    async fn refresh_for_ingest(
        &self,
        items: &[&Map<String, Value>],
        now: i64,
    ) -> Result<(), Error> {
        let missing: Vec<String> = {
            let Ok(cache) = self.metrics.read() else {
                return Ok(());
            };
            let mut m: Vec<String> = items
                .iter()
                .filter_map(|i| i.get("code").and_then(Value::as_str))
                .filter(|c| !cache.contains_key(*c))
                .map(str::to_string)
                .collect();
            m.sort();
            m.dedup();
            m
        };
        let stale = now - self.endpoints_checked_at.load(Ordering::Relaxed) > 5_000;
        if missing.is_empty() && !stale {
            return Ok(());
        }
        let mut c = self.store.read().await?;
        for code in missing {
            if let Some(t) = store::doc_by_code(&mut c, Doc::Metric, &code).await? {
                let m = metric_of(&t)?;
                if let Ok(mut w) = self.metrics.write() {
                    w.insert(m.code.clone(), m);
                }
            }
        }
        if stale {
            let any = !store::endpoints(&mut c).await?.is_empty();
            self.has_endpoints.store(any, Ordering::Relaxed);
            self.endpoints_checked_at.store(now, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Ingests events, all or nothing. Duplicates of (external_subscription_id,
    /// transaction_id) are refused with `value_already_exist` and never counted.
    pub async fn ingest(
        &self,
        items: &[&Map<String, Value>],
        batch: bool,
    ) -> Result<Vec<Value>, Error> {
        let now = now_ms();
        self.refresh_for_ingest(items, now).await?;
        let mut rows = Vec::with_capacity(items.len());
        let mut props = Vec::with_capacity(items.len());
        let mut errors: BTreeMap<usize, FieldErrors> = BTreeMap::new();
        for (i, m) in items.iter().enumerate() {
            match self.event_row(m, now) {
                Ok((r, p)) => {
                    rows.push(r);
                    props.push(p);
                }
                Err(e) => {
                    errors.insert(i, e);
                }
            }
        }
        let fail = |errors: BTreeMap<usize, FieldErrors>| -> Error {
            if batch {
                Error::Api(ApiError::BatchValidation(errors))
            } else {
                Error::Api(ApiError::Validation(
                    errors.into_values().next().unwrap_or_default(),
                ))
            }
        };
        if !errors.is_empty() {
            return Err(fail(errors));
        }
        if let (Some(queue), false) = (
            &self.ingest_queue,
            self.has_endpoints.load(Ordering::Relaxed),
        ) {
            let (reply, answer) = tokio::sync::oneshot::channel();
            queue
                .send(IngestJob { rows, reply })
                .await
                .map_err(|_| Error::Store("the ingest writer has stopped".into()))?;
            let (rows, dups) = answer
                .await
                .map_err(|_| Error::Store("the ingest writer has stopped".into()))?
                .map_err(Error::Store)?;
            if !dups.is_empty() {
                for i in dups {
                    errors.insert(i, FieldErrors::one("transaction_id", "value_already_exist"));
                }
                return Err(fail(errors));
            }
            return Ok(rows
                .iter()
                .zip(props)
                .map(|(r, p)| render::event_with(r, p, None))
                .collect());
        }
        let mut tx = self.store.begin().await?;
        let dups = store::insert_events(tx.conn(), &rows).await?;
        if !dups.is_empty() {
            drop(tx);
            for i in dups {
                errors.insert(i, FieldErrors::one("transaction_id", "value_already_exist"));
            }
            return Err(fail(errors));
        }
        let mut sub_ids: HashMap<String, Option<String>> = HashMap::new();
        if self.has_endpoints.load(Ordering::Relaxed) {
            let c = tx.conn();
            for r in &rows {
                if !sub_ids.contains_key(&r.external_subscription_id) {
                    let subs = store::subs_by_external(c, &r.external_subscription_id).await?;
                    let id = pick_sub(subs, None).map(|s| s.lago_id);
                    sub_ids.insert(r.external_subscription_id.clone(), id);
                }
                let missing_sub = sub_ids
                    .get(&r.external_subscription_id)
                    .is_none_or(|s| s.is_none());
                let unknown_code = self.metric_by_code(&r.code).is_none();
                if missing_sub || unknown_code {
                    let message = if unknown_code {
                        json!({"code": ["does_not_exist"]})
                    } else {
                        json!({"subscription": ["subscription_not_found"]})
                    };
                    let err = json!({
                        "status": 422,
                        "error": "Unprocessable Entity",
                        "message": message,
                        "input_params": render::event(r, None),
                    });
                    self.emit(c, "event.error", "event_error", err).await?;
                }
            }
        }
        tx.commit().await?;
        if !sub_ids.is_empty() {
            self.webhook_wake.notify_one();
        }
        Ok(rows
            .iter()
            .zip(props)
            .map(|(r, p)| {
                let sid = sub_ids.get(&r.external_subscription_id).cloned().flatten();
                render::event_with(r, p, sid.as_deref())
            })
            .collect())
    }

    pub async fn event(&self, transaction_id: &str) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let e = store::event_by_transaction(&mut c, transaction_id)
            .await?
            .ok_or(ApiError::Code(Code::EventNotFound))?;
        let sid = pick_sub(
            store::subs_by_external(&mut c, &e.external_subscription_id).await?,
            None,
        )
        .map(|s| s.lago_id);
        Ok(render::event(&e, sid.as_deref()))
    }

    pub async fn events(
        &self,
        code: Option<&str>,
        ext_sub: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        page: Page,
    ) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let (rows, total) = store::list_events(&mut c, code, ext_sub, from, to, page).await?;
        Ok(
            json!({"events": rows.iter().map(|e| render::event(e, None)).collect::<Vec<_>>(),
                  "meta": render::meta(page, total)}),
        )
    }

    // ---- usage ----

    /// Every charge of `plan` computed over events of `ext_sub` in `[from, to)`.
    pub async fn charge_fees(
        &self,
        c: &mut Conn,
        ext_sub: &str,
        plan: &Plan,
        from: i64,
        to: i64,
    ) -> Result<Vec<ChargeFee>, Error> {
        let metrics = self.metrics_by_id(c, plan).await?;
        let mut out = Vec::new();
        for ch in &plan.charges {
            let Some(metric) = metrics.get(&ch.billable_metric_id).cloned() else {
                continue;
            };
            let pricing = ch.pricing();
            let code = metric.code.clone();
            let period_agg: Agg = store::agg(c, ext_sub, &code, from, to).await?;
            let units = match metric.aggregation_type {
                Aggregation::UniqueCountAgg => {
                    let start = if metric.recurring { i64::MIN } else { from };
                    let rows = store::raw_values(c, ext_sub, &code, start, to).await?;
                    let items: Vec<(String, bool)> = rows
                        .into_iter()
                        .filter_map(|(_, _, text, props)| {
                            let remove = props.contains("operation_type")
                                && serde_json::from_str::<Value>(&props)
                                    .ok()
                                    .and_then(|p| {
                                        p.get("operation_type")
                                            .and_then(Value::as_str)
                                            .map(|s| s == "remove")
                                    })
                                    .unwrap_or(false);
                            text.map(|t| (t, remove))
                        })
                        .collect();
                    aggregate::unique_count(items.iter().map(|(t, r)| (t.as_str(), *r)))
                }
                Aggregation::WeightedSumAgg => {
                    let initial = if metric.recurring {
                        aggregate::from_fixed(
                            store::agg(c, ext_sub, &code, i64::MIN, from)
                                .await?
                                .value_sum,
                        )
                    } else {
                        Decimal::ZERO
                    };
                    let rows = store::raw_values(c, ext_sub, &code, from, to).await?;
                    let vals: Vec<(i64, i64)> = rows
                        .iter()
                        .filter_map(|(t, v, _, _)| v.map(|v| (*t, v)))
                        .collect();
                    aggregate::weighted_sum(initial, &vals, from, to)
                }
                a if metric.recurring => {
                    store::agg(c, ext_sub, &code, i64::MIN, to).await?.units(a)
                }
                a => period_agg.units(a),
            };
            let units = metric.round_units(units);
            let values = if pricing.needs_per_event_values() {
                let rows = store::raw_values(c, ext_sub, &code, from, to).await?;
                Some(
                    rows.iter()
                        .filter_map(|(_, v, _, _)| v.map(aggregate::from_fixed))
                        .collect(),
                )
            } else {
                None
            };
            let usage = Usage {
                units,
                events_count: period_agg.events_count,
                values,
            };
            let precise = money::amount(&pricing, &usage);
            out.push(ChargeFee {
                charge: ch.clone(),
                metric,
                units,
                events_count: period_agg.events_count,
                amount_cents: money::to_cents(precise),
                precise_amount: precise,
            });
        }
        Ok(out)
    }

    pub async fn current_usage(
        &self,
        external_customer_id: &str,
        external_subscription_id: Option<&str>,
    ) -> Result<Value, Error> {
        let mut c = self.store.read().await?;
        let customer = store::customer_by_external(&mut c, external_customer_id)
            .await?
            .ok_or(ApiError::Code(Code::CustomerNotFound))?;
        let Some(ext_sub) = external_subscription_id.filter(|s| !s.is_empty()) else {
            return Err(ApiError::Code(Code::NoActiveSubscription).into());
        };
        let sub = store::subs_by_external(&mut c, ext_sub)
            .await?
            .into_iter()
            .find(|s| s.status == "active" && s.customer_id == customer.lago_id)
            .ok_or(ApiError::Code(Code::NoActiveSubscription))?;
        let plan = self.plan_by_id(&mut c, &sub.plan_id).await?;
        let bt = BillingTime::parse(&sub.billing_time).unwrap_or(BillingTime::Calendar);
        let started = sub.started_at.unwrap_or(sub.subscription_at);
        let now = now_ms();
        let p: Period = period::containing(plan.interval, bt, started, now);
        let fees = self
            .charge_fees(&mut c, ext_sub, &plan, p.from, p.to)
            .await?;
        let currency = plan.amount_currency.clone();
        let total: i64 = fees.iter().map(|f| f.amount_cents).sum();
        let lines: Vec<Value> = fees
            .iter()
            .map(|f| {
                json!({
                    "units": money::units_text(f.units),
                    "total_aggregated_units": money::units_text(f.units),
                    "events_count": f.events_count,
                    "amount_cents": f.amount_cents,
                    "amount_currency": currency,
                    "pricing_unit_details": null,
                    "charge": {"lago_id": f.charge.lago_id, "charge_model": f.charge.charge_model,
                               "invoice_display_name": f.charge.invoice_display_name},
                    "billable_metric": {"lago_id": f.metric.lago_id, "name": f.metric.name,
                                        "code": f.metric.code,
                                        "aggregation_type": f.metric.aggregation_type.as_str()},
                    "filters": [],
                    "grouped_usage": [],
                    "presentation_breakdowns": [],
                })
            })
            .collect();
        Ok(json!({"customer_usage": {
            "from_datetime": render::iso(p.from),
            "to_datetime": render::iso(p.to - 1000),
            "issuing_date": period::iso_date(p.to),
            "lago_invoice_id": null,
            "currency": currency,
            "amount_cents": total,
            "taxes_amount_cents": 0,
            "total_amount_cents": total,
            "charges_usage": lines,
        }}))
    }
}

/// The subscription a lookup by external id means: the active one, else the newest.
pub fn pick_sub(subs: Vec<SubRow>, status: Option<&str>) -> Option<SubRow> {
    if let Some(st) = status {
        return subs.into_iter().find(|s| s.status == st);
    }
    let active = subs.iter().position(|s| s.status == "active");
    match active {
        Some(i) => subs.into_iter().nth(i),
        None => subs.into_iter().next(),
    }
}

fn unique_as(field: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Sql(ref s) if pressoir_core::db::is_unique_violation(s) => {
            Error::Api(ApiError::field(field, "value_already_exist"))
        }
        e => e,
    }
}

/// Validates `plans` seeds: code, interval and currency.
pub fn check_seed(code: &str, currency: &str) -> bool {
    valid_code(code) && valid_currency(currency)
}

/// The plan a subscription points at, deleted or not (for the invoice module).
pub async fn plan_by_id_pub(app: &App, c: &mut Conn, id: &str) -> Result<Plan, Error> {
    app.plan_by_id(c, id).await
}

/// Whether [`App::bill`] would change anything for this subscription at `now`.
pub fn is_due(s: &SubRow, plan: &Plan, now: i64) -> bool {
    match s.status.as_str() {
        "pending" => s.previous_id.is_none() && s.subscription_at <= now,
        "active" => {
            if s.ending_at.is_some_and(|e| e <= now) {
                return true;
            }
            let bt = BillingTime::parse(&s.billing_time).unwrap_or(BillingTime::Calendar);
            let started = s.started_at.unwrap_or(s.subscription_at);
            let cursor = s.billed_until.unwrap_or(started);
            period::containing(plan.interval, bt, started, cursor).to <= now
        }
        _ => false,
    }
}
