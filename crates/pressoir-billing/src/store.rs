//! Storage: the only module that knows SQL. Tables are this service's own (see
//! `migrations/`); JSON documents (customer fields, metrics, plans with their charges,
//! invoices) are stored as text beside the indexed columns that queries need.
//!
//! On SQLite, write transactions are serialized in process by a gate, so that concurrent
//! writers queue instead of failing with `SQLITE_BUSY` when a read transaction upgrades.

use crate::Error;
use crate::aggregate::{Agg, hour_of};
use pressoir_core::db::{Backend, Db};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub type Conn = AnyConnection;

const BUCKET_SHARDS: i64 = 16;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct Store {
    pub db: Db,
    gate: Option<Arc<Mutex<()>>>,
}

/// A write transaction (holding the SQLite gate when there is one).
pub struct WriteTx {
    pub tx: sqlx::Transaction<'static, sqlx::Any>,
    _gate: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// `page` and `per_page` as Lago reads them (per_page defaults to 100).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: i64,
    pub per_page: i64,
}

impl Page {
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }
}

#[derive(Debug, Clone)]
pub struct CustomerRow {
    pub lago_id: String,
    pub sequential_id: i64,
    pub external_id: String,
    pub data: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubRow {
    pub lago_id: String,
    pub external_id: String,
    pub customer_id: String,
    pub plan_id: String,
    pub status: String,
    pub billing_time: String,
    pub name: Option<String>,
    pub subscription_at: i64,
    pub started_at: Option<i64>,
    pub ending_at: Option<i64>,
    pub terminated_at: Option<i64>,
    pub canceled_at: Option<i64>,
    pub previous_id: Option<String>,
    pub billed_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub lago_id: String,
    pub transaction_id: String,
    pub external_subscription_id: String,
    pub code: String,
    pub timestamp: i64,
    pub properties: String,
    pub value: Option<i64>,
    pub value_text: Option<String>,
    pub precise_total_amount_cents: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct InvoiceRow {
    pub lago_id: String,
    pub sequential_id: i64,
    pub customer_id: String,
    pub subscription_id: Option<String>,
    pub period_key: Option<String>,
    pub status: String,
    pub payment_status: String,
    pub issuing_date: String,
    pub total_amount_cents: i64,
    pub currency: String,
    pub data: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub lago_id: String,
    pub webhook_url: String,
    pub signature_algo: String,
    pub name: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub lago_id: String,
    pub endpoint_id: String,
    pub webhook_type: String,
    pub payload: String,
    pub attempts: i64,
}

#[derive(Debug, Clone)]
pub struct Org {
    pub lago_id: String,
    pub hmac_key: String,
    pub rsa_private_pem: String,
}

fn json_map(s: &str) -> Map<String, Value> {
    match serde_json::from_str(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn text(v: &Map<String, Value>) -> String {
    Value::Object(v.clone()).to_string()
}

impl Store {
    pub async fn open(url: &str, schema: &str, max_connections: u32) -> Result<Store, Error> {
        let db = Db::connect(url, schema, max_connections).await?;
        db.migrate(&SQLITE, &POSTGRES).await?;
        let gate = (db.backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Store { db, gate })
    }

    pub fn backend(&self) -> Backend {
        self.db.backend
    }

    pub async fn begin(&self) -> Result<WriteTx, Error> {
        let guard = match &self.gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        };
        let tx = self.db.pool.begin().await?;
        Ok(WriteTx { tx, _gate: guard })
    }

    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Error> {
        Ok(self.db.pool.acquire().await?)
    }
}

// ---- organization ----

pub async fn org(c: &mut Conn) -> Result<Option<Org>, Error> {
    let r = sqlx::query("SELECT lago_id, hmac_key, rsa_private_pem FROM organization WHERE id = 1")
        .fetch_optional(&mut *c)
        .await?;
    Ok(r.map(|r| Org {
        lago_id: r.get(0),
        hmac_key: r.get(1),
        rsa_private_pem: r.get(2),
    }))
}

pub async fn insert_org(c: &mut Conn, o: &Org, now: i64) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO organization (id, lago_id, hmac_key, rsa_private_pem, created_at) \
         VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&o.lago_id)
    .bind(&o.hmac_key)
    .bind(&o.rsa_private_pem)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

// ---- customers ----

const CUSTOMER_COLS: &str =
    "lago_id, sequential_id, external_id, data, created_at, updated_at, deleted_at";

fn customer_row(r: &AnyRow) -> CustomerRow {
    CustomerRow {
        lago_id: r.get(0),
        sequential_id: r.get(1),
        external_id: r.get(2),
        data: json_map(&r.get::<String, _>(3)),
        created_at: r.get(4),
        updated_at: r.get(5),
        deleted_at: r.get(6),
    }
}

pub async fn customer_by_external(c: &mut Conn, ext: &str) -> Result<Option<CustomerRow>, Error> {
    let q = format!(
        "SELECT {CUSTOMER_COLS} FROM customers WHERE external_id = $1 AND deleted_at IS NULL"
    );
    Ok(sqlx::query(&q)
        .bind(ext)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| customer_row(&r)))
}

pub async fn customer_by_id(c: &mut Conn, id: &str) -> Result<Option<CustomerRow>, Error> {
    let q = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE lago_id = $1");
    Ok(sqlx::query(&q)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| customer_row(&r)))
}

pub async fn next_customer_seq(c: &mut Conn) -> Result<i64, Error> {
    let n: i64 =
        sqlx::query("SELECT CAST(COALESCE(MAX(sequential_id), 0) AS BIGINT) FROM customers")
            .fetch_one(&mut *c)
            .await?
            .get(0);
    Ok(n + 1)
}

pub async fn save_customer(c: &mut Conn, row: &CustomerRow, insert: bool) -> Result<(), Error> {
    if insert {
        sqlx::query(
            "INSERT INTO customers (lago_id, sequential_id, external_id, data, created_at, updated_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.lago_id)
        .bind(row.sequential_id)
        .bind(&row.external_id)
        .bind(text(&row.data))
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.deleted_at)
        .execute(&mut *c)
        .await?;
    } else {
        sqlx::query(
            "UPDATE customers SET data = $2, updated_at = $3, deleted_at = $4 WHERE lago_id = $1",
        )
        .bind(&row.lago_id)
        .bind(text(&row.data))
        .bind(row.updated_at)
        .bind(row.deleted_at)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

pub async fn list_customers(
    c: &mut Conn,
    external_id: Option<&str>,
    page: Page,
) -> Result<(Vec<CustomerRow>, i64), Error> {
    let filter = if external_id.is_some() {
        " AND external_id = $1"
    } else {
        " AND $1 = $1"
    };
    let ext = external_id.unwrap_or("");
    let total: i64 = sqlx::query(&format!(
        "SELECT COUNT(*) FROM customers WHERE deleted_at IS NULL{filter}"
    ))
    .bind(ext)
    .fetch_one(&mut *c)
    .await?
    .get(0);
    let q = format!(
        "SELECT {CUSTOMER_COLS} FROM customers WHERE deleted_at IS NULL{filter} \
         ORDER BY created_at DESC, sequential_id DESC LIMIT $2 OFFSET $3"
    );
    let rows = sqlx::query(&q)
        .bind(ext)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *c)
        .await?;
    Ok((rows.iter().map(customer_row).collect(), total))
}

// ---- documents (billable metrics and plans) ----

/// The two tables that store a document keyed by `code`.
#[derive(Debug, Clone, Copy)]
pub enum Doc {
    Metric,
    Plan,
}

impl Doc {
    fn table(self) -> &'static str {
        match self {
            Doc::Metric => "billable_metrics",
            Doc::Plan => "plans",
        }
    }
}

pub async fn doc_by_code(c: &mut Conn, d: Doc, code: &str) -> Result<Option<String>, Error> {
    let q = format!(
        "SELECT data FROM {} WHERE code = $1 AND deleted_at IS NULL",
        d.table()
    );
    Ok(sqlx::query(&q)
        .bind(code)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| r.get(0)))
}

/// By id, deleted or not (subscriptions and invoices keep pointing at what they used).
pub async fn doc_by_id(c: &mut Conn, d: Doc, id: &str) -> Result<Option<String>, Error> {
    let q = format!("SELECT data FROM {} WHERE lago_id = $1", d.table());
    Ok(sqlx::query(&q)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| r.get(0)))
}

pub async fn all_docs(c: &mut Conn, d: Doc) -> Result<Vec<String>, Error> {
    let q = format!(
        "SELECT data FROM {} WHERE deleted_at IS NULL ORDER BY created_at",
        d.table()
    );
    Ok(sqlx::query(&q)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub async fn list_docs(c: &mut Conn, d: Doc, page: Page) -> Result<(Vec<String>, i64), Error> {
    let total: i64 = sqlx::query(&format!(
        "SELECT COUNT(*) FROM {} WHERE deleted_at IS NULL",
        d.table()
    ))
    .fetch_one(&mut *c)
    .await?
    .get(0);
    let q = format!(
        "SELECT data FROM {} WHERE deleted_at IS NULL ORDER BY created_at DESC, code LIMIT $1 OFFSET $2",
        d.table()
    );
    let rows = sqlx::query(&q)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *c)
        .await?;
    Ok((rows.iter().map(|r| r.get(0)).collect(), total))
}

pub async fn insert_doc(
    c: &mut Conn,
    d: Doc,
    id: &str,
    code: &str,
    data: &str,
    now: i64,
) -> Result<(), Error> {
    let q = format!(
        "INSERT INTO {} (lago_id, code, data, created_at, deleted_at) VALUES ($1, $2, $3, $4, NULL)",
        d.table()
    );
    sqlx::query(&q)
        .bind(id)
        .bind(code)
        .bind(data)
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn update_doc(
    c: &mut Conn,
    d: Doc,
    id: &str,
    code: &str,
    data: &str,
) -> Result<(), Error> {
    let q = format!(
        "UPDATE {} SET code = $2, data = $3 WHERE lago_id = $1",
        d.table()
    );
    sqlx::query(&q)
        .bind(id)
        .bind(code)
        .bind(data)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn delete_doc(c: &mut Conn, d: Doc, id: &str, now: i64) -> Result<(), Error> {
    let q = format!(
        "UPDATE {} SET deleted_at = $2 WHERE lago_id = $1",
        d.table()
    );
    sqlx::query(&q).bind(id).bind(now).execute(&mut *c).await?;
    Ok(())
}

// ---- subscriptions ----

const SUB_COLS: &str = "lago_id, external_id, customer_id, plan_id, status, billing_time, name, \
    subscription_at, started_at, ending_at, terminated_at, canceled_at, previous_id, billed_until, \
    created_at, updated_at";

fn sub_row(r: &AnyRow) -> SubRow {
    SubRow {
        lago_id: r.get(0),
        external_id: r.get(1),
        customer_id: r.get(2),
        plan_id: r.get(3),
        status: r.get(4),
        billing_time: r.get(5),
        name: r.get(6),
        subscription_at: r.get(7),
        started_at: r.get(8),
        ending_at: r.get(9),
        terminated_at: r.get(10),
        canceled_at: r.get(11),
        previous_id: r.get(12),
        billed_until: r.get(13),
        created_at: r.get(14),
        updated_at: r.get(15),
    }
}

pub async fn save_sub(c: &mut Conn, s: &SubRow) -> Result<(), Error> {
    sqlx::query(&format!(
        "INSERT INTO subscriptions ({SUB_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) \
         ON CONFLICT (lago_id) DO UPDATE SET plan_id = excluded.plan_id, status = excluded.status, \
         billing_time = excluded.billing_time, name = excluded.name, subscription_at = excluded.subscription_at, \
         started_at = excluded.started_at, ending_at = excluded.ending_at, terminated_at = excluded.terminated_at, \
         canceled_at = excluded.canceled_at, previous_id = excluded.previous_id, \
         billed_until = excluded.billed_until, updated_at = excluded.updated_at"
    ))
    .bind(&s.lago_id)
    .bind(&s.external_id)
    .bind(&s.customer_id)
    .bind(&s.plan_id)
    .bind(&s.status)
    .bind(&s.billing_time)
    .bind(&s.name)
    .bind(s.subscription_at)
    .bind(s.started_at)
    .bind(s.ending_at)
    .bind(s.terminated_at)
    .bind(s.canceled_at)
    .bind(&s.previous_id)
    .bind(s.billed_until)
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Every subscription row with this external id, newest first.
pub async fn subs_by_external(c: &mut Conn, ext: &str) -> Result<Vec<SubRow>, Error> {
    let q = format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE external_id = $1 ORDER BY created_at DESC, lago_id"
    );
    Ok(sqlx::query(&q)
        .bind(ext)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(sub_row)
        .collect())
}

pub async fn sub_by_id(c: &mut Conn, id: &str) -> Result<Option<SubRow>, Error> {
    let q = format!("SELECT {SUB_COLS} FROM subscriptions WHERE lago_id = $1");
    Ok(sqlx::query(&q)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| sub_row(&r)))
}

/// [`sub_by_id`], locking the row until the transaction ends on PostgreSQL (SQLite's writers
/// are already serialized), so two billers never bill one subscription at once.
pub async fn sub_for_update(
    c: &mut Conn,
    backend: Backend,
    id: &str,
) -> Result<Option<SubRow>, Error> {
    let lock = if backend == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let q = format!("SELECT {SUB_COLS} FROM subscriptions WHERE lago_id = $1{lock}");
    Ok(sqlx::query(&q)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| sub_row(&r)))
}

pub async fn subs_with_status(c: &mut Conn, statuses: &[&str]) -> Result<Vec<SubRow>, Error> {
    let list = statuses
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    let q = format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE status IN ({list}) ORDER BY created_at"
    );
    Ok(sqlx::query(&q)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(sub_row)
        .collect())
}

pub async fn subs_of_customer(c: &mut Conn, customer_id: &str) -> Result<Vec<SubRow>, Error> {
    let q = format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE customer_id = $1 ORDER BY created_at DESC"
    );
    Ok(sqlx::query(&q)
        .bind(customer_id)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(sub_row)
        .collect())
}

pub async fn subs_of_plan(c: &mut Conn, plan_id: &str) -> Result<Vec<SubRow>, Error> {
    let q =
        format!("SELECT {SUB_COLS} FROM subscriptions WHERE plan_id = $1 ORDER BY created_at DESC");
    Ok(sqlx::query(&q)
        .bind(plan_id)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(sub_row)
        .collect())
}

/// Lists subscriptions by optional customer, plan and statuses (literal, validated by caller).
pub async fn list_subs(
    c: &mut Conn,
    customer_id: Option<&str>,
    plan_id: Option<&str>,
    statuses: &[String],
    page: Page,
) -> Result<(Vec<SubRow>, i64), Error> {
    let mut cond = String::from("($1 = '' OR customer_id = $1) AND ($2 = '' OR plan_id = $2)");
    if !statuses.is_empty() {
        let list = statuses
            .iter()
            .filter(|s| s.chars().all(|c| c.is_ascii_lowercase()))
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        cond.push_str(&format!(" AND status IN ({list})"));
    }
    let total: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM subscriptions WHERE {cond}"))
        .bind(customer_id.unwrap_or(""))
        .bind(plan_id.unwrap_or(""))
        .fetch_one(&mut *c)
        .await?
        .get(0);
    let q = format!(
        "SELECT {SUB_COLS} FROM subscriptions WHERE {cond} ORDER BY created_at DESC, lago_id LIMIT $3 OFFSET $4"
    );
    let rows = sqlx::query(&q)
        .bind(customer_id.unwrap_or(""))
        .bind(plan_id.unwrap_or(""))
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *c)
        .await?;
    Ok((rows.iter().map(sub_row).collect(), total))
}

// ---- events ----

const EVENT_COLS: &str = "lago_id, transaction_id, external_subscription_id, code, timestamp, properties, \
    value, value_text, precise_total_amount_cents, created_at";

fn event_row(r: &AnyRow) -> EventRow {
    EventRow {
        lago_id: r.get(0),
        transaction_id: r.get(1),
        external_subscription_id: r.get(2),
        code: r.get(3),
        timestamp: r.get(4),
        properties: r.get(5),
        value: r.get(6),
        value_text: r.get(7),
        precise_total_amount_cents: r.get(8),
        created_at: r.get(9),
    }
}

/// `($1,...,$cols),($cols+1,...)`: the placeholders of a multi-row `VALUES` list.
fn values_rows(rows: usize, cols: usize) -> String {
    let row = |r: usize| {
        let marks: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
        format!("({})", marks.join(","))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(",")
}

/// Inserts events and folds them into their hourly buckets. Returns the indexes of the events
/// whose (external_subscription_id, transaction_id) already existed; when there are any,
/// nothing must be committed (the caller rolls back).
pub async fn insert_events(c: &mut Conn, events: &[EventRow]) -> Result<Vec<usize>, Error> {
    insert_event_refs(c, &events.iter().collect::<Vec<_>>()).await
}

/// [`insert_events`] over borrowed rows (the group writer joins several requests' rows).
pub async fn insert_event_refs(c: &mut Conn, events: &[&EventRow]) -> Result<Vec<usize>, Error> {
    let mut inserted: u64 = 0;
    for chunk in events.chunks(100) {
        let mut q = format!("INSERT INTO events ({EVENT_COLS}) VALUES ");
        q.push_str(&values_rows(chunk.len(), 10));
        q.push_str(" ON CONFLICT (external_subscription_id, transaction_id) DO NOTHING");
        let mut query = sqlx::query(&q);
        for e in chunk {
            query = query
                .bind(&e.lago_id)
                .bind(&e.transaction_id)
                .bind(&e.external_subscription_id)
                .bind(&e.code)
                .bind(e.timestamp)
                .bind(&e.properties)
                .bind(e.value)
                .bind(&e.value_text)
                .bind(&e.precise_total_amount_cents)
                .bind(e.created_at);
        }
        inserted += query.execute(&mut *c).await?.rows_affected();
    }
    if inserted != events.len() as u64 {
        // Some did not go in. Ours are the rows now stored under our lago_ids; every other
        // event of the batch duplicates a stored event or an earlier one of the batch.
        let mut ours = std::collections::HashSet::new();
        let mut by_sub: BTreeMap<&str, Vec<&EventRow>> = BTreeMap::new();
        for e in events {
            by_sub
                .entry(e.external_subscription_id.as_str())
                .or_default()
                .push(*e);
        }
        for (sub, evs) in by_sub {
            for chunk in evs.chunks(100) {
                let list = (0..chunk.len())
                    .map(|i| format!("${}", i + 2))
                    .collect::<Vec<_>>()
                    .join(",");
                let q = format!(
                    "SELECT lago_id FROM events WHERE external_subscription_id = $1 AND transaction_id IN ({list})"
                );
                let mut query = sqlx::query(&q).bind(sub);
                for e in chunk {
                    query = query.bind(&e.transaction_id);
                }
                for r in query.fetch_all(&mut *c).await? {
                    ours.insert(r.get::<String, _>(0));
                }
            }
        }
        let dups = events
            .iter()
            .enumerate()
            .filter(|(_, e)| !ours.contains(&e.lago_id))
            .map(|(i, _)| i)
            .collect();
        return Ok(dups);
    }
    let mut buckets: BTreeMap<(&str, &str, i64), Agg> = BTreeMap::new();
    for e in events {
        let k = (
            e.external_subscription_id.as_str(),
            e.code.as_str(),
            hour_of(e.timestamp),
        );
        let a = buckets.entry(k).or_default();
        *a = a.merge(Agg::of_event(e.timestamp, e.value));
    }
    let keys: Vec<_> = buckets.into_iter().collect();
    // Concurrent writers to one subscription spread over shards of the same hour, so they do
    // not queue on one row lock (PostgreSQL); readers sum the shards.
    let shard = rand::random::<u8>() as i64 % BUCKET_SHARDS;
    for chunk in keys.chunks(100) {
        let mut q = String::from(
            "INSERT INTO usage_buckets (external_subscription_id, code, hour, shard, events_count, value_count, \
             value_sum, value_max, latest_ts, latest_value) VALUES ",
        );
        q.push_str(&values_rows(chunk.len(), 10));
        q.push_str(
            " ON CONFLICT (external_subscription_id, code, hour, shard) DO UPDATE SET \
             events_count = usage_buckets.events_count + excluded.events_count, \
             value_count = usage_buckets.value_count + excluded.value_count, \
             value_sum = usage_buckets.value_sum + excluded.value_sum, \
             value_max = CASE WHEN excluded.value_max IS NULL THEN usage_buckets.value_max \
                 WHEN usage_buckets.value_max IS NULL OR excluded.value_max > usage_buckets.value_max \
                 THEN excluded.value_max ELSE usage_buckets.value_max END, \
             latest_value = CASE WHEN excluded.latest_ts IS NOT NULL AND (usage_buckets.latest_ts IS NULL \
                 OR excluded.latest_ts >= usage_buckets.latest_ts) THEN excluded.latest_value \
                 ELSE usage_buckets.latest_value END, \
             latest_ts = CASE WHEN excluded.latest_ts IS NOT NULL AND (usage_buckets.latest_ts IS NULL \
                 OR excluded.latest_ts >= usage_buckets.latest_ts) THEN excluded.latest_ts \
                 ELSE usage_buckets.latest_ts END",
        );
        let mut query = sqlx::query(&q);
        for ((sub, code, hour), a) in chunk {
            query = query
                .bind(*sub)
                .bind(*code)
                .bind(*hour)
                .bind(shard)
                .bind(a.events_count)
                .bind(a.value_count)
                .bind(a.value_sum)
                .bind(a.value_max)
                .bind(a.latest.map(|l| l.0))
                .bind(a.latest.map(|l| l.1));
        }
        query.execute(&mut *c).await?;
    }
    Ok(vec![])
}

pub async fn event_by_transaction(c: &mut Conn, tx_id: &str) -> Result<Option<EventRow>, Error> {
    let q =
        format!("SELECT {EVENT_COLS} FROM events WHERE transaction_id = $1 ORDER BY id LIMIT 1");
    Ok(sqlx::query(&q)
        .bind(tx_id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| event_row(&r)))
}

pub async fn list_events(
    c: &mut Conn,
    code: Option<&str>,
    ext_sub: Option<&str>,
    from: Option<i64>,
    to: Option<i64>,
    page: Page,
) -> Result<(Vec<EventRow>, i64), Error> {
    let cond = "($1 = '' OR code = $1) AND ($2 = '' OR external_subscription_id = $2) \
                AND timestamp >= $3 AND timestamp <= $4";
    let bind = |q: &str| q.to_string();
    let (f, t) = (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX));
    let total: i64 = sqlx::query(&bind(&format!("SELECT COUNT(*) FROM events WHERE {cond}")))
        .bind(code.unwrap_or(""))
        .bind(ext_sub.unwrap_or(""))
        .bind(f)
        .bind(t)
        .fetch_one(&mut *c)
        .await?
        .get(0);
    let q = format!(
        "SELECT {EVENT_COLS} FROM events WHERE {cond} ORDER BY timestamp DESC, id DESC LIMIT $5 OFFSET $6"
    );
    let rows = sqlx::query(&q)
        .bind(code.unwrap_or(""))
        .bind(ext_sub.unwrap_or(""))
        .bind(f)
        .bind(t)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *c)
        .await?;
    Ok((rows.iter().map(event_row).collect(), total))
}

async fn agg_query(
    c: &mut Conn,
    sums: &str,
    latest: &str,
    key: (&str, &str, i64, i64),
) -> Result<Agg, Error> {
    let r = sqlx::query(sums)
        .bind(key.0)
        .bind(key.1)
        .bind(key.2)
        .bind(key.3)
        .fetch_one(&mut *c)
        .await?;
    let mut a = Agg {
        events_count: r.get(0),
        value_count: r.get(1),
        value_sum: r.get(2),
        value_max: r.get(3),
        latest: None,
    };
    if a.value_count > 0 {
        let r = sqlx::query(latest)
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(key.3)
            .fetch_optional(&mut *c)
            .await?;
        a.latest = r.map(|r| (r.get(0), r.get(1)));
    }
    Ok(a)
}

const RAW_SUMS: &str = "SELECT COUNT(*), COUNT(value), CAST(COALESCE(SUM(value), 0) AS BIGINT), MAX(value) \
    FROM events WHERE external_subscription_id = $1 AND code = $2 AND timestamp >= $3 AND timestamp < $4";
const RAW_LATEST: &str = "SELECT timestamp, value FROM events WHERE external_subscription_id = $1 \
    AND code = $2 AND timestamp >= $3 AND timestamp < $4 AND value IS NOT NULL \
    ORDER BY timestamp DESC, id DESC LIMIT 1";
const BUCKET_SUMS: &str = "SELECT CAST(COALESCE(SUM(events_count), 0) AS BIGINT), \
    CAST(COALESCE(SUM(value_count), 0) AS BIGINT), CAST(COALESCE(SUM(value_sum), 0) AS BIGINT), \
    MAX(value_max) FROM usage_buckets WHERE external_subscription_id = $1 AND code = $2 \
    AND hour >= $3 AND hour < $4";
const BUCKET_LATEST: &str = "SELECT latest_ts, latest_value FROM usage_buckets \
    WHERE external_subscription_id = $1 AND code = $2 AND hour >= $3 AND hour < $4 \
    AND latest_ts IS NOT NULL ORDER BY latest_ts DESC LIMIT 1";

/// The aggregate of events in `[from, to)` straight from the events table.
pub async fn agg_raw(
    c: &mut Conn,
    sub: &str,
    code: &str,
    from: i64,
    to: i64,
) -> Result<Agg, Error> {
    if to <= from {
        return Ok(Agg::default());
    }
    agg_query(c, RAW_SUMS, RAW_LATEST, (sub, code, from, to)).await
}

/// The aggregate of events in `[from, to)`: whole hours from the running hourly buckets, the
/// partial hours at either edge from the events themselves.
pub async fn agg(c: &mut Conn, sub: &str, code: &str, from: i64, to: i64) -> Result<Agg, Error> {
    // Open ends (recurring metrics) are clamped to where hour arithmetic cannot overflow.
    let (from, to) = (from.max(0), to.min(i64::MAX / 4));
    if to <= from {
        return Ok(Agg::default());
    }
    let h_from = hour_of(from + crate::aggregate::HOUR_MS - 1);
    let h_to = hour_of(to);
    if h_from >= h_to {
        return agg_raw(c, sub, code, from, to).await;
    }
    let left = agg_raw(c, sub, code, from, h_from).await?;
    let mid = agg_query(c, BUCKET_SUMS, BUCKET_LATEST, (sub, code, h_from, h_to)).await?;
    let right = agg_raw(c, sub, code, h_to, to).await?;
    Ok(left.merge(mid).merge(right))
}

/// Events in `[from, to)` in time order: (timestamp, value, value_text, properties).
pub async fn raw_values(
    c: &mut Conn,
    sub: &str,
    code: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Option<i64>, Option<String>, String)>, Error> {
    let rows = sqlx::query(
        "SELECT timestamp, value, value_text, properties FROM events WHERE external_subscription_id = $1 \
         AND code = $2 AND timestamp >= $3 AND timestamp < $4 ORDER BY timestamp, id",
    )
    .bind(sub)
    .bind(code)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *c)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

// ---- invoices ----

const INVOICE_COLS: &str = "lago_id, sequential_id, customer_id, subscription_id, period_key, status, \
    payment_status, issuing_date, total_amount_cents, currency, data, created_at, updated_at";

fn invoice_row(r: &AnyRow) -> InvoiceRow {
    InvoiceRow {
        lago_id: r.get(0),
        sequential_id: r.get(1),
        customer_id: r.get(2),
        subscription_id: r.get(3),
        period_key: r.get(4),
        status: r.get(5),
        payment_status: r.get(6),
        issuing_date: r.get(7),
        total_amount_cents: r.get(8),
        currency: r.get(9),
        data: json_map(&r.get::<String, _>(10)),
        created_at: r.get(11),
        updated_at: r.get(12),
    }
}

pub async fn next_invoice_seq(c: &mut Conn) -> Result<i64, Error> {
    let n: i64 =
        sqlx::query("SELECT CAST(COALESCE(MAX(sequential_id), 0) AS BIGINT) FROM invoices")
            .fetch_one(&mut *c)
            .await?
            .get(0);
    Ok(n + 1)
}

/// Inserts an invoice; false if one already exists for that subscription and period.
pub async fn insert_invoice(c: &mut Conn, i: &InvoiceRow) -> Result<bool, Error> {
    let r = sqlx::query(&format!(
        "INSERT INTO invoices ({INVOICE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) \
         ON CONFLICT (subscription_id, period_key) DO NOTHING"
    ))
    .bind(&i.lago_id)
    .bind(i.sequential_id)
    .bind(&i.customer_id)
    .bind(&i.subscription_id)
    .bind(&i.period_key)
    .bind(&i.status)
    .bind(&i.payment_status)
    .bind(&i.issuing_date)
    .bind(i.total_amount_cents)
    .bind(&i.currency)
    .bind(text(&i.data))
    .bind(i.created_at)
    .bind(i.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn update_invoice(c: &mut Conn, i: &InvoiceRow) -> Result<(), Error> {
    sqlx::query(
        "UPDATE invoices SET status = $2, payment_status = $3, data = $4, updated_at = $5 WHERE lago_id = $1",
    )
    .bind(&i.lago_id)
    .bind(&i.status)
    .bind(&i.payment_status)
    .bind(text(&i.data))
    .bind(i.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn invoice_by_id(c: &mut Conn, id: &str) -> Result<Option<InvoiceRow>, Error> {
    let q = format!("SELECT {INVOICE_COLS} FROM invoices WHERE lago_id = $1");
    Ok(sqlx::query(&q)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| invoice_row(&r)))
}

pub async fn list_invoices(
    c: &mut Conn,
    customer_id: Option<&str>,
    status: Option<&str>,
    payment_status: Option<&str>,
    page: Page,
) -> Result<(Vec<InvoiceRow>, i64), Error> {
    let cond = "($1 = '' OR customer_id = $1) AND ($2 = '' OR status = $2) AND ($3 = '' OR payment_status = $3)";
    let args = [
        customer_id.unwrap_or(""),
        status.unwrap_or(""),
        payment_status.unwrap_or(""),
    ];
    let total: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM invoices WHERE {cond}"))
        .bind(args[0])
        .bind(args[1])
        .bind(args[2])
        .fetch_one(&mut *c)
        .await?
        .get(0);
    let q = format!(
        "SELECT {INVOICE_COLS} FROM invoices WHERE {cond} ORDER BY sequential_id DESC LIMIT $4 OFFSET $5"
    );
    let rows = sqlx::query(&q)
        .bind(args[0])
        .bind(args[1])
        .bind(args[2])
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *c)
        .await?;
    Ok((rows.iter().map(invoice_row).collect(), total))
}

// ---- webhooks ----

fn endpoint_row(r: &AnyRow) -> EndpointRow {
    let types: Option<String> = r.get(4);
    EndpointRow {
        lago_id: r.get(0),
        webhook_url: r.get(1),
        signature_algo: r.get(2),
        name: r.get(3),
        event_types: types.and_then(|t| serde_json::from_str(&t).ok()),
        created_at: r.get(5),
    }
}

const ENDPOINT_COLS: &str = "lago_id, webhook_url, signature_algo, name, event_types, created_at";

pub async fn endpoints(c: &mut Conn) -> Result<Vec<EndpointRow>, Error> {
    let q = format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints ORDER BY created_at, lago_id");
    Ok(sqlx::query(&q)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(endpoint_row)
        .collect())
}

pub async fn endpoint_by_id(c: &mut Conn, id: &str) -> Result<Option<EndpointRow>, Error> {
    let q = format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE lago_id = $1");
    Ok(sqlx::query(&q)
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| endpoint_row(&r)))
}

pub async fn save_endpoint(c: &mut Conn, e: &EndpointRow) -> Result<(), Error> {
    sqlx::query(&format!(
        "INSERT INTO webhook_endpoints ({ENDPOINT_COLS}) VALUES ($1,$2,$3,$4,$5,$6) \
         ON CONFLICT (lago_id) DO UPDATE SET webhook_url = excluded.webhook_url, \
         signature_algo = excluded.signature_algo, name = excluded.name, event_types = excluded.event_types"
    ))
    .bind(&e.lago_id)
    .bind(&e.webhook_url)
    .bind(&e.signature_algo)
    .bind(&e.name)
    .bind(e.event_types.as_ref().map(|t| serde_json::to_string(t).unwrap_or_default()))
    .bind(e.created_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn delete_endpoint(c: &mut Conn, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM webhook_endpoints WHERE lago_id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn enqueue_webhook(
    c: &mut Conn,
    id: &str,
    endpoint_id: &str,
    webhook_type: &str,
    payload: &str,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO webhooks (lago_id, endpoint_id, webhook_type, payload, status, attempts, next_attempt_at, \
         last_http_status, created_at, updated_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, NULL, $5, $5)",
    )
    .bind(id)
    .bind(endpoint_id)
    .bind(webhook_type)
    .bind(payload)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn due_webhooks(c: &mut Conn, now: i64, limit: i64) -> Result<Vec<WebhookRow>, Error> {
    let rows = sqlx::query(
        "SELECT lago_id, endpoint_id, webhook_type, payload, attempts FROM webhooks \
         WHERE status IN ('pending', 'retrying') AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at, created_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    Ok(rows
        .iter()
        .map(|r| WebhookRow {
            lago_id: r.get(0),
            endpoint_id: r.get(1),
            webhook_type: r.get(2),
            payload: r.get(3),
            attempts: r.get(4),
        })
        .collect())
}

pub async fn next_webhook_due(c: &mut Conn) -> Result<Option<i64>, Error> {
    let r = sqlx::query(
        "SELECT MIN(next_attempt_at) FROM webhooks WHERE status IN ('pending', 'retrying')",
    )
    .fetch_one(&mut *c)
    .await?;
    Ok(r.get(0))
}

pub async fn mark_webhook(
    c: &mut Conn,
    id: &str,
    status: &str,
    attempts: i64,
    next_attempt_at: i64,
    http_status: Option<i64>,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE webhooks SET status = $2, attempts = $3, next_attempt_at = $4, last_http_status = $5, \
         updated_at = $6 WHERE lago_id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(http_status)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn webhook_statuses(c: &mut Conn) -> Result<Vec<(String, String, i64)>, Error> {
    let rows =
        sqlx::query("SELECT webhook_type, status, attempts FROM webhooks ORDER BY created_at")
            .fetch_all(&mut *c)
            .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[cfg(test)]
mod values_tests {
    #[test]
    fn values_rows_number_every_placeholder() {
        assert_eq!(super::values_rows(2, 3), "($1,$2,$3),($4,$5,$6)");
    }
}
