//! The billing outbox's SQL (migration `0200_billing.sql`), portable between SQLite and
//! PostgreSQL. Rows are written inside the caller's transaction.

use crate::error::Result;
use crate::store::{Site, new_id};
use pressoir_core::clock::now_ms;
use pressoir_core::db::Db;
use serde_json::{Value, json};
use sqlx::{Any, FromRow, Transaction};

pub const CUSTOMER: &str = "customer";
pub const SUBSCRIPTION: &str = "subscription";
pub const TERMINATE: &str = "terminate";
pub const EVENT: &str = "event";

/// One pending (or done) Lago call.
#[derive(Debug, Clone, FromRow)]
pub struct Row {
    pub id: String,
    pub key: String,
    pub kind: String,
    pub payload: String,
    pub attempts: i64,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub done: i64,
    pub created: i64,
}

const COLS: &str = "id, key, kind, payload, attempts, next_at, last_error, done, created";

async fn insert(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    key: &str,
    kind: &str,
    payload: &Value,
) -> Result<bool> {
    let now = now_ms();
    let r = sqlx::query(
        "INSERT INTO billing_outbox (id, key, kind, payload, attempts, next_at, done, created) VALUES ($1, $2, $3, $4, 0, $5, 0, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(key)
    .bind(kind)
    .bind(payload.to_string())
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// The billing side of a site event, in the site change's transaction: created → the team's
/// customer and the site's subscription on its plan's billing code; archived → terminate.
pub async fn site_event(tx: &mut Transaction<'_, Any>, event: &str, site: &Site) -> Result<()> {
    match event {
        "site.created" => {
            insert(
                tx,
                &new_id(),
                &format!("team:{}", site.team),
                CUSTOMER,
                &json!({"external_id": site.team, "name": site.team}),
            )
            .await?;
            subscribe_tx(tx, site, &site.plan).await
        }
        "site.archived" => {
            insert(
                tx,
                &new_id(),
                &site.name,
                TERMINATE,
                &json!({"external_id": site.name}),
            )
            .await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Queues the site's subscription on `plan`'s billing code (a create, or a plan change on the
/// same external id).
async fn subscribe_tx(tx: &mut Transaction<'_, Any>, site: &Site, plan: &str) -> Result<()> {
    let code: Option<(String,)> = sqlx::query_as("SELECT billing_code FROM plans WHERE name = $1")
        .bind(plan)
        .fetch_optional(&mut **tx)
        .await?;
    let Some((code,)) = code.filter(|(c,)| !c.is_empty()) else {
        tracing::warn!(site = %site.name, plan, "plan has no billing code; site not billed");
        return Ok(());
    };
    let payload = json!({
        "external_customer_id": site.team, "plan_code": code, "external_id": site.name, "name": site.name,
    });
    insert(tx, &new_id(), &site.name, SUBSCRIPTION, &payload).await?;
    Ok(())
}

/// Changes a live site's plan and queues the subscription change, in one transaction.
/// Returns false when the site is not live (archived or missing).
pub async fn change_plan(db: &Db, site: &Site, plan: &str) -> Result<bool> {
    let mut tx = db.pool.begin().await?;
    let r = sqlx::query(
        "UPDATE sites SET plan = $1, modified = $2 WHERE id = $3 AND status <> 'Archived'",
    )
    .bind(plan)
    .bind(now_ms())
    .bind(&site.id)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE teams SET sites_version = sites_version + 1 WHERE name = $1")
        .bind(&site.team)
        .execute(&mut *tx)
        .await?;
    subscribe_tx(&mut tx, site, plan).await?;
    crate::webhooks::store::site_plan_changed(&mut tx, site, &site.plan, plan).await?;
    tx.commit().await?;
    Ok(true)
}

/// Queues one usage event; a transaction id already queued is left alone (returns false).
pub async fn queue_event(db: &Db, site: &str, event: &Value) -> Result<bool> {
    let id = event["transaction_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut tx = db.pool.begin().await?;
    let fresh = insert(&mut tx, &format!("event:{id}"), site, EVENT, event).await?;
    tx.commit().await?;
    Ok(fresh)
}

/// Active sites, for usage sampling.
pub async fn active_sites(db: &Db) -> Result<Vec<Site>> {
    Ok(sqlx::query_as::<Any, Site>(
        "SELECT id, name, subdomain, domain, team, plan, server, bench, status, apps, config, created, modified FROM sites WHERE status = 'Active' ORDER BY name",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// The oldest undone rows (due or not: the worker keeps each key's order).
pub async fn pending(db: &Db, limit: i64) -> Result<Vec<Row>> {
    Ok(sqlx::query_as::<Any, Row>(&format!(
        "SELECT {COLS} FROM billing_outbox WHERE done = 0 ORDER BY created, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn mark_done(db: &Db, id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE billing_outbox SET done = 1, sent_at = $1, last_error = NULL WHERE id = $2",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

pub async fn mark_retry(db: &Db, id: &str, next_at: i64, error: &str) -> Result<()> {
    sqlx::query("UPDATE billing_outbox SET attempts = attempts + 1, next_at = $1, last_error = $2 WHERE id = $3")
        .bind(next_at)
        .bind(error)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Every row, oldest first (for tests and the admin CLI).
pub async fn all(db: &Db) -> Result<Vec<Row>> {
    Ok(sqlx::query_as::<Any, Row>(&format!(
        "SELECT {COLS} FROM billing_outbox ORDER BY created, id"
    ))
    .fetch_all(&db.pool)
    .await?)
}
