//! Database connections for SQLite (the embedded default) and PostgreSQL, through sqlx's
//! `Any` driver so a service writes its SQL once with `$1` placeholders.
//!
//! Each service owns its tables: on PostgreSQL it lives in its own schema (set as the
//! connection's `search_path`), on SQLite in its own file. Migrations are per backend.

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database url '{0}' must start with sqlite:// or postgres://")]
    Scheme(String),
    #[error("schema name '{0}' must be lowercase letters, digits and underscores")]
    Schema(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool and the backend it talks to.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Backend {
    pub fn of(url: &str) -> Result<Backend, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(DbError::Scheme(redact_url(url)))
        }
    }
}

/// The URL of an SQLite file, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The URL a service uses when several share one setting: PostgreSQL URLs are shared (each
/// service has its own schema), an SQLite file `x.sqlite` becomes `x-<service>.sqlite`.
pub fn service_url(url: &str, service: &str) -> String {
    if !matches!(Backend::of(url), Ok(Backend::Sqlite)) {
        return url.to_string();
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let (stem, ext) = match path.rsplit_once('.') {
        Some((s, e)) if !e.contains('/') => (s, format!(".{e}")),
        _ => (path, String::new()),
    };
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{stem}-{service}{ext}{q}")
}

/// Hides the password of a URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl Db {
    /// Connects, and on PostgreSQL creates `schema` and makes it the connection's search path.
    pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<Db, DbError> {
        install_default_drivers();
        let backend = Backend::of(url)?;
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(DbError::Schema(schema.to_string()));
        }
        let opts = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30));
        let pool = match backend {
            Backend::Sqlite => {
                // A connection to a local file does not go stale: no ping before each use.
                // `secure_delete` overwrites what a delete or a wipe frees (a job's secrets,
                // say) with zeros instead of leaving it in the file's free space.
                opts.test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
                             PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; \
                             PRAGMA secure_delete=ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                let setup = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
                let path = format!("SET search_path TO \"{schema}\"");
                {
                    let pool = AnyPoolOptions::new()
                        .max_connections(1)
                        .connect(url)
                        .await?;
                    pool.execute(setup.as_str()).await?;
                    pool.close().await;
                }
                opts.after_connect(move |conn, _| {
                    let path = path.clone();
                    Box::pin(async move {
                        conn.execute(path.as_str()).await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?
            }
        };
        Ok(Db { pool, backend })
    }

    /// Runs the migrations for this backend.
    pub async fn migrate(&self, sqlite: &Migrator, postgres: &Migrator) -> Result<(), DbError> {
        match self.backend {
            Backend::Sqlite => sqlite.run(&self.pool).await?,
            Backend::Postgres => postgres.run(&self.pool).await?,
        }
        Ok(())
    }
}

/// True for a unique or primary-key violation, on either backend: the caller answers 409.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation(),
        _ => false,
    }
}

/// The PostgreSQL URL for tests, from `PRESSOIR_TEST_POSTGRES_URL`, if set.
pub fn test_postgres_url() -> Option<String> {
    std::env::var("PRESSOIR_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls() {
        assert_eq!(
            service_url("sqlite:///d/pressoir.sqlite?mode=rwc", "press"),
            "sqlite:///d/pressoir-press.sqlite?mode=rwc"
        );
        assert_eq!(
            service_url("postgres://u@h/db", "press"),
            "postgres://u@h/db"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite:///x"), "sqlite:///x");
    }
}
