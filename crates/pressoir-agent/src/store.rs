//! The job store: jobs and their steps, in the agent's own SQLite database (PostgreSQL also
//! works). All SQL of the agent is here. On SQLite every write goes through one connection,
//! so writers never wait on each other's locks; reads use their own small pool.

use crate::error::Error;
use crate::job::{JobStatus, StepStatus};
use pressoir_core::db::{Backend, Db, is_unique_violation};
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A job as callers see it (never its data, never its secrets).
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: i64,
    pub agent_job_id: Option<String>,
    pub job_type: String,
    pub status: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Clone)]
pub struct StepView {
    pub idx: i64,
    pub name: String,
    pub status: String,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub output: Option<String>,
}

/// RFC 3339 UTC with exactly three fractional digits (`2026-12-04T15:29:22.010Z`), so that
/// the text sorts like the instant.
pub fn rfc3339_ms(ms: i64) -> String {
    use time::OffsetDateTime;
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn time(ms: Option<i64>) -> Value {
    ms.map(|t| Value::String(rfc3339_ms(t)))
        .unwrap_or(Value::Null)
}

fn duration(a: Option<i64>, b: Option<i64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => json!((b - a).max(0)),
        _ => Value::Null,
    }
}

impl JobView {
    /// The job JSON of the Agent API and of every push.
    pub fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "status": s.status,
                    "started_at": time(s.started_at),
                    "ended_at": time(s.ended_at),
                    "duration_ms": duration(s.started_at, s.ended_at),
                    "output": s.output,
                })
            })
            .collect();
        let result = self
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str::<Value>(r).ok())
            .unwrap_or(Value::Null);
        json!({
            "id": self.id.to_string(),
            "agent_job_id": self.agent_job_id,
            "job_type": self.job_type,
            "status": self.status,
            "created_at": time(Some(self.created_at)),
            "started_at": time(self.started_at),
            "ended_at": time(self.ended_at),
            "duration_ms": duration(self.started_at, self.ended_at),
            "steps": steps,
            "result": result,
            "error": self.error,
        })
    }
}

/// The short answer to a submission.
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: i64,
    pub agent_job_id: Option<String>,
    pub job_type: String,
    pub status: String,
    pub created_at: i64,
    /// False when the caller's id matched a job submitted before.
    pub created: bool,
    pub site_key: Option<String>,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "agent_job_id": self.agent_job_id,
            "job_type": self.job_type,
            "status": self.status,
            "created_at": rfc3339_ms(self.created_at),
        })
    }
}

/// A job to store.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub agent_job_id: Option<String>,
    pub job_type: String,
    pub site_key: Option<String>,
    pub data: Value,
    pub secrets: Option<Value>,
    pub steps: Vec<&'static str>,
}

/// What a worker needs to run a job.
#[derive(Debug, Clone)]
pub struct Work {
    pub id: i64,
    pub job_type: String,
    pub status: JobStatus,
    pub site_key: Option<String>,
    pub data: Value,
    pub secrets: Option<Value>,
    /// (name, status) in order.
    pub steps: Vec<(String, StepStatus)>,
}

/// What follows a successful step.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Start the step at this index.
    Start(i64),
    /// The job is done.
    Succeed,
    /// The agent is stopping: the job stays Running with its next step Pending, and goes on
    /// from there after the restart.
    Stop,
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_have_a_fixed_width() {
        assert_eq!(
            super::rfc3339_ms(1_796_398_162_000),
            "2026-12-04T15:29:22.000Z"
        );
        assert_eq!(
            super::rfc3339_ms(1_796_398_162_010),
            "2026-12-04T15:29:22.010Z"
        );
        let t = super::rfc3339_ms(1_796_398_162_123);
        assert_eq!(
            pressoir_core::clock::parse_rfc3339_ms(&t),
            Some(1_796_398_162_123)
        );
    }
}

#[derive(Clone)]
pub struct Store {
    w: AnyPool,
    r: AnyPool,
    backend: Backend,
}

/// Marks step `$2` of job `$1` Running since `$3`.
const START_STEP: &str =
    "UPDATE steps SET status = 'Running', started_at = $3 WHERE job_id = $1 AND idx = $2";

const JOB_COLS: &str =
    "id, agent_job_id, job_type, status, created_at, started_at, ended_at, result, error";

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    pub async fn open(url: &str, schema: &str) -> Result<Store, Error> {
        let backend = Backend::of(url)?;
        let (w, r) = match backend {
            Backend::Sqlite => {
                let w = Db::connect(url, schema, 1).await?;
                w.migrate(&SQLITE, &POSTGRES).await?;
                let r = Db::connect(url, schema, 4).await?;
                (w.pool, r.pool)
            }
            Backend::Postgres => {
                let db = Db::connect(url, schema, 8).await?;
                db.migrate(&SQLITE, &POSTGRES).await?;
                (db.pool.clone(), db.pool)
            }
        };
        Ok(Store { w, r, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores jobs in one transaction. A job whose `agent_job_id` was seen before is not
    /// stored again: the earlier job is returned in its place.
    pub async fn submit(&self, jobs: &[NewJob], now: i64) -> Result<Vec<Summary>, Error> {
        let mut attempt = 0;
        loop {
            match self.try_submit(jobs, now).await {
                Err(Error::Sql(e)) if is_unique_violation(&e) && attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_submit(&self, jobs: &[NewJob], now: i64) -> Result<Vec<Summary>, Error> {
        let mut tx = self.w.begin().await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Some(aid) = &job.agent_job_id {
                let found = sqlx::query(
                    "SELECT id, agent_job_id, job_type, status, created_at, site_key FROM jobs WHERE agent_job_id = $1",
                )
                .bind(aid.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = found {
                    out.push(Summary {
                        id: row.try_get("id")?,
                        agent_job_id: row.try_get("agent_job_id")?,
                        job_type: row.try_get("job_type")?,
                        status: row.try_get("status")?,
                        created_at: row.try_get("created_at")?,
                        created: false,
                        site_key: row.try_get("site_key")?,
                    });
                    continue;
                }
            }
            let row = sqlx::query(
                "INSERT INTO jobs (agent_job_id, job_type, site_key, status, data, secrets, created_at) \
                 VALUES ($1, $2, $3, 'Pending', $4, $5, $6) RETURNING id",
            )
            .bind(job.agent_job_id.clone())
            .bind(job.job_type.as_str())
            .bind(job.site_key.clone())
            .bind(job.data.to_string())
            .bind(job.secrets.as_ref().map(|s| s.to_string()))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let id: i64 = row.try_get("id")?;
            if !job.steps.is_empty() {
                let values: Vec<String> = (0..job.steps.len())
                    .map(|i| format!("($1, {i}, ${}, 'Pending')", i + 2))
                    .collect();
                let sql = format!(
                    "INSERT INTO steps (job_id, idx, name, status) VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(id);
                for s in &job.steps {
                    q = q.bind(*s);
                }
                q.execute(&mut *tx).await?;
            }
            out.push(Summary {
                id,
                agent_job_id: job.agent_job_id.clone(),
                job_type: job.job_type.clone(),
                status: "Pending".into(),
                created_at: now,
                created: true,
                site_key: job.site_key.clone(),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Jobs by id, in id order; unknown ids are left out.
    pub async fn jobs(&self, ids: &[i64]) -> Result<Vec<JobView>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE id IN ({}) ORDER BY id",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.r).await?;
        self.with_steps(rows).await
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobView>, Error> {
        Ok(self.jobs(&[id]).await?.pop())
    }

    /// Jobs by the caller's own ids.
    pub async fn jobs_by_agent_job_ids(&self, ids: &[String]) -> Result<Vec<JobView>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE agent_job_id IN ({}) ORDER BY id",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id.as_str());
        }
        let rows = q.fetch_all(&self.r).await?;
        self.with_steps(rows).await
    }

    /// Jobs with a status (oldest first), or the most recent when `status` is `None`.
    pub async fn jobs_by_status(
        &self,
        status: Option<JobStatus>,
        limit: i64,
    ) -> Result<Vec<JobView>, Error> {
        let rows = match status {
            Some(s) => {
                let sql =
                    format!("SELECT {JOB_COLS} FROM jobs WHERE status = $1 ORDER BY id LIMIT $2");
                sqlx::query(&sql)
                    .bind(s.as_str())
                    .bind(limit)
                    .fetch_all(&self.r)
                    .await?
            }
            None => {
                let sql = format!("SELECT {JOB_COLS} FROM jobs ORDER BY id DESC LIMIT $1");
                let mut rows = sqlx::query(&sql).bind(limit).fetch_all(&self.r).await?;
                rows.reverse();
                rows
            }
        };
        self.with_steps(rows).await
    }

    async fn with_steps(&self, rows: Vec<AnyRow>) -> Result<Vec<JobView>, Error> {
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.push(JobView {
                id: row.try_get("id")?,
                agent_job_id: row.try_get("agent_job_id")?,
                job_type: row.try_get("job_type")?,
                status: row.try_get("status")?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                ended_at: row.try_get("ended_at")?,
                result: row.try_get("result")?,
                error: row.try_get("error")?,
                steps: Vec::new(),
            });
        }
        if jobs.is_empty() {
            return Ok(jobs);
        }
        let sql = format!(
            "SELECT job_id, idx, name, status, started_at, ended_at, output FROM steps \
             WHERE job_id IN ({}) ORDER BY job_id, idx",
            placeholders(1, jobs.len())
        );
        let mut q = sqlx::query(&sql);
        for j in &jobs {
            q = q.bind(j.id);
        }
        let steps = q.fetch_all(&self.r).await?;
        let index: std::collections::HashMap<i64, usize> =
            jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
        for row in steps {
            let job_id: i64 = row.try_get("job_id")?;
            if let Some(&i) = index.get(&job_id) {
                jobs[i].steps.push(StepView {
                    idx: row.try_get("idx")?,
                    name: row.try_get("name")?,
                    status: row.try_get("status")?,
                    started_at: row.try_get("started_at")?,
                    ended_at: row.try_get("ended_at")?,
                    output: row.try_get("output")?,
                });
            }
        }
        Ok(jobs)
    }

    /// Ids and ordering keys of every job not yet ended, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<(i64, Option<String>)>, Error> {
        let rows = sqlx::query(
            "SELECT id, site_key FROM jobs WHERE status IN ('Pending', 'Running') ORDER BY id",
        )
        .fetch_all(&self.w)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("site_key")?)))
            .collect()
    }

    /// What a worker needs to run job `id`: its data, secrets and steps, in one statement.
    pub async fn work(&self, id: i64) -> Result<Option<Work>, Error> {
        let rows = sqlx::query(
            "SELECT j.job_type, j.status, j.site_key, j.data, j.secrets, s.name, s.status AS step \
             FROM jobs j LEFT JOIN steps s ON s.job_id = j.id WHERE j.id = $1 ORDER BY s.idx",
        )
        .bind(id)
        .fetch_all(&self.w)
        .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let corrupt = |what: String| Error::Corrupt(id, what);
        let status: String = row.try_get("status")?;
        let status =
            JobStatus::parse(&status).ok_or_else(|| corrupt(format!("status '{status}'")))?;
        let data: String = row.try_get("data")?;
        let data = serde_json::from_str(&data).map_err(|e| corrupt(e.to_string()))?;
        let secrets: Option<String> = row.try_get("secrets")?;
        let secrets = match secrets {
            Some(s) => Some(serde_json::from_str(&s).map_err(|e| corrupt(e.to_string()))?),
            None => None,
        };
        let mut steps = Vec::with_capacity(rows.len());
        for r in &rows {
            let Some(name) = r.try_get::<Option<String>, _>("name")? else {
                continue;
            };
            let st: String = r.try_get("step")?;
            let st =
                StepStatus::parse(&st).ok_or_else(|| corrupt(format!("step status '{st}'")))?;
            steps.push((name, st));
        }
        Ok(Some(Work {
            id,
            job_type: row.try_get("job_type")?,
            status,
            site_key: row.try_get("site_key")?,
            data,
            secrets,
            steps,
        }))
    }

    /// Starts a step, and the job when it was Pending. Two statements, the job's first: a
    /// crash between them leaves a Running job whose step is still Pending, which recovery
    /// queues and this starts again (no transaction, which would cost two more round trips
    /// to the database on every job).
    pub async fn start_step(&self, id: i64, idx: i64, now: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE jobs SET status = 'Running', started_at = COALESCE(started_at, $2), version = version + 1 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&self.w)
        .await?;
        sqlx::query(START_STEP)
            .bind(id)
            .bind(idx)
            .bind(now)
            .execute(&self.w)
            .await?;
        Ok(())
    }

    /// Ends a step with success, records the result it produced, and starts the next step or
    /// ends the job (wiping its secrets), in one transaction.
    pub async fn succeed_step(
        &self,
        id: i64,
        idx: i64,
        output: &str,
        result: Option<&Value>,
        then: Then,
        now: i64,
    ) -> Result<(), Error> {
        let mut tx = self.w.begin().await?;
        sqlx::query(
            "UPDATE steps SET status = 'Success', ended_at = $3, output = $4, \
             started_at = COALESCE(started_at, $3) WHERE job_id = $1 AND idx = $2",
        )
        .bind(id)
        .bind(idx)
        .bind(now)
        .bind(output)
        .execute(&mut *tx)
        .await?;
        // The result (if the step set one) goes with the job's own update: one statement.
        let result = result.map(|r| r.to_string());
        match then {
            Then::Start(_) | Then::Stop => {
                if let Then::Start(next) = then {
                    sqlx::query(START_STEP)
                        .bind(id)
                        .bind(next)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("UPDATE jobs SET result = COALESCE($2, result), version = version + 1 WHERE id = $1")
                    .bind(id)
                    .bind(result)
                    .execute(&mut *tx)
                    .await?;
            }
            Then::Succeed => {
                sqlx::query(
                    "UPDATE jobs SET status = 'Success', ended_at = $2, started_at = COALESCE(started_at, $2), \
                     result = COALESCE($3, result), secrets = NULL, version = version + 1 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(result)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends the job with success (all its steps have ended).
    pub async fn succeed_job(&self, id: i64, now: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE jobs SET status = 'Success', ended_at = $2, started_at = COALESCE(started_at, $2), \
             secrets = NULL, version = version + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&self.w)
        .await?;
        Ok(())
    }

    /// Fails a step and its job: later steps become Skipped, the secrets are wiped.
    pub async fn fail(
        &self,
        id: i64,
        idx: Option<i64>,
        output: &str,
        error: &str,
        now: i64,
    ) -> Result<(), Error> {
        let mut tx = self.w.begin().await?;
        match idx {
            Some(i) => {
                sqlx::query(
                    "UPDATE steps SET status = 'Failure', ended_at = $3, output = $4, \
                     started_at = COALESCE(started_at, $3) WHERE job_id = $1 AND idx = $2",
                )
                .bind(id)
                .bind(i)
                .bind(now)
                .bind(output)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE steps SET status = 'Skipped' WHERE job_id = $1 AND idx > $2 AND status IN ('Pending', 'Running')",
                )
                .bind(id)
                .bind(i)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                // The step that was running (if any) failed; the rest never ran.
                sqlx::query(
                    "UPDATE steps SET status = 'Failure', ended_at = $2, output = $3 WHERE job_id = $1 AND status = 'Running'",
                )
                .bind(id)
                .bind(now)
                .bind(output)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE steps SET status = 'Skipped' WHERE job_id = $1 AND status = 'Pending'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "UPDATE jobs SET status = 'Failure', error = $2, ended_at = $3, started_at = COALESCE(started_at, $3), \
             secrets = NULL, version = version + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Jobs changed since they were last pushed, with the version each was read at.
    pub async fn unpushed(&self, limit: i64) -> Result<Vec<(JobView, i64)>, Error> {
        let rows = sqlx::query(
            "SELECT id, version FROM jobs WHERE version > pushed_version ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.w)
        .await?;
        let mut versions = std::collections::HashMap::new();
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            versions.insert(id, r.try_get::<i64, _>("version")?);
            ids.push(id);
        }
        // Read the jobs after their versions: a change in between is pushed again next time.
        let jobs = self.jobs(&ids).await?;
        Ok(jobs
            .into_iter()
            .map(|j| {
                let v = versions.get(&j.id).copied().unwrap_or(0);
                (j, v)
            })
            .collect())
    }

    pub async fn mark_pushed(&self, pushed: &[(i64, i64)]) -> Result<(), Error> {
        let mut tx = self.w.begin().await?;
        for (id, version) in pushed {
            sqlx::query(
                "UPDATE jobs SET pushed_version = $2 WHERE id = $1 AND pushed_version < $2",
            )
            .bind(*id)
            .bind(*version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.w.close().await;
        self.r.close().await;
    }
}
