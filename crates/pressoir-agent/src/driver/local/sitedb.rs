//! Site databases: an SQLite file per site, opened synchronously (rusqlite) on blocking
//! threads. A step does all its database work in one blocking call, so it pays for no
//! connection thread and no hop per statement; the agent's own job store stays on sqlx.

use rusqlite::{Connection, OpenFlags, ffi};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Frappe's own table names for what the local driver records.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS "tabInstalled Application" (
    name TEXT PRIMARY KEY, app_name TEXT NOT NULL UNIQUE, app_version TEXT, creation TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS "tabUser" (
    name TEXT PRIMARY KEY, first_name TEXT, enabled INTEGER NOT NULL DEFAULT 1, user_type TEXT,
    creation TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS "__Auth" (
    doctype TEXT NOT NULL, name TEXT NOT NULL, fieldname TEXT NOT NULL, password TEXT NOT NULL,
    encrypted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (doctype, name, fieldname));
CREATE TABLE IF NOT EXISTS "tabSingles" (
    doctype TEXT NOT NULL, field TEXT NOT NULL, value TEXT, PRIMARY KEY (doctype, field));
"#;

/// How many site databases stay open, so that the steps of one job (which run back to back)
/// do not each pay for opening the file and checkpointing it on close.
const CACHED: usize = 16;

/// Open site databases, most recently used last. Blocking: use from blocking threads only,
/// since putting a connection back may close the oldest (a checkpoint: I/O and fsyncs).
#[derive(Default)]
pub struct SiteDbs(Mutex<VecDeque<(PathBuf, Connection)>>);

impl SiteDbs {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(PathBuf, Connection)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the existing database at `path`, opened or taken from the cache, and
    /// keeps the connection open for the next step.
    pub fn with<T>(
        &self,
        path: &Path,
        f: impl FnOnce(&mut Connection) -> Result<T, String>,
    ) -> Result<T, String> {
        let cached = {
            let mut q = self.lock();
            q.iter()
                .position(|(p, _)| p == path)
                .and_then(|i| q.remove(i))
                .map(|(_, c)| c)
        };
        let mut conn = match cached {
            Some(c) => c,
            None => open(path).map_err(|e| format!("cannot open the site database: {e}"))?,
        };
        let r = f(&mut conn);
        let evicted = {
            let mut q = self.lock();
            q.push_back((path.to_path_buf(), conn));
            if q.len() > CACHED {
                q.pop_front()
            } else {
                None
            }
        };
        drop(evicted);
        r
    }

    /// Closes every connection to a database under `dir`, before it is moved or removed.
    pub fn close_under(&self, dir: &Path) {
        let gone: VecDeque<_> = {
            let mut q = self.lock();
            let (gone, kept) = q.drain(..).partition(|(p, _)| p.starts_with(dir));
            *q = kept;
            gone
        };
        drop(gone);
    }
}

/// Opens an existing site database: WAL (as [`create`] left it), `synchronous=NORMAL`.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    persist_wal(&conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Builds a new site database at `path` for job `job` with the users Administrator and Guest
/// and the app frappe, unseen until "New Site" moves its folder into place: no journal (a
/// failed build is thrown away whole), synced once at the end, and marked WAL while that is
/// one header write, so later steps open it as it stays instead of converting it.
pub fn create(path: &Path, now: &str, job: i64) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    for (user, kind) in [("Administrator", "System User"), ("Guest", "Website User")] {
        tx.execute(
            "INSERT OR IGNORE INTO tabUser (name, first_name, user_type, creation) VALUES (?1, ?1, ?2, ?3)",
            (user, kind, now),
        )?;
    }
    install(&tx, "frappe", now)?;
    mark_created(&tx, job)?;
    tx.commit()?;
    persist_wal(&conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.close().map_err(|(_, e)| e)
}

/// Where the job that built a site records itself, so that a step run again after a restart
/// can tell its own finished work from a site that was there before.
const CREATED_BY: (&str, &str) = ("Pressoir Agent", "created_by_job");

/// Records `job` as the builder of the database behind `conn`.
pub fn mark_created(conn: &Connection, job: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO tabSingles (doctype, field, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT (doctype, field) DO UPDATE SET value = excluded.value",
        (CREATED_BY.0, CREATED_BY.1, job.to_string()),
    )?;
    Ok(())
}

/// The job that built the database at `path`; `None` when it cannot be read or says none.
pub fn created_by(path: &Path) -> Option<i64> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row(
        "SELECT value FROM tabSingles WHERE doctype = ?1 AND field = ?2",
        CREATED_BY,
        |r| r.get::<_, String>(0),
    )
    .ok()?
    .parse()
    .ok()
}

/// Keeps the `-wal` and `-shm` files when the last connection closes (after its checkpoint)
/// instead of deleting them: a site's database is opened and closed many times over its
/// life, and unlinking and re-creating two files each time costs more than keeping them (on
/// ext4 without a journal, every recently freed inode also slows the next allocations).
fn persist_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is the live connection's; SQLITE_FCNTL_PERSIST_WAL takes a pointer
    // to an int, read and written during the call only.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// Records apps as installed (those already recorded stay as they are), in one transaction.
pub fn install_all(conn: &mut Connection, apps: &[String], now: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for app in apps {
        install(&tx, app, now)?;
    }
    tx.commit()
}

/// Records an app as installed; false when it already was.
pub fn install(conn: &Connection, app: &str, now: &str) -> rusqlite::Result<bool> {
    let n = conn.execute(
        r#"INSERT OR IGNORE INTO "tabInstalled Application" (name, app_name, app_version, creation) VALUES (?1, ?1, '0.0.0', ?2)"#,
        (app, now),
    )?;
    Ok(n > 0)
}

/// Removes an app; false when it was not installed.
pub fn uninstall(conn: &Connection, app: &str) -> rusqlite::Result<bool> {
    let n = conn.execute(
        r#"DELETE FROM "tabInstalled Application" WHERE app_name = ?1"#,
        [app],
    )?;
    Ok(n > 0)
}

/// Stores the Administrator's password hash (a PHC string) in Frappe's `__Auth`.
pub fn set_admin_password(conn: &Connection, hash: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO __Auth (doctype, name, fieldname, password, encrypted) VALUES ('User', 'Administrator', 'password', ?1, 0) \
         ON CONFLICT (doctype, name, fieldname) DO UPDATE SET password = excluded.password",
        [hash],
    )?;
    Ok(())
}

pub fn enable_scheduler(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO tabSingles (doctype, field, value) VALUES ('System Settings', 'enable_scheduler', '1') \
         ON CONFLICT (doctype, field) DO UPDATE SET value = '1'",
        [],
    )?;
    Ok(())
}

/// The installed apps, in the order they were installed.
pub fn apps(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut q = conn.prepare(
        r#"SELECT app_name FROM "tabInstalled Application" ORDER BY creation, app_name"#,
    )?;
    q.query_map([], |r| r.get(0))?.collect()
}

/// A consistent copy of the database in `dest` (`VACUUM INTO`).
pub fn copy_into(conn: &Connection, dest: &Path) -> rusqlite::Result<()> {
    conn.execute("VACUUM INTO ?1", [dest.to_string_lossy()])?;
    Ok(())
}

/// SQLite's quick check of the restored database at `path` (`Ok` when it says "ok"); then,
/// for a new site built from it, records job `made_by` as its builder.
pub fn check_restored(path: &Path, made_by: Option<i64>) -> Result<(), String> {
    let conn = open(path).map_err(|e| format!("the restored database cannot be read: {e}"))?;
    let r: rusqlite::Result<String> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    match r {
        Ok(s) if s == "ok" => {}
        Ok(s) => return Err(format!("the restored database fails SQLite's check: {s}")),
        Err(e) => return Err(format!("the restored database cannot be read: {e}")),
    }
    if let Some(job) = made_by {
        mark_created(&conn, job).map_err(|e| format!("cannot mark the restored database: {e}"))?;
    }
    conn.close()
        .map_err(|(_, e)| format!("cannot close the restored database: {e}"))
}
