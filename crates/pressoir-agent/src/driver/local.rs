//! The `local` driver: a bench is `<data-dir>/benches/<bench>/` with `sites/` and
//! `sites/apps.txt` (the apps it offers); a site is `sites/<name>/` with Frappe's
//! `site_config.json` and its database, an SQLite file in `sites/<name>/db/` holding the
//! site's installed apps, users, password hashes and settings (Frappe's own table names).

use super::{Driver, StepContext, StepDone, StepFailed, StepResult, Usage};
use crate::config::Benches;
use crate::error::Error;
use crate::job::{JobSpec, NewSite, SiteApp, SiteRef, StepKind, UpdateConfig};
use futures::future::BoxFuture;
use pressoir_core::Secret;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod backup;
mod sitedb;

use sitedb::SiteDbs;

pub struct LocalDriver {
    root: PathBuf,
    dbs: Arc<SiteDbs>,
    hashing: Arc<PasswordHashing>,
    /// Where backups go; `None` fails backup and restore jobs clearly.
    offsite: Option<Arc<crate::backup::Offsite>>,
    /// `<data-dir>/backup-work/<job id>/`: dumps before upload, downloads before restore.
    work: PathBuf,
}

/// Argon2id for the Administrator password, the heaviest work of a New Site job. It runs on
/// blocking threads through `argon2-rust`, whose AVX-512/AVX2/NEON compression (chosen at run
/// time) takes half the CPU of the RustCrypto `argon2` crate for the same hash (the agent
/// benchmark prints both). Each hash borrows a `Hasher` that keeps its working memory mapped
/// between hashes and wipes it after each one; there are as many as hashes ran at once, at
/// most one per worker.
#[derive(Default)]
struct PasswordHashing {
    hashers: Mutex<Vec<argon2_rust::Hasher>>,
}

impl PasswordHashing {
    /// The PHC string (`$argon2id$v=19$m=7168,t=5,p=1$<salt>$<hash>`) of `pw`, with a fresh
    /// 16-byte salt from the OS. Blocking.
    fn hash(&self, pw: &Secret) -> Result<String, String> {
        let taken = self.hashers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut hasher = taken.unwrap_or_else(password_hasher);
        let hash = hasher.hash_password_with_random_salt(pw.expose().as_bytes());
        self.hashers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hasher);
        hash.map_err(|e| format!("cannot hash the password: {e}"))
    }
}

/// The Administrator password's Argon2id (v1.3) with m=7 MiB, t=5, p=1, one of the five
/// settings OWASP's Password Storage Cheat Sheet lists as giving an equal level of defence
/// (m=19 MiB, t=2 is another). Of those it costs the least CPU here, because its memory
/// stays in the cache (the agent benchmark prints it beside m=19 MiB, t=2).
pub fn password_hasher() -> argon2_rust::Hasher {
    password_hasher_with(7 * 1024, 5)
}

/// An Argon2id v1.3 hasher with `kib` KiB of memory, `passes` passes and one lane.
pub fn password_hasher_with(kib: u64, passes: u32) -> argon2_rust::Hasher {
    use argon2_rust::{Algorithm, Argon2, Params, Version, params::Memory};
    let params = Params::builder()
        .memory(Memory::kib(kib))
        .passes(passes)
        .lanes(1)
        .build()
        .expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hasher()
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Runs a whole step on a blocking thread (file and site-database work, hashing).
async fn blocking_step(f: impl FnOnce() -> StepResult + Send + 'static) -> StepResult {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StepFailed::new("", format!("step task failed: {e}"))))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("step task failed: {e}")))
}

/// Writes a file so that it is either the old or the new content, never half of it: a
/// temporary file beside it, fsync, rename over, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `site_config.json` as Frappe writes it: sorted keys, one-space indent.
fn config_bytes(config: &Map<String, Value>) -> Vec<u8> {
    let sorted: std::collections::BTreeMap<&String, &Value> = config.iter().collect();
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    let _ = serde::Serialize::serialize(&sorted, &mut ser);
    out
}

fn read_config(site_dir: &Path, site: &SiteRef) -> Result<Map<String, Value>, String> {
    let path = site_dir.join("site_config.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "site '{}' does not exist on bench '{}'",
                site.name, site.bench
            ));
        }
        Err(e) => return Err(format!("cannot read site_config.json: {e}")),
    };
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("site_config.json is not a JSON object".into()),
    }
}

/// Whether the site folder `dir` exists (`None` when not), and whether job `job` built it:
/// the job that builds a site records itself in the site's database.
fn made_by(dir: &Path, job: i64) -> Option<bool> {
    if !dir.exists() {
        return None;
    }
    let db = db_file(dir, &db_name_for(dir));
    Some(sitedb::created_by(&db) == Some(job))
}

/// Before job `job` builds `site` in `dir`: `Ok(None)` when the folder is free, `Ok(Some(line))`
/// when this job already built it (its step is run again after a restart: nothing to do),
/// and the failure when another site is there.
fn site_free(dir: &Path, site: &SiteRef, job: i64) -> Result<Option<String>, String> {
    match made_by(dir, job) {
        None => Ok(None),
        Some(true) => Ok(Some(format!(
            "site folder sites/{} was already created by this job",
            site.name
        ))),
        Some(false) => Err(format!(
            "site '{}' already exists on bench '{}'",
            site.name, site.bench
        )),
    }
}

/// Where the site in `dir` keeps its database `db_name`.
fn db_file(dir: &Path, db_name: &str) -> PathBuf {
    dir.join("db").join(format!("{db_name}.db"))
}

/// The database name of the site in `dir`: derived from its path, so a site made again on
/// the same path (a resumed step) gets the same name.
fn db_name_for(dir: &Path) -> String {
    format!(
        "_{}",
        &hex::encode(Sha256::digest(dir.to_string_lossy().as_bytes()))[..16]
    )
}

fn now_text() -> String {
    crate::store::rfc3339_ms(pressoir_core::clock::now_ms())
}

/// Lines of what a step did; secrets are written as `***`.
#[derive(Default)]
struct Log(Vec<String>);

impl Log {
    fn line(&mut self, s: impl Into<String>) {
        self.0.push(s.into());
    }
    fn text(&self) -> String {
        self.0.join("\n")
    }
    fn fail(&self, reason: impl Into<String>) -> StepFailed {
        let reason = reason.into();
        let mut out = self.0.clone();
        out.push(format!("error: {reason}"));
        StepFailed::new(out.join("\n"), reason)
    }
    fn done(&self, result: Option<Value>) -> StepResult {
        Ok(StepDone {
            output: self.text(),
            result,
        })
    }
}

impl LocalDriver {
    /// Creates `<data_dir>/benches/<bench>/sites/` for every bench, with its `apps.txt`.
    pub fn new(data_dir: &Path, benches: &Benches) -> Result<LocalDriver, Error> {
        let root = data_dir.join("benches");
        for (bench, apps) in benches.iter() {
            let sites = root.join(bench.as_str()).join("sites");
            std::fs::create_dir_all(sites.join("archived"))
                .map_err(Error::io(format!("create {}", sites.display())))?;
            let list: String = apps.iter().map(|a| format!("{a}\n")).collect();
            write_atomic(&sites.join("apps.txt"), list.as_bytes())
                .map_err(Error::io("write apps.txt"))?;
            let common = sites.join("common_site_config.json");
            if !common.exists() {
                write_atomic(&common, b"{}").map_err(Error::io("write common_site_config.json"))?;
            }
        }
        Ok(LocalDriver {
            root,
            dbs: Arc::default(),
            hashing: Arc::default(),
            offsite: None,
            work: data_dir.join("backup-work"),
        })
    }

    /// Sends backups to (and restores them from) `offsite`.
    pub fn with_offsite(mut self, offsite: Option<crate::backup::Offsite>) -> Self {
        self.offsite = offsite.map(Arc::new);
        self
    }

    fn sites_dir(&self, site: &SiteRef) -> PathBuf {
        self.root.join(site.bench.as_str()).join("sites")
    }

    fn site_dir(&self, site: &SiteRef) -> PathBuf {
        self.sites_dir(site).join(site.name.as_str())
    }

    /// Runs `f` on `site`'s database on a blocking thread: the file named by the site's
    /// `db_name`, opened or taken from the cache.
    async fn on_site_db<T: Send + 'static>(
        &self,
        site: &SiteRef,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let (dir, site, dbs) = (self.site_dir(site), site.clone(), self.dbs.clone());
        blocking(move || {
            let config = read_config(&dir, &site)?;
            let db_name = config
                .get("db_name")
                .and_then(Value::as_str)
                .ok_or("site_config.json has no db_name")?;
            let path = db_file(&dir, db_name);
            if !path.exists() {
                dbs.close_under(&path);
                return Err(format!("the database of site '{}' is missing", site.name));
            }
            dbs.with(&path, f)
        })
        .await
    }

    async fn new_site(&self, n: &NewSite, ctx: StepContext) -> StepResult {
        let site = n.site.clone();
        let (sites, dir) = (self.sites_dir(&site), self.site_dir(&site));
        let job = ctx.job_id.to_string();
        blocking_step(move || {
            let mut log = Log::default();
            let db_name = db_name_for(&dir);
            let result = json!({"site": site.name.as_str(), "bench": site.bench.as_str(), "db_name": db_name});
            if let Some(done) = site_free(&dir, &site, ctx.job_id).map_err(|e| log.fail(e))? {
                log.line(done);
                return log.done(Some(result));
            }
            let tmp = sites.join(format!(".new-{}.{}", site.name, job));
            let db_path = db_file(&tmp, &db_name);
            let db_password = Secret::generate(16);
            let mut config = Map::new();
            config.insert("db_name".into(), json!(db_name));
            config.insert("db_password".into(), json!(db_password.expose()));
            config.insert("db_type".into(), json!("sqlite"));
            let files = (|| {
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp).map_err(io_err("remove an earlier attempt"))?;
                }
                std::fs::create_dir_all(tmp.join("db")).map_err(io_err("create the site folder"))?;
                // Written in place: the folder is unseen until it is renamed into place whole.
                std::fs::write(tmp.join("site_config.json"), config_bytes(&config))
                    .map_err(io_err("write site_config.json"))
            })();
            files.map_err(|e| log.fail(e))?;
            log.line(format!("create site folder sites/{}", site.name));
            log.line(format!(
                "write sites/{}/site_config.json (db_name={db_name}, db_password=***, db_type=sqlite)",
                site.name
            ));
            sitedb::create(&db_path, &now_text(), ctx.job_id)
                .map_err(|e| log.fail(format!("cannot create the site database: {e}")))?;
            log.line(format!(
                "create database sites/{}/db/{db_name}.db (users Administrator, Guest)",
                site.name
            ));
            log.line("install-app frappe");
            let moved = (|| {
                // Everything in the new folder is on disk before the folder appears.
                let (config, db_dir) = (tmp.join("site_config.json"), tmp.join("db"));
                for p in [&config, &db_path, &db_dir, &tmp] {
                    std::fs::File::open(p)
                        .and_then(|f| f.sync_all())
                        .map_err(io_err("sync the new site folder"))?;
                }
                if dir.exists() {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(format!("site '{}' already exists", site.name));
                }
                std::fs::rename(&tmp, &dir).map_err(io_err("move the site folder into place"))?;
                std::fs::File::open(&sites)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("sync sites/"))
            })();
            moved.map_err(|e| log.fail(e))?;
            log.done(Some(result))
        })
        .await
    }

    async fn install_apps(&self, site: &SiteRef, apps: &[crate::names::AppName]) -> StepResult {
        let mut log = Log::default();
        let apps: Vec<String> = apps
            .iter()
            .filter(|a| a.as_str() != "frappe")
            .map(|a| a.to_string())
            .collect();
        let now = now_text();
        let recorded = apps.clone();
        self.on_site_db(site, move |c| {
            sitedb::install_all(c, &recorded, &now)
                .map_err(|e| format!("cannot record the apps: {e}"))
        })
        .await
        .map_err(|e| log.fail(e))?;
        if apps.is_empty() {
            log.line("no apps besides frappe");
        }
        for app in apps {
            log.line(format!("install-app {app}"));
        }
        log.done(None)
    }

    async fn update_config(
        &self,
        site: &SiteRef,
        set: &Map<String, Value>,
        remove: &[String],
    ) -> StepResult {
        let mut log = Log::default();
        let dir = self.site_dir(site);
        if set.is_empty() && remove.is_empty() {
            // Nothing to change: check the site is there, leave its file alone.
            let s = site.clone();
            blocking(move || read_config(&dir, &s).map(|_| ()))
                .await
                .map_err(|e| log.fail(e))?;
            log.line("no configuration to merge");
            return log.done(None);
        }
        let (s, set2, remove2) = (site.clone(), set.clone(), remove.to_vec());
        let (changed, removed) = blocking(move || {
            let mut config = read_config(&dir, &s)?;
            let mut changed = Vec::new();
            for (k, v) in set2 {
                changed.push(k.clone());
                config.insert(k, v);
            }
            let mut removed = Vec::new();
            for k in remove2 {
                if config.remove(&k).is_some() {
                    removed.push(k);
                }
            }
            write_atomic(&dir.join("site_config.json"), &config_bytes(&config))
                .map_err(io_err("write site_config.json"))?;
            Ok((changed, removed))
        })
        .await
        .map_err(|e| log.fail(e))?;
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        log.line(format!(
            "write sites/{}/site_config.json atomically: set {}; removed {}",
            site.name,
            list(&changed),
            list(&removed)
        ));
        log.done(None)
    }

    async fn set_admin_password(&self, site: &SiteRef, pw: &Secret) -> StepResult {
        let mut log = Log::default();
        let (hashing, pw) = (self.hashing.clone(), pw.clone());
        self.on_site_db(site, move |c| {
            let hash = hashing.hash(&pw)?;
            sitedb::set_admin_password(c, &hash)
                .map_err(|e| format!("cannot store the password: {e}"))
        })
        .await
        .map_err(|e| log.fail(e))?;
        log.line("set-admin-password *** (argon2id hash stored in __Auth)");
        log.done(None)
    }

    async fn enable_scheduler(&self, site: &SiteRef) -> StepResult {
        let mut log = Log::default();
        self.on_site_db(site, |c| {
            sitedb::enable_scheduler(c).map_err(|e| format!("cannot enable the scheduler: {e}"))
        })
        .await
        .map_err(|e| log.fail(e))?;
        log.line("scheduler enable");
        log.done(None)
    }

    async fn archive(&self, site: &SiteRef, ctx: StepContext) -> StepResult {
        let mut log = Log::default();
        let dir = self.site_dir(site);
        let archived = self.sites_dir(site).join("archived");
        let s = site.clone();
        let stamp = time_stamp();
        let dbs = self.dbs.clone();
        let (dest, dropped) = blocking(move || {
            dbs.close_under(&dir);
            let config = read_config(&dir, &s)?;
            let mut dropped = None;
            if let Some(db) = config.get("db_name").and_then(Value::as_str) {
                let db_dir = dir.join("db");
                if db_dir.exists() {
                    std::fs::remove_dir_all(&db_dir).map_err(io_err("drop the site database"))?;
                    dropped = Some(db.to_string());
                }
            }
            std::fs::create_dir_all(&archived).map_err(io_err("create sites/archived"))?;
            let mut dest = archived.join(format!("{}-{stamp}", s.name));
            if dest.exists() {
                dest = archived.join(format!("{}-{stamp}-{}", s.name, ctx.job_id));
            }
            std::fs::rename(&dir, &dest).map_err(io_err("move the site folder"))?;
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, dropped))
        })
        .await
        .map_err(|e| log.fail(e))?;
        match dropped {
            Some(db) => log.line(format!("drop database {db}")),
            None => log.line("no database to drop"),
        }
        log.line(format!("move sites/{} to sites/archived/{dest}", site.name));
        log.done(Some(
            json!({"site": site.name.as_str(), "archived_as": format!("archived/{dest}")}),
        ))
    }

    async fn install_app(&self, a: &SiteApp) -> StepResult {
        let mut log = Log::default();
        let (app, now) = (a.app.to_string(), now_text());
        let fresh = self
            .on_site_db(&a.site, move |c| {
                sitedb::install(c, &app, &now).map_err(|e| format!("cannot record the app: {e}"))
            })
            .await
            .map_err(|e| log.fail(e))?;
        if fresh {
            log.line(format!("install-app {}", a.app));
        } else {
            log.line(format!("app {} is already installed", a.app));
        }
        log.done(None)
    }

    async fn uninstall_app(&self, a: &SiteApp, ctx: StepContext) -> StepResult {
        let mut log = Log::default();
        let app = a.app.to_string();
        let removed = self
            .on_site_db(&a.site, move |c| {
                sitedb::uninstall(c, &app).map_err(|e| format!("cannot remove the app: {e}"))
            })
            .await
            .map_err(|e| log.fail(e))?;
        if removed {
            log.line(format!("uninstall-app {} --yes", a.app));
        } else if ctx.resumed {
            log.line(format!("app {} was already uninstalled", a.app));
        } else {
            return Err(log.fail(format!(
                "app '{}' is not installed on site '{}'",
                a.app, a.site.name
            )));
        }
        log.done(None)
    }
}

fn time_stamp() -> String {
    let t = crate::store::rfc3339_ms(pressoir_core::clock::now_ms());
    t.chars().filter(|c| c.is_ascii_digit()).collect()
}

impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    fn resumable(&self, step: StepKind) -> bool {
        // Archiving drops the database before it moves the folder: run twice, the second
        // run would find a site without its database. Every other step can run again.
        step != StepKind::ArchiveSite
    }

    fn usage<'a>(&'a self, site: &'a SiteRef) -> BoxFuture<'a, Result<Option<Usage>, String>> {
        let dir = self.site_dir(site);
        let site = site.clone();
        Box::pin(blocking(move || measure_site(&dir, &site)))
    }

    fn run<'a>(
        &'a self,
        job: &'a JobSpec,
        step: StepKind,
        ctx: StepContext,
    ) -> BoxFuture<'a, StepResult> {
        Box::pin(async move {
            let result = self.run_step(job, step, ctx).await;
            let backup_step = matches!(
                step,
                StepKind::BackupSite
                    | StepKind::UploadBackup
                    | StepKind::DownloadBackup
                    | StepKind::RestoreSite
                    | StepKind::NewSiteFromBackup
            );
            if result.is_err() && (backup_step || matches!(job, JobSpec::BackupAndArchive(_))) {
                // A failed job does not run again: its dumps or downloads are of no use.
                self.clean_work(ctx.job_id).await;
            }
            result
        })
    }
}

/// Sizes a site folder: `db/<db_name>.db` and its `-wal`/`-shm` are the database, every
/// other file below the folder (symlinks not followed, nor counted) is the site's files.
fn measure_site(dir: &Path, site: &SiteRef) -> Result<Option<Usage>, String> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot stat the site folder: {e}")),
    }
    let config = match read_config(dir, site) {
        Ok(c) => c,
        // Not a site (or archived meanwhile): nothing to measure.
        Err(_) if !dir.join("site_config.json").is_file() => return Ok(None),
        Err(e) => return Err(e),
    };
    let db_files: Vec<PathBuf> = match config.get("db_name").and_then(Value::as_str) {
        Some(db) => ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| dir.join("db").join(format!("{db}.db{suffix}")))
            .collect(),
        None => Vec::new(),
    };
    let mut usage = Usage::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            // Removed while we walked (a temp file, a job's work): it takes nothing now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot list {}: {e}", d.display())),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("cannot list the site folder"))?;
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot stat {}: {e}", path.display())),
            };
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                if db_files.contains(&path) {
                    usage.database_bytes += meta.len();
                } else {
                    usage.files_bytes += meta.len();
                }
            }
        }
    }
    Ok(Some(usage))
}

impl LocalDriver {
    async fn run_step(&self, job: &JobSpec, step: StepKind, ctx: StepContext) -> StepResult {
        {
            match (job, step) {
                (JobSpec::Ping, StepKind::Ping) => Ok(StepDone {
                    output: "pong".into(),
                    result: None,
                }),
                (JobSpec::NewSite(n), StepKind::NewSite) => self.new_site(n, ctx).await,
                (JobSpec::NewSite(n), StepKind::InstallApps) => {
                    self.install_apps(&n.site, &n.apps).await
                }
                (JobSpec::NewSite(n), StepKind::UpdateSiteConfiguration) => {
                    self.update_config(&n.site, &n.config, &[]).await
                }
                (JobSpec::NewSite(n), StepKind::SetAdministratorPassword) => {
                    self.set_admin_password(&n.site, &n.admin_password).await
                }
                (JobSpec::BackupSite(b), StepKind::BackupSite) => self.backup_site(b, ctx).await,
                (JobSpec::BackupSite(b), StepKind::UploadBackup) => {
                    self.upload_backup(b, ctx, false).await
                }
                (JobSpec::BackupAndArchive(b), StepKind::BackupSite) => {
                    self.backup_site(b, ctx).await
                }
                (JobSpec::BackupAndArchive(b), StepKind::UploadBackup) => {
                    self.upload_backup(b, ctx, true).await
                }
                (JobSpec::BackupAndArchive(b), StepKind::ArchiveSite) => {
                    self.archive_after_backup(b, ctx).await
                }
                (JobSpec::RestoreSite(r), StepKind::DownloadBackup) => {
                    self.download_backup(&r.backup, ctx).await
                }
                (JobSpec::RestoreSite(r), StepKind::RestoreSite) => self.restore_site(r, ctx).await,
                (JobSpec::DeleteBackup(d), StepKind::DeleteBackup) => self.delete_backup(d).await,
                (JobSpec::NewSiteFromBackup(n), StepKind::DownloadBackup) => {
                    self.download_backup(&n.backup, ctx).await
                }
                (JobSpec::NewSiteFromBackup(n), StepKind::NewSiteFromBackup) => {
                    self.new_site_from_backup(n, ctx).await
                }
                (JobSpec::NewSiteFromBackup(n), StepKind::InstallApps) => {
                    self.install_apps(&n.site, &n.apps).await
                }
                (JobSpec::NewSiteFromBackup(n), StepKind::UpdateSiteConfiguration) => {
                    self.update_config(&n.site, &n.config, &[]).await
                }
                (JobSpec::NewSiteFromBackup(n), StepKind::SetAdministratorPassword) => {
                    match &n.admin_password {
                        Some(pw) => self.set_admin_password(&n.site, pw).await,
                        None => Ok(StepDone {
                            output: "kept the backup's Administrator password".into(),
                            result: None,
                        }),
                    }
                }
                (JobSpec::NewSiteFromBackup(n), StepKind::EnableScheduler) => {
                    self.enable_scheduler(&n.site).await
                }
                (JobSpec::NewSite(n), StepKind::EnableScheduler) => {
                    self.enable_scheduler(&n.site).await
                }
                (JobSpec::ArchiveSite(s), StepKind::ArchiveSite) => self.archive(s, ctx).await,
                (JobSpec::InstallApp(a), StepKind::InstallApp) => self.install_app(a).await,
                (JobSpec::UninstallApp(a), StepKind::UninstallApp) => {
                    self.uninstall_app(a, ctx).await
                }
                (
                    JobSpec::UpdateSiteConfiguration(UpdateConfig {
                        site,
                        config,
                        remove,
                    }),
                    StepKind::UpdateSiteConfiguration,
                ) => self.update_config(site, config, remove).await,
                (job, step) => Err(StepFailed::new(
                    "",
                    format!(
                        "the local driver has no step '{}' for '{}'",
                        step.name(),
                        job.job_type()
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("site_config.json");
        write_atomic(&p, b"{\"a\": 1}").unwrap();
        write_atomic(&p, b"{\"b\": 2}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"b\": 2}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }

    #[test]
    fn hashes_verify_with_the_rustcrypto_argon2_crate() {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let hashing = PasswordHashing::default();
        let hash = |pw: &str| hashing.hash(&Secret::new(pw.to_string())).unwrap();
        let a = hash("first password");
        let b = hash("second password");
        let c = hash("first password");
        assert!(b.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{b}");
        assert_ne!(a, c, "a fresh salt each time");
        let verify = |h: &str, pw: &[u8]| {
            argon2::Argon2::default()
                .verify_password(pw, &PasswordHash::new(h).unwrap())
                .is_ok()
        };
        assert!(verify(&a, b"first password"));
        assert!(verify(&c, b"first password"));
        assert!(
            verify(&b, b"second password"),
            "a reused hasher hashes as a fresh one"
        );
        assert!(!verify(&b, b"first password"));
    }

    #[test]
    fn a_site_knows_the_job_that_built_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a.example.com");
        assert_eq!(made_by(&dir, 7), None, "no folder");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        assert_eq!(
            made_by(&dir, 7),
            Some(false),
            "a folder without our database"
        );
        let db = db_file(&dir, &db_name_for(&dir));
        sitedb::create(&db, "2026-12-04T00:00:00.000Z", 7).unwrap();
        assert_eq!(made_by(&dir, 7), Some(true));
        assert_eq!(made_by(&dir, 8), Some(false), "another job's site");
        let site = SiteRef {
            bench: crate::names::BenchName::parse("bench-0001").unwrap(),
            name: crate::names::SiteName::parse("a.example.com").unwrap(),
        };
        assert!(
            site_free(&dir, &site, 7).unwrap().is_some(),
            "its own: done"
        );
        assert!(
            site_free(&dir, &site, 8)
                .unwrap_err()
                .contains("already exists")
        );
    }

    #[test]
    fn config_is_written_like_frappe() {
        let mut m = Map::new();
        m.insert("z".into(), json!(1));
        m.insert("a".into(), json!("x"));
        assert_eq!(
            String::from_utf8(config_bytes(&m)).unwrap(),
            "{\n \"a\": \"x\",\n \"z\": 1\n}"
        );
    }
}
