//! Adding realms, clients, users and roles: the operations behind the `pressoir identity`
//! subcommands and the admin API, and the first-start seed.

use crate::crypto::Alg;
use crate::model::{Client, Realm, User, default_roles};
use crate::store::Store;
use crate::{Error, passwords};
use pressoir_core::clock::now_ms;
use pressoir_core::{Secret, TokenHash};

/// The realm role that stands for Press's administrator.
pub const ADMIN_ROLE: &str = "admin";
/// The realm role that lets a user use Press as their own Press user.
pub const PRESS_USER_ROLE: &str = "press-user";
/// The realm role that lets a user call Press's read methods only.
pub const PRESS_READ_ROLE: &str = "press-read";

fn check_name(what: &str, s: &str, max: usize, extra: &[char]) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} '{s}' must be 1 to {max} letters, digits or one of {:?}",
            extra.iter().collect::<String>()
        )))
    }
}

pub async fn create_realm(store: &Store, name: &str) -> Result<Realm, Error> {
    check_name("realm", name, 64, &['-', '_'])?;
    let realm = Realm::new(name);
    store.insert_realm(&realm, now_ms()).await?;
    for role in default_roles(name) {
        store.insert_role(name, &role, "default role").await?;
    }
    Ok(realm)
}

/// A client to add.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub realm: String,
    pub client_id: String,
    /// The secret of a confidential client; generated when `None`.
    pub secret: Option<Secret>,
    pub public: bool,
    pub service_accounts: bool,
    pub redirect_uris: Vec<String>,
    /// Default scopes; Keycloak's (`profile email`) when `None`.
    pub default_scopes: Option<Vec<String>>,
    pub audience: Vec<String>,
    pub alg: Alg,
}

impl NewClient {
    pub fn new(realm: &str, client_id: &str) -> NewClient {
        NewClient {
            realm: realm.to_string(),
            client_id: client_id.to_string(),
            secret: None,
            public: false,
            service_accounts: false,
            redirect_uris: Vec::new(),
            default_scopes: None,
            audience: Vec::new(),
            alg: Alg::RS256,
        }
    }
}

/// Adds a client (and its service-account user). Returns the secret of a confidential client.
pub async fn create_client(store: &Store, n: &NewClient) -> Result<Option<Secret>, Error> {
    check_name("client id", &n.client_id, 128, &['-', '_', '.', ':'])?;
    if store.realm(&n.realm).await?.is_none() {
        return Err(Error::NotFound(format!(
            "realm '{}' does not exist",
            n.realm
        )));
    }
    for u in &n.redirect_uris {
        let base = u.strip_suffix('*').unwrap_or(u);
        if url::Url::parse(base).is_err() {
            return Err(Error::Invalid(format!(
                "redirect uri '{u}' is not an absolute URL"
            )));
        }
    }
    if n.public && n.service_accounts {
        return Err(Error::Invalid(
            "a public client cannot have a service account".into(),
        ));
    }
    let mut c = Client::new(&n.realm, &n.client_id);
    c.public = n.public;
    c.service_accounts = n.service_accounts;
    c.redirect_uris = n.redirect_uris.clone();
    if let Some(s) = &n.default_scopes {
        c.default_scopes = s.clone();
    }
    c.audience = n.audience.clone();
    c.alg = n.alg;
    let secret = if n.public {
        None
    } else {
        Some(n.secret.clone().unwrap_or_else(|| Secret::generate(32)))
    };
    c.secret_hash = secret
        .as_ref()
        .map(|s| TokenHash::of(s.expose().as_bytes()).to_hex());
    store.insert_client(&c, now_ms()).await?;
    if n.service_accounts {
        let u = User::service_account(&n.realm, &n.client_id);
        store.insert_user(&u, now_ms()).await?;
    }
    Ok(secret)
}

/// A user to add.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub realm: String,
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password: Option<Secret>,
    pub roles: Vec<String>,
}

pub async fn create_user(store: &Store, n: &NewUser) -> Result<User, Error> {
    let name = &n.username;
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid(format!(
            "username '{name}' must be 1 to 255 characters without spaces"
        )));
    }
    if name.to_lowercase().starts_with("service-account-") {
        return Err(Error::Invalid(
            "usernames starting with 'service-account-' are reserved".into(),
        ));
    }
    if let Some(e) = &n.email
        && (!e.contains('@') || e.chars().any(char::is_whitespace))
    {
        return Err(Error::Invalid(format!("email '{e}' is not an address")));
    }
    if store.realm(&n.realm).await?.is_none() {
        return Err(Error::NotFound(format!(
            "realm '{}' does not exist",
            n.realm
        )));
    }
    let mut u = User::new(&n.realm, name);
    u.email = n.email.clone();
    u.email_verified = n.email.is_some();
    u.first_name = n.first_name.clone();
    u.last_name = n.last_name.clone();
    if let Some(p) = &n.password {
        let p = p.expose().to_string();
        u.password_hash = Some(hash_blocking(p).await?);
    }
    store.insert_user(&u, now_ms()).await?;
    for r in &n.roles {
        grant_role(store, &n.realm, &u.username, r).await?;
    }
    u.roles = store.user_roles(&u.id).await?;
    Ok(u)
}

async fn hash_blocking(p: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || passwords::hash(&p))
        .await
        .map_err(|_| Error::Crypto("password hashing task".into()))
}

pub async fn set_password(
    store: &Store,
    realm: &str,
    username: &str,
    password: &Secret,
) -> Result<(), Error> {
    let u = store
        .user_by_login(realm, username)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))?;
    let h = hash_blocking(password.expose().to_string()).await?;
    store.set_password(&u.id, &h).await?;
    Ok(())
}

pub async fn create_role(
    store: &Store,
    realm: &str,
    name: &str,
    description: &str,
) -> Result<(), Error> {
    check_name("role", name, 128, &['-', '_', '.', ':'])?;
    if store.realm(realm).await?.is_none() {
        return Err(Error::NotFound(format!("realm '{realm}' does not exist")));
    }
    store.insert_role(realm, name, description).await
}

/// Grants a realm role to a user (by username, `service-account-<client>` for a client).
pub async fn grant_role(
    store: &Store,
    realm: &str,
    username: &str,
    role: &str,
) -> Result<(), Error> {
    let u = store
        .user_by_login(realm, username)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))?;
    if !store.roles(realm).await?.iter().any(|(n, _)| n == role) {
        return Err(Error::NotFound(format!("role '{role}' does not exist")));
    }
    store.grant_role(realm, &u.id, role).await
}

/// What the first start creates, and what every start keeps in line with the configured
/// secrets: the realm, its `admin` role, the confidential client with its service account,
/// and the Administrator.
pub struct Seed<'a> {
    pub realm: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a Secret,
    pub redirect_uris: &'a [String],
    pub admin_username: &'a str,
    pub admin_email: Option<&'a str>,
    pub admin_password: &'a Secret,
}

pub async fn seed(store: &Store, s: &Seed<'_>) -> Result<(), Error> {
    if store.realm(s.realm).await?.is_none() {
        create_realm(store, s.realm).await?;
        create_role(store, s.realm, ADMIN_ROLE, "Press administrator").await?;
        tracing::info!(realm = s.realm, "identity realm created");
    }
    // Realms seeded before these roles existed get them too.
    let roles = store.roles(s.realm).await?;
    for (role, description) in [
        (PRESS_USER_ROLE, "Press user"),
        (PRESS_READ_ROLE, "Press read-only access"),
    ] {
        if !roles.iter().any(|(n, _)| n == role) {
            create_role(store, s.realm, role, description).await?;
        }
    }
    let clients = store.clients(s.realm).await?;
    match clients.iter().find(|c| c.client_id == s.client_id) {
        None => {
            let mut n = NewClient::new(s.realm, s.client_id);
            n.secret = Some(s.client_secret.clone());
            n.service_accounts = true;
            n.redirect_uris = s.redirect_uris.to_vec();
            n.default_scopes = Some(vec!["openid".into(), "profile".into(), "email".into()]);
            create_client(store, &n).await?;
            grant_role(
                store,
                s.realm,
                &format!("service-account-{}", s.client_id),
                ADMIN_ROLE,
            )
            .await?;
        }
        Some(c) => {
            let current = c.secret_hash.as_deref().and_then(TokenHash::from_hex);
            if !current.is_some_and(|h| h.verify(s.client_secret.expose().as_bytes())) {
                let h = TokenHash::of(s.client_secret.expose().as_bytes()).to_hex();
                store.set_client_secret(s.realm, s.client_id, &h).await?;
                tracing::info!(
                    client = s.client_id,
                    "client secret updated from the configuration"
                );
            }
        }
    }
    match store.user_by_login(s.realm, s.admin_username).await? {
        None => {
            let n = NewUser {
                realm: s.realm.to_string(),
                username: s.admin_username.to_string(),
                email: s.admin_email.map(str::to_string),
                password: Some(s.admin_password.clone()),
                roles: vec![ADMIN_ROLE.to_string()],
                ..NewUser::default()
            };
            create_user(store, &n).await?;
        }
        Some(u) => {
            let hash = u.password_hash.clone();
            let pw = s.admin_password.expose().to_string();
            let same = tokio::task::spawn_blocking(move || passwords::verify(hash.as_deref(), &pw))
                .await
                .unwrap_or(false);
            if !same {
                set_password(store, s.realm, s.admin_username, s.admin_password).await?;
                tracing::info!("administrator password updated from the configuration");
            }
        }
    }
    Ok(())
}
