//! `pressoir agent serve`: the agent alone, on its own port (one per server).

use anyhow::Context;
use pressoir_agent::{Benches, Config, DriverKind};
use pressoir_core::secret::Origin;
use pressoir_core::{CredentialStore, RateSpec, Shutdown};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AgentCommand {
    /// Serve the Agent API and run jobs.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "PRESSOIR_AGENT_LISTEN", default_value = "127.0.0.1:25052")]
    pub listen: String,
    /// The agent's data directory (job store, benches and sites, credentials.json).
    #[arg(
        long,
        env = "PRESSOIR_AGENT_DATA_DIR",
        default_value = "./pressoir-data/agent"
    )]
    pub data_dir: PathBuf,
    /// The agent password. Prefer env PRESSOIR_AGENT_PASSWORD or PRESSOIR_AGENT_PASSWORD_FILE
    /// (a flag shows in the process list). When none is given, one is generated on first
    /// start, stored in <data-dir>/credentials.json (mode 0600) and printed once.
    #[arg(long)]
    pub password: Option<String>,
    /// Requests per credential, e.g. `50/min`; `0` or `off` lifts the limit.
    #[arg(long, env = "PRESSOIR_AGENT_RATE_LIMIT", default_value = "50/min")]
    pub rate_limit: RateSpec,
    /// Jobs run at once (jobs on one site always run one after another).
    #[arg(long, env = "PRESSOIR_AGENT_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// The site driver: `local` (no Frappe needed).
    #[arg(long, env = "PRESSOIR_AGENT_DRIVER", default_value = "local")]
    pub driver: DriverKind,
    /// Apps of the default bench, comma-separated (frappe must be among them).
    #[arg(long, env = "PRESSOIR_AGENT_APPS", value_delimiter = ',')]
    pub apps: Option<Vec<String>>,
    /// Name of the default bench.
    #[arg(long, env = "PRESSOIR_AGENT_BENCH", default_value = pressoir_agent::config::DEFAULT_BENCH)]
    pub bench: String,
    /// Press's URL: job changes are pushed to <press-url>/api/method/press.api.callbacks.agent_jobs.
    #[arg(long, env = "PRESSOIR_PRESS_URL")]
    pub press_url: Option<String>,
    /// This server's name as Press knows it (sent with every push).
    #[arg(
        long,
        env = "PRESSOIR_AGENT_SERVER_NAME",
        default_value = "app-server-1"
    )]
    pub server_name: String,
    /// Offsite backups: the S3 endpoint (e.g. `http://127.0.0.1:9000`, or an AWS regional
    /// endpoint). Backup and restore jobs fail clearly when it is not set.
    #[arg(long, env = "PRESSOIR_AGENT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The bucket backups go to.
    #[arg(long, env = "PRESSOIR_AGENT_S3_BUCKET", default_value = "backups")]
    pub s3_bucket: String,
    #[arg(long, env = "PRESSOIR_AGENT_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// The access key; its secret comes from env PRESSOIR_AGENT_S3_SECRET_KEY or
    /// PRESSOIR_AGENT_S3_SECRET_KEY_FILE (never a flag: it would show in the process list).
    #[arg(long, env = "PRESSOIR_AGENT_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,
    /// Keys start with `<prefix>/`.
    #[arg(long, env = "PRESSOIR_AGENT_S3_PREFIX", default_value = "sites")]
    pub s3_prefix: String,
}

/// The offsite storage config from the flags and `PRESSOIR_AGENT_S3_SECRET_KEY(_FILE)`.
fn storage(a: &ServeArgs) -> anyhow::Result<Option<pressoir_agent::StorageConfig>> {
    let Some(endpoint) = a.s3_endpoint.clone() else {
        return Ok(None);
    };
    let access = a
        .s3_access_key
        .clone()
        .context("--s3-endpoint needs --s3-access-key (or PRESSOIR_AGENT_S3_ACCESS_KEY)")?;
    let Some((secret, _)) = pressoir_core::secret::from_env("PRESSOIR_AGENT_S3_SECRET_KEY")? else {
        anyhow::bail!(
            "--s3-endpoint needs the secret key in PRESSOIR_AGENT_S3_SECRET_KEY or PRESSOIR_AGENT_S3_SECRET_KEY_FILE"
        );
    };
    let mut c = pressoir_agent::StorageConfig::new(endpoint, a.s3_bucket.clone(), access, secret);
    c.region = a.s3_region.clone();
    c.prefix = a.s3_prefix.clone();
    Ok(Some(c))
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.command {
        AgentCommand::Serve(a) => serve(a).await,
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.workers >= 1, "--workers must be at least 1");
    let offsite = storage(&a)?;
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("cannot create the data dir {}", a.data_dir.display()))?;
    let creds = CredentialStore::new(&a.data_dir);
    let (password, origin) = creds.resolve(
        "agent_password",
        "PRESSOIR_AGENT_PASSWORD",
        a.password.as_deref(),
    )?;
    if origin == Origin::Generated {
        println!(
            "generated agent password: {} (stored in {}; shown only this once)",
            password.expose(),
            creds.path().display()
        );
    }
    let mut config = Config::new(&a.data_dir, password);
    config.rate_limit = a.rate_limit;
    config.workers = a.workers;
    config.driver = a.driver;
    let apps = a.apps.unwrap_or_else(|| {
        pressoir_agent::config::DEFAULT_APPS
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    config.benches =
        Benches::new(vec![(a.bench, apps)]).map_err(|e| anyhow::anyhow!("--apps/--bench: {e}"))?;
    config.press_url = a.press_url;
    config.storage = offsite;
    config.server_name = a.server_name;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", a.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "pressoir agent listening on http://{addr} (data {})",
        a.data_dir.display()
    );
    pressoir_agent::run(config, listener, Shutdown::on_signals()).await?;
    Ok(())
}
