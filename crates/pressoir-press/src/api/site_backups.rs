//! `press.api.site.backup`, `press.api.site.backups` and `press.api.site.restore`: offsite
//! backups run by the site's agent ("Backup Site", "Restore Site" jobs). A backup is the
//! result of a successful "Backup Site" job (or of an archive that took one first); the list
//! is read from the site's jobs, so it needs no table of its own.

use super::{Ctx, job_summary, ok, queue};
use crate::domain::site_status;
use crate::error::{Error, Result};
use axum::response::Response;
use serde_json::{Value, json};

pub const BACKUP_SITE: &str = "Backup Site";
pub const RESTORE_SITE: &str = "Restore Site";
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
    )
    .await
}

/// `{name}` → the site's backups, newest first: name (the id to restore), job, status, time,
/// size, files.
pub(super) async fn backups(ctx: &Ctx) -> Result<Response> {
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    let jobs = ctx.st.store.site_jobs(&site.id, 0, SCAN).await?;
    let list: Vec<Value> = jobs
        .iter()
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
            let summary = job_summary(j);
            Some(json!({
                "name": result.get("backup").cloned().unwrap_or(Value::Null),
                "backup_id": result.get("backup_id").cloned().unwrap_or(Value::Null),
                "job": j.name,
                "job_type": j.job_type,
                "status": summary["status"],
                "creation": summary["creation"],
                "end": summary["end"],
                "with_files": result.get("with_files").cloned().unwrap_or(Value::Null),
                "size": result.get("size").cloned().unwrap_or(Value::Null),
                "files": result.get("files").cloned().unwrap_or(Value::Null),
                "offsite": true,
                "error": j.error,
            }))
        })
        .collect();
    Ok(ok(Value::Array(list)))
}

/// `{name, backup}` → `{site, job}`. `backup` is a name from `backups` (`<site>/<id>`), or a
/// bare id of this site's.
pub(super) async fn restore(ctx: &Ctx) -> Result<Response> {
    use site_status::*;
    let c = ctx.caller().await?;
    let site = ctx.site(&c, &ctx.required("name")?).await?;
    crate::domain::can_change(&site.status)?;
    let backup = ctx.required("backup")?;
    let ok_chars = backup
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '/'));
    if backup.is_empty() || backup.len() > 400 || !ok_chars {
        return Err(Error::validation(
            "'backup' must be a backup name from press.api.site.backups",
        ));
    }
    // Only this team's backups: a backup of another site must be one of the team's sites.
    if let Some((of, _)) = backup.rsplit_once('/')
        && of != site.name
        && ctx.site(&c, of).await.is_err()
    {
        return Err(Error::not_found(format!("Backup {backup} not found")));
    }
    queue(
        ctx,
        &site,
        RESTORE_SITE,
        json!({"name": site.name, "bench": site.bench, "backup": backup}),
        &RESTORE_STEPS,
        &[ACTIVE, BROKEN, INACTIVE],
    )
    .await
}
