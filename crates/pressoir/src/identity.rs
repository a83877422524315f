//! `pressoir identity serve` (the Keycloak-compatible OIDC service alone) and the admin
//! subcommands that add realms, clients, users and roles and rotate signing keys.

use anyhow::Context;
use pressoir_core::secret::Origin;
use pressoir_core::{CredentialStore, RateSpec, Secret, Shutdown};
use pressoir_identity::admin::{self, NewClient, NewUser};
use pressoir_identity::crypto::Alg;
use pressoir_identity::store::Store;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: IdentityCommand,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Pressoir's data directory (credentials.json and the default SQLite file live there).
    #[arg(
        long,
        global = true,
        env = "PRESSOIR_DATA_DIR",
        default_value = "./pressoir-data"
    )]
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; default `<data-dir>/pressoir-identity.sqlite`.
    #[arg(long, global = true, env = "PRESSOIR_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl Common {
    pub fn database_url(&self) -> String {
        let url = match &self.database_url {
            Some(u) => u.clone(),
            None => pressoir_core::db::sqlite_url(&self.data_dir.join("pressoir.sqlite")),
        };
        pressoir_core::db::service_url(&url, "identity")
    }

    async fn store(&self) -> anyhow::Result<Store> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create the data dir {}", self.data_dir.display()))?;
        Ok(Store::open(&self.database_url(), "identity").await?)
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum IdentityCommand {
    /// Serve the OIDC endpoints (`/realms/{realm}/...` and `/auth/realms/{realm}/...`).
    Serve(ServeArgs),
    /// Add a realm (with fresh signing keys).
    AddRealm { name: String },
    /// Add a client; a confidential client's secret is printed once.
    AddClient(AddClientArgs),
    /// Add a user.
    AddUser(AddUserArgs),
    /// Set a user's password (read from --password-file, `-` for stdin).
    SetPassword {
        #[arg(long, default_value = "frappe-cloud")]
        realm: String,
        username: String,
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Add a realm role.
    AddRole {
        #[arg(long, default_value = "frappe-cloud")]
        realm: String,
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Grant a realm role to a user (`service-account-<client>` for a client).
    GrantRole {
        #[arg(long, default_value = "frappe-cloud")]
        realm: String,
        username: String,
        role: String,
    },
    /// Replace the realm's signing keys; the old ones verify until their tokens expire.
    RotateKeys {
        #[arg(long, default_value = "frappe-cloud")]
        realm: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "PRESSOIR_IDENTITY_LISTEN",
        default_value = "127.0.0.1:8180"
    )]
    pub listen: String,
    /// Public base URL; the issuer is `<base>/realms/<realm>`, never taken from the Host.
    #[arg(
        long,
        env = "PRESSOIR_IDENTITY_ISSUER_BASE",
        default_value = "http://auth.localhost:30080"
    )]
    pub issuer_base: String,
    /// Token endpoint limit per client credential or address (`off`, or e.g. `600/min`).
    #[arg(long, env = "PRESSOIR_IDENTITY_RATE_LIMIT", default_value = "600/min")]
    pub rate_limit: RateSpec,
    /// Rotate signing keys older than this many days (0: only on `rotate-keys`).
    #[arg(
        long,
        env = "PRESSOIR_IDENTITY_KEY_ROTATION_DAYS",
        default_value_t = 30
    )]
    pub key_rotation_days: u64,
}

#[derive(clap::Args, Debug)]
pub struct AddClientArgs {
    #[arg(long, default_value = "frappe-cloud")]
    pub realm: String,
    pub client_id: String,
    /// A public client (no secret; PKCE required for the code flow).
    #[arg(long)]
    pub public: bool,
    /// Enable the client_credentials grant through a service account.
    #[arg(long)]
    pub service_account: bool,
    /// Allowed redirect URI (repeatable; a trailing `*` matches a prefix).
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// Default scopes, space-separated (Keycloak's `profile email` if unset).
    #[arg(long)]
    pub scopes: Option<String>,
    /// `aud` of the client's tokens (repeatable; the client id if unset).
    #[arg(long)]
    pub audience: Vec<String>,
    /// Token signature algorithm: RS256, ES256 or EdDSA.
    #[arg(long, default_value = "RS256")]
    pub alg: String,
}

#[derive(clap::Args, Debug)]
pub struct AddUserArgs {
    #[arg(long, default_value = "frappe-cloud")]
    pub realm: String,
    pub username: String,
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub first_name: Option<String>,
    #[arg(long)]
    pub last_name: Option<String>,
    /// File holding the password (`-` for stdin); never pass a password as an argument.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Realm role to grant (repeatable).
    #[arg(long)]
    pub role: Vec<String>,
}

fn print_generated(
    what: &str,
    key: &str,
    secret: &Secret,
    origin: Origin,
    creds: &CredentialStore,
) {
    if origin == Origin::Generated {
        // Printed once, at first start; it is stored in credentials.json (mode 0600).
        println!(
            "generated {what} ({key}): {} (stored in {})",
            secret.expose(),
            creds.path().display()
        );
    }
}

/// The identity config for `up` and `serve`: the `press` client's secret from
/// `PRESSOIR_OIDC_CLIENT_SECRET` (or `_FILE`, else generated into credentials.json), the
/// Administrator's password from `PRESSOIR_ADMIN_PASSWORD` the same way (shared with Press).
pub fn config(
    data_dir: &Path,
    database_url: &str,
    issuer_base: &str,
) -> anyhow::Result<pressoir_identity::Config> {
    let creds = CredentialStore::new(data_dir);
    let (secret, o) = creds.resolve("oidc_client_secret", "PRESSOIR_OIDC_CLIENT_SECRET", None)?;
    print_generated(
        "OIDC client secret for 'press'",
        "oidc_client_secret",
        &secret,
        o,
        &creds,
    );
    let (admin, o) = creds.resolve("admin_password", "PRESSOIR_ADMIN_PASSWORD", None)?;
    print_generated(
        "Administrator password",
        "admin_password",
        &admin,
        o,
        &creds,
    );
    Ok(pressoir_identity::Config::new(
        database_url,
        issuer_base,
        secret,
        admin,
    ))
}

fn read_password(path: &Path) -> anyhow::Result<Secret> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the password from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let p = text.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!p.is_empty(), "the password is empty");
    Ok(Secret::new(p))
}

pub async fn run(args: IdentityArgs) -> anyhow::Result<()> {
    let common = args.common;
    match args.command {
        IdentityCommand::Serve(a) => serve(&common, a).await,
        IdentityCommand::AddRealm { name } => {
            let store = common.store().await?;
            admin::create_realm(&store, &name).await?;
            println!("realm '{name}' added");
            Ok(())
        }
        IdentityCommand::AddClient(a) => {
            let store = common.store().await?;
            let alg = Alg::parse(&a.alg)
                .with_context(|| format!("--alg '{}' must be RS256, ES256 or EdDSA", a.alg))?;
            let mut n = NewClient::new(&a.realm, &a.client_id);
            n.public = a.public;
            n.service_accounts = a.service_account;
            n.redirect_uris = a.redirect_uris;
            n.default_scopes = a
                .scopes
                .map(|s| s.split_whitespace().map(str::to_string).collect());
            n.audience = a.audience;
            n.alg = alg;
            match admin::create_client(&store, &n).await? {
                Some(secret) => println!(
                    "client '{}' added; its secret (shown once): {}",
                    a.client_id,
                    secret.expose()
                ),
                None => println!("public client '{}' added", a.client_id),
            }
            Ok(())
        }
        IdentityCommand::AddUser(a) => {
            let store = common.store().await?;
            let password = a.password_file.as_deref().map(read_password).transpose()?;
            let n = NewUser {
                realm: a.realm,
                username: a.username,
                email: a.email,
                first_name: a.first_name,
                last_name: a.last_name,
                password,
                roles: a.role,
            };
            let u = admin::create_user(&store, &n).await?;
            println!("user '{}' added (id {})", u.username, u.id);
            Ok(())
        }
        IdentityCommand::SetPassword {
            realm,
            username,
            password_file,
        } => {
            let store = common.store().await?;
            admin::set_password(&store, &realm, &username, &read_password(&password_file)?).await?;
            println!("password of '{username}' set");
            Ok(())
        }
        IdentityCommand::AddRole {
            realm,
            name,
            description,
        } => {
            let store = common.store().await?;
            admin::create_role(&store, &realm, &name, &description).await?;
            println!("role '{name}' added");
            Ok(())
        }
        IdentityCommand::GrantRole {
            realm,
            username,
            role,
        } => {
            let store = common.store().await?;
            admin::grant_role(&store, &realm, &username, &role).await?;
            println!("role '{role}' granted to '{username}'");
            Ok(())
        }
        IdentityCommand::RotateKeys { realm } => {
            let store = common.store().await?;
            let svc = pressoir_identity::Service::new(store, "http://unused", Default::default());
            let kids = svc.rotate_keys(&realm).await?;
            println!("realm '{realm}' now signs with {}", kids.join(", "));
            Ok(())
        }
    }
}

async fn serve(common: &Common, args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.data_dir)
        .with_context(|| format!("cannot create the data dir {}", common.data_dir.display()))?;
    let mut config = config(&common.data_dir, &common.database_url(), &args.issuer_base)?;
    config.token_rate_limit = args.rate_limit;
    config.key_rotation =
        (args.key_rotation_days > 0).then(|| Duration::from_secs(args.key_rotation_days * 86_400));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, issuer = %config.issuer(), "identity service listening");
    pressoir_identity::run(config, listener, Shutdown::on_signals()).await?;
    Ok(())
}
