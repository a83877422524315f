//! `pressoir billing serve`: the billing service (Lago API v1) alone.

use anyhow::Context;
use pressoir_billing::{Config, SeedPlan};
use pressoir_core::secret::Origin;
use pressoir_core::{CredentialStore, RateSpec, Shutdown};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BillingArgs {
    #[command(subcommand)]
    pub command: BillingCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BillingCommand {
    /// Serves the Lago API v1 under /api/v1.
    Serve {
        /// Holds credentials.json and the default SQLite database.
        #[arg(long, env = "PRESSOIR_DATA_DIR", default_value = "./pressoir-data")]
        data_dir: PathBuf,
        /// `sqlite://...` (default: in the data dir) or `postgres://...` (schema `billing`).
        #[arg(long, env = "PRESSOIR_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, default_value = "127.0.0.1:30300")]
        listen: SocketAddr,
        /// Requests per API key (`off` lifts it).
        #[arg(long, env = "PRESSOIR_BILLING_RATE_LIMIT", default_value = "1000/min")]
        rate_limit: RateSpec,
        /// This service's public URL, the issuer of webhook JWTs.
        #[arg(
            long,
            env = "PRESSOIR_BILLING_API_URL",
            default_value = "http://billing.localhost"
        )]
        api_url: String,
        /// Plans to seed, `code=amount_cents[:currency[:included_gb[:per_gb]]]`, comma-separated
        /// (default: trial_monthly=0, starter_monthly=1000, pro_monthly=2500, business_monthly=5000).
        #[arg(long, env = "PRESSOIR_BILLING_SEED_PLANS")]
        seed_plans: Option<String>,
        /// Seconds between passes of the biller that issues invoices for ended periods.
        #[arg(long, default_value_t = 60)]
        billing_tick_secs: u64,
    },
}

/// The billing config for a data dir, with the API key resolved from
/// `PRESSOIR_BILLING_API_KEY`, `PRESSOIR_BILLING_API_KEY_FILE` or credentials.json (generated
/// and printed once when unset). Used by `billing serve` and by `up`.
pub fn config(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Config> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store = CredentialStore::new(data_dir);
    let (key, origin) = store.resolve("billing_api_key", "PRESSOIR_BILLING_API_KEY", None)?;
    if origin == Origin::Generated {
        println!(
            "billing API key (generated, stored in {}): {}",
            store.path().display(),
            key.expose()
        );
    }
    let url = match database_url {
        Some(u) => u.to_string(),
        None => pressoir_core::db::sqlite_url(&data_dir.join("pressoir.sqlite")),
    };
    Ok(Config::new(
        pressoir_core::db::service_url(&url, "billing"),
        key,
    ))
}

pub async fn run(args: BillingArgs) -> anyhow::Result<()> {
    match args.command {
        BillingCommand::Serve {
            data_dir,
            database_url,
            listen,
            rate_limit,
            api_url,
            seed_plans,
            billing_tick_secs,
        } => {
            let mut config = config(&data_dir, database_url.as_deref())?;
            config.rate_limit = rate_limit;
            config.api_url = api_url;
            config.billing_tick = Duration::from_secs(billing_tick_secs.max(1));
            if let Some(spec) = seed_plans {
                config.seed_plans = SeedPlan::parse_list(&spec).map_err(anyhow::Error::msg)?;
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!(%listen, "billing (Lago API v1) listening");
            pressoir_billing::run(config, listener, Shutdown::on_signals()).await?;
            Ok(())
        }
    }
}
