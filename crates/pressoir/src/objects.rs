//! `pressoir objects serve`: the S3 object storage alone, path-style on any host.

use anyhow::Context;
use pressoir_core::secret::Origin;
use pressoir_core::{CredentialStore, RateSpec, Secret, Shutdown};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ObjectsArgs {
    #[command(subcommand)]
    pub command: ObjectsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ObjectsCommand {
    /// Serve the S3 endpoint.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PRESSOIR_S3_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Pressoir's data directory; objects go under `<data-dir>/objects`.
    #[arg(long, env = "PRESSOIR_DATA_DIR", default_value = "./pressoir-data")]
    pub data_dir: PathBuf,
    /// More access keys with policies: a JSON array of
    /// `{"access_key","secret_key","read_only"?,"buckets"?}`.
    #[arg(long, env = "PRESSOIR_S3_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// Largest single PutObject (and UploadPart) body, in bytes.
    #[arg(long, env = "PRESSOIR_S3_MAX_OBJECT_SIZE", default_value_t = 5 << 30)]
    pub max_object_size: u64,
    /// fsync each object (and its directory) before it becomes visible; `false` trades
    /// durability on power loss for latency (a killed process still never shows a partial object).
    #[arg(long, env = "PRESSOIR_S3_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Requests per access key (`off`, or e.g. `1000/min`).
    #[arg(long, env = "PRESSOIR_S3_RATE_LIMIT", default_value = "off")]
    pub rate_limit: RateSpec,
}

fn env_or_file(var: &str) -> anyhow::Result<Option<String>> {
    Ok(pressoir_core::secret::from_env(var)?.map(|(v, _)| v.expose().to_string()))
}

/// The object storage config for `data_dir` from the environment: access key from
/// `PRESSOIR_S3_ACCESS_KEY` (or `_FILE`, default `minioadmin`), secret from
/// `PRESSOIR_S3_SECRET_KEY` (or `_FILE`, else generated once into `credentials.json` and
/// printed). `pressoir up` uses this too.
pub fn config(data_dir: &Path) -> anyhow::Result<pressoir_objects::Config> {
    let access = env_or_file("PRESSOIR_S3_ACCESS_KEY")?
        .unwrap_or_else(|| pressoir_objects::DEFAULT_ACCESS_KEY.to_string());
    anyhow::ensure!(!access.is_empty(), "PRESSOIR_S3_ACCESS_KEY is empty");
    let creds = CredentialStore::new(data_dir);
    let (secret, origin): (Secret, Origin) =
        creds.resolve("s3_secret_key", "PRESSOIR_S3_SECRET_KEY", None)?;
    if origin == Origin::Generated {
        // Printed once, at first start; it is stored in credentials.json (mode 0600).
        println!(
            "generated S3 secret key for access key '{access}': {} (stored in {})",
            secret.expose(),
            creds.path().display()
        );
    }
    let mut config = pressoir_objects::Config::new(data_dir, access, secret);
    config.keys.push(agent_key(data_dir)?);
    Ok(config)
}

/// The agents' key: read and write the `backups` bucket only. Access key from
/// `PRESSOIR_S3_AGENT_ACCESS_KEY` (default `pressoir-agent`), secret from
/// `PRESSOIR_S3_AGENT_SECRET_KEY` (or `_FILE`, else generated once into `credentials.json`).
pub fn agent_key(data_dir: &Path) -> anyhow::Result<pressoir_objects::AccessKey> {
    let access = env_or_file("PRESSOIR_S3_AGENT_ACCESS_KEY")?
        .unwrap_or_else(|| "pressoir-agent".to_string());
    anyhow::ensure!(!access.is_empty(), "PRESSOIR_S3_AGENT_ACCESS_KEY is empty");
    let creds = CredentialStore::new(data_dir);
    let (secret, _) = creds.resolve("s3_agent_secret_key", "PRESSOIR_S3_AGENT_SECRET_KEY", None)?;
    Ok(pressoir_objects::AccessKey::new(
        access,
        secret,
        pressoir_objects::Policy::buckets(&[pressoir_objects::BACKUPS_BUCKET]),
    ))
}

pub async fn run(args: ObjectsArgs) -> anyhow::Result<()> {
    match args.command {
        ObjectsCommand::Serve(a) => serve(a).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data dir {}", args.data_dir.display()))?;
    let mut config = config(&args.data_dir)?;
    if let Some(path) = &args.keys_file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the keys file {}", path.display()))?;
        config
            .keys
            .extend(pressoir_objects::AccessKey::list_from_json(&bytes)?);
    }
    config.max_object_size = args.max_object_size;
    config.max_part_size = args.max_object_size;
    config.rate_limit = args.rate_limit;
    config.fsync = args.fsync;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "S3 object storage listening");
    pressoir_objects::run(config, listener, Shutdown::on_signals()).await?;
    Ok(())
}
