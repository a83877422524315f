//! `pressoir press ...`: Press alone against remote agents (`serve`), and the Administrator's
//! commands on Press's store (teams, users, servers), which work with Press stopped or running.

use anyhow::Context;
use pressoir_core::secret::Origin;
use pressoir_core::{CredentialStore, RateSpec, Secret, Shutdown};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PressArgs {
    #[command(subcommand)]
    pub command: PressCommand,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Holds credentials.json and the default SQLite database.
    #[arg(long, env = "PRESSOIR_DATA_DIR", default_value = "./pressoir-data")]
    pub data_dir: PathBuf,
    /// `sqlite://...` (default: in the data dir) or `postgres://...`.
    #[arg(long, env = "PRESSOIR_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    fn url(&self) -> String {
        let url = match &self.database_url {
            Some(u) => u.clone(),
            None => pressoir_core::db::sqlite_url(&self.data_dir.join("pressoir.sqlite")),
        };
        pressoir_core::db::service_url(&url, "press")
    }

    /// Opens the store, seeding it like a first start would (the Administrator, its team and
    /// the plans), so the commands work on a fresh data dir too.
    async fn open(&self) -> anyhow::Result<pressoir_press::store::Store> {
        std::fs::create_dir_all(&self.data_dir)?;
        let store = pressoir_press::open_store(&self.url(), "press", 2).await?;
        let admin = admin_password(&self.data_dir)?;
        pressoir_press::seed(&store, &pressoir_press::Config::new(self.url(), admin)).await?;
        Ok(store)
    }
}

fn admin_password(data_dir: &std::path::Path) -> anyhow::Result<Secret> {
    let creds = CredentialStore::new(data_dir);
    let (admin, origin) = creds.resolve("admin_password", "PRESSOIR_ADMIN_PASSWORD", None)?;
    if origin == Origin::Generated {
        println!(
            "generated Administrator password: {} (stored in {})",
            admin.expose(),
            creds.path().display()
        );
    }
    Ok(admin)
}

#[derive(clap::Subcommand, Debug)]
pub enum PressCommand {
    /// Runs Press alone; register agents with `pressoir press server add`.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, default_value = "127.0.0.1:30080")]
        listen: SocketAddr,
        #[arg(long, default_value = "cloud.localhost")]
        domain: String,
        /// The Press API's limit per credential (`off` lifts it).
        #[arg(long, default_value = "100/min")]
        rate_limit: RateSpec,
        /// Press's budget toward each agent; match the agents' own limit.
        #[arg(long, default_value = "50/min")]
        agent_rate_limit: RateSpec,
        /// Let webhooks target loopback, private and link-local addresses (local development).
        #[arg(long, env = "PRESSOIR_WEBHOOKS_ALLOW_PRIVATE", value_parser = clap::builder::FalseyValueParser::new())]
        webhooks_allow_private: bool,
        /// Accept `Authorization: Bearer` access tokens from this OIDC issuer (exactly its
        /// tokens' `iss`, e.g. `https://keycloak.example/realms/frappe-cloud`).
        #[arg(long, env = "PRESSOIR_OIDC_ISSUER")]
        oidc_issuer: Option<String>,
        /// The `aud` those tokens must carry.
        #[arg(long, env = "PRESSOIR_OIDC_AUDIENCE", default_value = "press")]
        oidc_audience: String,
        /// Where to fetch the issuer's keys (default `<issuer>/protocol/openid-connect/certs`).
        #[arg(long, env = "PRESSOIR_OIDC_JWKS_URL")]
        oidc_jwks_url: Option<String>,
        /// Also accept a token whose `azp` is the audience when `aud` lacks it, as a stock
        /// Keycloak issues them to a client without an audience mapper (`aud` = `account`).
        #[arg(long, env = "PRESSOIR_OIDC_ACCEPT_AZP", value_parser = clap::builder::FalseyValueParser::new())]
        oidc_accept_azp: bool,
        /// The realm role granting Press Administrator rights.
        #[arg(long, env = "PRESSOIR_OIDC_ADMIN_ROLE", default_value = pressoir_identity::admin::ADMIN_ROLE)]
        oidc_admin_role: String,
        /// The realm role letting a token act as its Press user, with that user's rights.
        #[arg(long, env = "PRESSOIR_OIDC_USER_ROLE", default_value = pressoir_identity::admin::PRESS_USER_ROLE)]
        oidc_user_role: String,
        /// The realm role letting a token call Press's read methods only, as its Press user.
        #[arg(long, env = "PRESSOIR_OIDC_READ_ROLE", default_value = pressoir_identity::admin::PRESS_READ_ROLE)]
        oidc_read_role: String,
        /// Bill through this Lago API root (this Pressoir's billing service, or a real Lago).
        #[arg(long, env = "PRESSOIR_BILLING_URL")]
        billing_url: Option<String>,
        /// Its API key (default: env PRESSOIR_BILLING_API_KEY, `*_FILE`, or credentials.json).
        #[arg(long)]
        billing_api_key: Option<String>,
    },
    /// Teams.
    Team {
        #[command(subcommand)]
        command: TeamCommand,
    },
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Servers (each runs `pressoir agent serve`).
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Webhooks for all teams (Press Settings > Webhooks) or for one team.
    Webhook {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: crate::webhook::WebhookCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum TeamCommand {
    /// Creates a team.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
        #[arg(long)]
        title: Option<String>,
        /// The owning user (a member from the start).
        #[arg(long, default_value = "Administrator")]
        owner: String,
    },
    /// Lists teams.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Creates a user; the password comes from PRESSOIR_USER_PASSWORD (or its _FILE).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        email: String,
        #[arg(long)]
        full_name: Option<String>,
        #[arg(long)]
        team: Option<String>,
    },
    /// Adds a user to a team.
    Join {
        #[command(flatten)]
        store: StoreArgs,
        user: String,
        team: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ServerCommand {
    /// Registers a server; its agent password comes from PRESSOIR_AGENT_PASSWORD (or its _FILE).
    Add {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
        #[arg(long)]
        agent_url: String,
        #[arg(long, default_value = "Administrator")]
        team: String,
        #[arg(long, default_value = "bench-0001")]
        bench: String,
    },
    /// Lists servers.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A secret from env `var` or `var_FILE`, never from the credentials file.
fn from_env(var: &str) -> anyhow::Result<String> {
    match pressoir_core::secret::from_env(var)? {
        Some((v, _)) => Ok(v.expose().to_string()),
        None => anyhow::bail!("set {var} (or {var}_FILE)"),
    }
}

pub async fn run(args: PressArgs) -> anyhow::Result<()> {
    match args.command {
        PressCommand::Serve {
            store,
            listen,
            domain,
            rate_limit,
            agent_rate_limit,
            webhooks_allow_private,
            oidc_issuer,
            oidc_audience,
            oidc_jwks_url,
            oidc_accept_azp,
            oidc_admin_role,
            oidc_user_role,
            oidc_read_role,
            billing_url,
            billing_api_key,
        } => {
            std::fs::create_dir_all(&store.data_dir)?;
            let admin = admin_password(&store.data_dir)?;
            let mut cfg = pressoir_press::Config::new(store.url(), admin);
            cfg.domain = domain;
            cfg.rate_limit = rate_limit;
            cfg.agent_rate_limit = agent_rate_limit;
            cfg.webhooks.allow_private = webhooks_allow_private;
            if let Some(issuer) = oidc_issuer {
                let mut oidc = crate::oidc::OidcSettings::new(&issuer, &oidc_audience);
                oidc.jwks_url = oidc_jwks_url;
                oidc.accept_azp = oidc_accept_azp;
                oidc.roles = crate::oidc::RoleMap {
                    admin: oidc_admin_role,
                    user: oidc_user_role,
                    read: oidc_read_role,
                };
                cfg.bearer = Some(oidc.bearer());
            } else {
                anyhow::ensure!(
                    oidc_jwks_url.is_none(),
                    "--oidc-jwks-url needs --oidc-issuer"
                );
            }
            if let Some(url) = billing_url {
                let creds = CredentialStore::new(&store.data_dir);
                let (key, origin) = creds.resolve(
                    "billing_api_key",
                    "PRESSOIR_BILLING_API_KEY",
                    billing_api_key.as_deref(),
                )?;
                if origin == Origin::Generated {
                    println!(
                        "billing API key (generated, stored in {}; give billing the same): {}",
                        creds.path().display(),
                        key.expose()
                    );
                }
                cfg.billing = Some(pressoir_press::billing::BillingConfig::new(url, key));
            } else {
                anyhow::ensure!(
                    billing_api_key.is_none(),
                    "--billing-api-key needs --billing-url"
                );
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("pressoir press: ready on http://{}", listener.local_addr()?);
            pressoir_press::run(cfg, listener, Shutdown::on_signals()).await?;
        }
        PressCommand::Team {
            command:
                TeamCommand::Add {
                    store,
                    name,
                    title,
                    owner,
                },
        } => {
            let s = store.open().await?;
            let title = title.unwrap_or_else(|| name.clone());
            pressoir_press::admin_new_team(&s, &name, &title, &owner).await?;
            println!("team {name} created (owner {owner})");
        }
        PressCommand::Team {
            command: TeamCommand::List { store },
        } => {
            let s = store.open().await?;
            for t in s.teams().await? {
                println!("{}\t{}\towner={}", t.name, t.title, t.owner);
            }
        }
        PressCommand::User {
            command:
                UserCommand::Add {
                    store,
                    email,
                    full_name,
                    team,
                },
        } => {
            let password = from_env("PRESSOIR_USER_PASSWORD")?;
            let s = store.open().await?;
            let full = full_name.unwrap_or_else(|| email.clone());
            pressoir_press::admin_new_user(&s, &email, &full, &password, team.as_deref()).await?;
            println!("user {email} created");
        }
        PressCommand::User {
            command: UserCommand::Join { store, user, team },
        } => {
            let s = store.open().await?;
            pressoir_press::admin_add_member(&s, &team, &user).await?;
            println!("{user} joined {team}");
        }
        PressCommand::Server {
            command:
                ServerCommand::Add {
                    store,
                    name,
                    agent_url,
                    team,
                    bench,
                },
        } => {
            let password = from_env("PRESSOIR_AGENT_PASSWORD")?;
            let s = store.open().await?;
            let apps: Vec<String> = pressoir_press::DEFAULT_APPS
                .iter()
                .map(|a| a.to_string())
                .collect();
            pressoir_press::admin_new_server(
                &s, &name, &agent_url, &password, &team, &bench, &apps,
            )
            .await?;
            println!("server {name} registered at {agent_url}");
        }
        PressCommand::Webhook { store, command } => {
            crate::webhook::run(store.open().await?, command).await?
        }
        PressCommand::Server {
            command: ServerCommand::List { store },
        } => {
            let s = store.open().await?;
            for srv in s.servers().await? {
                println!(
                    "{}\t{}\t{}\tteam={}",
                    srv.name, srv.status, srv.agent_url, srv.team
                );
            }
        }
    }
    Ok(())
}
