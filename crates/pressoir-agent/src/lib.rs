//! The Pressoir agent: the Agent API that runs on each server (port 25052), a durable job
//! store (SQLite in its data dir), a worker pool that runs jobs' steps through a [`Driver`]
//! (jobs on one site in submission order, other sites in parallel), restart recovery, and an
//! optional coalesced push of job changes to Press, and offsite backups of sites to any S3
//! ([`backup`]: "Backup Site", "Restore Site", "New Site from Backup", "Delete Site Backup",
//! and "Archive Site" with `offsite_backup`).
//!
//! It must not: read the environment or the command line (the binary resolves the config and
//! secrets), return or log a secret (job secrets are kept apart and wiped when a job ends),
//! let a name escape its bench directory, or answer a 500 that carries internals; nor touch a
//! site in a restore before every file of the backup is downloaded and its checksum verified.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod backup;
pub mod config;
pub mod driver;
pub mod error;
pub mod job;
pub mod names;
pub mod push;
pub mod sched;
pub mod store;
pub mod worker;

pub use config::{Benches, Config, DEFAULT_PORT, DriverKind, StorageConfig};
pub use driver::Driver;
pub use error::{ApiError, Error, ErrorCode};

use axum::Router;
use pressoir_core::{RateLimiter, Shutdown, TokenHash, ratelimit};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long a stopping agent waits for running steps to end.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A started agent: its router, and the background tasks (workers, pusher) that stop on the
/// shutdown signal.
pub struct Agent {
    pub router: Router,
    pub tasks: Vec<JoinHandle<()>>,
    pub store: store::Store,
}

/// Opens the store, migrates, recovers unfinished jobs, starts the workers (and the pusher
/// when `press_url` is set), and returns the router with its rate limit applied.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Agent, Error> {
    start_with(config, None, shutdown).await
}

/// [`start`] with a driver of the caller's instead of the one `config.driver` names (for
/// drivers that live outside this crate, and for tests).
pub async fn start_with(
    config: Config,
    driver: Option<Arc<dyn Driver>>,
    shutdown: Shutdown,
) -> Result<Agent, Error> {
    if config.password.expose().is_empty() {
        return Err(Error::Config("the agent password must not be empty".into()));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(Error::io(format!(
        "create data dir {}",
        config.data_dir.display()
    )))?;
    // The job store holds job secrets until their jobs end: only the agent's user may read it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!(
                "restrict data dir {}",
                config.data_dir.display()
            )))?;
    }
    let url = match &config.database_url {
        Some(u) => u.clone(),
        None => pressoir_core::db::sqlite_url(&config.data_dir.join("agent.sqlite")),
    };
    let store = store::Store::open(&url, &config.database_schema).await?;
    let driver: Arc<dyn Driver> = match (driver, config.driver) {
        (Some(d), _) => d,
        (None, DriverKind::Local) => {
            let offsite = config
                .storage
                .as_ref()
                .map(backup::Offsite::new)
                .transpose()?;
            Arc::new(
                driver::local::LocalDriver::new(&config.data_dir, &config.benches)?
                    .with_offsite(offsite),
            )
        }
    };
    let engine = worker::Engine::new(store.clone(), driver, config.benches.clone());
    let recovered = engine.recover().await?;
    let mut tasks = engine.spawn_workers(config.workers, shutdown.clone());
    if let Some(press_url) = &config.press_url {
        let pusher = push::Pusher {
            engine: engine.clone(),
            url: press_url.clone(),
            server: config.server_name.clone(),
            password: config.password.clone(),
            interval: config.push_interval,
        };
        tasks.push(tokio::spawn(pusher.run(shutdown.clone())));
    }
    tracing::info!(
        workers = config.workers.max(1),
        driver = engine.driver.name(),
        recovered,
        rate_limit = %config.rate_limit,
        push = config.press_url.is_some(),
        offsite = config.storage.as_ref().map(|s| s.bucket.as_str()).unwrap_or("none"),
        "agent started"
    );
    let token = TokenHash::of(config.password.expose().as_bytes());
    let router = api::router(engine, token);
    let limiter = RateLimiter::new(config.rate_limit);
    let router = ratelimit::apply(
        router,
        limiter,
        ratelimit::key_by_authorization,
        Arc::new(api::rate_limited),
    );
    Ok(Agent {
        router,
        tasks,
        store,
    })
}

/// The agent's router, for the `pressoir up` gateway; its background tasks stop on `shutdown`.
pub async fn app(config: Config, shutdown: Shutdown) -> Result<Router, Error> {
    Ok(start(config, shutdown).await?.router)
}

/// Serves the agent on `listener` until `shutdown`, then lets running steps end.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let agent = start(config, shutdown.clone()).await?;
    let served = pressoir_core::serve(listener, agent.router, shutdown.clone()).await;
    shutdown.trigger();
    let join = futures::future::join_all(agent.tasks);
    if tokio::time::timeout(STOP_DEADLINE, join).await.is_err() {
        tracing::warn!(
            "steps still running after the stop deadline; they resume or fail on the next start"
        );
    }
    agent.store.close().await;
    served.map_err(Error::io("serve"))
}
