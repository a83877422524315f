//! Press, Pressoir's control plane: the Frappe Press API (`/api/method/*`) over teams, users,
//! sites, servers and plans; authentication (sessions, API keys, argon2 passwords, CSRF, login
//! throttling); and the job outbox whose dispatcher and poller drive each server's agent.
//!
//! It must not: read the environment (secrets arrive in [`Config`]), write SQL outside
//! `store`, run site work itself (the agent does, over HTTP), or answer an error outside
//! Frappe's body. Handlers are thin; rules live in `domain`, which does no I/O.

pub mod agent;
pub mod api;
pub mod auth;
pub mod backup_policy;
pub mod billing;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod store;
pub mod webhooks;

pub use config::{Bearer, Config, DEFAULT_APPS, ServerSeed};
pub use error::{Error, ExcType, Result};

use pressoir_core::Shutdown;
use pressoir_core::clock::now_ms;
use pressoir_core::db::Db;
use std::sync::Arc;
use store::{Plan, Server, Store};

/// The name of the built-in administrator and of its team.
pub const ADMINISTRATOR: &str = "Administrator";

/// Opens Press's store and runs its migrations (also used by the admin CLI).
pub async fn open_store(database_url: &str, schema: &str, max_connections: u32) -> Result<Store> {
    let db = Db::connect(database_url, schema, max_connections).await?;
    Store::open(db).await
}

/// The plans every Press starts with. Prices in cents (USD), limits as Frappe Press sets them.
pub fn default_plans() -> Vec<Plan> {
    let p = |idx, name: &str, cents, cpu, db, disk, code: &str, trial| Plan {
        name: name.into(),
        price_cents: cents,
        currency: "USD".into(),
        cpu_time_per_day: cpu,
        max_database_mb: db,
        max_storage_mb: disk,
        billing_code: code.into(),
        is_trial: trial,
        enabled: 1,
        idx,
    };
    vec![
        p(0, "Trial", 0, 1, 512, 5000, "trial_monthly", 1),
        p(1, "Starter", 1000, 1, 500, 5120, "starter_monthly", 0),
        p(2, "Pro", 2500, 2, 1024, 25600, "pro_monthly", 0),
        p(3, "Business", 5000, 4, 2048, 51200, "business_monthly", 0),
    ]
}

/// First-start seeding, safe to repeat: the Administrator and its team, the plans, and the
/// configured servers with their benches (their URL and password refreshed every start).
pub async fn seed(store: &Store, config: &Config) -> Result<()> {
    if store.user(ADMINISTRATOR).await?.is_none() {
        let pw = config.admin_password.expose().to_string();
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        match store
            .create_user(ADMINISTRATOR, ADMINISTRATOR, &hash, true)
            .await
        {
            Ok(()) | Err(Error::Frappe(ExcType::DuplicateEntryError, _)) => {}
            Err(e) => return Err(e),
        }
    }
    if store.team(ADMINISTRATOR).await?.is_none() {
        match store
            .create_team(ADMINISTRATOR, ADMINISTRATOR, ADMINISTRATOR)
            .await
        {
            Ok(()) | Err(Error::Frappe(ExcType::DuplicateEntryError, _)) => {}
            Err(e) => return Err(e),
        }
    }
    for p in default_plans() {
        if store.plan(&p.name).await?.is_none() {
            store.upsert_plan(&p).await?;
        }
    }
    for s in &config.servers {
        domain::validate_name("server", &s.name)?;
        domain::validate_name("bench", &s.bench)?;
        let row = Server {
            name: s.name.clone(),
            title: s.name.clone(),
            team: ADMINISTRATOR.into(),
            status: "Active".into(),
            agent_url: s.agent_url.clone(),
            agent_password: s.agent_password.expose().to_string(),
            use_for_new_sites: 1,
            created: now_ms(),
        };
        store.put_server(&row, true).await?;
        store.put_bench(&s.name, &s.bench, &s.apps).await?;
    }
    Ok(())
}

/// A started Press: its router, and the background tasks that stop on the shutdown signal.
pub struct Press {
    pub router: axum::Router,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub store: Store,
}

/// Opens the store, migrates, seeds, starts the dispatcher and poller (stopped by `shutdown`),
/// and returns the router with Press's rate limit applied, beside those tasks.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Press> {
    let d = &config.domain;
    if d.is_empty()
        || d.len() > 200
        || d.starts_with('.')
        || d.ends_with('.')
        || d.contains("..")
        || !d
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(Error::validation(format!(
            "domain '{d}' must be a lowercase DNS name such as cloud.localhost"
        )));
    }
    let store = open_store(
        &config.database_url,
        &config.db_schema,
        config.max_connections,
    )
    .await?;
    seed(&store, &config).await?;
    let dispatcher = dispatch::Dispatcher::new(
        store.clone(),
        agent::AgentClient::new(),
        config.agent_rate_limit,
        config.poll_interval,
        (config.health_interval, config.health_failures),
    );
    let mut tasks = dispatcher.spawn(shutdown.clone());
    tasks
        .push(webhooks::deliver::spawn(store.clone(), config.webhooks.clone(), shutdown.clone()).1);
    if let Some(b) = &config.billing {
        tasks.extend(billing::worker::spawn(
            store.clone(),
            b.clone(),
            shutdown.clone(),
        )?);
    }
    if !config.backup_policies.is_empty() {
        tasks.push(backup_policy::spawn(
            store.clone(),
            dispatcher.clone(),
            config.backup_policies.clone(),
            config.backup_delete_backoff,
            config.backup_tick,
            shutdown.clone(),
        ));
    }
    // Jobs recorded before a restart go out at once.
    dispatcher.wake();
    let purge = store.clone();
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait() => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {
                    let _ = purge.purge_sessions(now_ms()).await;
                }
            }
        }
    }));
    let state = Arc::new(api::AppState::new(store.clone(), config, dispatcher));
    Ok(Press {
        router: api::router(state),
        tasks,
        store,
    })
}

/// The router of a started Press, for the `pressoir up` gateway; its background tasks stop
/// on `shutdown`.
pub async fn app(config: Config, shutdown: Shutdown) -> Result<axum::Router> {
    Ok(start(config, shutdown).await?.router)
}

/// [`app`] served on `listener` until `shutdown`; then waits for the background tasks and
/// closes the store.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<()> {
    let press = start(config, shutdown.clone()).await?;
    let served = pressoir_core::serve(listener, press.router, shutdown.clone()).await;
    shutdown.trigger();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures::future::join_all(press.tasks),
    )
    .await;
    press.store.db.pool.close().await;
    served.map_err(|e| Error::internal(format!("serve: {e}")))
}

/// Creates a team owned by `owner` (an existing user); returns its name.
pub async fn admin_new_team(store: &Store, name: &str, title: &str, owner: &str) -> Result<String> {
    domain::validate_name("team", name)?;
    if store.user(owner).await?.is_none() {
        return Err(Error::not_found(format!("User {owner} not found")));
    }
    store.create_team(name, title, owner).await?;
    Ok(name.to_string())
}

/// Creates a user with an argon2-hashed password, optionally in a team.
pub async fn admin_new_user(
    store: &Store,
    name: &str,
    full_name: &str,
    password: &str,
    team: Option<&str>,
) -> Result<()> {
    domain::validate_name("user", name)?;
    if password.len() < 8 {
        return Err(Error::validation("password must be at least 8 characters"));
    }
    if let Some(t) = team
        && store.team(t).await?.is_none()
    {
        return Err(Error::not_found(format!("Team {t} not found")));
    }
    let pw = password.to_string();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
    store.create_user(name, full_name, &hash, false).await?;
    if let Some(t) = team {
        store.add_member(t, name).await?;
    }
    Ok(())
}

/// Adds an existing user to an existing team.
pub async fn admin_add_member(store: &Store, team: &str, user: &str) -> Result<()> {
    if store.team(team).await?.is_none() {
        return Err(Error::not_found(format!("Team {team} not found")));
    }
    if store.user(user).await?.is_none() {
        return Err(Error::not_found(format!("User {user} not found")));
    }
    store.add_member(team, user).await
}

/// Registers a server whose agent runs elsewhere, with its first bench.
pub async fn admin_new_server(
    store: &Store,
    name: &str,
    agent_url: &str,
    agent_password: &str,
    team: &str,
    bench: &str,
    apps: &[String],
) -> Result<()> {
    domain::validate_name("server", name)?;
    domain::validate_name("bench", bench)?;
    if !(agent_url.starts_with("http://") || agent_url.starts_with("https://")) {
        return Err(Error::validation(
            "agent_url must start with http:// or https://",
        ));
    }
    if agent_password.is_empty() {
        return Err(Error::validation("agent_password must not be empty"));
    }
    if store.team(team).await?.is_none() {
        return Err(Error::not_found(format!("Team {team} not found")));
    }
    let row = Server {
        name: name.into(),
        title: name.into(),
        team: team.into(),
        status: "Active".into(),
        agent_url: agent_url.into(),
        agent_password: agent_password.into(),
        use_for_new_sites: 1,
        created: now_ms(),
    };
    store.put_server(&row, false).await?;
    store.put_bench(name, bench, apps).await
}
