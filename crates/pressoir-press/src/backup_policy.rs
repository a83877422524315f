//! Backup policies: a plan may have one ("every day"), and Press's scheduler has the agent
//! take an offsite backup ("Backup Site", with files) of each Active site on that plan whose
//! latest backup that did not fail is older than the policy's interval.
//!
//! Not done here: pruning to `keep` backups (the agent has no job that deletes a backup yet);
//! `keep` is recorded and shown, not enforced.

use crate::dispatch::Dispatcher;
use crate::error::Result;
use crate::store::{NewJob, Site, Store};
use pressoir_core::Shutdown;
use pressoir_core::clock::now_ms;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// One plan's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPolicy {
    pub plan: String,
    pub every: Duration,
    pub keep: usize,
}

impl BackupPolicy {
    pub fn daily(plan: &str, keep: usize) -> BackupPolicy {
        BackupPolicy {
            plan: plan.to_string(),
            every: Duration::from_secs(24 * 3600),
            keep,
        }
    }
}

/// Whether a site whose latest backup (not failed) started at `last` is due at `now`.
pub fn due(last: Option<i64>, every: Duration, now: i64) -> bool {
    match last {
        None => true,
        Some(t) => now.saturating_sub(t) >= every.as_millis() as i64,
    }
}

const SITE_COLS: &str = "id, name, subdomain, domain, team, plan, server, bench, status, apps, config, created, modified";

/// Queues the backups that are due; returns how many.
pub async fn run_once(
    store: &Store,
    dispatcher: &Dispatcher,
    policies: &[BackupPolicy],
) -> Result<usize> {
    let mut queued = 0;
    for p in policies {
        let sites: Vec<Site> = sqlx::query_as(&format!(
            "SELECT {SITE_COLS} FROM sites WHERE plan = $1 AND status = 'Active' ORDER BY name"
        ))
        .bind(&p.plan)
        .fetch_all(&store.db.pool)
        .await?;
        for site in sites {
            let last: Option<(Option<i64>,)> = sqlx::query_as(
                "SELECT MAX(created) FROM jobs WHERE site_id = $1 AND job_type = 'Backup Site' AND status <> 'Failure'",
            )
            .bind(&site.id)
            .fetch_optional(&store.db.pool)
            .await?;
            if !due(last.and_then(|(t,)| t), p.every, now_ms()) {
                continue;
            }
            let job = NewJob {
                server: site.server.clone(),
                job_type: "Backup Site".into(),
                data: json!({"name": site.name, "bench": site.bench, "with_files": true, "scheduled": true}),
                steps: vec!["Backup Site".into(), "Upload Site Backup".into()],
            };
            match store.queue_site_job(&site, &job, &["Active"]).await {
                Ok(_) => queued += 1,
                // The site changed state meanwhile: its turn comes at the next tick.
                Err(e) => {
                    tracing::debug!(site = %site.name, error = %e, "scheduled backup not queued")
                }
            }
        }
    }
    if queued > 0 {
        dispatcher.wake();
    }
    Ok(queued)
}

/// Runs [`run_once`] every `tick` until `shutdown`.
pub fn spawn(
    store: Store,
    dispatcher: Arc<Dispatcher>,
    policies: Vec<BackupPolicy>,
    tick: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run_once(&store, &dispatcher, &policies).await {
                Ok(n) if n > 0 => tracing::info!(queued = n, "scheduled backups"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "backup scheduler"),
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_is_due_when_its_last_backup_is_old_enough() {
        let day = Duration::from_secs(86_400);
        assert!(due(None, day, 0));
        assert!(!due(Some(1_000), day, 1_000 + 86_399_999));
        assert!(due(Some(1_000), day, 1_000 + 86_400_000));
        assert_eq!(BackupPolicy::daily("Starter", 7).every, day);
    }
}
