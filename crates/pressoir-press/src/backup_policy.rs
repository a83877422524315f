//! Backup policies: a plan may have one ("every day, keep 7"), and Press's scheduler has the
//! agent take an offsite backup ("Backup Site", with files) of each Active site on that plan
//! whose latest backup that did not fail is older than the policy's interval.
//!
//! It also prunes: a site's scheduled backups beyond the newest `keep` successful ones are
//! deleted, oldest first, by "Delete Site Backup" jobs; Press lists a backup as gone only once
//! its job succeeded. Never pruned: the site's newest successful backup, a backup that an
//! unfinished "Restore Site" or "New Site from Backup" names (the store checks this in the
//! transaction that records the deletion, so a restore accepted meanwhile is never undercut),
//! and backups taken on demand (`site.backup`) or before an archive - those are the user's
//! to keep, and do not count toward `keep`. A deletion that failed is tried again after a
//! [`RetryBackoff`].

use crate::api::site_backups::{BackupEntry, backups_of};
use crate::dispatch::Dispatcher;
use crate::domain::job_status;
use crate::domain::job_type::{BACKUP_SITE, DELETE_BACKUP};
use crate::error::Result;
use crate::store::{BackupUse, NewJob, Site, Store};
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

/// How long the scheduler waits before deleting a backup again after its deletion failed:
/// `base` after the first failure, doubling with each further one, never more than `cap`.
/// Failures are the backup's failed "Delete Site Backup" jobs, so a restart keeps the pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff {
            base: Duration::from_secs(5 * 60),
            cap: Duration::from_secs(6 * 3600),
        }
    }
}

impl RetryBackoff {
    /// The wait after the `failures`-th failure (`failures` ≥ 1).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// Whether a deletion that failed `failures` times, the last at `last`, may run at `now`.
    pub fn due(&self, failures: u32, last: Option<i64>, now: i64) -> bool {
        match last {
            Some(last) if failures > 0 => {
                let wait = i64::try_from(self.after(failures).as_millis()).unwrap_or(i64::MAX);
                now >= last.saturating_add(wait)
            }
            _ => true,
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

/// The backups to delete at `now`, oldest first: successful scheduled ones beyond the newest
/// `keep`, never the newest successful backup (of any kind), one already being deleted, or
/// one whose last deletion failed less than `backoff` ago. `backups` is newest first.
pub(crate) fn to_prune(
    backups: &[BackupEntry],
    keep: usize,
    backoff: &RetryBackoff,
    now: i64,
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
        .filter(|b| backoff.due(b.delete_failures, b.last_delete_failure, now))
        .filter_map(|b| b.name.clone())
        .filter(|n| Some(n) != newest.as_ref())
        .collect();
    out.reverse();
    out
}

/// Queues "Delete Site Backup" jobs for `site`'s backups beyond the policy; returns how many.
async fn prune_site(
    store: &Store,
    site: &Site,
    keep: usize,
    backoff: &RetryBackoff,
) -> Result<usize> {
    let jobs = store.site_jobs(&site.id, 0, SCAN).await?;
    let mut queued = 0;
    for backup in to_prune(&backups_of(&jobs), keep, backoff, now_ms()) {
        match queue_deletion(store, site, &backup).await {
            Ok(_) => queued += 1,
            // Read by a restore since the jobs above were read, or the site changed state:
            // the next tick looks again.
            Err(e) => {
                tracing::debug!(site = %site.name, %backup, error = %e, "backup deletion not queued")
            }
        }
    }
    Ok(queued)
}

/// Queues the "Delete Site Backup" job of `backup` (`<site>/<id>`), a backup of the Active
/// `site`; the store refuses it while a restore or new site reads the backup (see
/// [`BackupUse::Deletes`]). Returns the job's name.
pub async fn queue_deletion(store: &Store, site: &Site, backup: &str) -> Result<String> {
    let job = NewJob {
        server: site.server.clone(),
        job_type: DELETE_BACKUP.into(),
        data: json!({"name": site.name, "bench": site.bench, "backup": backup}),
        steps: vec![DELETE_BACKUP.into()],
    };
    let deletes = BackupUse::Deletes {
        site_id: &site.id,
        name: backup,
    };
    store
        .queue_site_job(site, &job, &["Active"], Some(deletes))
        .await
}

/// How many of a site's latest jobs pruning looks through.
const SCAN: i64 = 1000;

/// Queues the backups that are due and the deletions beyond `keep`; returns how many jobs.
pub async fn run_once(
    store: &Store,
    dispatcher: &Dispatcher,
    policies: &[BackupPolicy],
    backoff: &RetryBackoff,
) -> Result<usize> {
    let mut queued = 0;
    for p in policies {
        for site in store.active_sites_on_plan(&p.plan).await? {
            queued += prune_site(store, &site, p.keep, backoff).await?;
            if !due(store.last_backup_at(&site.id).await?, p.every, now_ms()) {
                continue;
            }
            let job = NewJob {
                server: site.server.clone(),
                job_type: BACKUP_SITE.into(),
                data: json!({"name": site.name, "bench": site.bench, "with_files": true, "scheduled": true}),
                steps: vec!["Backup Site".into(), "Upload Site Backup".into()],
            };
            match store.queue_site_job(&site, &job, &["Active"], None).await {
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
    backoff: RetryBackoff,
    tick: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run_once(&store, &dispatcher, &policies, &backoff).await {
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
            delete_failures: 0,
            last_delete_failure: None,
            summary: serde_json::Value::Null,
            result: serde_json::Value::Null,
            error: None,
        }
    }

    fn names(v: Vec<String>) -> Vec<String> {
        v.into_iter()
            .map(|n| n.trim_start_matches("a.localhost/").to_string())
            .collect()
    }

    #[test]
    fn pruning_keeps_the_newest_and_the_users_backups() {
        let b = RetryBackoff::default();
        // Newest first: s6 (on demand), s5 failed, s4..s1 scheduled.
        let mut list = vec![
            entry("s6", "Success", false),
            entry("s5", "Failure", true),
            entry("s4", "Success", true),
            entry("s3", "Success", true),
            entry("s2", "Success", true),
            entry("s1", "Success", true),
        ];
        assert_eq!(names(to_prune(&list, 2, &b, 0)), ["s1", "s2"]);
        assert!(to_prune(&list, 4, &b, 0).is_empty());
        // A backup being deleted does not count; a deleted one is not deleted again.
        list[5].deleting = true;
        list[4].deleted = true;
        assert_eq!(names(to_prune(&list, 1, &b, 0)), ["s3"]);
        // keep 0 still keeps the newest successful backup.
        let only = vec![entry("s1", "Success", true)];
        assert!(to_prune(&only, 0, &b, 0).is_empty());
        // On-demand backups are never pruned.
        let manual = vec![entry("m2", "Success", false), entry("m1", "Success", false)];
        assert!(to_prune(&manual, 0, &b, 0).is_empty());
    }

    #[test]
    fn a_failed_deletion_waits_longer_each_time_up_to_the_cap() {
        let b = RetryBackoff {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(300),
        };
        let waits: Vec<u64> = (1..=5).map(|n| b.after(n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 300, 300]);
        assert_eq!(b.after(u32::MAX), b.cap);
        assert!(b.due(0, None, 0));
        assert!(!b.due(2, Some(1_000), 1_000 + 119_999));
        assert!(b.due(2, Some(1_000), 1_000 + 120_000));

        // In pruning: s1's deletion failed twice, the last at t=0; s2 still counts toward keep.
        let mut list = vec![
            entry("s3", "Success", true),
            entry("s2", "Success", true),
            entry("s1", "Success", true),
        ];
        list[2].delete_failures = 2;
        list[2].last_delete_failure = Some(0);
        assert_eq!(names(to_prune(&list, 1, &b, 119_999)), ["s2"]);
        assert_eq!(names(to_prune(&list, 1, &b, 120_000)), ["s1", "s2"]);
    }
}
