//! Pressoir's identity service: an OpenID Connect provider on Keycloak's paths
//! (`/realms/{realm}/protocol/openid-connect/...`, and `/auth/realms/...` for old clients), so
//! Keycloak clients (python-keycloak, any OIDC library) work against it unchanged, and Press can
//! be pointed at a real Keycloak instead by configuration alone.
//!
//! It owns its tables (realms, clients, users, roles, signing keys, sessions) and reads no
//! other service's. It must not derive its issuer from the request's Host (the issuer is
//! `Config::issuer_base` + `/realms/<realm>`), must not log or return secrets, and keeps its
//! SQL in `store.rs`. [`verify::BearerVerifier`] is the client side other services (Press) use
//! to accept its tokens, or a real Keycloak's, over HTTP only.
//!
//! Code map: `http` (OIDC endpoints) and `login` (the authorization endpoint's page) and
//! `admin_http` (Keycloak-shaped admin API) are thin handlers over `service` (realm views
//! cached in memory, client and user authentication, grants, token checks), which uses the
//! pure rules of `model` (scopes, claims, PKCE, redirect URIs), `guard` (brute-force
//! delays and lockouts), `crypto` (aws-lc keys kept parsed, compact JWS, JWKS) and the SQL of
//! `store`. `oauth` is the closed error vocabulary; `admin` the operations shared by the
//! admin API, the CLI and the first-start seed.
//!
//! Where it differs from Keycloak, on purpose: client secrets are stored as SHA-256 (shown once,
//! at creation); `aud` is the client's configured audience (its own id by default) rather than
//! `account`; refresh tokens are HS256 JWTs only this service reads, single-use, and replaying
//! one ends its session ("Stale token"); there is no browser SSO cookie, so every authorization
//! request shows the login page and `prompt=none` answers `login_required`; `offline_access`
//! is accepted but refresh tokens never outlive the session's idle and maximum times; the JWKS
//! has no `enc` key and no `x5c`; brute-force counters and the token rate limit live in the
//! process (per replica).

pub mod admin;
mod admin_http;
pub mod crypto;
pub mod guard;
mod http;
mod login;
pub mod model;
pub mod oauth;
mod passwords;
pub mod service;
pub mod store;
pub mod verify;

use axum::Router;
use axum::response::IntoResponse;
use pressoir_core::{RateLimiter, RateSpec, Secret, Shutdown};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use guard::BruteForce;
pub use service::Service;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    DbSetup(#[from] pressoir_core::db::DbError),
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The identity service's settings. Secrets are resolved by the caller (the binary).
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// The PostgreSQL schema of the service's tables (ignored on SQLite).
    pub db_schema: String,
    /// Public base URL, e.g. `http://auth.localhost:30080`; a realm's issuer is
    /// `<issuer_base>/realms/<realm>`.
    pub issuer_base: String,
    /// The realm seeded at first start.
    pub realm: String,
    /// The confidential client seeded in it, with its service account.
    pub client_id: String,
    pub client_secret: Secret,
    /// Redirect URIs of the seeded client (a trailing `*` matches a prefix).
    pub client_redirect_uris: Vec<String>,
    /// The seeded user holding the `admin` realm role.
    pub admin_username: String,
    pub admin_email: Option<String>,
    pub admin_password: Secret,
    /// Limit on the token endpoint, per client credential (HTTP Basic) or client address.
    pub token_rate_limit: RateSpec,
    pub brute_force: BruteForce,
    /// Signing keys older than this are rotated; `None` rotates only on demand.
    pub key_rotation: Option<Duration>,
}

impl Config {
    /// The defaults of `pressoir up`, with the given store, issuer and secrets.
    pub fn new(
        database_url: &str,
        issuer_base: &str,
        client_secret: Secret,
        admin_password: Secret,
    ) -> Config {
        Config {
            database_url: database_url.to_string(),
            db_schema: "identity".to_string(),
            issuer_base: issuer_base.trim_end_matches('/').to_string(),
            realm: "frappe-cloud".to_string(),
            client_id: "press".to_string(),
            client_secret,
            client_redirect_uris: vec![
                "http://cloud.localhost:30080/*".to_string(),
                "http://127.0.0.1:30080/*".to_string(),
            ],
            admin_username: "Administrator".to_string(),
            admin_email: None,
            admin_password,
            token_rate_limit: RateSpec::per(600, Duration::from_secs(60)),
            brute_force: BruteForce::default(),
            key_rotation: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }

    pub fn issuer(&self) -> String {
        format!("{}/realms/{}", self.issuer_base, self.realm)
    }
}

/// How often the background task purges expired rows and checks key ages.
const MAINTENANCE: Duration = Duration::from_secs(3600);

/// Opens the store, migrates, seeds, starts key rotation and purging (stopped by `shutdown`),
/// and returns the router with the token endpoint's rate limit.
pub async fn app(config: Config, shutdown: Shutdown) -> Result<Router, Error> {
    let (router, _) = app_with_service(config, shutdown).await?;
    Ok(router)
}

/// [`app`], also handing back the service (for the admin subcommands and tests).
pub async fn app_with_service(
    config: Config,
    shutdown: Shutdown,
) -> Result<(Router, Arc<Service>), Error> {
    if url::Url::parse(&config.issuer_base).is_err() {
        return Err(Error::Invalid(format!(
            "issuer base '{}' must be an absolute URL such as http://auth.localhost:30080",
            config.issuer_base
        )));
    }
    let store = store::Store::open(&config.database_url, &config.db_schema).await?;
    admin::seed(
        &store,
        &admin::Seed {
            realm: &config.realm,
            client_id: &config.client_id,
            client_secret: &config.client_secret,
            redirect_uris: &config.client_redirect_uris,
            admin_username: &config.admin_username,
            admin_email: config.admin_email.as_deref(),
            admin_password: &config.admin_password,
        },
    )
    .await?;
    let svc = Arc::new(Service::new(store, &config.issuer_base, config.brute_force));
    // Creates the realm's first keys now rather than on the first request.
    svc.view(&config.realm).await?;
    spawn_maintenance(svc.clone(), config.key_rotation, shutdown);
    let limiter = RateLimiter::new(config.token_rate_limit);
    let respond: pressoir_core::ratelimit::Responder = Arc::new(|| {
        oauth::OAuthError::new(
            ::http::StatusCode::TOO_MANY_REQUESTS,
            oauth::Code::TemporarilyUnavailable,
            "Too many requests",
        )
        .into_response()
    });
    let admin_state = admin_http::AdminState {
        svc: svc.clone(),
        admin_realm: config.realm.clone(),
    };
    let router = http::routes(limiter, respond)
        .merge(admin_http::routes(admin_state))
        .with_state(svc.clone());
    Ok((router, svc))
}

fn spawn_maintenance(svc: Arc<Service>, rotation: Option<Duration>, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = maintain(&svc, rotation).await {
                tracing::warn!(error = %e, "identity maintenance failed; retrying later");
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(MAINTENANCE) => {}
            }
        }
    });
}

async fn maintain(svc: &Service, rotation: Option<Duration>) -> Result<(), Error> {
    let now = pressoir_core::clock::now_ms();
    if let Some(max_age) = rotation {
        for r in svc.store.realms().await? {
            if svc.rotate_if_older(&r.name, max_age).await? {
                tracing::info!(realm = %r.name, "signing keys rotated");
            }
        }
    }
    svc.store.purge(now).await
}

/// [`app`] served on `listener` until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let router = app(config, shutdown.clone()).await?;
    pressoir_core::serve(listener, router, shutdown).await?;
    Ok(())
}
