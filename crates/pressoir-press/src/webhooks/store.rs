//! Webhooks' SQL: the configuration, the delivery outbox and the attempt log. Portable
//! between SQLite and PostgreSQL; the migrations are `0100_webhooks.sql`.

use super::WebhookConfig;
use crate::error::{Error, Result};
use crate::store::{Job, Server, Site, new_id};
use pressoir_core::clock::{now_ms, rfc3339_ms};
use pressoir_core::db::{Db, is_unique_violation};
use serde_json::{Value, json};
use sqlx::{Any, FromRow, Transaction};

/// A webhook's configuration. `team` is empty for an administrator-level webhook.
#[derive(Clone, FromRow)]
pub struct Webhook {
    pub name: String,
    pub team: String,
    pub url: String,
    pub headers: String,
    pub secret: Option<String>,
    pub signing_secret: String,
    pub enabled: i64,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    pub failing_since: Option<i64>,
    pub last_success: Option<i64>,
    pub created: i64,
    pub modified: i64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("team", &self.team)
            .field("url", &self.url)
            .finish()
    }
}

impl Webhook {
    pub fn header_map(&self) -> Vec<(String, String)> {
        serde_json::from_str::<serde_json::Map<String, Value>>(&self.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect()
    }

    /// Every secret value this webhook carries, for scrubbing logs and excerpts.
    pub fn secrets(&self) -> Vec<String> {
        let mut v = vec![self.signing_secret.clone()];
        v.extend(self.secret.clone());
        v.extend(self.header_map().into_iter().map(|(_, v)| v));
        v.retain(|s| s.len() >= 4);
        v
    }
}

const WEBHOOK_COLS: &str = "name, team, url, headers, secret, signing_secret, enabled, disabled_reason, consecutive_failures, failing_since, last_success, created, modified";

/// One attempt as the log keeps it (never a secret).
#[derive(Debug, Clone, FromRow)]
pub struct Attempt {
    pub id: String,
    pub webhook: String,
    pub delivery: String,
    pub event: String,
    pub event_id: String,
    pub attempt: i64,
    pub ok: i64,
    pub status_code: Option<i64>,
    pub response_excerpt: Option<String>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub created: i64,
}

/// A delivery's state, for `attempts` and `redeliver`.
#[derive(Debug, Clone, FromRow)]
pub struct Delivery {
    pub seq: i64,
    pub id: String,
    pub event_id: String,
    pub webhook: String,
    pub event: String,
    pub lane: String,
    pub status: String,
    pub attempts: i64,
    pub next_at: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created: i64,
    pub sent_at: Option<i64>,
}

const DELIVERY_COLS: &str = "seq, id, event_id, webhook, event, lane, status, attempts, next_at, last_status_code, last_error, created, sent_at";

/// A claimed delivery with what is needed to send it.
#[derive(Clone, FromRow)]
pub struct Claimed {
    pub seq: i64,
    pub id: String,
    pub event_id: String,
    pub webhook: String,
    pub event: String,
    pub payload: String,
    pub attempts: i64,
    pub url: String,
    pub headers: String,
    pub secret: Option<String>,
    pub signing_secret: String,
}

/// What one attempt gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seq: i64,
    pub delivery: String,
    pub webhook: String,
    pub event: String,
    pub event_id: String,
    pub attempt: i64,
    pub ok: bool,
    pub status_code: Option<i64>,
    pub excerpt: Option<String>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub at: i64,
}

// ---------- the outbox: called inside the transaction of the change ----------

/// Records `event` for every enabled webhook of `team` (and every administrator webhook)
/// subscribed to it, in the caller's transaction. `lane` orders deliveries: one webhook gets a
/// lane's events one at a time, in the order they were recorded (use [`site_lane`]).
pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    event: &str,
    team: &str,
    lane: &str,
    data: Value,
) -> Result<()> {
    let id = new_id();
    let now = now_ms();
    let payload =
        json!({"event": event, "id": id, "timestamp": rfc3339_ms(now), "data": data}).to_string();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, webhook, team, event, lane, payload, status, attempts, next_at, created, modified) \
         SELECT $1 || '.' || w.name, $1, w.name, $2, $3, $4, $5, 'Pending', 0, $6, $6, $6 \
         FROM webhooks w JOIN webhook_subscriptions s ON s.webhook = w.name \
         WHERE s.event = $3 AND w.enabled = 1 AND (w.team = $2 OR w.team = '')",
    )
    .bind(&id)
    .bind(team)
    .bind(event)
    .bind(lane)
    .bind(payload)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub fn site_lane(site: &str) -> String {
    format!("site:{site}")
}

pub fn server_lane(server: &str) -> String {
    format!("server:{server}")
}

/// A site event as Press's store records it (`site.created`, `site.status_changed` with the
/// old status, `site.archived`, ...): `data` is the site as the API shows it, with the new
/// status, plus `old_status`/`new_status` for a change. Events no webhook can subscribe to
/// are ignored.
pub async fn site_event(
    tx: &mut Transaction<'_, Any>,
    event: &str,
    site: &Site,
    old: Option<&str>,
    status: &str,
) -> Result<()> {
    if !super::is_event(event) {
        return Ok(());
    }
    let mut data = crate::api::site_json(site);
    data["status"] = json!(status);
    if let Some(old) = old {
        data["old_status"] = json!(old);
        data["new_status"] = json!(status);
    }
    enqueue(tx, event, &site.team, &site_lane(&site.name), data).await
}

/// `site.plan_changed`.
pub async fn site_plan_changed(
    tx: &mut Transaction<'_, Any>,
    site: &Site,
    old_plan: &str,
    new_plan: &str,
) -> Result<()> {
    if old_plan == new_plan {
        return Ok(());
    }
    let mut data = crate::api::site_json(site);
    data["plan"] = json!(new_plan);
    data["old_plan"] = json!(old_plan);
    data["new_plan"] = json!(new_plan);
    enqueue(
        tx,
        "site.plan_changed",
        &site.team,
        &site_lane(&site.name),
        data,
    )
    .await
}

/// `job.failed`, with the job as `site.job` summarises it and its error.
pub async fn job_failed(
    tx: &mut Transaction<'_, Any>,
    job: &Job,
    error: Option<&str>,
) -> Result<()> {
    let mut data = crate::api::job_summary(job);
    data["status"] = json!("Failure");
    data["error"] = json!(error);
    let lane = match &job.site_name {
        Some(s) => site_lane(s),
        None => server_lane(&job.server),
    };
    enqueue(tx, "job.failed", &job.team, &lane, data).await
}

/// `server.status_changed`.
pub async fn server_status_changed(
    tx: &mut Transaction<'_, Any>,
    server: &Server,
    old: &str,
    new: &str,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let mut data = crate::api::server_json(server, false);
    data["status"] = json!(new);
    data["old_status"] = json!(old);
    data["new_status"] = json!(new);
    enqueue(
        tx,
        "server.status_changed",
        &server.team,
        &server_lane(&server.name),
        data,
    )
    .await
}

/// `backup.completed` or `backup.failed` when a "Backup Site" job (or an archive that took a
/// backup first) ends; `data` is the backup as `press.api.site.backups` lists it.
pub async fn backup_job_finished(
    tx: &mut Transaction<'_, Any>,
    job: &Job,
    status: &str,
    result: Option<&Value>,
    error: Option<&str>,
) -> Result<()> {
    let ok = status == "Success";
    if !(ok || status == "Failure") {
        return Ok(());
    }
    let result = result.cloned().unwrap_or(Value::Null);
    let is_backup = job.job_type == "Backup Site"
        || (job.job_type == "Archive Site" && result.get("backup").is_some());
    if !is_backup {
        return Ok(());
    }
    let field = |k: &str| result.get(k).cloned().unwrap_or(Value::Null);
    let data = json!({
        "name": field("backup"),
        "backup_id": field("backup_id"),
        "site": job.site_name,
        "job": job.name,
        "job_type": job.job_type,
        "status": status,
        "creation": rfc3339_ms(job.created),
        "with_files": field("with_files"),
        "size": field("size"),
        "files": field("files"),
        "offsite": true,
        "error": error,
    });
    let lane = match &job.site_name {
        Some(s) => site_lane(s),
        None => server_lane(&job.server),
    };
    let event = if ok {
        "backup.completed"
    } else {
        "backup.failed"
    };
    enqueue(tx, event, &job.team, &lane, data).await
}

/// `backup.completed` or `backup.failed` for a site's backup (`data` as the API shows it).
pub async fn backup_finished(
    tx: &mut Transaction<'_, Any>,
    site: &Site,
    ok: bool,
    data: Value,
) -> Result<()> {
    let event = if ok {
        "backup.completed"
    } else {
        "backup.failed"
    };
    enqueue(tx, event, &site.team, &site_lane(&site.name), data).await
}

// ---------- configuration ----------

pub async fn count_for_team(db: &Db, team: &str) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhooks WHERE team = $1")
        .bind(team)
        .fetch_one(&db.pool)
        .await?;
    Ok(n)
}

/// Inserts a webhook and its subscriptions; 409 when the team already has this URL.
pub async fn insert(db: &Db, w: &Webhook, events: &[String]) -> Result<()> {
    let mut tx = db.pool.begin().await?;
    let dupe: Option<(String,)> =
        sqlx::query_as("SELECT name FROM webhooks WHERE team = $1 AND url = $2")
            .bind(&w.team)
            .bind(&w.url)
            .fetch_optional(&mut *tx)
            .await?;
    if dupe.is_some() {
        return Err(Error::duplicate(format!(
            "a webhook for {} already exists",
            w.url
        )));
    }
    let r = sqlx::query(&format!(
        "INSERT INTO webhooks ({WEBHOOK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(&w.name)
    .bind(&w.team)
    .bind(&w.url)
    .bind(&w.headers)
    .bind(w.secret.clone())
    .bind(&w.signing_secret)
    .bind(w.enabled)
    .bind(w.disabled_reason.clone())
    .bind(w.consecutive_failures)
    .bind(w.failing_since)
    .bind(w.last_success)
    .bind(w.created)
    .bind(w.modified)
    .execute(&mut *tx)
    .await;
    match r {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::duplicate(format!(
                "webhook {} already exists",
                w.name
            )));
        }
        Err(e) => return Err(e.into()),
    }
    set_events_tx(&mut tx, &w.name, events).await?;
    tx.commit().await?;
    Ok(())
}

async fn set_events_tx(tx: &mut Transaction<'_, Any>, name: &str, events: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM webhook_subscriptions WHERE webhook = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    for e in events {
        sqlx::query("INSERT INTO webhook_subscriptions (webhook, event) VALUES ($1, $2)")
            .bind(name)
            .bind(e)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Replaces a webhook's settings (and its events when given).
pub async fn update(db: &Db, w: &Webhook, events: Option<&[String]>) -> Result<()> {
    let mut tx = db.pool.begin().await?;
    if let Some((other,)) = sqlx::query_as::<Any, (String,)>(
        "SELECT name FROM webhooks WHERE team = $1 AND url = $2 AND name <> $3",
    )
    .bind(&w.team)
    .bind(&w.url)
    .bind(&w.name)
    .fetch_optional(&mut *tx)
    .await?
    {
        return Err(Error::duplicate(format!(
            "webhook {other} already sends to {}",
            w.url
        )));
    }
    sqlx::query(
        "UPDATE webhooks SET url = $1, headers = $2, secret = $3, enabled = $4, disabled_reason = $5, consecutive_failures = $6, failing_since = $7, modified = $8 WHERE name = $9",
    )
    .bind(&w.url)
    .bind(&w.headers)
    .bind(w.secret.clone())
    .bind(w.enabled)
    .bind(w.disabled_reason.clone())
    .bind(w.consecutive_failures)
    .bind(w.failing_since)
    .bind(now_ms())
    .bind(&w.name)
    .execute(&mut *tx)
    .await?;
    if let Some(ev) = events {
        set_events_tx(&mut tx, &w.name, ev).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a webhook with its pending deliveries and log.
pub async fn delete(db: &Db, name: &str) -> Result<()> {
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM webhook_subscriptions WHERE webhook = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_attempts WHERE webhook = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhooks WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn get(db: &Db, name: &str) -> Result<Option<Webhook>> {
    Ok(sqlx::query_as::<Any, Webhook>(&format!(
        "SELECT {WEBHOOK_COLS} FROM webhooks WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&db.pool)
    .await?)
}

/// A team's webhooks (`""`: the administrator-level ones), oldest first.
pub async fn list(db: &Db, team: &str) -> Result<Vec<Webhook>> {
    Ok(sqlx::query_as::<Any, Webhook>(&format!(
        "SELECT {WEBHOOK_COLS} FROM webhooks WHERE team = $1 ORDER BY created, name"
    ))
    .bind(team)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn events_of(db: &Db, name: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT event FROM webhook_subscriptions WHERE webhook = $1 ORDER BY event")
            .bind(name)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Counts of a webhook's deliveries by status: (pending, sent, failed).
pub async fn delivery_counts(db: &Db, name: &str) -> Result<(i64, i64, i64)> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM webhook_deliveries WHERE webhook = $1 GROUP BY status",
    )
    .bind(name)
    .fetch_all(&db.pool)
    .await?;
    let n = |s: &str| rows.iter().find(|r| r.0 == s).map(|r| r.1).unwrap_or(0);
    Ok((n("Pending"), n("Sent"), n("Failed")))
}

// ---------- the log ----------

/// A webhook's attempts, newest first.
pub async fn attempts(db: &Db, webhook: &str, start: i64, limit: i64) -> Result<Vec<Attempt>> {
    Ok(sqlx::query_as::<Any, Attempt>(
        "SELECT id, webhook, delivery, event, event_id, attempt, ok, status_code, response_excerpt, duration_ms, error, created \
         FROM webhook_attempts WHERE webhook = $1 ORDER BY created DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(webhook)
    .bind(limit)
    .bind(start)
    .fetch_all(&db.pool)
    .await?)
}

/// A webhook's deliveries, newest first, optionally of one status.
pub async fn deliveries(
    db: &Db,
    webhook: &str,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>> {
    let sql = match status {
        Some(_) => format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook = $1 AND status = $3 ORDER BY seq DESC LIMIT $2"
        ),
        None => format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook = $1 ORDER BY seq DESC LIMIT $2"
        ),
    };
    let q = sqlx::query_as::<Any, Delivery>(&sql)
        .bind(webhook)
        .bind(limit);
    let q = match status {
        Some(s) => q.bind(s),
        None => q,
    };
    Ok(q.fetch_all(&db.pool).await?)
}

pub async fn delivery(db: &Db, id: &str) -> Result<Option<Delivery>> {
    Ok(sqlx::query_as::<Any, Delivery>(&format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

/// Sends a delivery again from its first attempt (it keeps its place in its lane).
pub async fn redeliver(db: &Db, id: &str) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'Pending', attempts = 0, next_at = $1, modified = $1 WHERE id = $2 AND status <> 'Pending'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

// ---------- the worker's side ----------

/// Claims up to `limit` due deliveries until `lease_until`: only the head of each
/// (webhook, lane) (a head in flight is leased, so its lane waits), none of the `saturated`
/// webhooks, and only of enabled webhooks. One statement, so replicas never claim the same row.
pub async fn claim(
    db: &Db,
    now: i64,
    lease_until: i64,
    limit: i64,
    saturated: &[String],
) -> Result<Vec<Claimed>> {
    let skip = if saturated.is_empty() {
        String::new()
    } else {
        let marks: Vec<String> = (0..saturated.len())
            .map(|i| format!("${}", i + 4))
            .collect();
        format!("AND webhook NOT IN ({})", marks.join(", "))
    };
    let sql = format!(
        // The heads come from the (status, webhook, lane, seq) index alone and are then read
        // by primary key, so sent rows are never scanned (PostgreSQL otherwise joins them all).
        "UPDATE webhook_deliveries SET next_at = $1 \
         WHERE seq IN (\
            SELECT seq FROM webhook_deliveries WHERE seq IN (\
               SELECT MIN(seq) FROM webhook_deliveries WHERE status = 'Pending' \
               AND webhook IN (SELECT name FROM webhooks WHERE enabled = 1) {skip} GROUP BY webhook, lane\
            ) AND next_at <= $2 ORDER BY seq LIMIT $3\
         ) AND status = 'Pending' AND next_at <= $2 \
         RETURNING seq, id, event_id, webhook, event, payload, attempts"
    );
    let mut q = sqlx::query_as::<Any, (i64, String, String, String, String, String, i64)>(&sql)
        .bind(lease_until)
        .bind(now)
        .bind(limit);
    for s in saturated {
        q = q.bind(s);
    }
    let rows = q.fetch_all(&db.pool).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut hooks: std::collections::HashMap<String, Webhook> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (seq, id, event_id, webhook, event, payload, attempts) in rows {
        if !hooks.contains_key(&webhook)
            && let Some(w) = get(db, &webhook).await?
        {
            hooks.insert(webhook.clone(), w);
        }
        let Some(w) = hooks.get(&webhook) else {
            continue;
        };
        out.push(Claimed {
            seq,
            id,
            event_id,
            webhook,
            event,
            payload,
            attempts,
            url: w.url.clone(),
            headers: w.headers.clone(),
            secret: w.secret.clone(),
            signing_secret: w.signing_secret.clone(),
        });
    }
    out.sort_by_key(|c| c.seq);
    Ok(out)
}

/// Records a batch of attempts in one transaction: the log rows, each delivery's new state
/// (Sent; retry at its backoff; Failed after the last attempt) and each webhook's failure
/// streak, disabling the webhooks whose failure has lasted.
pub async fn record(
    db: &Db,
    cfg: &WebhookConfig,
    outcomes: &[Outcome],
    mut retry_at: impl FnMut(i64) -> i64,
) -> Result<Vec<String>> {
    let mut tx = db.pool.begin().await?;
    let now = now_ms();
    // Successes (the hot path) in one statement per status code; failures one by one.
    let mut sent: std::collections::BTreeMap<Option<i64>, Vec<i64>> = Default::default();
    for o in outcomes {
        if o.ok {
            sent.entry(o.status_code).or_default().push(o.seq);
            continue;
        }
        let (status, next_at) = if o.attempt >= i64::from(cfg.max_attempts) {
            ("Failed", now)
        } else {
            ("Pending", retry_at(o.attempt))
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_at = $3, last_status_code = $4, last_error = $5, modified = $6 WHERE seq = $7 AND status = 'Pending'",
        )
        .bind(status)
        .bind(o.attempt)
        .bind(next_at)
        .bind(o.status_code)
        .bind(o.error.clone())
        .bind(now)
        .bind(o.seq)
        .execute(&mut *tx)
        .await?;
    }
    for (code, seqs) in &sent {
        for chunk in seqs.chunks(500) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "UPDATE webhook_deliveries SET status = 'Sent', attempts = attempts + 1, next_at = $1, last_status_code = $2, last_error = NULL, modified = $1, sent_at = $1 WHERE status = 'Pending' AND seq IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(now).bind(*code);
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(&mut *tx).await?;
        }
    }
    for chunk in outcomes.chunks(50) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|r| {
                let c: Vec<String> = (1..=12).map(|k| format!("${}", r * 12 + k)).collect();
                format!("({})", c.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO webhook_attempts (id, webhook, delivery, event, event_id, attempt, ok, status_code, response_excerpt, duration_ms, error, created) VALUES {}",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for o in chunk {
            q = q
                .bind(new_id())
                .bind(&o.webhook)
                .bind(&o.delivery)
                .bind(&o.event)
                .bind(&o.event_id)
                .bind(o.attempt)
                .bind(o.ok as i64)
                .bind(o.status_code)
                .bind(o.excerpt.clone())
                .bind(o.duration_ms)
                .bind(o.error.clone())
                .bind(o.at);
        }
        q.execute(&mut *tx).await?;
    }
    // Per webhook: failures after its last success in this batch, and that success's time.
    let mut streaks: std::collections::BTreeMap<&str, (i64, Option<i64>, Option<&str>)> =
        Default::default();
    for o in outcomes {
        let s = streaks.entry(o.webhook.as_str()).or_insert((0, None, None));
        if o.ok {
            *s = (0, Some(o.at), None);
        } else {
            s.0 += 1;
            s.2 = o.error.as_deref().or(s.2);
        }
    }
    let mut disabled = Vec::new();
    for (name, (fails, success, last_error)) in streaks {
        match success {
            Some(t) => {
                sqlx::query("UPDATE webhooks SET consecutive_failures = $1, failing_since = $2, last_success = $3 WHERE name = $4")
                    .bind(fails)
                    .bind((fails > 0).then_some(now))
                    .bind(t)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE webhooks SET consecutive_failures = consecutive_failures + $1, failing_since = COALESCE(failing_since, $2) WHERE name = $3",
                )
                .bind(fails)
                .bind(now)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
        }
        if fails == 0 {
            continue;
        }
        let reason = format!(
            "disabled after {} or more consecutive failed attempts over {}s; last error: {}",
            cfg.disable_after_failures,
            cfg.disable_after.as_secs(),
            last_error.unwrap_or("unknown")
        );
        let r = sqlx::query(
            "UPDATE webhooks SET enabled = 0, disabled_reason = $1, modified = $2 WHERE name = $3 AND enabled = 1 AND consecutive_failures >= $4 AND failing_since <= $5",
        )
        .bind(reason)
        .bind(now)
        .bind(name)
        .bind(i64::from(cfg.disable_after_failures))
        .bind(now - cfg.disable_after.as_millis() as i64)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() > 0 {
            disabled.push(name.to_string());
        }
    }
    tx.commit().await?;
    Ok(disabled)
}

/// Drops sent and failed deliveries and attempts older than `before`.
pub async fn purge(db: &Db, before: i64) -> Result<u64> {
    let a = sqlx::query("DELETE FROM webhook_attempts WHERE created < $1")
        .bind(before)
        .execute(&db.pool)
        .await?;
    let d = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE status IN ('Sent', 'Failed') AND modified < $1",
    )
    .bind(before)
    .execute(&db.pool)
    .await?;
    Ok(a.rows_affected() + d.rows_affected())
}
