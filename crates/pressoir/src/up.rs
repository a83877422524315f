//! `pressoir up`: the whole cloud on one machine. Resolves the secrets (flag → env → `*_FILE` →
//! `<data-dir>/credentials.json`, generated once), starts the embedded agent as server
//! `app-server-1` with bench `bench-0001`, and serves every service behind one gateway that
//! routes by `Host`.

use anyhow::Context;
use pressoir_core::gateway::Gateway;
use pressoir_core::secret::Origin;
use pressoir_core::{CredentialStore, RateSpec, Secret, Shutdown};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where every service keeps its state.
    #[arg(long, env = "PRESSOIR_DATA_DIR", default_value = "./pressoir-data")]
    pub data_dir: PathBuf,
    /// The gateway's address (every service behind one listener).
    #[arg(long, default_value = "127.0.0.1:30080")]
    pub listen: SocketAddr,
    /// The embedded agent's address.
    #[arg(long, default_value = "127.0.0.1:25052")]
    pub agent_listen: SocketAddr,
    /// Sites are named `<name>.<domain>`; the gateway serves Press on it.
    #[arg(long, default_value = "cloud.localhost")]
    pub domain: String,
    /// `sqlite://...` (default: in the data dir) or `postgres://...`.
    #[arg(long, env = "PRESSOIR_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The Press API's limit per credential (`off` lifts it).
    #[arg(long, default_value = "100/min")]
    pub rate_limit_press: RateSpec,
    /// The agent API's limit per credential (`off` lifts it).
    #[arg(long, default_value = "50/min")]
    pub rate_limit_agent: RateSpec,
    /// Let webhooks target loopback, private and link-local addresses (local development).
    #[arg(long, env = "PRESSOIR_WEBHOOKS_ALLOW_PRIVATE", value_parser = clap::builder::FalseyValueParser::new())]
    pub webhooks_allow_private: bool,
    /// Every seeded plan's backup policy: each Active site is backed up (with its files, to
    /// the embedded S3 bucket `backups`) this often, in seconds; 0 turns scheduled backups off.
    #[arg(long, env = "PRESSOIR_BACKUP_EVERY_SECS", default_value_t = 86_400)]
    pub backup_every_secs: u64,
    /// How many scheduled backups of a site the policy keeps (older ones are deleted).
    #[arg(long, env = "PRESSOIR_BACKUP_KEEP", default_value_t = 7)]
    pub backup_keep: usize,
    #[command(flatten)]
    pub stale_uploads: crate::objects::StaleUploadArgs,
}

/// The embedded server and bench, the reference's names.
pub const SERVER: &str = "app-server-1";
pub const BENCH: &str = "bench-0001";

fn resolve(store: &CredentialStore, key: &str, var: &str, label: &str) -> anyhow::Result<Secret> {
    let (secret, origin) = store.resolve(key, var, None)?;
    if origin == Origin::Generated {
        // Printed once, at first start; it is stored in credentials.json (mode 0600).
        println!(
            "generated {label}: {} (stored in {})",
            secret.expose(),
            store.path().display()
        );
    }
    Ok(secret)
}

/// The gateway's own address as seen from this process (a wildcard listen is reached on loopback).
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data dir {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let creds = CredentialStore::new(&data_dir);
    let admin_password = resolve(
        &creds,
        "admin_password",
        "PRESSOIR_ADMIN_PASSWORD",
        "Administrator password",
    )?;
    let agent_password = resolve(
        &creds,
        "agent_password",
        "PRESSOIR_AGENT_PASSWORD",
        "agent password",
    )?;

    let database_url = match &args.database_url {
        Some(u) => u.clone(),
        None => pressoir_core::db::sqlite_url(&data_dir.join("pressoir.sqlite")),
    };
    let shutdown = Shutdown::on_signals();

    let gateway_l = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let agent_l = TcpListener::bind(args.agent_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--agent-listen)", args.agent_listen))?;
    let gateway_addr = gateway_l.local_addr()?;
    let agent_addr = agent_l.local_addr()?;
    // The embedded agent's backups go to the embedded S3 (bucket `backups`, with the agents'
    // bucket-limited key) on a loopback listener of their own: `s3.<domain>` need not resolve.
    let agent_s3_l = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on loopback for the agent's S3")?;
    let agent_s3_key = crate::objects::agent_key(&data_dir)?;

    // The embedded agent pushes job changes to Press through the gateway.
    let mut agent = pressoir_agent::Config::new(data_dir.join("agent"), agent_password.clone());
    agent.rate_limit = args.rate_limit_agent;
    agent.press_url = Some(format!("http://{gateway_addr}"));
    agent.server_name = SERVER.to_string();
    agent.storage = Some(pressoir_agent::StorageConfig::new(
        format!("http://{}", agent_s3_l.local_addr()?),
        pressoir_objects::BACKUPS_BUCKET,
        agent_s3_key.access_key,
        agent_s3_key.secret_key,
    ));
    let agent_shutdown = shutdown.clone();
    let agent_task =
        tokio::spawn(async move { pressoir_agent::run(agent, agent_l, agent_shutdown).await });

    let mut press = pressoir_press::Config::new(
        pressoir_core::db::service_url(&database_url, "press"),
        admin_password,
    );
    press.domain = args.domain.clone();
    press.rate_limit = args.rate_limit_press;
    press.agent_rate_limit = args.rate_limit_agent;
    press.webhooks.allow_private = args.webhooks_allow_private;
    // The embedded agent has offsite storage: site.archive backs a site up first.
    press.archive_backup = true;
    // Every seeded plan backs its sites up on the same schedule (daily, keep 7 by default);
    // the scheduler looks a few times per interval, at most once a minute.
    if args.backup_every_secs > 0 {
        let every = std::time::Duration::from_secs(args.backup_every_secs);
        press.backup_policies = pressoir_press::default_plans()
            .iter()
            .map(|p| pressoir_press::backup_policy::BackupPolicy {
                plan: p.name.clone(),
                every,
                keep: args.backup_keep,
            })
            .collect();
        press.backup_tick = (every / 4).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(60),
        );
    }
    let mut seed =
        pressoir_press::ServerSeed::new(SERVER, &format!("http://{agent_addr}"), agent_password);
    seed.bench = BENCH.to_string();
    press.servers = vec![seed];

    // Identity: the issuer is the public name, never the request's Host.
    let port = gateway_addr.port();
    let issuer_base = format!("http://{}:{port}", sibling_host(&args.domain, "auth"));
    let identity = crate::identity::config(
        &data_dir,
        &pressoir_core::db::service_url(&database_url, "identity"),
        &issuer_base,
    )?;
    let issuer = identity.issuer();
    let press_client = identity.client_id.clone();
    let identity_router = pressoir_identity::app(identity, shutdown.clone())
        .await
        .context("identity failed to start")?;

    // Press accepts the identity service's tokens (`aud` is the client's own id, `press`); the
    // keys are fetched over loopback, through the gateway's `/realms/` path on any host.
    let mut oidc = crate::oidc::OidcSettings::new(&issuer, &press_client);
    let realm_path = issuer
        .strip_prefix(&issuer_base)
        .unwrap_or("/realms/frappe-cloud");
    oidc.jwks_url = Some(format!(
        "http://{loopback}{realm_path}/protocol/openid-connect/certs",
        loopback = loopback(gateway_addr)
    ));
    oidc.system_client = press_client;
    press.bearer = Some(oidc.bearer());
    // Press bills through the gateway's own Lago API (`/api/v1/` on any host), with billing's key.
    let billing_key = crate::billing::config(&data_dir, Some(&database_url))?.api_key;
    press.billing = Some(pressoir_press::billing::BillingConfig::new(
        format!("http://{}", loopback(gateway_addr)),
        billing_key,
    ));
    let press = pressoir_press::start(press, shutdown.clone())
        .await
        .context("press failed to start")?;
    let press_router = press.router;

    let mut objects = crate::objects::config(&data_dir)?;
    args.stale_uploads.apply(&mut objects);
    let objects_router = pressoir_objects::app(objects, shutdown.clone())
        .await
        .context("object storage failed to start")?;
    tokio::spawn(pressoir_core::serve(
        agent_s3_l,
        objects_router.clone(),
        shutdown.clone(),
    ));

    let mut billing = crate::billing::config(&data_dir, Some(&database_url))?;
    billing.api_url = format!("http://{}:{port}", sibling_host(&args.domain, "billing"));
    let billing_router = pressoir_billing::app(billing, shutdown.clone())
        .await
        .context("billing failed to start")?;

    let gateway = Gateway::new(press_router)
        .host("auth.", identity_router.clone())
        .host("s3.", objects_router)
        .host("billing.", billing_router.clone())
        .path("/realms/", identity_router.clone())
        .path("/auth/realms/", identity_router)
        .path("/api/v1/", billing_router);

    println!(
        "pressoir up: ready - Press http://{domain}:{port} (also http://{gateway_addr}/api/method/ping), \
         identity {issuer} (also http://{gateway_addr}/realms/), S3 http://{s3_host}:{port} (path-style), \
         billing http://{billing_host}:{port}/api/v1 (also http://{gateway_addr}/api/v1/), \
         agent http://{agent_addr}, data {dir}",
        domain = args.domain,
        s3_host = sibling_host(&args.domain, "s3"),
        billing_host = sibling_host(&args.domain, "billing"),
        dir = data_dir.display(),
    );
    let served = pressoir_core::serve(gateway_l, gateway.into_router(), shutdown.clone()).await;
    shutdown.trigger();
    for t in press.tasks {
        let _ = t.await;
    }
    press.store.db.pool.close().await;
    match agent_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "agent stopped with an error"),
        Err(e) => tracing::error!(error = %e, "agent task failed"),
        Ok(Ok(())) => {}
    }
    served.context("gateway")?;
    Ok(())
}

/// The public host of a service beside Press, as the reference names them: Press on
/// `cloud.localhost`, identity on `auth.localhost`, S3 on `s3.localhost`, billing on
/// `billing.localhost` (the domain's first label replaced by the service's).
fn sibling_host(domain: &str, service: &str) -> String {
    match domain.split_once('.') {
        Some((_, parent)) if parent.contains('.') || parent == "localhost" => {
            format!("{service}.{parent}")
        }
        _ => format!("{service}.{domain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::sibling_host;

    #[test]
    fn services_sit_beside_press() {
        assert_eq!(sibling_host("cloud.localhost", "auth"), "auth.localhost");
        assert_eq!(sibling_host("cloud.example.com", "s3"), "s3.example.com");
        assert_eq!(sibling_host("localhost", "billing"), "billing.localhost");
        assert_eq!(sibling_host("example.com", "auth"), "auth.example.com");
    }
}
