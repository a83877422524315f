//! Drains the billing outbox through the Lago client, oldest first, keeping the order of each
//! subscription's calls; a failed send is retried with exponential backoff. Also samples usage
//! on `usage_interval`.

use super::store::{self as bstore, CUSTOMER, EVENT, Row, SUBSCRIPTION, TERMINATE};
use super::{BillingConfig, Meter, STORAGE_FIELD, STORAGE_METRIC, gb_string};
use crate::error::{Error, Result};
use crate::store::Store;
use pressoir_billing::client::{ClientError, CustomerInput, Event, LagoClient, SubscriptionInput};
use pressoir_core::Shutdown;
use pressoir_core::clock::now_ms;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

pub fn client(cfg: &BillingConfig) -> Result<LagoClient> {
    LagoClient::new(cfg.url.clone(), cfg.api_key.clone())
        .map_err(|e| Error::internal(e.to_string()))
}

/// Starts the outbox drainer and the usage sampler; both stop on `shutdown`.
pub fn spawn(
    store: Store,
    cfg: BillingConfig,
    shutdown: Shutdown,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let lago = client(&cfg)?;
    let meter = cfg
        .meter
        .clone()
        .unwrap_or_else(|| Meter(std::sync::Arc::new(super::AgentMeter::default())));
    let (s1, c1, stop1) = (store.clone(), cfg.clone(), shutdown.clone());
    let drainer = tokio::spawn(async move {
        loop {
            let wait = match drain(&s1, &lago, &c1).await {
                Ok(n) if n > 0 => Duration::from_millis(0),
                Ok(_) => c1.poll_interval,
                Err(e) => {
                    tracing::warn!(error = %e, "billing outbox read failed");
                    c1.poll_interval
                }
            };
            tokio::select! {
                _ = stop1.wait() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    let sampler = tokio::spawn(async move {
        let every = cfg.usage_interval.max(Duration::from_secs(1));
        // At start too, so a Press restarted more often than `every` still samples; the
        // transaction id makes a second sample in one period a no-op.
        loop {
            if let Err(e) = sample_usage(&store, &meter, every, now_ms() / 1000).await {
                tracing::warn!(error = %e, "usage sampling failed");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
    Ok(vec![drainer, sampler])
}

/// Measures every Active site and queues one `storage_gb` event per site for the period
/// holding `now_secs` (its transaction id is the site and period: a sample repeated within the
/// period is queued once, and a resend is counted once by billing). Returns how many were queued.
pub async fn sample_usage(
    store: &Store,
    meter: &Meter,
    every: Duration,
    now_secs: i64,
) -> Result<usize> {
    let every_secs = every.as_secs().max(1) as i64;
    let mut queued = 0;
    for site in bstore::active_sites(&store.db).await? {
        let tid = pressoir_billing::client::transaction_id(
            STORAGE_METRIC,
            &site.name,
            now_secs,
            every_secs,
        );
        let Some(server) = store.server(&site.server).await? else {
            continue;
        };
        let usage = match meter.0.measure(&site, &server).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                tracing::debug!(site = %site.name, "site usage not measurable; no event sent");
                continue;
            }
            Err(e) => {
                tracing::warn!(site = %site.name, error = %e, "site usage measure failed");
                continue;
            }
        };
        let event = json!({
            "transaction_id": tid,
            "external_subscription_id": site.name,
            "code": STORAGE_METRIC,
            "timestamp": now_secs,
            "properties": {
                STORAGE_FIELD: gb_string(usage.total_bytes()),
                "database_bytes": usage.database_bytes,
                "files_bytes": usage.files_bytes,
            },
        });
        if bstore::queue_event(&store.db, &site.name, &event).await? {
            queued += 1;
        }
    }
    Ok(queued)
}

/// One pass over the outbox; returns how many rows were sent. Usage events go in batches of up
/// to 100; the calls of one key keep their order. Stops at the first transient failure (billing
/// down or throttled): the rest waits for the next pass.
pub async fn drain(store: &Store, lago: &LagoClient, cfg: &BillingConfig) -> Result<usize> {
    let rows = bstore::pending(&store.db, 500).await?;
    let mut p = Pass {
        store,
        lago,
        cfg,
        now: now_ms(),
        blocked: HashSet::new(),
        sent: 0,
    };
    let mut batch: Vec<Row> = Vec::new();
    for row in rows {
        if p.blocked.contains(&row.key) {
            continue;
        }
        if row.next_at > p.now {
            p.blocked.insert(row.key.clone());
            continue;
        }
        if row.kind == EVENT {
            batch.push(row);
            if batch.len() == 100 && !p.flush(std::mem::take(&mut batch)).await? {
                return Ok(p.sent);
            }
            continue;
        }
        // Events queued before this call of the same key go first.
        if !p.flush(std::mem::take(&mut batch)).await? {
            return Ok(p.sent);
        }
        if p.blocked.contains(&row.key) {
            continue;
        }
        if !p.one(&row).await? {
            return Ok(p.sent);
        }
    }
    p.flush(batch).await?;
    Ok(p.sent)
}

struct Pass<'a> {
    store: &'a Store,
    lago: &'a LagoClient,
    cfg: &'a BillingConfig,
    now: i64,
    blocked: HashSet<String>,
    sent: usize,
}

impl Pass<'_> {
    /// Sends one row; false when billing is unavailable (stop the pass).
    async fn one(&mut self, row: &Row) -> Result<bool> {
        match send(self.lago, row).await {
            Ok(()) => {
                bstore::mark_done(&self.store.db, &row.id).await?;
                self.sent += 1;
                Ok(true)
            }
            Err(e) => self.failed(row, &e).await,
        }
    }

    async fn failed(&mut self, row: &Row, e: &ClientError) -> Result<bool> {
        self.blocked.insert(row.key.clone());
        let mut delay = backoff(self.cfg, row.attempts);
        if let ClientError::Api {
            retry_after_secs: Some(s),
            ..
        } = e
        {
            delay = delay.max(Duration::from_secs(*s));
        }
        let msg = e.to_string();
        bstore::mark_retry(
            &self.store.db,
            &row.id,
            self.now + delay.as_millis() as i64,
            &msg,
        )
        .await?;
        if e.is_transient() {
            tracing::debug!(error = %msg, "billing unavailable; outbox waits");
            return Ok(false);
        }
        tracing::warn!(kind = %row.kind, key = %row.key, error = %msg, "billing refused a call; will retry");
        Ok(true)
    }

    /// Sends usage events in one batch (duplicates count as sent). A batch refused for
    /// another reason is sent one by one, so one bad event does not hold the others.
    async fn flush(&mut self, batch: Vec<Row>) -> Result<bool> {
        match batch.len() {
            0 => return Ok(true),
            1 => return self.one(&batch[0]).await,
            _ => {}
        }
        let mut events = Vec::with_capacity(batch.len());
        for row in &batch {
            match serde_json::from_str::<Value>(&row.payload) {
                Ok(p) => events.push(event_of(&p)),
                Err(_) => return self.singly(&batch).await,
            }
        }
        match self.lago.send_events_batch(&events).await {
            Ok(_) => {
                for row in &batch {
                    bstore::mark_done(&self.store.db, &row.id).await?;
                    self.sent += 1;
                }
                Ok(true)
            }
            Err(e) if e.is_transient() => {
                for row in &batch {
                    self.failed(row, &e).await?;
                }
                Ok(false)
            }
            Err(_) => self.singly(&batch).await,
        }
    }

    async fn singly(&mut self, batch: &[Row]) -> Result<bool> {
        for row in batch {
            if !self.blocked.contains(&row.key) && !self.one(row).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn event_of(p: &Value) -> Event {
    Event {
        transaction_id: text(p, "transaction_id"),
        external_subscription_id: text(p, "external_subscription_id"),
        code: text(p, "code"),
        timestamp: p["timestamp"].as_i64(),
        properties: p["properties"].as_object().cloned().unwrap_or_default(),
    }
}

fn backoff(cfg: &BillingConfig, attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 16) as u32;
    cfg.retry_base.saturating_mul(factor).min(cfg.retry_max)
}

fn text(p: &Value, k: &str) -> String {
    p[k].as_str().unwrap_or_default().to_string()
}

async fn send(lago: &LagoClient, row: &Row) -> std::result::Result<(), ClientError> {
    let p: Value =
        serde_json::from_str(&row.payload).map_err(|e| ClientError::Decode(e.to_string()))?;
    match row.kind.as_str() {
        CUSTOMER => {
            let c = CustomerInput {
                external_id: text(&p, "external_id"),
                name: p["name"].as_str().map(String::from),
                ..Default::default()
            };
            lago.upsert_customer(&c).await.map(|_| ())
        }
        SUBSCRIPTION => {
            let s = SubscriptionInput {
                external_customer_id: text(&p, "external_customer_id"),
                plan_code: text(&p, "plan_code"),
                external_id: text(&p, "external_id"),
                name: p["name"].as_str().map(String::from),
                billing_time: None,
            };
            lago.create_subscription(&s).await.map(|_| ())
        }
        TERMINATE => lago
            .terminate_subscription(&text(&p, "external_id"))
            .await
            .map(|_| ()),
        EVENT => lago.send_event(&event_of(&p)).await.map(|_| ()),
        other => Err(ClientError::Decode(format!("unknown outbox kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressoir_core::Secret;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let cfg = BillingConfig::new("http://x", Secret::new("k".to_string()));
        assert_eq!(backoff(&cfg, 0), Duration::from_secs(1));
        assert_eq!(backoff(&cfg, 3), Duration::from_secs(8));
        assert_eq!(backoff(&cfg, 40), Duration::from_secs(300));
    }
}
