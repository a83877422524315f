//! Pressoir's billing service: the Lago API v1 (customers, billable metrics, plans with their
//! charges, subscriptions, events, current usage, invoices, webhook endpoints), on SQLite or
//! PostgreSQL, so that Press — or anything written for Lago, such as `lago-python-client` —
//! bills through it, and a real Lago can replace it by configuration alone.
//!
//! Money is integer cents; charge math is exact decimal (`rust_decimal`), never floating
//! point. Event property values are kept as fixed-point integers with six decimals.
//!
//! Current usage stays fast over millions of events because ingest keeps **running hourly
//! aggregates** per (subscription, metric code, hour) — count, sum, max and latest — updated
//! in the same transaction as the event insert. A period's usage reads the whole hours from
//! those buckets and only the partial hours at its edges from the events (indexed on
//! subscription, code, timestamp). `unique_count_agg`, `weighted_sum_agg` and percentage
//! charges with per-event rules read the events of the period themselves.
//!
//! Ingest requests go through writers (one on SQLite, whose writers are serialized anyway,
//! four on PostgreSQL) that commit the requests waiting together in one statement (group
//! commit; if any event is a duplicate the group is redone request by request, so a
//! duplicate refuses only its own request). On PostgreSQL the hourly buckets are sharded so
//! concurrent writers do not queue on one row lock.
//!
//! Webhooks are written to a durable outbox in the same transaction as the change, then
//! delivered by a background task, signed as Lago signs them (HMAC or RS256 JWT).
//!
//! Several processes may serve one PostgreSQL schema: writes that must not race (billing a
//! subscription, creating one) take row locks or meet unique indexes and retry; the
//! in-memory metric cache falls back to the store on a miss.
//!
//! Choices and limits, on purpose: periods and dates are UTC (customer timezones are stored,
//! not applied); every currency is taken to have two decimals; charge filters and
//! `pricing_group_keys`, taxes, coupons, wallets, credit notes, minimum commitments,
//! progressive billing, `plan_overrides` and the `graduated_percentage`/`dynamic`/`custom`
//! charge models are not implemented; an event whose code has no metric yet is counted but
//! carries no value; a metric's `field_name` cannot change once it has events.
//!
//! What it must not do: read configuration or secrets from the environment (the binary
//! resolves them into [`Config`]); share tables with another service; call other services
//! (billing is called, it never calls Press); use floating point for money.

pub mod aggregate;
pub mod api;
pub mod client;
pub mod input;
pub mod invoice;
pub mod model;
pub mod money;
pub mod period;
pub mod proto;
pub mod render;
pub mod service;
pub mod store;
pub mod webhook;

use pressoir_core::ratelimit::{self, RateLimiter};
use pressoir_core::{RateSpec, Secret, Shutdown};
use rust_decimal::Decimal;
use serde_json::json;
use service::App;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] pressoir_core::db::DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("{}", .0.body().1)]
    Api(proto::ApiError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<proto::ApiError> for Error {
    fn from(e: proto::ApiError) -> Self {
        Error::Api(e)
    }
}

/// A plan seeded at first start (created if its code is missing; never overwritten), with a
/// graduated charge on `storage_gb`: the first `included_gb` free, then `per_gb` each.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedPlan {
    pub code: String,
    pub name: String,
    pub amount_cents: i64,
    pub currency: String,
    pub included_gb: i64,
    /// Price per GB above the included amount, in currency units ("0.10").
    pub per_gb: Decimal,
}

impl SeedPlan {
    /// Press's default plans, by billing code and price: `trial_monthly` (free),
    /// `starter_monthly`, `pro_monthly` and `business_monthly`, each including the storage of
    /// the Press plan and charging 0.10 per GB above it.
    pub fn defaults() -> Vec<SeedPlan> {
        let p = |code: &str, name: &str, cents, gb| SeedPlan {
            code: code.into(),
            name: name.into(),
            amount_cents: cents,
            currency: "USD".into(),
            included_gb: gb,
            per_gb: Decimal::new(10, 2),
        };
        vec![
            p("trial_monthly", "Trial", 0, 5),
            p("starter_monthly", "Starter", 1000, 5),
            p("pro_monthly", "Pro", 2500, 25),
            p("business_monthly", "Business", 5000, 50),
        ]
    }

    /// Parses `code=amount_cents[:currency[:included_gb[:per_gb]]]`, comma-separated.
    pub fn parse_list(spec: &str) -> Result<Vec<SeedPlan>, String> {
        let mut out = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || {
                format!(
                    "seed plan '{item}' must look like code=amount_cents[:currency[:included_gb[:per_gb]]]"
                )
            };
            let (code, rest) = item.split_once('=').ok_or_else(bad)?;
            let mut parts = rest.split(':');
            let amount_cents: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let currency = parts.next().unwrap_or("USD").to_string();
            let included_gb: i64 = parts.next().unwrap_or("5").parse().map_err(|_| bad())?;
            let per_gb = input::parse_decimal(parts.next().unwrap_or("0.10")).ok_or_else(bad)?;
            if !service::check_seed(code, &currency) || amount_cents < 0 || included_gb < 0 {
                return Err(bad());
            }
            let name = code.trim_end_matches("_monthly").replace('_', " ");
            let mut chars = name.chars();
            let name = match chars.next() {
                Some(f) => f.to_uppercase().collect::<String>() + chars.as_str(),
                None => code.to_string(),
            };
            out.push(SeedPlan {
                code: code.into(),
                name,
                amount_cents,
                currency,
                included_gb,
                per_gb,
            });
        }
        Ok(out)
    }
}

/// The billing service's configuration, resolved by the binary.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// PostgreSQL schema (ignored on SQLite).
    pub schema: String,
    pub max_connections: u32,
    /// The API key clients present as `Authorization: Bearer <key>`.
    pub api_key: Secret,
    /// Per API key (reference: 1000/min).
    pub rate_limit: RateSpec,
    /// This service's public URL: the `iss` of webhook JWTs.
    pub api_url: String,
    /// Seed the `storage_gb` metric (on `gb_used`) and these plans at start.
    pub seed_metric: bool,
    pub seed_plans: Vec<SeedPlan>,
    pub webhook: webhook::Settings,
    /// How often the biller looks for ended periods.
    pub billing_tick: Duration,
    /// The organization's webhook HMAC key and RSA key; generated and stored when unset.
    pub hmac_key: Option<Secret>,
    pub rsa_private_pem: Option<Secret>,
}

impl Config {
    pub fn new(database_url: impl Into<String>, api_key: Secret) -> Config {
        Config {
            database_url: database_url.into(),
            schema: "billing".into(),
            max_connections: 16,
            api_key,
            rate_limit: RateSpec::per(1000, Duration::from_secs(60)),
            api_url: "http://billing.localhost".into(),
            seed_metric: true,
            seed_plans: SeedPlan::defaults(),
            webhook: webhook::Settings::default(),
            billing_tick: Duration::from_secs(60),
            hmac_key: None,
            rsa_private_pem: None,
        }
    }
}

async fn open(config: &Config) -> Result<Arc<App>, Error> {
    let store =
        store::Store::open(&config.database_url, &config.schema, config.max_connections).await?;
    let now = pressoir_core::clock::now_ms();
    let org = {
        let mut c = store.read().await?;
        store::org(&mut c).await?
    };
    let org = match org {
        Some(o) => o,
        None => {
            let pem = match &config.rsa_private_pem {
                Some(p) => p.expose().to_string(),
                None => webhook::generate_private_pem()?,
            };
            let o = store::Org {
                lago_id: service::new_id(),
                hmac_key: config
                    .hmac_key
                    .as_ref()
                    .map(|k| k.expose().to_string())
                    .unwrap_or_else(service::new_id),
                rsa_private_pem: pem,
            };
            let mut tx = store.begin().await?;
            store::insert_org(tx.conn(), &o, now).await?;
            let stored = store::org(tx.conn()).await?;
            tx.commit().await?;
            stored.unwrap_or(o)
        }
    };
    let signer = webhook::Signer::new(&org.hmac_key, &org.rsa_private_pem, &config.api_url)?;
    let (ingest_queue, ingest_rx) = tokio::sync::mpsc::channel(1024);
    let writers = match store.backend() {
        pressoir_core::db::Backend::Sqlite => 1,
        pressoir_core::db::Backend::Postgres => 4,
    };
    let writer_store = store.clone();
    let app = Arc::new(App {
        store,
        org_id: org.lago_id,
        hmac_key: org.hmac_key,
        signer,
        metrics: RwLock::new(HashMap::new()),
        has_endpoints: AtomicBool::new(false),
        endpoints_checked_at: std::sync::atomic::AtomicI64::new(0),
        webhook_wake: tokio::sync::Notify::new(),
        webhook: config.webhook.clone(),
        ingest_queue: Some(ingest_queue),
    });
    let rx = Arc::new(tokio::sync::Mutex::new(ingest_rx));
    for _ in 0..writers {
        tokio::spawn(service::group_writer(writer_store.clone(), rx.clone()));
    }
    app.reload_metrics().await?;
    seed(&app, config).await?;
    Ok(app)
}

async fn seed(app: &App, config: &Config) -> Result<(), Error> {
    let ignore_taken = |r: Result<serde_json::Value, Error>| match r {
        Ok(_) => Ok(()),
        Err(Error::Api(proto::ApiError::Validation(_))) => Ok(()),
        Err(e) => Err(e),
    };
    if config.seed_metric && app.metric_by_code("storage_gb").is_none() {
        let m = json!({"name": "Storage", "code": "storage_gb", "aggregation_type": "max_agg",
                       "field_name": "gb_used", "description": "Peak storage of the period, in GB"});
        ignore_taken(app.create_metric(m.as_object().expect("an object")).await)?;
    }
    for p in &config.seed_plans {
        if app.plan(&p.code).await.is_ok() {
            continue;
        }
        let mut charges = vec![];
        if app.metric_by_code("storage_gb").is_some() {
            charges.push(json!({
                "billable_metric_code": "storage_gb",
                "charge_model": "graduated",
                "properties": {"graduated_ranges": [
                    {"from_value": 0, "to_value": p.included_gb, "flat_amount": "0", "per_unit_amount": "0"},
                    {"from_value": p.included_gb + 1, "to_value": null, "flat_amount": "0",
                     "per_unit_amount": p.per_gb.to_string()}
                ]}
            }));
        }
        let body = json!({"name": p.name, "code": p.code, "interval": "monthly", "amount_cents": p.amount_cents,
                          "amount_currency": p.currency, "pay_in_advance": false, "charges": charges});
        ignore_taken(app.create_plan(body.as_object().expect("an object")).await)?;
    }
    Ok(())
}

/// Opens the store, migrates, seeds, starts the biller and the webhook sender (both stop on
/// `shutdown`), and returns the router, rate limit applied.
pub async fn app(config: Config, shutdown: Shutdown) -> Result<axum::Router, Error> {
    let app = open(&config).await?;
    {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { webhook::run(app, shutdown).await });
    }
    {
        let app = app.clone();
        let shutdown = shutdown.clone();
        let tick = config.billing_tick;
        tokio::spawn(async move {
            loop {
                if let Err(e) = app.bill_all().await {
                    tracing::warn!(error = %e, "billing pass failed");
                }
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
            }
        });
    }
    let router = api::router(app, config.api_key.clone());
    let limiter = RateLimiter::new(config.rate_limit);
    let respond: ratelimit::Responder = Arc::new(|| {
        use axum::response::IntoResponse;
        proto::ApiError::TooManyRequests.into_response()
    });
    Ok(ratelimit::apply(
        router,
        limiter,
        ratelimit::key_by_authorization,
        respond,
    ))
}

/// [`app`] served on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let router = app(config, shutdown.clone()).await?;
    pressoir_core::serve(listener, router, shutdown).await?;
    Ok(())
}
