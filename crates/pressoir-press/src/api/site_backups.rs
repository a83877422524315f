//! `press.api.site.backup`, `press.api.site.backups` and `press.api.site.restore`: offsite
//! backups run by the site's agent ("Backup Site", "Restore Site" jobs). A backup is the
//! result of a successful "Backup Site" job (or of an archive that took one first); the list
//! is read from the site's jobs, so it needs no table of its own: a backup is deleted once a
//! "Delete Site Backup" job for it succeeded (the backup policy prunes so), and `site.new`
//! with `backup` makes a new site from one ("New Site from Backup").

use super::{Ctx, job_summary, ok, queue};
use crate::auth::Caller;
use crate::domain::job_type::{BACKUP_SITE, DELETE_BACKUP, RESTORE_SITE};
use crate::domain::{job_status, site_status};
use crate::error::{Error, Result};
use crate::store::{BackupUse, Job, NewJob, Site};
use axum::response::Response;
use serde_json::{Value, json};

const NEW_FROM_BACKUP_STEPS: [&str; 5] = [
    "Download Site Backup",
    "New Site from Backup",
    "Install Apps",
    "Update Site Configuration",
    "Enable Scheduler",
];
const BACKUP_STEPS: [&str; 2] = ["Backup Site", "Upload Site Backup"];
const RESTORE_STEPS: [&str; 2] = ["Download Site Backup", "Restore Site"];
/// How many of a site's latest jobs `backups` looks through.
const SCAN: i64 = 1000;

fn flag(ctx: &Ctx, key: &str) -> bool {
    matches!(ctx.args.get(key), Some(Value::Bool(true)))
        || matches!(ctx.args.get(key).and_then(Value::as_i64), Some(1))
        || matches!(ctx.str_arg(key).as_deref(), Some("1" | "true" | "True"))
}

/// The "Archive Site" job `site.archive` queues: with an offsite backup first when Press is
/// configured so (`archive_backup`) and the call does not say `skip_backup`; the agent then
/// archives only once the backup is uploaded.
pub(super) fn archive_job(
    ctx: &Ctx,
    site: &crate::store::Site,
    force: bool,
) -> (Value, &'static [&'static str]) {
    if ctx.st.config.archive_backup && !flag(ctx, "skip_backup") {
        (
            json!({"name": site.name, "bench": site.bench, "force": force, "offsite_backup": true, "with_files": true}),
            &["Backup Site", "Upload Site Backup", "Archive Site"],
        )
    } else {
        (
            json!({"name": site.name, "bench": site.bench, "force": force}),
            &["Archive Site"],
        )
    }
}

/// `{name, with_files}` → `{site, job}`.
pub(super) async fn backup(ctx: &Ctx) -> Result<Response> {
    use site_status::*;
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    crate::domain::can_change(&site.status)?;
    let with_files = flag(ctx, "with_files");
    queue(
        ctx,
        &site,
        BACKUP_SITE,
        json!({"name": site.name, "bench": site.bench, "with_files": with_files}),
        &BACKUP_STEPS,
        &[ACTIVE, BROKEN, INACTIVE],
        None,
    )
    .await
}

/// One backup as Press knows it, read from the site's jobs.
#[derive(Debug, Clone)]
pub(crate) struct BackupEntry {
    /// `<site>/<id>`, known once the backup succeeded.
    pub name: Option<String>,
    pub job: String,
    pub job_type: String,
    pub status: String,
    /// Taken by the backup policy (only these are pruned).
    pub scheduled: bool,
    /// A "Delete Site Backup" job for it succeeded: it is gone.
    pub deleted: bool,
    /// A "Delete Site Backup" job for it is queued or running.
    pub deleting: bool,
    /// How many "Delete Site Backup" jobs for it failed, and when the last one ended: the
    /// backup policy's retry backoff, kept across restarts by the jobs themselves.
    pub delete_failures: u32,
    pub last_delete_failure: Option<i64>,
    pub summary: Value,
    pub result: Value,
    pub error: Option<String>,
}

/// The backups among a site's jobs (newest first, as `jobs` is), with what deletions did.
pub(crate) fn backups_of(jobs: &[Job]) -> Vec<BackupEntry> {
    let mut deleted = std::collections::HashSet::new();
    let mut deleting = std::collections::HashSet::new();
    // Backup → (failed deletions, when the last one ended).
    let mut failed: std::collections::HashMap<String, (u32, i64)> = Default::default();
    for j in jobs.iter().filter(|j| j.job_type == DELETE_BACKUP) {
        let data: Value = serde_json::from_str(&j.request_data).unwrap_or(Value::Null);
        if let Some(b) = data["backup"].as_str() {
            match j.status.as_str() {
                job_status::SUCCESS => {
                    deleted.insert(b.to_string());
                }
                job_status::FAILURE => {
                    let f = failed.entry(b.to_string()).or_default();
                    f.0 += 1;
                    f.1 = f.1.max(j.ended.unwrap_or(j.created));
                }
                _ => {
                    deleting.insert(b.to_string());
                }
            }
        }
    }
    jobs.iter()
        .filter_map(|j| {
            let result: Value = j
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null);
            let is_backup = j.job_type == BACKUP_SITE
                || (j.job_type == crate::domain::job_type::ARCHIVE_SITE
                    && result.get("backup").is_some());
            if !is_backup {
                return None;
            }
            let data: Value = serde_json::from_str(&j.request_data).unwrap_or(Value::Null);
            let name = result["backup"].as_str().map(str::to_string);
            let gone = |set: &std::collections::HashSet<String>| {
                name.as_ref().is_some_and(|n| set.contains(n))
            };
            let failures = name.as_ref().and_then(|n| failed.get(n));
            Some(BackupEntry {
                deleted: gone(&deleted),
                deleting: gone(&deleting),
                delete_failures: failures.map_or(0, |f| f.0),
                last_delete_failure: failures.map(|f| f.1),
                name,
                job: j.name.clone(),
                job_type: j.job_type.clone(),
                status: j.status.clone(),
                scheduled: data["scheduled"] == Value::Bool(true),
                summary: job_summary(j),
                result,
                error: j.error.clone(),
            })
        })
        .collect()
}

/// `{name}` → the site's backups, newest first: name (the id to restore), job, status, time,
/// size, files, whether the backup policy took it. Deleted backups are not listed.
pub(super) async fn backups(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    let jobs = ctx.st.store.site_jobs(&site.id, 0, SCAN).await?;
    let list: Vec<Value> = backups_of(&jobs)
        .into_iter()
        .filter(|b| !b.deleted)
        .map(|b| {
            let field = |k: &str| b.result.get(k).cloned().unwrap_or(Value::Null);
            json!({
                "name": b.name,
                "backup_id": field("backup_id"),
                "job": b.job,
                "job_type": b.job_type,
                "status": b.summary["status"],
                "creation": b.summary["creation"],
                "end": b.summary["end"],
                "with_files": field("with_files"),
                "size": field("size"),
                "files": field("files"),
                "offsite": true,
                "scheduled": b.scheduled,
                "deleting": b.deleting,
                "error": b.error,
            })
        })
        .collect();
    Ok(ok(Value::Array(list)))
}

fn check_backup_name(backup: &str) -> Result<()> {
    let ok_chars = backup
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '/'));
    if backup.is_empty() || backup.len() > 400 || !ok_chars {
        return Err(Error::validation(
            "'backup' must be a backup name from press.api.site.backups",
        ));
    }
    Ok(())
}

/// A backup of one of the caller's team's sites (archived ones too) that a new site can be
/// made from: named `<site>/<id>` as `backups` lists it, or by its job. Another team's backup
/// answers exactly as a missing one (404); one that did not succeed, 400 (and one being
/// deleted, 400, from [`crate::store::Store::insert_site`]).
/// Returns the backup's name and its site.
pub(super) async fn usable_backup(ctx: &Ctx, c: &Caller, backup: &str) -> Result<(String, Site)> {
    check_backup_name(backup)?;
    let missing = || Error::not_found(format!("Backup {backup} not found"));
    let site = match backup.rsplit_once('/') {
        Some((of, _)) => ctx.site(c, of).await.map_err(|_| missing())?,
        None => {
            let job = ctx.st.store.job(backup).await?.ok_or_else(missing)?;
            let site_name = job.site_name.clone().ok_or_else(missing)?;
            let site = ctx.site(c, &site_name).await.map_err(|_| missing())?;
            if job.site_id.as_deref() != Some(site.id.as_str()) {
                return Err(missing());
            }
            site
        }
    };
    let jobs = ctx.st.store.site_jobs(&site.id, 0, SCAN).await?;
    let entry = backups_of(&jobs)
        .into_iter()
        .find(|b| b.name.as_deref() == Some(backup) || b.job == backup)
        .filter(|b| !b.deleted)
        .ok_or_else(missing)?;
    if entry.status != job_status::SUCCESS {
        return Err(Error::validation(format!(
            "Backup {backup} is not usable: its status is {}",
            entry.summary["status"].as_str().unwrap_or(&entry.status)
        )));
    }
    // Whether a deletion is under way is checked where the new site is recorded.
    Ok((entry.name.ok_or_else(missing)?, site))
}

/// The "New Site from Backup" job of `site.new` with a backup: the backup's database and
/// files, then `apps` (those it lacks) and the site's config.
pub(super) fn new_site_from_backup_job(
    server: &str,
    name: &str,
    bench: &str,
    apps: &[String],
    config: &serde_json::Map<String, Value>,
    backup: &str,
) -> NewJob {
    NewJob {
        server: server.to_string(),
        job_type: crate::domain::job_type::NEW_SITE_FROM_BACKUP.into(),
        data: json!({"name": name, "bench": bench, "backup": backup, "apps": apps, "config": config}),
        steps: NEW_FROM_BACKUP_STEPS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// `{name, backup}` → `{site, job}`. `backup` is a name from `backups` (`<site>/<id>`), or a
/// bare id of this site's.
pub(super) async fn restore(ctx: &Ctx) -> Result<Response> {
    use site_status::*;
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    crate::domain::can_change(&site.status)?;
    let backup = ctx.required("backup")?;
    check_backup_name(&backup)?;
    // Only this team's backups: a backup of another site must be one of the team's sites.
    let of = match backup.rsplit_once('/') {
        Some((of, _)) if of != site.name => ctx
            .site(&c, of)
            .await
            .map_err(|_| Error::not_found(format!("Backup {backup} not found")))?,
        _ => site.clone(),
    };
    // A backup the policy is deleting (or deleted) is not restored: the store decides, in
    // the transaction that records the restore, so a deletion cannot slip in between.
    let full = crate::domain::backup_name(Some(&site.name), &backup);
    queue(
        ctx,
        &site,
        RESTORE_SITE,
        json!({"name": site.name, "bench": site.bench, "backup": backup}),
        &RESTORE_STEPS,
        &[ACTIVE, BROKEN, INACTIVE],
        Some(BackupUse::Reads {
            site_id: &of.id,
            name: &full,
        }),
    )
    .await
}
