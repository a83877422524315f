//! The local driver's backup steps: a consistent copy of the site database (`VACUUM INTO`),
//! gzipped, and a gzipped tar of the site's files, written to a work folder and streamed to
//! offsite storage; and restores, which download and verify every file before the site is
//! touched, build the restored site beside it, and swap folders.
//!
//! Every step here may run again after a restart: a backup's id is fixed by its first step
//! (kept in the work folder), uploads write the same keys (manifest last), downloads start
//! over, and a restore interrupted mid-swap finds its traces (`.restore-old-*`) and finishes
//! or undoes the swap.

use super::{
    LocalDriver, Log, blocking, config_bytes, db_name_for, io_err, read_config, site_free, sitedb,
};
use crate::backup::{
    DATABASE_FILE, FILES_FILE, FORMAT, FileEntry, HashWriter, MANIFEST_FILE, Manifest, Offsite,
    hash_file,
};
use crate::driver::{StepContext, StepResult};
use crate::job::{
    BackupRef, BackupSite, DeleteBackup, MANAGED_CONFIG_KEYS, NewSiteFromBackup, RestoreSite,
};
use pressoir_core::Secret;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const BACKUP_ID_FILE: &str = "backup-id";
const MANIFEST_PENDING: &str = "manifest.json";

/// Top-level entries of a site folder that are not its "files" (hidden ones include the
/// `.created-by-job` marker older versions wrote).
fn not_files(name: &str) -> bool {
    name == "db" || name == "site_config.json" || name.starts_with('.')
}

fn sync_path(p: &Path) -> Result<(), String> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", p.display()))
}

/// Gzips `src` into `dest`; returns the entry for the manifest.
fn gzip_file(src: &Path, dest: &Path, name: &str, kind: &str) -> Result<FileEntry, String> {
    let mut input = std::fs::File::open(src).map_err(io_err("open the database copy"))?;
    let out = std::fs::File::create(dest).map_err(io_err("create the database dump"))?;
    let mut gz = flate2::write::GzEncoder::new(HashWriter::new(out), flate2::Compression::fast());
    std::io::copy(&mut input, &mut gz).map_err(io_err("compress the database"))?;
    let hw = gz.finish().map_err(io_err("compress the database"))?;
    let (file, size, sha256) = hw.finish();
    file.sync_all().map_err(io_err("sync the database dump"))?;
    Ok(FileEntry {
        name: name.into(),
        kind: kind.into(),
        size,
        sha256,
    })
}

/// A gzipped tar of the site's files (everything but its database and configuration).
fn tar_files(site_dir: &Path, dest: &Path) -> Result<(FileEntry, usize), String> {
    let out = std::fs::File::create(dest).map_err(io_err("create the files archive"))?;
    let gz = flate2::write::GzEncoder::new(HashWriter::new(out), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(site_dir)
        .map_err(io_err("list the site folder"))?
        .collect::<Result<_, _>>()
        .map_err(io_err("list the site folder"))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if not_files(n) {
            continue;
        }
        let path = e.path();
        let kind = e.file_type().map_err(io_err("inspect the site folder"))?;
        if kind.is_dir() {
            tar.append_dir_all(n, &path)
                .map_err(io_err("archive the site's files"))?;
        } else {
            tar.append_path_with_name(&path, n)
                .map_err(io_err("archive the site's files"))?;
        }
        count += 1;
    }
    let gz = tar
        .into_inner()
        .map_err(io_err("archive the site's files"))?;
    let hw = gz.finish().map_err(io_err("compress the site's files"))?;
    let (file, size, sha256) = hw.finish();
    file.sync_all().map_err(io_err("sync the files archive"))?;
    Ok((
        FileEntry {
            name: FILES_FILE.into(),
            kind: "files".into(),
            size,
            sha256,
        },
        count,
    ))
}

fn gunzip_file(src: &Path, dest: &Path) -> Result<(), String> {
    let input = std::fs::File::open(src).map_err(io_err("open the database dump"))?;
    let mut gz = flate2::read::GzDecoder::new(input);
    let mut out = std::fs::File::create(dest).map_err(io_err("create the database"))?;
    std::io::copy(&mut gz, &mut out).map_err(io_err("decompress the database"))?;
    out.sync_all().map_err(io_err("sync the database"))
}

/// Unpacks the files archive into `dest`, skipping anything that would land on the site's
/// database or configuration. `tar` refuses entries that would escape `dest`.
fn untar_files(src: &Path, dest: &Path) -> Result<usize, String> {
    let input = std::fs::File::open(src).map_err(io_err("open the files archive"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    archive.set_preserve_permissions(false);
    let mut count = 0;
    for entry in archive
        .entries()
        .map_err(io_err("read the files archive"))?
    {
        let mut entry = entry.map_err(io_err("read the files archive"))?;
        let path = entry.path().map_err(io_err("read the files archive"))?;
        let first = path
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        if not_files(&first) {
            continue;
        }
        if !entry
            .unpack_in(dest)
            .map_err(io_err("unpack the files archive"))?
        {
            return Err("the files archive has an entry outside the site folder".into());
        }
        count += 1;
    }
    Ok(count)
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let bytes = std::fs::read(dir.join(MANIFEST_PENDING)).map_err(|_| {
        "the backup's work folder is gone (the agent's data was lost?); run the job again"
            .to_string()
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the backup's manifest is unreadable: {e}"))
}

/// Checks the files in `dir` against the manifest (again, right before they are used).
fn verify_local(dir: &Path, manifest: &Manifest, backup: &str) -> Result<(), String> {
    for f in &manifest.files {
        let (size, sha) = hash_file(&dir.join(&f.name))
            .map_err(|e| format!("cannot read the downloaded {}: {e}", f.name))?;
        if size != f.size || sha != f.sha256 {
            return Err(format!(
                "backup '{backup}' is corrupt: {} has {size} bytes and SHA-256 {sha}, its manifest says {} bytes and {}",
                f.name, f.size, f.sha256
            ));
        }
    }
    Ok(())
}

fn size_text(n: u64) -> String {
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

impl LocalDriver {
    fn offsite(&self, log: &Log) -> Result<Arc<Offsite>, crate::driver::StepFailed> {
        self.offsite.clone().ok_or_else(|| {
            log.fail("no offsite storage is configured for this agent (--s3-endpoint, --s3-bucket, --s3-access-key and PRESSOIR_AGENT_S3_SECRET_KEY)")
        })
    }

    fn work_dir(&self, ctx: StepContext) -> PathBuf {
        self.work.join(ctx.job_id.to_string())
    }

    /// Removes a job's work folder (after its last step, or when a step fails).
    pub(super) async fn clean_work(&self, job_id: i64) {
        let dir = self.work.join(job_id.to_string());
        let _ = blocking(move || {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io_err("remove the work folder"))?;
            }
            Ok(())
        })
        .await;
    }

    /// Step "Backup Site": a consistent copy of the database, gzipped; with files, a gzipped
    /// tar of the site's files; and the manifest, all in the job's work folder.
    pub(super) async fn backup_site(&self, b: &BackupSite, ctx: StepContext) -> StepResult {
        let mut log = Log::default();
        self.offsite(&log)?;
        let site = &b.site;
        let dir = self.site_dir(site);
        let work = self.work_dir(ctx);
        let (d, s) = (dir.clone(), site.clone());
        let config = blocking(move || read_config(&d, &s))
            .await
            .map_err(|e| log.fail(e))?;
        // The id is fixed by the first run of this step, so a resumed backup keeps it.
        let w = work.clone();
        let job = ctx.job_id;
        let id = blocking(move || {
            std::fs::create_dir_all(&w).map_err(io_err("create the work folder"))?;
            let id_file = w.join(BACKUP_ID_FILE);
            if let Ok(id) = std::fs::read_to_string(&id_file) {
                return Ok(id.trim().to_string());
            }
            let id = format!("{}-{job}", super::time_stamp());
            super::write_atomic(&id_file, id.as_bytes()).map_err(io_err("record the backup id"))?;
            Ok(id)
        })
        .await
        .map_err(|e| log.fail(e))?;
        log.line(format!("backup id {id}"));
        let copy = work.join("database.sqlite");
        let _ = tokio::fs::remove_file(&copy).await;
        let apps = self
            .on_site_db(site, move |c| {
                sitedb::copy_into(c, &copy)
                    .map_err(|e| format!("cannot copy the site database: {e}"))?;
                sitedb::apps(c).map_err(|e| format!("cannot read the installed apps: {e}"))
            })
            .await
            .map_err(|e| log.fail(e))?;
        log.line(format!(
            "copy the database consistently (VACUUM INTO), apps {}",
            apps.join(", ")
        ));
        let (w, d) = (work.clone(), dir.clone());
        let with_files = b.with_files;
        let (files, tarred) = blocking(move || {
            let db = gzip_file(
                &w.join("database.sqlite"),
                &w.join(DATABASE_FILE),
                DATABASE_FILE,
                "database",
            )?;
            let _ = std::fs::remove_file(w.join("database.sqlite"));
            let mut files = vec![db];
            let mut tarred = None;
            if with_files {
                let (entry, count) = tar_files(&d, &w.join(FILES_FILE))?;
                files.push(entry);
                tarred = Some(count);
            }
            Ok((files, tarred))
        })
        .await
        .map_err(|e| log.fail(e))?;
        log.line(format!(
            "gzip the database: {DATABASE_FILE} {}",
            size_text(files[0].size)
        ));
        if let (Some(count), Some(f)) = (tarred, files.get(1)) {
            log.line(format!(
                "archive the site's files ({count} top-level entries, database and site_config.json excluded): {FILES_FILE} {}",
                size_text(f.size)
            ));
        }
        let mut site_config = config;
        site_config.remove("db_password");
        let manifest = Manifest {
            format: FORMAT,
            backup: id,
            site: site.name.to_string(),
            bench: site.bench.to_string(),
            created_at: super::now_text(),
            with_files,
            apps,
            site_config,
            files,
        };
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| log.fail(format!("cannot write the manifest: {e}")))?;
        let w = work.clone();
        blocking(move || {
            super::write_atomic(&w.join(MANIFEST_PENDING), &bytes)
                .map_err(io_err("write the manifest"))
        })
        .await
        .map_err(|e| log.fail(e))?;
        log.line("write the manifest (sizes, SHA-256 checksums, site_config without db_password)");
        log.done(None)
    }

    /// Step "Upload Site Backup": streams the work folder's files to offsite storage, then the
    /// manifest (a backup exists once its manifest does), then removes the work folder.
    /// `keep_id`: a later step of the job (archive) still needs the backup id.
    pub(super) async fn upload_backup(
        &self,
        b: &BackupSite,
        ctx: StepContext,
        keep_id: bool,
    ) -> StepResult {
        let mut log = Log::default();
        let offsite = self.offsite(&log)?;
        let work = self.work_dir(ctx);
        let w = work.clone();
        let manifest = blocking(move || read_manifest(&w))
            .await
            .map_err(|e| log.fail(e))?;
        let backup = BackupRef {
            site: b.site.name.clone(),
            id: manifest.backup.clone(),
        };
        let mut total = 0;
        for f in &manifest.files {
            let key = offsite.key(&backup, &f.name);
            let sent = offsite
                .upload_file(&key, &work.join(&f.name))
                .await
                .map_err(|e| log.fail(e))?;
            if sent != f.size {
                return Err(log.fail(format!(
                    "{} changed in the work folder ({sent} bytes sent, {} in the manifest)",
                    f.name, f.size
                )));
            }
            total += sent;
            log.line(format!(
                "upload s3://{}/{key} ({})",
                offsite.bucket(),
                size_text(sent)
            ));
        }
        let key = offsite.key(&backup, MANIFEST_FILE);
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| log.fail(format!("cannot write the manifest: {e}")))?;
        offsite
            .put_small(&key, bytes)
            .await
            .map_err(|e| log.fail(e))?;
        log.line(format!("upload s3://{}/{key}", offsite.bucket()));
        if keep_id {
            let w = work.clone();
            blocking(move || {
                for f in std::fs::read_dir(&w).map_err(io_err("list the work folder"))? {
                    let f = f.map_err(io_err("list the work folder"))?;
                    if f.file_name() != BACKUP_ID_FILE {
                        std::fs::remove_file(f.path()).map_err(io_err("clean the work folder"))?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| log.fail(e))?;
        } else {
            self.clean_work(ctx.job_id).await;
        }
        let files: Vec<Value> = manifest
            .files
            .iter()
            .map(|f| json!({"name": f.name, "kind": f.kind, "size": f.size, "sha256": f.sha256}))
            .collect();
        log.done(Some(json!({
            "site": b.site.name.as_str(),
            "bench": b.site.bench.as_str(),
            "backup": backup.to_string(),
            "backup_id": backup.id,
            "with_files": manifest.with_files,
            "created_at": manifest.created_at,
            "files": files,
            "size": total,
            "bucket": offsite.bucket(),
            "manifest": key.to_string(),
        })))
    }

    /// Step "Archive Site" of an archive with an offsite backup: runs only once the backup is
    /// uploaded, and names it in the job's result.
    pub(super) async fn archive_after_backup(
        &self,
        b: &BackupSite,
        ctx: StepContext,
    ) -> StepResult {
        let w = self.work_dir(ctx);
        let id = blocking(move || {
            std::fs::read_to_string(w.join(BACKUP_ID_FILE))
                .map(|s| s.trim().to_string())
                .map_err(|_| "the backup id of this job is gone; the site was not archived".into())
        })
        .await
        .map_err(|e| Log::default().fail(e))?;
        let mut done = self.archive(&b.site, ctx).await?;
        self.clean_work(ctx.job_id).await;
        if let Some(Value::Object(r)) = &mut done.result {
            r.insert(
                "backup".into(),
                json!(
                    BackupRef {
                        site: b.site.name.clone(),
                        id
                    }
                    .to_string()
                ),
            );
        }
        Ok(done)
    }

    /// Step "Download Site Backup": the manifest, then every file, each checked against the
    /// manifest's size and SHA-256. Nothing of the site is touched.
    pub(super) async fn download_backup(&self, backup: &BackupRef, ctx: StepContext) -> StepResult {
        let mut log = Log::default();
        let offsite = self.offsite(&log)?;
        let work = self.work_dir(ctx);
        let w = work.clone();
        blocking(move || {
            if w.exists() {
                std::fs::remove_dir_all(&w).map_err(io_err("clear the work folder"))?;
            }
            std::fs::create_dir_all(&w).map_err(io_err("create the work folder"))
        })
        .await
        .map_err(|e| log.fail(e))?;
        let key = offsite.key(backup, MANIFEST_FILE);
        let bytes = offsite
            .get_small(&key)
            .await
            .map_err(|e| log.fail(e))?
            .ok_or_else(|| {
                log.fail(format!(
                    "backup '{backup}' does not exist (no s3://{}/{key})",
                    offsite.bucket()
                ))
            })?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            log.fail(format!(
                "the manifest of backup '{backup}' is unreadable: {e}"
            ))
        })?;
        manifest.check(backup).map_err(|e| log.fail(e))?;
        log.line(format!("download s3://{}/{key}", offsite.bucket()));
        for f in &manifest.files {
            let key = offsite.key(backup, &f.name);
            let (size, sha) = offsite
                .download(&key, &work.join(&f.name))
                .await
                .map_err(|e| log.fail(format!("backup '{backup}' is incomplete: {e}")))?;
            if size != f.size || sha != f.sha256 {
                return Err(log.fail(format!(
                    "backup '{backup}' is corrupt: {} has {size} bytes and SHA-256 {sha}, its manifest says {} bytes and {}",
                    f.name, f.size, f.sha256
                )));
            }
            log.line(format!(
                "download s3://{}/{key} ({}, SHA-256 verified)",
                offsite.bucket(),
                size_text(size)
            ));
        }
        let w = work.clone();
        blocking(move || {
            super::write_atomic(&w.join(MANIFEST_PENDING), &bytes)
                .map_err(io_err("keep the manifest"))
        })
        .await
        .map_err(|e| log.fail(e))?;
        log.done(None)
    }

    /// Builds a site folder in `dest` from the verified backup in `work`: the database as
    /// `db/<db_name>.db`, the files, and `config` as its site_config.json.
    async fn build_from_backup(
        work: &Path,
        dest: &Path,
        manifest: &Manifest,
        db_name: &str,
        config: Map<String, Value>,
        made_by: Option<i64>,
        backup: &str,
    ) -> Result<Option<usize>, String> {
        let (w, d, m, b) = (
            work.to_path_buf(),
            dest.to_path_buf(),
            manifest.clone(),
            backup.to_string(),
        );
        let db_path = super::db_file(dest, db_name);
        let db = db_path.clone();
        let count = blocking(move || {
            verify_local(&w, &m, &b)?;
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(io_err("remove an earlier attempt"))?;
            }
            std::fs::create_dir_all(d.join("db")).map_err(io_err("create the site folder"))?;
            gunzip_file(&w.join(DATABASE_FILE), &db)?;
            let count = match m.file(FILES_FILE) {
                Some(_) => Some(untar_files(&w.join(FILES_FILE), &d)?),
                None => None,
            };
            super::write_atomic(&d.join("site_config.json"), &config_bytes(&config))
                .map_err(io_err("write site_config.json"))?;
            Ok(count)
        })
        .await?;
        let (d, db) = (dest.to_path_buf(), db_path);
        blocking(move || {
            sitedb::check_restored(&db, made_by)?;
            for p in [db.as_path(), d.join("db").as_path(), d.as_path()] {
                sync_path(p)?;
            }
            Ok(())
        })
        .await?;
        Ok(count)
    }

    /// Step "Restore Site": builds the restored site beside the live one from the verified
    /// download, then swaps the folders. Until the swap the site is exactly as it was.
    pub(super) async fn restore_site(&self, r: &RestoreSite, ctx: StepContext) -> StepResult {
        let mut log = Log::default();
        let site = &r.site;
        let sites = self.sites_dir(site);
        let dir = self.site_dir(site);
        let work = self.work_dir(ctx);
        let staging = sites.join(format!(".restore-{}.{}", site.name, ctx.job_id));
        let old = sites.join(format!(".restore-old-{}.{}", site.name, ctx.job_id));
        let w = work.clone();
        let manifest = blocking(move || read_manifest(&w))
            .await
            .map_err(|e| log.fail(e))?;
        let backup = r.backup.to_string();
        // A restore cut short during its swap: undo the half-done swap, or finish a done one.
        let (d, o) = (dir.clone(), old.clone());
        let swapped = blocking(move || {
            if o.exists() && !d.exists() {
                std::fs::rename(&o, &d).map_err(io_err("put the site back"))?;
                return Ok(false);
            }
            Ok(o.exists())
        })
        .await
        .map_err(|e| log.fail(e))?;
        if !swapped {
            let (d, s) = (dir.clone(), site.clone());
            let current = blocking(move || read_config(&d, &s))
                .await
                .map_err(|e| log.fail(e))?;
            let db_name = current
                .get("db_name")
                .and_then(Value::as_str)
                .ok_or_else(|| log.fail("site_config.json has no db_name"))?
                .to_string();
            let count = Self::build_from_backup(
                &work, &staging, &manifest, &db_name, current, None, &backup,
            )
            .await
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging);
                log.fail(e)
            })?;
            log.line(format!(
                "restore the database {db_name} from backup {backup} (SQLite quick_check ok)"
            ));
            match count {
                Some(n) => log.line(format!("unpack the site's files ({n} entries)")),
                None => log.line("the backup has no files: the site keeps its own"),
            }
            let (d, o, st) = (dir.clone(), old.clone(), staging.clone());
            let dbs = self.dbs.clone();
            blocking(move || {
                dbs.close_under(&d);
                std::fs::rename(&d, &o).map_err(io_err("move the site aside"))?;
                if let Err(e) = std::fs::rename(&st, &d) {
                    let _ = std::fs::rename(&o, &d);
                    return Err(format!("cannot move the restored site into place: {e}"));
                }
                Ok(())
            })
            .await
            .map_err(|e| log.fail(e))?;
            log.line(format!("swap sites/{} for the restored folder", site.name));
        }
        // Without files in the backup, the site's own files move into the restored folder.
        let (d, o, s) = (dir.clone(), old.clone(), sites.clone());
        let keep_files = manifest.file(FILES_FILE).is_none();
        blocking(move || {
            if keep_files {
                for e in std::fs::read_dir(&o).map_err(io_err("list the old site folder"))? {
                    let e = e.map_err(io_err("list the old site folder"))?;
                    let name = e.file_name();
                    let n = name.to_string_lossy();
                    if n == "db" || n == "site_config.json" || d.join(&name).exists() {
                        continue;
                    }
                    std::fs::rename(e.path(), d.join(&name))
                        .map_err(io_err("keep the site's files"))?;
                }
            }
            sync_path(&d)?;
            std::fs::remove_dir_all(&o).map_err(io_err("remove the old site folder"))?;
            sync_path(&s)
        })
        .await
        .map_err(|e| log.fail(e))?;
        self.clean_work(ctx.job_id).await;
        log.done(Some(json!({
            "site": site.name.as_str(),
            "bench": site.bench.as_str(),
            "restored_from": backup,
            "with_files": manifest.with_files,
        })))
    }

    /// Step "New Site from Backup": a new site folder built from the verified download (with
    /// its own database name and password), moved into place as "New Site" does.
    pub(super) async fn new_site_from_backup(
        &self,
        n: &NewSiteFromBackup,
        ctx: StepContext,
    ) -> StepResult {
        let mut log = Log::default();
        let site = &n.site;
        let sites = self.sites_dir(site);
        let dir = self.site_dir(site);
        let job = ctx.job_id.to_string();
        let db_name = db_name_for(&dir);
        let backup = n.backup.to_string();
        let result = json!({"site": site.name.as_str(), "bench": site.bench.as_str(),
                            "db_name": db_name, "restored_from": backup});
        let (d, s, j) = (dir.clone(), site.clone(), ctx.job_id);
        let done = blocking(move || site_free(&d, &s, j))
            .await
            .map_err(|e| log.fail(e))?;
        if let Some(done) = done {
            log.line(done);
            self.clean_work(ctx.job_id).await;
            return log.done(Some(result));
        }
        let work = self.work_dir(ctx);
        let w = work.clone();
        let manifest = blocking(move || read_manifest(&w))
            .await
            .map_err(|e| log.fail(e))?;
        let mut config = manifest.site_config.clone();
        for k in MANAGED_CONFIG_KEYS {
            config.remove(*k);
        }
        let db_password = Secret::generate(16);
        config.insert("db_name".into(), json!(db_name));
        config.insert("db_password".into(), json!(db_password.expose()));
        config.insert("db_type".into(), json!("sqlite"));
        let tmp = sites.join(format!(".new-{}.{}", site.name, job));
        let count = Self::build_from_backup(
            &work,
            &tmp,
            &manifest,
            &db_name,
            config,
            Some(ctx.job_id),
            &backup,
        )
        .await
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            log.fail(e)
        })?;
        log.line(format!("create site folder sites/{}", site.name));
        log.line(format!(
            "write sites/{}/site_config.json (the backup's, with db_name={db_name}, db_password=***, db_type=sqlite)",
            site.name
        ));
        log.line(format!(
            "restore database {db_name} from backup {backup} (apps {}; SQLite quick_check ok)",
            manifest.apps.join(", ")
        ));
        if let Some(c) = count {
            log.line(format!("unpack the site's files ({c} entries)"));
        }
        let (t, d, s) = (tmp.clone(), dir.clone(), sites.clone());
        let name = site.name.to_string();
        blocking(move || {
            if d.exists() {
                let _ = std::fs::remove_dir_all(&t);
                return Err(format!("site '{name}' already exists"));
            }
            std::fs::rename(&t, &d).map_err(io_err("move the site folder into place"))?;
            sync_path(&s)
        })
        .await
        .map_err(|e| log.fail(e))?;
        self.clean_work(ctx.job_id).await;
        log.done(Some(result))
    }

    /// Step "Delete Site Backup": the manifest first, so a half-deleted backup is never
    /// usable, then the rest. A backup already deleted (or never uploaded) is a success.
    pub(super) async fn delete_backup(&self, d: &DeleteBackup) -> StepResult {
        let mut log = Log::default();
        let offsite = self.offsite(&log)?;
        let deleted = offsite
            .delete_backup(&d.backup)
            .await
            .map_err(|e| log.fail(e))?;
        if deleted.is_empty() {
            log.line(format!(
                "backup {} is not in s3://{} (already deleted)",
                d.backup,
                offsite.bucket()
            ));
        }
        for key in &deleted {
            log.line(format!("delete s3://{}/{key}", offsite.bucket()));
        }
        log.done(Some(json!({
            "site": d.site.name.as_str(),
            "backup": d.backup.to_string(),
            "deleted": deleted.len(),
        })))
    }
}
