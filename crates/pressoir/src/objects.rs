//! `pressoir objects serve`: the S3 object storage alone, path-style on any host.

use anyhow::Context;
use pressoir_core::secret::Origin;
use pressoir_core::{CredentialStore, RateSpec, Secret, Shutdown};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    #[command(flatten)]
    pub stale_uploads: StaleUploadArgs,
}

/// When unfinished multipart uploads are aborted, with MinIO's defaults
/// (`MINIO_API_STALE_UPLOADS_EXPIRY`, `MINIO_API_STALE_UPLOADS_CLEANUP_INTERVAL`). Shared by
/// `objects serve` and `up`.
#[derive(clap::Args, Debug)]
pub struct StaleUploadArgs {
    /// Multipart uploads still unfinished this many seconds after they were started are
    /// aborted and their parts deleted (a client killed mid-upload never aborts its own).
    #[arg(long, env = "PRESSOIR_S3_STALE_UPLOADS_EXPIRY_SECS", default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stale_uploads_expiry_secs: u64,
    /// How often, in seconds, stale multipart uploads are looked for (also once at start).
    #[arg(long, env = "PRESSOIR_S3_STALE_UPLOADS_CLEANUP_INTERVAL_SECS", default_value_t = 6 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stale_uploads_cleanup_interval_secs: u64,
}

impl StaleUploadArgs {
    pub fn apply(&self, config: &mut pressoir_objects::Config) {
        config.upload_expiry = Duration::from_secs(self.stale_uploads_expiry_secs);
        config.upload_sweep_interval =
            Duration::from_secs(self.stale_uploads_cleanup_interval_secs);
    }
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
    args.stale_uploads.apply(&mut config);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "S3 object storage listening");
    pressoir_objects::run(config, listener, Shutdown::on_signals()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        stale: StaleUploadArgs,
    }

    fn applied(args: &[&str]) -> (Duration, Duration) {
        let cli = Cli::try_parse_from(std::iter::once("pressoir").chain(args.iter().copied()))
            .expect("valid flags");
        let mut c = pressoir_objects::Config::new("data", "ak", Secret::new("sk"));
        cli.stale.apply(&mut c);
        (c.upload_expiry, c.upload_sweep_interval)
    }

    #[test]
    fn stale_uploads_expire_as_minio_by_default_and_by_flag() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(applied(&[]), (h(24), h(6)));
        assert_eq!(
            applied(&[
                "--stale-uploads-expiry-secs",
                "60",
                "--stale-uploads-cleanup-interval-secs",
                "5"
            ]),
            (Duration::from_secs(60), Duration::from_secs(5))
        );
        assert!(
            Cli::try_parse_from(["pressoir", "--stale-uploads-cleanup-interval-secs", "0"])
                .is_err()
        );
    }
}
