//! All of Press's SQL, portable between SQLite and PostgreSQL (`$1` placeholders, sqlx `Any`).
//! Handlers and the dispatcher call these functions and never write SQL themselves.

use crate::domain::{self, job_status};
use crate::error::{Error, Result};
use pressoir_core::clock::now_ms;
use pressoir_core::db::{Db, is_unique_violation};
use serde_json::{Value, json};
use sqlx::{Any, FromRow, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct Store {
    pub db: Db,
    sites: Arc<SiteCache>,
}

/// How long a site read by name may be served from memory. Writes made through this process
/// clear the cache at once; this bounds how long another replica's writes can go unseen.
pub const SITE_CACHE_TTL: Duration = Duration::from_secs(1);

/// Sites by (team scope, full name), as [`Store::site`] found them. Every write to `sites`
/// through this store calls [`Store::sites_changed`] after its commit, which empties the cache
/// and bumps its generation; a read that began before the bump finds the generation moved
/// and does not keep what it read, so a status committed here is never answered stale.
#[derive(Default)]
struct SiteCache {
    inner: Mutex<SiteCacheInner>,
}

#[derive(Default)]
struct SiteCacheInner {
    generation: u64,
    map: HashMap<(Option<String>, String), (Site, Instant)>,
}

impl SiteCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, SiteCacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct User {
    pub name: String,
    pub full_name: String,
    pub password_hash: String,
    pub is_admin: i64,
    pub enabled: i64,
    pub default_team: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct Team {
    pub name: String,
    pub title: String,
    pub owner: String,
    pub enabled: i64,
    pub created: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct Session {
    pub user_name: String,
    pub csrf_token: String,
    pub expires: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct Plan {
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub cpu_time_per_day: i64,
    pub max_database_mb: i64,
    pub max_storage_mb: i64,
    pub billing_code: String,
    pub is_trial: i64,
    pub enabled: i64,
    pub idx: i64,
}

#[derive(Clone, FromRow)]
pub struct Server {
    pub name: String,
    pub title: String,
    pub team: String,
    pub status: String,
    pub agent_url: String,
    pub agent_password: String,
    pub use_for_new_sites: i64,
    pub created: i64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("agent_url", &self.agent_url)
            .finish()
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct Bench {
    pub server: String,
    pub name: String,
    pub apps: String,
    pub status: String,
}

impl Bench {
    pub fn app_list(&self) -> Vec<String> {
        serde_json::from_str(&self.apps).unwrap_or_default()
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub subdomain: String,
    pub domain: String,
    pub team: String,
    pub plan: String,
    pub server: String,
    pub bench: String,
    pub status: String,
    pub apps: String,
    pub config: String,
    pub created: i64,
    pub modified: i64,
}

impl Site {
    pub fn app_list(&self) -> Vec<String> {
        serde_json::from_str(&self.apps).unwrap_or_default()
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct Job {
    pub name: String,
    pub server: String,
    pub site_id: Option<String>,
    pub site_name: Option<String>,
    pub team: String,
    pub job_type: String,
    pub request_data: String,
    pub status: String,
    pub agent_id: Option<String>,
    pub steps: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub retry_count: i64,
    pub next_retry_at: i64,
    pub created: i64,
    pub started: Option<i64>,
    pub ended: Option<i64>,
    pub duration_ms: Option<i64>,
}

/// A job to record together with the site change that needs it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub server: String,
    pub job_type: String,
    pub data: Value,
    /// Step names known before the agent answers, shown as Pending.
    pub steps: Vec<String>,
}

/// What an agent reported about one job (GET or push), already parsed.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub name: String,
    pub agent_id: Option<String>,
    pub status: &'static str,
    pub steps: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub started: Option<i64>,
    pub ended: Option<i64>,
    pub duration_ms: Option<i64>,
}

const SITE_COLS: &str = "id, name, subdomain, domain, team, plan, server, bench, status, apps, config, created, modified";
const JOB_COLS: &str = "name, server, site_id, site_name, team, job_type, request_data, status, agent_id, steps, result, error, retry_count, next_retry_at, created, started, ended, duration_ms";
const SERVER_COLS: &str =
    "name, title, team, status, agent_url, agent_password, use_for_new_sites, created";
const PLAN_COLS: &str = "name, price_cents, currency, cpu_time_per_day, max_database_mb, max_storage_mb, billing_code, is_trial, enabled, idx";

pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn steps_json(steps: &[String]) -> String {
    Value::Array(
        steps
            .iter()
            .map(|s| json!({"name": s, "status": "Pending", "started_at": null, "ended_at": null, "duration_ms": null, "output": ""}))
            .collect(),
    )
    .to_string()
}

impl Store {
    pub async fn open(db: Db) -> Result<Store> {
        db.migrate(&SQLITE, &POSTGRES).await?;
        Ok(Store {
            db,
            sites: Arc::default(),
        })
    }

    // ---------- users, teams, sessions, keys ----------

    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        Ok(sqlx::query_as::<Any, User>(
            "SELECT name, full_name, password_hash, is_admin, enabled, default_team FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// Creates a team and its owner's membership; 409 when the name is taken.
    pub async fn create_team(&self, name: &str, title: &str, owner: &str) -> Result<()> {
        let mut tx = self.db.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO teams (name, title, owner, enabled, created) VALUES ($1, $2, $3, 1, $4)",
        )
        .bind(name)
        .bind(title)
        .bind(owner)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        dup(r, || format!("team '{name}' already exists"))?;
        add_member_tx(&mut tx, name, owner).await?;
        sqlx::query("UPDATE users SET default_team = $1 WHERE name = $2 AND default_team IS NULL")
            .bind(name)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_user(
        &self,
        name: &str,
        full_name: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO users (name, full_name, password_hash, is_admin, enabled, default_team, created) VALUES ($1, $2, $3, $4, 1, NULL, $5)",
        )
        .bind(name)
        .bind(full_name)
        .bind(password_hash)
        .bind(is_admin as i64)
        .bind(now_ms())
        .execute(&self.db.pool)
        .await;
        dup(r, || format!("user '{name}' already exists"))?;
        Ok(())
    }

    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(password_hash)
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn add_member(&self, team: &str, user: &str) -> Result<()> {
        let mut tx = self.db.pool.begin().await?;
        add_member_tx(&mut tx, team, user).await?;
        sqlx::query("UPDATE users SET default_team = $1 WHERE name = $2 AND default_team IS NULL")
            .bind(team)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn team(&self, name: &str) -> Result<Option<Team>> {
        Ok(sqlx::query_as::<Any, Team>(
            "SELECT name, title, owner, enabled, created FROM teams WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    pub async fn teams(&self) -> Result<Vec<Team>> {
        Ok(sqlx::query_as::<Any, Team>(
            "SELECT name, title, owner, enabled, created FROM teams ORDER BY name",
        )
        .fetch_all(&self.db.pool)
        .await?)
    }

    pub async fn sites_version(&self, team: &str) -> Result<i64> {
        let r: Option<(i64,)> = sqlx::query_as("SELECT sites_version FROM teams WHERE name = $1")
            .bind(team)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(r.map(|r| r.0).unwrap_or(0))
    }

    pub async fn teams_of(&self, user: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT team FROM team_members WHERE user_name = $1 ORDER BY team")
                .bind(user)
                .fetch_all(&self.db.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    pub async fn is_member(&self, team: &str, user: &str) -> Result<bool> {
        let r: Option<(String,)> =
            sqlx::query_as("SELECT team FROM team_members WHERE team = $1 AND user_name = $2")
                .bind(team)
                .bind(user)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(r.is_some())
    }

    pub async fn create_session(
        &self,
        sid_hash: &str,
        user: &str,
        csrf: &str,
        expires: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO sessions (sid_hash, user_name, csrf_token, expires, created) VALUES ($1, $2, $3, $4, $5)")
            .bind(sid_hash)
            .bind(user)
            .bind(csrf)
            .bind(expires)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn session(&self, sid_hash: &str) -> Result<Option<Session>> {
        Ok(sqlx::query_as::<Any, Session>(
            "SELECT user_name, csrf_token, expires FROM sessions WHERE sid_hash = $1",
        )
        .bind(sid_hash)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    pub async fn delete_session(&self, sid_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE sid_hash = $1")
            .bind(sid_hash)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn purge_sessions(&self, now: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sessions WHERE expires < $1")
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Sets (or replaces) the user's API key; returns the key, kept when it existed.
    pub async fn set_api_secret(
        &self,
        user: &str,
        new_key: &str,
        secret_hash: &str,
    ) -> Result<String> {
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("UPDATE users SET enabled = enabled WHERE name = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT api_key FROM api_keys WHERE user_name = $1")
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        let key = match existing {
            Some((k,)) => {
                sqlx::query("UPDATE api_keys SET secret_hash = $1 WHERE api_key = $2")
                    .bind(secret_hash)
                    .bind(&k)
                    .execute(&mut *tx)
                    .await?;
                k
            }
            None => {
                sqlx::query("INSERT INTO api_keys (api_key, user_name, secret_hash, created) VALUES ($1, $2, $3, $4)")
                    .bind(new_key)
                    .bind(user)
                    .bind(secret_hash)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                new_key.to_string()
            }
        };
        tx.commit().await?;
        Ok(key)
    }

    /// `(user, secret_hash)` of an API key.
    pub async fn api_key(&self, key: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT user_name, secret_hash FROM api_keys WHERE api_key = $1")
                .bind(key)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    // ---------- plans, servers, benches ----------

    pub async fn upsert_plan(&self, p: &Plan) -> Result<()> {
        let exists = self.plan(&p.name).await?.is_some();
        let sql = if exists {
            "UPDATE plans SET price_cents = $2, currency = $3, cpu_time_per_day = $4, max_database_mb = $5, max_storage_mb = $6, billing_code = $7, is_trial = $8, enabled = $9, idx = $10 WHERE name = $1"
        } else {
            "INSERT INTO plans (name, price_cents, currency, cpu_time_per_day, max_database_mb, max_storage_mb, billing_code, is_trial, enabled, idx) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        };
        sqlx::query(sql)
            .bind(&p.name)
            .bind(p.price_cents)
            .bind(&p.currency)
            .bind(p.cpu_time_per_day)
            .bind(p.max_database_mb)
            .bind(p.max_storage_mb)
            .bind(&p.billing_code)
            .bind(p.is_trial)
            .bind(p.enabled)
            .bind(p.idx)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn plan(&self, name: &str) -> Result<Option<Plan>> {
        Ok(
            sqlx::query_as::<Any, Plan>(&format!("SELECT {PLAN_COLS} FROM plans WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    pub async fn plans(&self) -> Result<Vec<Plan>> {
        Ok(sqlx::query_as::<Any, Plan>(&format!(
            "SELECT {PLAN_COLS} FROM plans WHERE enabled = 1 ORDER BY idx, name"
        ))
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Inserts a server, or for `update = true` refreshes an existing one's URL and password.
    pub async fn put_server(&self, s: &Server, update: bool) -> Result<()> {
        let mut tx = self.db.pool.begin().await?;
        let exists: Option<(String,)> = sqlx::query_as("SELECT name FROM servers WHERE name = $1")
            .bind(&s.name)
            .fetch_optional(&mut *tx)
            .await?;
        match (exists, update) {
            (Some(_), false) => {
                return Err(Error::duplicate(format!(
                    "server '{}' already exists",
                    s.name
                )));
            }
            (Some(_), true) => {
                sqlx::query(
                    "UPDATE servers SET agent_url = $1, agent_password = $2 WHERE name = $3",
                )
                .bind(&s.agent_url)
                .bind(&s.agent_password)
                .bind(&s.name)
                .execute(&mut *tx)
                .await?;
            }
            (None, _) => {
                let r = sqlx::query(&format!(
                    "INSERT INTO servers ({SERVER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(&s.name)
                .bind(&s.title)
                .bind(&s.team)
                .bind(&s.status)
                .bind(&s.agent_url)
                .bind(&s.agent_password)
                .bind(s.use_for_new_sites)
                .bind(s.created)
                .execute(&mut *tx)
                .await;
                dup(r, || format!("server '{}' already exists", s.name))?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn server(&self, name: &str) -> Result<Option<Server>> {
        Ok(sqlx::query_as::<Any, Server>(&format!(
            "SELECT {SERVER_COLS} FROM servers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    pub async fn servers(&self) -> Result<Vec<Server>> {
        Ok(sqlx::query_as::<Any, Server>(&format!(
            "SELECT {SERVER_COLS} FROM servers WHERE status <> 'Archived' ORDER BY created, name"
        ))
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Moves a server from `old` to `new` and records its `server.status_changed` event, in
    /// one transaction; the UPDATE is conditional on `old`, so of two replicas only one moves
    /// it (and fires). Whether this call moved it.
    pub async fn set_server_status(&self, name: &str, old: &str, new: &str) -> Result<bool> {
        let mut tx = self.db.pool.begin().await?;
        let r = sqlx::query("UPDATE servers SET status = $1 WHERE name = $2 AND status = $3")
            .bind(new)
            .bind(name)
            .bind(old)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let server = sqlx::query_as::<Any, Server>(&format!(
            "SELECT {SERVER_COLS} FROM servers WHERE name = $1"
        ))
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        crate::webhooks::store::server_status_changed(&mut tx, &server, old, new).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn put_bench(&self, server: &str, name: &str, apps: &[String]) -> Result<()> {
        let apps = serde_json::to_string(apps).unwrap_or_else(|_| "[]".into());
        let r = sqlx::query("UPDATE benches SET apps = $1 WHERE server = $2 AND name = $3")
            .bind(&apps)
            .bind(server)
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        if r.rows_affected() == 0 {
            sqlx::query("INSERT INTO benches (server, name, apps, status, created) VALUES ($1, $2, $3, 'Active', $4)")
                .bind(server)
                .bind(name)
                .bind(&apps)
                .bind(now_ms())
                .execute(&self.db.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn benches(&self, server: &str) -> Result<Vec<Bench>> {
        Ok(sqlx::query_as::<Any, Bench>(
            "SELECT server, name, apps, status FROM benches WHERE server = $1 AND status = 'Active' ORDER BY created, name",
        )
        .bind(server)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// Sites on a server and its jobs waiting and running, for `server.status`.
    pub async fn server_counts(&self, server: &str) -> Result<(i64, i64, i64)> {
        let (sites,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM sites WHERE server = $1 AND status <> 'Archived'")
                .bind(server)
                .fetch_one(&self.db.pool)
                .await?;
        let (pending,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM jobs WHERE server = $1 AND status IN ('Undelivered', 'Pending')",
        )
        .bind(server)
        .fetch_one(&self.db.pool)
        .await?;
        let (running,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE server = $1 AND status = 'Running'")
                .bind(server)
                .fetch_one(&self.db.pool)
                .await?;
        Ok((sites, pending, running))
    }

    // ---------- sites and jobs ----------

    /// Stores a new site and its New Site job in one transaction; 409 when the name is live.
    /// A site made from a backup names it in `backup` (a [`BackupUse::Reads`]), checked in
    /// the same transaction.
    pub async fn insert_site(
        &self,
        site: &Site,
        job: &NewJob,
        backup: Option<BackupUse<'_>>,
    ) -> Result<String> {
        let mut tx = self.db.pool.begin().await?;
        if let Some(b) = &backup {
            // The first statement writes, so SQLite takes its write lock before any read.
            lock_sites_tx(&mut tx, &[b.site_id()], None).await?;
            check_backup_use_tx(&mut tx, b).await?;
        }
        let r = sqlx::query(&format!(
            "INSERT INTO sites ({SITE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&site.id)
        .bind(&site.name)
        .bind(&site.subdomain)
        .bind(&site.domain)
        .bind(&site.team)
        .bind(&site.plan)
        .bind(&site.server)
        .bind(&site.bench)
        .bind(&site.status)
        .bind(&site.apps)
        .bind(&site.config)
        .bind(site.created)
        .bind(site.modified)
        .execute(&mut *tx)
        .await;
        dup(r, || format!("Site {} already exists", site.name))?;
        let name = insert_job_tx(&mut tx, job, site).await?;
        event_tx(&mut tx, "site.created", site, None, &site.status).await?;
        bump_tx(&mut tx, &site.team).await?;
        tx.commit().await?;
        self.sites_changed();
        Ok(name)
    }

    /// Records a job for an existing site if the site is still in one of `allowed` states (an
    /// archive only when none is under way) and, for a job that reads or deletes a backup,
    /// if [`BackupUse`]'s rule allows it; the checks and the insert are one transaction.
    pub async fn queue_site_job(
        &self,
        site: &Site,
        job: &NewJob,
        allowed: &[&str],
        backup: Option<BackupUse<'_>>,
    ) -> Result<String> {
        let mut tx = self.db.pool.begin().await?;
        // Lock the rows first so a concurrent transaction on the same site (or backup)
        // serialises behind this one.
        let mut ids = vec![site.id.as_str()];
        ids.extend(backup.as_ref().map(BackupUse::site_id));
        lock_sites_tx(&mut tx, &ids, Some(&site.id)).await?;
        let current: Option<(String,)> = sqlx::query_as("SELECT status FROM sites WHERE id = $1")
            .bind(&site.id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((status,)) = current else {
            return Err(Error::not_found(format!("Site {} not found", site.name)));
        };
        if !allowed.contains(&status.as_str()) {
            return Err(Error::validation(format!("Site is in {status} state")));
        }
        let busy: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM jobs WHERE site_id = $1 AND job_type = $2 AND status NOT IN ('Success', 'Failure')",
        )
        .bind(&site.id)
        .bind(&job.job_type)
        .fetch_optional(&mut *tx)
        .await?;
        if busy.is_some() && job.job_type == domain::job_type::ARCHIVE_SITE {
            return Err(Error::validation(format!(
                "Site {} is already being archived",
                site.name
            )));
        }
        if let Some(b) = &backup {
            check_backup_use_tx(&mut tx, b).await?;
        }
        let name = insert_job_tx(&mut tx, job, site).await?;
        bump_tx(&mut tx, &site.team).await?;
        tx.commit().await?;
        self.sites_changed();
        Ok(name)
    }

    /// The live site of that name, else its latest archived one; scoped to `team` when given.
    /// Served from the site cache when it was read less than [`SITE_CACHE_TTL`] ago.
    pub async fn site(&self, team: Option<&str>, name: &str) -> Result<Option<Site>> {
        let key = (team.map(str::to_string), name.to_string());
        let generation = {
            let c = self.sites.lock();
            if let Some((site, at)) = c.map.get(&key)
                && at.elapsed() < SITE_CACHE_TTL
            {
                return Ok(Some(site.clone()));
            }
            c.generation
        };
        let sql = match team {
            Some(_) => format!(
                "SELECT {SITE_COLS} FROM sites WHERE name = $1 AND team = $2 ORDER BY CASE WHEN status = 'Archived' THEN 1 ELSE 0 END, created DESC LIMIT 1"
            ),
            None => format!(
                "SELECT {SITE_COLS} FROM sites WHERE name = $1 ORDER BY CASE WHEN status = 'Archived' THEN 1 ELSE 0 END, created DESC LIMIT 1"
            ),
        };
        let q = sqlx::query_as::<Any, Site>(&sql).bind(name);
        let q = match team {
            Some(t) => q.bind(t),
            None => q,
        };
        let site = q.fetch_optional(&self.db.pool).await?;
        if let Some(site) = &site {
            let mut c = self.sites.lock();
            if c.generation == generation {
                if c.map.len() >= 10_000 {
                    c.map.clear();
                }
                c.map.insert(key, (site.clone(), Instant::now()));
            }
        }
        Ok(site)
    }

    /// Counts the site writes made through this process: a cache entry taken at one
    /// generation is fit to serve only while the generation stays the same.
    pub fn sites_generation(&self) -> u64 {
        self.sites.lock().generation
    }

    /// Forgets every cached site; called after any committed write to `sites`.
    pub fn sites_changed(&self) {
        let mut c = self.sites.lock();
        c.generation += 1;
        c.map.clear();
    }

    pub async fn site_by_id(&self, id: &str) -> Result<Option<Site>> {
        Ok(
            sqlx::query_as::<Any, Site>(&format!("SELECT {SITE_COLS} FROM sites WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    /// A team's sites, newest first; `status` filters, otherwise every non-archived site.
    pub async fn sites(
        &self,
        team: &str,
        status: Option<&str>,
        start: i64,
        limit: i64,
    ) -> Result<Vec<Site>> {
        let sql = match status {
            Some(_) => format!(
                "SELECT {SITE_COLS} FROM sites WHERE team = $1 AND status = $2 ORDER BY created DESC, id DESC LIMIT $3 OFFSET $4"
            ),
            None => format!(
                "SELECT {SITE_COLS} FROM sites WHERE team = $1 AND status <> $2 ORDER BY created DESC, id DESC LIMIT $3 OFFSET $4"
            ),
        };
        Ok(sqlx::query_as::<Any, Site>(&sql)
            .bind(team)
            .bind(status.unwrap_or("Archived"))
            .bind(limit)
            .bind(start)
            .fetch_all(&self.db.pool)
            .await?)
    }

    /// The Active sites on `plan`, by name: the backup scheduler's round.
    pub async fn active_sites_on_plan(&self, plan: &str) -> Result<Vec<Site>> {
        Ok(sqlx::query_as::<Any, Site>(&format!(
            "SELECT {SITE_COLS} FROM sites WHERE plan = $1 AND status = 'Active' ORDER BY name"
        ))
        .bind(plan)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// When the site's latest "Backup Site" job that did not fail was recorded.
    pub async fn last_backup_at(&self, site_id: &str) -> Result<Option<i64>> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT MAX(created) FROM jobs WHERE site_id = $1 AND job_type = $2 AND status <> 'Failure'",
        )
        .bind(site_id)
        .bind(domain::job_type::BACKUP_SITE)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.and_then(|(t,)| t))
    }

    pub async fn site_jobs(&self, site_id: &str, start: i64, limit: i64) -> Result<Vec<Job>> {
        Ok(sqlx::query_as::<Any, Job>(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE site_id = $1 ORDER BY created DESC, name DESC LIMIT $2 OFFSET $3"
        ))
        .bind(site_id)
        .bind(limit)
        .bind(start)
        .fetch_all(&self.db.pool)
        .await?)
    }

    pub async fn job(&self, name: &str) -> Result<Option<Job>> {
        Ok(
            sqlx::query_as::<Any, Job>(&format!("SELECT {JOB_COLS} FROM jobs WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    // ---------- the dispatcher's side ----------

    /// Claims up to `limit` due jobs of a server until `lease_until`, oldest first. One
    /// statement, so two Press replicas never claim the same job (a claim that outlives its
    /// holder simply expires; delivery is idempotent at the agent anyway).
    pub async fn claim_due(
        &self,
        server: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<Job>> {
        let mut jobs = sqlx::query_as::<Any, Job>(&format!(
            "UPDATE jobs SET next_retry_at = $1 WHERE name IN (SELECT name FROM jobs WHERE server = $2 AND status = 'Undelivered' AND next_retry_at <= $3 ORDER BY name LIMIT $4) AND status = 'Undelivered' AND next_retry_at <= $3 RETURNING {JOB_COLS}"
        ))
        .bind(lease_until)
        .bind(server)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        jobs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(jobs)
    }

    /// Gives claimed jobs back, due again at `at` (no retry counted).
    pub async fn release(&self, names: &[String], at: i64) -> Result<()> {
        self.update_named(
            "UPDATE jobs SET next_retry_at = $1 WHERE name IN ({names}) AND status = 'Undelivered'",
            at,
            names,
        )
        .await
    }

    /// Puts delivered but unfinished jobs back in the outbox (their agent lost them).
    pub async fn redeliver(&self, names: &[String]) -> Result<()> {
        self.update_named(
            "UPDATE jobs SET status = 'Undelivered', agent_id = NULL, next_retry_at = $1, modified = $1 WHERE name IN ({names}) AND status IN ('Pending', 'Running')",
            now_ms(),
            names,
        )
        .await
    }

    /// Runs `sql` once per hundred `names`: `$1` is `first`, and `{names}` in `sql` stands for
    /// the placeholders of that hundred.
    async fn update_named(&self, sql: &str, first: i64, names: &[String]) -> Result<()> {
        for chunk in names.chunks(CHUNK) {
            let sql = sql.replace("{names}", &marks(2, chunk.len()));
            let mut q = sqlx::query(&sql).bind(first);
            for n in chunk {
                q = q.bind(n);
            }
            q.execute(&self.db.pool).await?;
        }
        Ok(())
    }

    /// Servers with undelivered jobs due now.
    pub async fn servers_with_due_jobs(&self, now: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT server FROM jobs WHERE status = 'Undelivered' AND next_retry_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    pub async fn mark_retry(&self, name: &str, next_at: i64, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET retry_count = retry_count + 1, next_retry_at = $1, error = $2, modified = $3 WHERE name = $4 AND status = 'Undelivered'",
        )
        .bind(next_at)
        .bind(error)
        .bind(now_ms())
        .bind(name)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Delivered, unfinished jobs of a server, least recently polled first.
    pub async fn active_jobs(&self, server: &str, limit: i64) -> Result<Vec<Job>> {
        Ok(sqlx::query_as::<Any, Job>(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE server = $1 AND status IN ('Pending', 'Running') AND agent_id IS NOT NULL ORDER BY polled_at, name LIMIT $2"
        ))
        .bind(server)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?)
    }

    pub async fn mark_polled(&self, names: &[String], now: i64) -> Result<()> {
        self.update_named(
            "UPDATE jobs SET polled_at = $1 WHERE name IN ({names})",
            now,
            names,
        )
        .await
    }

    /// Applies what the agent reported, and what it means for the site, in one transaction.
    /// Returns false when the job is unknown on `server` or the update changes nothing.
    pub async fn apply_update(&self, server: &str, u: &JobUpdate) -> Result<bool> {
        Ok(self.apply_updates(server, std::slice::from_ref(u)).await? > 0)
    }

    /// Applies a batch of agent reports: one read to drop what changes nothing (most polled
    /// jobs), then one transaction per hundred for the rest, with their site effects. Returns
    /// how many jobs changed. Never moves a job backwards, whoever applies concurrently.
    ///
    /// Round trips per transaction: one UPDATE per changed job (in name order, so two
    /// concurrent batches lock jobs in the same order), one read of all the sites whose job
    /// changed status, the site effects, and one `sites_version` bump per team at the end, so
    /// the team's row is locked only for the commit.
    pub async fn apply_updates(&self, server: &str, updates: &[JobUpdate]) -> Result<usize> {
        let mut changed = 0;
        for chunk in updates.chunks(CHUNK) {
            let sql = format!(
                "SELECT {JOB_COLS} FROM jobs WHERE server = $1 AND name IN ({})",
                marks(2, chunk.len())
            );
            let mut q = sqlx::query_as::<Any, Job>(&sql).bind(server);
            for u in chunk {
                q = q.bind(&u.name);
            }
            let seen: HashMap<String, Job> = q
                .fetch_all(&self.db.pool)
                .await?
                .into_iter()
                .map(|j| (j.name.clone(), j))
                .collect();
            let mut todo: Vec<(&JobUpdate, &Job, String)> = chunk
                .iter()
                .filter_map(|u| {
                    let job = seen.get(&u.name)?;
                    let steps = u.steps.to_string();
                    let fresh = !job_status::is_terminal(&job.status)
                        && job_status::rank(u.status) >= job_status::rank(&job.status)
                        && !(job.status == u.status && job.steps == steps);
                    fresh.then_some((u, job, steps))
                })
                .collect();
            if todo.is_empty() {
                continue;
            }
            todo.sort_by(|a, b| a.1.name.cmp(&b.1.name));
            let now = now_ms();
            let mut tx = self.db.pool.begin().await?;
            // Jobs whose status moved, in order: their events and site effects follow.
            let mut moved: Vec<(&JobUpdate, &Job)> = Vec::new();
            for (u, job, steps) in todo {
                // The first statement writes, so SQLite takes its write lock before any read.
                let r = sqlx::query(
                    "UPDATE jobs SET status = $1, steps = $2, result = $3, error = $4, started = $5, ended = $6, duration_ms = $7, agent_id = COALESCE($8, agent_id), modified = $9 \
                     WHERE name = $10 AND status NOT IN ('Success', 'Failure') \
                     AND (CASE status WHEN 'Undelivered' THEN 0 WHEN 'Pending' THEN 1 WHEN 'Running' THEN 2 ELSE 3 END) <= $11",
                )
                .bind(u.status)
                .bind(&steps)
                .bind(u.result.as_ref().map(|v| v.to_string()))
                .bind(u.error.clone())
                .bind(u.started)
                .bind(u.ended)
                .bind(u.duration_ms)
                .bind(u.agent_id.clone())
                .bind(now)
                .bind(&u.name)
                .bind(i64::from(job_status::rank(u.status)))
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 0 {
                    continue;
                }
                changed += 1;
                if job.status != u.status {
                    moved.push((u, job));
                }
            }
            let ids: Vec<&String> = moved
                .iter()
                .filter_map(|(_, j)| j.site_id.as_ref())
                .collect();
            let mut sites: HashMap<String, Site> = HashMap::new();
            if !ids.is_empty() {
                let sql = format!(
                    "SELECT {SITE_COLS} FROM sites WHERE id IN ({})",
                    marks(1, ids.len())
                );
                let mut q = sqlx::query_as::<Any, Site>(&sql);
                for id in &ids {
                    q = q.bind(*id);
                }
                for site in q.fetch_all(&mut *tx).await? {
                    sites.insert(site.id.clone(), site);
                }
            }
            let mut teams: Vec<String> = Vec::new();
            for (u, job) in moved {
                if u.status == job_status::FAILURE {
                    crate::webhooks::store::job_failed(&mut tx, job, u.error.as_deref()).await?;
                }
                crate::webhooks::store::backup_job_finished(
                    &mut tx,
                    job,
                    u.status,
                    u.result.as_ref(),
                    u.error.as_deref(),
                )
                .await?;
                let site = job.site_id.as_ref().and_then(|id| sites.get_mut(id));
                if let Some(site) = site
                    && apply_site_effects(&mut tx, job, u.status, site, now).await?
                    && !teams.contains(&site.team)
                {
                    teams.push(site.team.clone());
                }
            }
            teams.sort();
            for team in &teams {
                bump_tx(&mut tx, team).await?;
            }
            tx.commit().await?;
            if !teams.is_empty() {
                self.sites_changed();
            }
        }
        Ok(changed)
    }

    /// The agent accepted these jobs: remember their ids.
    /// One statement per hundred jobs, each job's id chosen by a `CASE` on its name.
    pub async fn mark_delivered_many(&self, delivered: &[(String, String)]) -> Result<()> {
        let now = now_ms();
        for chunk in delivered.chunks(CHUNK) {
            let cases: String = (0..chunk.len())
                .map(|i| format!(" WHEN ${} THEN ${}", 2 * i + 2, 2 * i + 3))
                .collect();
            let sql = format!(
                "UPDATE jobs SET agent_id = CASE name{cases} END, status = 'Pending', modified = $1, error = NULL WHERE name IN ({}) AND status = 'Undelivered'",
                marks(2 * chunk.len() + 2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(now);
            for (name, agent_id) in chunk {
                q = q.bind(name).bind(agent_id);
            }
            for (name, _) in chunk {
                q = q.bind(name);
            }
            q.execute(&self.db.pool).await?;
        }
        Ok(())
    }

    /// Site events not yet handed to the webhook sender, oldest first (issue 7 reads these).
    pub async fn pending_events(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, event, team, payload FROM site_events WHERE delivered = 0 ORDER BY created, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?)
    }
}

/// What a job's new status does to its site, in the caller's transaction; `site` is kept
/// equal to its row. Whether the site changed (the caller bumps the team's `sites_version`).
async fn apply_site_effects(
    tx: &mut Transaction<'_, Any>,
    job: &Job,
    status: &str,
    site: &mut Site,
    now: i64,
) -> Result<bool> {
    use domain::job_type as t;
    let mut changed = false;
    if let Some(next) = domain::site_status_after(&job.job_type, status, &site.status) {
        // An archived name frees its slot; a live site reusing it meanwhile keeps it.
        sqlx::query("UPDATE sites SET status = $1, modified = $2 WHERE id = $3")
            .bind(next)
            .bind(now)
            .bind(&site.id)
            .execute(&mut **tx)
            .await?;
        event_tx(tx, "site.status_changed", site, Some(&site.status), next).await?;
        if next == domain::site_status::ARCHIVED {
            event_tx(tx, "site.archived", site, Some(&site.status), next).await?;
        }
        site.status = next.to_string();
        site.modified = now;
        changed = true;
    }
    if status != job_status::SUCCESS {
        return Ok(changed);
    }
    let data: Value = serde_json::from_str(&job.request_data).unwrap_or(Value::Null);
    match job.job_type.as_str() {
        t::INSTALL_APP | t::UNINSTALL_APP => {
            let app = data["app"].as_str().unwrap_or_default();
            if let Some(apps) = domain::apps_after(&job.job_type, &site.app_list(), app) {
                let apps = serde_json::to_string(&apps).unwrap_or_default();
                sqlx::query("UPDATE sites SET apps = $1, modified = $2 WHERE id = $3")
                    .bind(&apps)
                    .bind(now)
                    .bind(&site.id)
                    .execute(&mut **tx)
                    .await?;
                site.apps = apps;
                site.modified = now;
                changed = true;
            }
        }
        t::UPDATE_CONFIG => {
            let mut config: serde_json::Map<String, Value> =
                serde_json::from_str(&site.config).unwrap_or_default();
            if let Some(new) = data["config"].as_object() {
                for (k, v) in new {
                    config.insert(k.clone(), v.clone());
                }
            }
            if let Some(remove) = data["remove"].as_array() {
                for k in remove.iter().filter_map(|k| k.as_str()) {
                    config.remove(k);
                }
            }
            let config = Value::Object(config).to_string();
            sqlx::query("UPDATE sites SET config = $1, modified = $2 WHERE id = $3")
                .bind(&config)
                .bind(now)
                .bind(&site.id)
                .execute(&mut **tx)
                .await?;
            site.config = config;
            site.modified = now;
            changed = true;
        }
        _ => {}
    }
    Ok(changed)
}

async fn insert_job_tx(tx: &mut Transaction<'_, Any>, job: &NewJob, site: &Site) -> Result<String> {
    let name = new_id();
    let now = now_ms();
    sqlx::query(&format!(
        "INSERT INTO jobs ({JOB_COLS}, polled_at, modified) VALUES ($1, $2, $3, $4, $5, $6, $7, 'Undelivered', NULL, $8, NULL, NULL, 0, $9, $10, NULL, NULL, NULL, 0, $11)"
    ))
    .bind(&name)
    .bind(&job.server)
    .bind(&site.id)
    .bind(&site.name)
    .bind(&site.team)
    .bind(&job.job_type)
    .bind(job.data.to_string())
    .bind(steps_json(&job.steps))
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(name)
}

/// How a job uses a backup (`<site>/<id>`), checked where the job is recorded so that the
/// backup policy's deletions and restores never race: the backup's site row is locked
/// first, then what the other side committed is read.
#[derive(Debug, Clone, Copy)]
pub enum BackupUse<'a> {
    /// "Restore Site" or "New Site from Backup" reads `name`, a backup of site `site_id`:
    /// refused when a deletion of it is done (404) or under way (400).
    Reads { site_id: &'a str, name: &'a str },
    /// "Delete Site Backup" deletes `name`, a backup of site `site_id` (the job's site):
    /// refused (400) while an unfinished restore or new site reads it, or when its deletion
    /// is already under way or done.
    Deletes { site_id: &'a str, name: &'a str },
}

impl<'a> BackupUse<'a> {
    fn site_id(&self) -> &'a str {
        match *self {
            BackupUse::Reads { site_id, .. } | BackupUse::Deletes { site_id, .. } => site_id,
        }
    }

    fn name(&self) -> &'a str {
        match *self {
            BackupUse::Reads { name, .. } | BackupUse::Deletes { name, .. } => name,
        }
    }
}

/// Locks the rows of `ids` (an UPDATE: SQLite takes its write lock, PostgreSQL holds the rows
/// to commit) in id order, so two transactions locking the same two sites cannot deadlock.
/// `touch` also gets a new `modified`.
async fn lock_sites_tx(
    tx: &mut Transaction<'_, Any>,
    ids: &[&str],
    touch: Option<&str>,
) -> Result<()> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        sqlx::query(
            "UPDATE sites SET modified = CASE WHEN id = $1 THEN $2 ELSE modified END WHERE id = $3",
        )
        .bind(touch.unwrap_or(""))
        .bind(now_ms())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// [`BackupUse`]'s rule, read inside the caller's transaction after the backup's site row
/// is locked: every job that reads or deletes a backup locks that row first, so what the
/// other side committed before is seen here, and what it commits after sees this job.
async fn check_backup_use_tx(tx: &mut Transaction<'_, Any>, use_: &BackupUse<'_>) -> Result<()> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT status, request_data FROM jobs WHERE site_id = $1 AND job_type = $2 AND status <> 'Failure'",
    )
    .bind(use_.site_id())
    .bind(domain::job_type::DELETE_BACKUP)
    .fetch_all(&mut **tx)
    .await?;
    let deletions: Vec<String> = rows
        .into_iter()
        .filter(|(_, data)| job_backup(None, data).as_deref() == Some(use_.name()))
        .map(|(status, _)| status)
        .collect();
    match *use_ {
        BackupUse::Reads { name, .. } => {
            if deletions.iter().any(|s| s == job_status::SUCCESS) {
                return Err(Error::not_found(format!("Backup {name} not found")));
            }
            if !deletions.is_empty() {
                return Err(Error::validation(format!("Backup {name} is being deleted")));
            }
        }
        BackupUse::Deletes { name, .. } => {
            if !deletions.is_empty() {
                return Err(Error::validation(format!(
                    "Backup {name} is already being deleted"
                )));
            }
            let readers: Vec<(Option<String>, String)> = sqlx::query_as(
                "SELECT site_name, request_data FROM jobs WHERE job_type IN ($1, $2) AND status IN ('Undelivered', 'Pending', 'Running')",
            )
            .bind(domain::job_type::RESTORE_SITE)
            .bind(domain::job_type::NEW_SITE_FROM_BACKUP)
            .fetch_all(&mut **tx)
            .await?;
            if readers
                .iter()
                .any(|(site, data)| job_backup(site.as_deref(), data).as_deref() == Some(name))
            {
                return Err(Error::validation(format!(
                    "Backup {name} is in use by a restore"
                )));
            }
        }
    }
    Ok(())
}

/// The backup a job's `request_data` names, in full (see [`domain::backup_name`]).
fn job_backup(site: Option<&str>, data: &str) -> Option<String> {
    let data: Value = serde_json::from_str(data).ok()?;
    let b = data["backup"].as_str()?;
    Some(domain::backup_name(site, b))
}

/// Records a site event in the caller's transaction: the one place every site change passes,
/// so the event exists exactly when the change committed. Webhook delivery (and billing) read
/// this outbox; `site_events.delivered` is theirs to set.
async fn event_tx(
    tx: &mut Transaction<'_, Any>,
    event: &str,
    site: &Site,
    old: Option<&str>,
    status: &str,
) -> Result<()> {
    let mut data = json!({
        "doctype": "Site", "name": site.name, "status": status, "team": site.team, "plan": site.plan,
        "server": site.server, "bench": site.bench, "apps": site.app_list(),
    });
    if let Some(old) = old {
        data["old_status"] = json!(old);
        data["new_status"] = json!(status);
    }
    let payload = json!({ "event": event, "data": data });
    sqlx::query("INSERT INTO site_events (id, event, team, site_id, payload, created, delivered) VALUES ($1, $2, $3, $4, $5, $6, 0)")
        .bind(new_id())
        .bind(event)
        .bind(&site.team)
        .bind(&site.id)
        .bind(payload.to_string())
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    crate::webhooks::store::site_event(tx, event, site, old, status).await?;
    crate::billing::store::site_event(tx, event, site).await?;
    Ok(())
}

/// Every change to a team's sites bumps its version, in the same transaction, so a cached
/// site list is known stale by one primary-key read (on any replica).
async fn bump_tx(tx: &mut Transaction<'_, Any>, team: &str) -> Result<()> {
    sqlx::query("UPDATE teams SET sites_version = sites_version + 1 WHERE name = $1")
        .bind(team)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn add_member_tx(tx: &mut Transaction<'_, Any>, team: &str, user: &str) -> Result<()> {
    let r = sqlx::query("INSERT INTO team_members (team, user_name) VALUES ($1, $2)")
        .bind(team)
        .bind(user)
        .execute(&mut **tx)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
const CHUNK: usize = 100;

/// `$from, $from+1, ...`: `n` placeholders for an `IN (...)` list.
fn marks(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn dup<T>(r: std::result::Result<T, sqlx::Error>, msg: impl FnOnce() -> String) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if is_unique_violation(&e) => Err(Error::duplicate(msg())),
        Err(e) => Err(e.into()),
    }
}
