//! Backup policies: a plan may have one ("every day, keep 7"), and Press's scheduler has the
//! agent take an offsite backup ("Backup Site", with files) of each Active site on that plan
//! whose latest backup that did not fail is older than the policy's interval.
//!
//! It also prunes: a site's scheduled backups beyond the newest `keep` successful ones are
//! deleted, oldest first, by "Delete Site Backup" jobs; Press lists a backup as gone only once
//! its job succeeded. Never pruned: the site's newest successful backup, a backup that an
//! unfinished "Restore Site" or "New Site from Backup" names, and backups taken on demand
//! (`site.backup`) or before an archive - those are the user's to keep, and do not count
//! toward `keep`.

use crate::api::site_backups::{BackupEntry, DELETE_BACKUP, backups_of};
use crate::dispatch::Dispatcher;
use crate::domain::job_status;
use crate::error::Result;
use crate::store::{NewJob, Site, Store};
use pressoir_core::Shutdown;
use pressoir_core::clock::now_ms;
use serde_json::json;
use std::collections::HashSet;
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

/// The backups to delete, oldest first: successful scheduled ones beyond the newest `keep`,
/// never the newest successful backup (of any kind), one already being deleted, or one that
/// `in_use` names. `backups` is newest first.
pub(crate) fn to_prune(
    backups: &[BackupEntry],
    keep: usize,
    in_use: &HashSet<String>,
) -> Vec<String> {
    let live: Vec<&BackupEntry> = backups
        .iter()
        .filter(|b| b.status == job_status::SUCCESS && !b.deleted && b.name.is_some())
        .collect();
    let newest = live.first().and_then(|b| b.name.clone());
    let mut out: Vec<String> = live
        .iter()
        .filter(|b| b.scheduled && !b.deleting)
        .skip(keep)
        .filter_map(|b| b.name.clone())
        .filter(|n| Some(n) != newest.as_ref() && !in_use.contains(n))
        .collect();
    out.reverse();
    out
}

/// Backups that unfinished restores (or new sites from a backup) will read.
async fn backups_in_use(store: &Store) -> Result<HashSet<String>> {
    let rows: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT site_name, request_data FROM jobs WHERE job_type IN ('Restore Site', 'New Site from Backup') AND status NOT IN ('Success', 'Failure')",
    )
    .fetch_all(&store.db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(site, data)| {
            let data: serde_json::Value = serde_json::from_str(&data).ok()?;
            let b = data["backup"].as_str()?;
            // A bare id names a backup of the job's own site.
            Some(match (b.contains('/'), site) {
                (false, Some(site)) => format!("{site}/{b}"),
                _ => b.to_string(),
            })
        })
        .collect())
}

/// Queues "Delete Site Backup" jobs for `site`'s backups beyond the policy; returns how many.
async fn prune_site(
    store: &Store,
    site: &Site,
    keep: usize,
    in_use: &HashSet<String>,
) -> Result<usize> {
    let jobs = store.site_jobs(&site.id, 0, SCAN).await?;
    let mut queued = 0;
    for backup in to_prune(&backups_of(&jobs), keep, in_use) {
        let job = NewJob {
            server: site.server.clone(),
            job_type: DELETE_BACKUP.into(),
            data: json!({"name": site.name, "bench": site.bench, "backup": backup}),
            steps: vec![DELETE_BACKUP.into()],
        };
        match store.queue_site_job(site, &job, &["Active"]).await {
            Ok(_) => queued += 1,
            Err(e) => {
                tracing::debug!(site = %site.name, error = %e, "backup deletion not queued");
                break;
            }
        }
    }
    Ok(queued)
}

/// How many of a site's latest jobs pruning looks through.
const SCAN: i64 = 1000;

const SITE_COLS: &str = "id, name, subdomain, domain, team, plan, server, bench, status, apps, config, created, modified";

/// Queues the backups that are due and the deletions beyond `keep`; returns how many jobs.
pub async fn run_once(
    store: &Store,
    dispatcher: &Dispatcher,
    policies: &[BackupPolicy],
) -> Result<usize> {
    let mut queued = 0;
    let in_use = backups_in_use(store).await?;
    for p in policies {
        let sites: Vec<Site> = sqlx::query_as(&format!(
            "SELECT {SITE_COLS} FROM sites WHERE plan = $1 AND status = 'Active' ORDER BY name"
        ))
        .bind(&p.plan)
        .fetch_all(&store.db.pool)
        .await?;
        for site in sites {
            queued += prune_site(store, &site, p.keep, &in_use).await?;
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

    fn entry(name: &str, status: &str, scheduled: bool) -> BackupEntry {
        BackupEntry {
            name: (status == "Success").then(|| format!("a.localhost/{name}")),
            job: format!("job-{name}"),
            job_type: "Backup Site".into(),
            status: status.into(),
            scheduled,
            deleted: false,
            deleting: false,
            summary: serde_json::Value::Null,
            result: serde_json::Value::Null,
            error: None,
        }
    }

    #[test]
    fn pruning_keeps_the_newest_and_what_is_in_use() {
        let none = HashSet::new();
        let names = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|n| n.trim_start_matches("a.localhost/").to_string())
                .collect()
        };
        // Newest first: s6 (on demand), s5 failed, s4..s1 scheduled.
        let mut list = vec![
            entry("s6", "Success", false),
            entry("s5", "Failure", true),
            entry("s4", "Success", true),
            entry("s3", "Success", true),
            entry("s2", "Success", true),
            entry("s1", "Success", true),
        ];
        assert_eq!(names(to_prune(&list, 2, &none)), ["s1", "s2"]);
        assert!(to_prune(&list, 4, &none).is_empty());
        // A backup being deleted does not count; a deleted one is not deleted again.
        list[5].deleting = true;
        list[4].deleted = true;
        assert_eq!(names(to_prune(&list, 1, &none)), ["s3"]);
        // One a restore reads is kept.
        let used: HashSet<String> = ["a.localhost/s3".to_string()].into();
        assert!(to_prune(&list, 1, &used).is_empty());
        // keep 0 still keeps the newest successful backup.
        let only = vec![entry("s1", "Success", true)];
        assert!(to_prune(&only, 0, &none).is_empty());
        // On-demand backups are never pruned.
        let manual = vec![entry("m2", "Success", false), entry("m1", "Success", false)];
        assert!(to_prune(&manual, 0, &none).is_empty());
    }
}
