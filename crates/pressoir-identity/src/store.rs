//! The identity service's tables, on SQLite or PostgreSQL through sqlx's `Any` driver. This is
//! the only module that knows SQL; it knows nothing of HTTP or tokens.

use crate::Error;
use crate::crypto::Alg;
use crate::model::{Client, Realm, Session, User};
use pressoir_core::db::{Db, is_unique_violation};
use sqlx::Row;
use sqlx::any::AnyRow;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

/// A stored signing key.
#[derive(Clone, Debug)]
pub struct KeyRow {
    pub kid: String,
    pub realm: String,
    pub alg: Alg,
    pub pkcs8: Vec<u8>,
    pub created_ms: i64,
    pub retired_ms: Option<i64>,
    pub expires_ms: Option<i64>,
}

/// A stored authorization code (looked up by the hash of the code).
#[derive(Clone, Debug)]
pub struct CodeRow {
    pub realm: String,
    pub client_id: String,
    pub session_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub challenge_method: Option<String>,
    pub expires_ms: i64,
}

/// What presenting a refresh token's id found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// First use: now spent. Carries the session id.
    Fresh(String),
    /// Already spent once: a replay. Carries the session id.
    Reused(String),
    Unknown,
}

fn b(v: bool) -> i64 {
    v as i64
}

fn get_b(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

fn split_list(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn realm_of(row: &AnyRow) -> Result<Realm, sqlx::Error> {
    Ok(Realm {
        name: row.try_get("name")?,
        enabled: get_b(row, "enabled")?,
        access_lifespan_s: row.try_get("access_lifespan_s")?,
        sso_idle_s: row.try_get("sso_idle_s")?,
        sso_max_s: row.try_get("sso_max_s")?,
        code_lifespan_s: row.try_get("code_lifespan_s")?,
        refresh_secret: row.try_get("refresh_secret")?,
    })
}

fn client_of(row: &AnyRow) -> Result<Client, sqlx::Error> {
    let alg: String = row.try_get("alg")?;
    Ok(Client {
        realm: row.try_get("realm")?,
        client_id: row.try_get("client_id")?,
        secret_hash: row.try_get("secret_hash")?,
        public: get_b(row, "public_client")?,
        service_accounts: get_b(row, "service_accounts")?,
        direct_grants: get_b(row, "direct_grants")?,
        standard_flow: get_b(row, "standard_flow")?,
        redirect_uris: split_list(&row.try_get::<String, _>("redirect_uris")?),
        default_scopes: split_list(&row.try_get::<String, _>("default_scopes")?),
        optional_scopes: split_list(&row.try_get::<String, _>("optional_scopes")?),
        audience: split_list(&row.try_get::<String, _>("audience")?),
        alg: Alg::parse(&alg).unwrap_or(Alg::RS256),
        enabled: get_b(row, "enabled")?,
    })
}

fn user_of(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        realm: row.try_get("realm")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        email_verified: get_b(row, "email_verified")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        password_hash: row.try_get("password_hash")?,
        enabled: get_b(row, "enabled")?,
        service_account_client: row.try_get("service_account_client")?,
        roles: Vec::new(),
    })
}

fn key_of(row: &AnyRow) -> Result<Option<KeyRow>, sqlx::Error> {
    use base64::Engine;
    let alg: String = row.try_get("alg")?;
    let pkcs8: String = row.try_get("pkcs8")?;
    let (Some(alg), Ok(pkcs8)) = (
        Alg::parse(&alg),
        base64::engine::general_purpose::STANDARD.decode(pkcs8),
    ) else {
        return Ok(None);
    };
    Ok(Some(KeyRow {
        kid: row.try_get("kid")?,
        realm: row.try_get("realm")?,
        alg,
        pkcs8,
        created_ms: row.try_get("created_ms")?,
        retired_ms: row.try_get("retired_ms")?,
        expires_ms: row.try_get("expires_ms")?,
    }))
}

fn conflict(e: sqlx::Error, what: String) -> Error {
    if is_unique_violation(&e) {
        Error::Conflict(what)
    } else {
        Error::Db(e)
    }
}

const USER_COLS: &str = "id, realm, username, email, email_verified, first_name, last_name, \
                         password_hash, enabled, service_account_client";

impl Store {
    pub async fn open(url: &str, schema: &str) -> Result<Store, Error> {
        let db = Db::connect(url, schema, 8).await?;
        db.migrate(&SQLITE, &POSTGRES).await?;
        Ok(Store { db })
    }

    // ---- realms

    pub async fn insert_realm(&self, r: &Realm, now_ms: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO realms (name, enabled, access_lifespan_s, sso_idle_s, sso_max_s, \
             code_lifespan_s, refresh_secret, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&r.name)
        .bind(b(r.enabled))
        .bind(r.access_lifespan_s)
        .bind(r.sso_idle_s)
        .bind(r.sso_max_s)
        .bind(r.code_lifespan_s)
        .bind(&r.refresh_secret)
        .bind(now_ms)
        .execute(&self.db.pool)
        .await
        .map_err(|e| conflict(e, format!("realm '{}' already exists", r.name)))?;
        Ok(())
    }

    pub async fn realm(&self, name: &str) -> Result<Option<Realm>, Error> {
        let row = sqlx::query("SELECT * FROM realms WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(realm_of).transpose()?)
    }

    pub async fn realms(&self) -> Result<Vec<Realm>, Error> {
        let rows = sqlx::query("SELECT * FROM realms ORDER BY name")
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(realm_of).collect::<Result<_, _>>()?)
    }

    // ---- clients

    pub async fn insert_client(&self, c: &Client, now_ms: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO clients (realm, client_id, secret_hash, public_client, service_accounts, \
             direct_grants, standard_flow, redirect_uris, default_scopes, optional_scopes, audience, \
             alg, enabled, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&c.realm)
        .bind(&c.client_id)
        .bind(&c.secret_hash)
        .bind(b(c.public))
        .bind(b(c.service_accounts))
        .bind(b(c.direct_grants))
        .bind(b(c.standard_flow))
        .bind(c.redirect_uris.join(" "))
        .bind(c.default_scopes.join(" "))
        .bind(c.optional_scopes.join(" "))
        .bind(c.audience.join(" "))
        .bind(c.alg.as_str())
        .bind(b(c.enabled))
        .bind(now_ms)
        .execute(&self.db.pool)
        .await
        .map_err(|e| conflict(e, format!("client '{}' already exists", c.client_id)))?;
        Ok(())
    }

    pub async fn set_client_secret(
        &self,
        realm: &str,
        client_id: &str,
        hash: &str,
    ) -> Result<bool, Error> {
        let r =
            sqlx::query("UPDATE clients SET secret_hash = $1 WHERE realm = $2 AND client_id = $3")
                .bind(hash)
                .bind(realm)
                .bind(client_id)
                .execute(&self.db.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn clients(&self, realm: &str) -> Result<Vec<Client>, Error> {
        let rows = sqlx::query("SELECT * FROM clients WHERE realm = $1 ORDER BY client_id")
            .bind(realm)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(client_of).collect::<Result<_, _>>()?)
    }

    // ---- users and roles

    pub async fn insert_user(&self, u: &User, now_ms: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO users (id, realm, username, email, email_verified, first_name, last_name, \
             password_hash, enabled, service_account_client, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&u.id)
        .bind(&u.realm)
        .bind(&u.username)
        .bind(&u.email)
        .bind(b(u.email_verified))
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(&u.password_hash)
        .bind(b(u.enabled))
        .bind(&u.service_account_client)
        .bind(now_ms)
        .execute(&self.db.pool)
        .await
        .map_err(|e| conflict(e, format!("user '{}' already exists", u.username)))?;
        Ok(())
    }

    pub async fn set_password(&self, user_id: &str, hash: &str) -> Result<bool, Error> {
        let r = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&self.db.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn with_roles(&self, user: Option<User>) -> Result<Option<User>, Error> {
        let Some(mut u) = user else { return Ok(None) };
        u.roles = self.user_roles(&u.id).await?;
        Ok(Some(u))
    }

    /// A user by username, or by email when no username matches (Keycloak's login by email).
    pub async fn user_by_login(&self, realm: &str, login: &str) -> Result<Option<User>, Error> {
        let q = format!("SELECT {USER_COLS} FROM users WHERE realm = $1 AND username = $2");
        let mut row = sqlx::query(&q)
            .bind(realm)
            .bind(login.to_lowercase())
            .fetch_optional(&self.db.pool)
            .await?;
        if row.is_none() && login.contains('@') {
            let q = format!(
                "SELECT {USER_COLS} FROM users WHERE realm = $1 AND lower(email) = $2 \
                 AND service_account_client IS NULL"
            );
            let rows = sqlx::query(&q)
                .bind(realm)
                .bind(login.to_lowercase())
                .fetch_all(&self.db.pool)
                .await?;
            // An email shared by several users logs in none of them.
            if rows.len() == 1 {
                row = rows.into_iter().next();
            }
        }
        let user = row.as_ref().map(user_of).transpose()?;
        self.with_roles(user).await
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, Error> {
        let q = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
        let row = sqlx::query(&q)
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        let user = row.as_ref().map(user_of).transpose()?;
        self.with_roles(user).await
    }

    pub async fn users(&self, realm: &str) -> Result<Vec<User>, Error> {
        let q = format!("SELECT {USER_COLS} FROM users WHERE realm = $1 ORDER BY username");
        let rows = sqlx::query(&q).bind(realm).fetch_all(&self.db.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut u = user_of(r)?;
            u.roles = self.user_roles(&u.id).await?;
            out.push(u);
        }
        Ok(out)
    }

    pub async fn insert_role(
        &self,
        realm: &str,
        name: &str,
        description: &str,
    ) -> Result<(), Error> {
        sqlx::query("INSERT INTO roles (realm, name, description) VALUES ($1, $2, $3)")
            .bind(realm)
            .bind(name)
            .bind(description)
            .execute(&self.db.pool)
            .await
            .map_err(|e| conflict(e, format!("role '{name}' already exists")))?;
        Ok(())
    }

    pub async fn roles(&self, realm: &str) -> Result<Vec<(String, String)>, Error> {
        let rows =
            sqlx::query("SELECT name, description FROM roles WHERE realm = $1 ORDER BY name")
                .bind(realm)
                .fetch_all(&self.db.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("description")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::Db)
    }

    /// Grants a realm role; granting it twice is not an error.
    pub async fn grant_role(&self, realm: &str, user_id: &str, role: &str) -> Result<(), Error> {
        let r = sqlx::query("INSERT INTO user_roles (user_id, realm, role) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(realm)
            .bind(role)
            .execute(&self.db.pool)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(Error::Db(e)),
        }
    }

    pub async fn user_roles(&self, user_id: &str) -> Result<Vec<String>, Error> {
        let rows = sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
            .bind(user_id)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("role"))
            .collect::<Result<_, _>>()
            .map_err(Error::Db)
    }

    // ---- signing keys

    pub async fn insert_key(&self, k: &KeyRow) -> Result<(), Error> {
        use base64::Engine;
        sqlx::query(
            "INSERT INTO signing_keys (kid, realm, alg, pkcs8, created_ms, retired_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.kid)
        .bind(&k.realm)
        .bind(k.alg.as_str())
        .bind(base64::engine::general_purpose::STANDARD.encode(&k.pkcs8))
        .bind(k.created_ms)
        .bind(k.retired_ms)
        .bind(k.expires_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Keys that still verify at `now_ms` (active ones and retired ones not yet expired).
    pub async fn keys(&self, realm: &str, now_ms: i64) -> Result<Vec<KeyRow>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM signing_keys WHERE realm = $1 AND (expires_ms IS NULL OR expires_ms > $2) \
             ORDER BY created_ms DESC",
        )
        .bind(realm)
        .bind(now_ms)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            if let Some(k) = key_of(r)? {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Stops a key signing; it keeps verifying until `expires_ms`.
    pub async fn retire_key(&self, kid: &str, now_ms: i64, expires_ms: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE signing_keys SET retired_ms = $1, expires_ms = $2 WHERE kid = $3 AND retired_ms IS NULL",
        )
        .bind(now_ms)
        .bind(expires_ms)
        .bind(kid)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    // ---- sessions, refresh tokens, codes, revocations

    pub async fn insert_session(&self, s: &Session) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO sessions (id, realm, user_id, client_id, scope, auth_time_s, created_ms, last_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(&s.realm)
        .bind(&s.user_id)
        .bind(&s.client_id)
        .bind(&s.scope)
        .bind(s.auth_time_s)
        .bind(s.created_ms)
        .bind(s.last_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>, Error> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Session {
            id: r.try_get("id")?,
            realm: r.try_get("realm")?,
            user_id: r.try_get("user_id")?,
            client_id: r.try_get("client_id")?,
            scope: r.try_get("scope")?,
            auth_time_s: r.try_get("auth_time_s")?,
            created_ms: r.try_get("created_ms")?,
            last_ms: r.try_get("last_ms")?,
        }))
    }

    pub async fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), Error> {
        sqlx::query("UPDATE sessions SET last_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, id: &str) -> Result<bool, Error> {
        let r = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn insert_refresh(
        &self,
        jti: &str,
        session_id: &str,
        expires_ms: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO refresh_tokens (jti, session_id, used, expires_ms) VALUES ($1, $2, 0, $3)",
        )
        .bind(jti)
        .bind(session_id)
        .bind(expires_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Spends a refresh token id. Exactly one caller ever sees `Fresh` for a given id.
    pub async fn use_refresh(&self, jti: &str) -> Result<RefreshUse, Error> {
        let r = sqlx::query("UPDATE refresh_tokens SET used = 1 WHERE jti = $1 AND used = 0")
            .bind(jti)
            .execute(&self.db.pool)
            .await?;
        let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else {
            return Ok(RefreshUse::Unknown);
        };
        let sid: String = row.try_get("session_id")?;
        Ok(if r.rows_affected() == 1 {
            RefreshUse::Fresh(sid)
        } else {
            RefreshUse::Reused(sid)
        })
    }

    pub async fn insert_code(&self, code_hash: &str, c: &CodeRow) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO auth_codes (code_hash, realm, client_id, session_id, redirect_uri, scope, nonce, \
             code_challenge, challenge_method, used, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10)",
        )
        .bind(code_hash)
        .bind(&c.realm)
        .bind(&c.client_id)
        .bind(&c.session_id)
        .bind(&c.redirect_uri)
        .bind(&c.scope)
        .bind(&c.nonce)
        .bind(&c.code_challenge)
        .bind(&c.challenge_method)
        .bind(c.expires_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Takes a code for its one use. A second presentation gets `Err(session_id)` so the caller
    /// can end the session the code started (RFC 6749 §4.1.2).
    pub async fn take_code(
        &self,
        code_hash: &str,
    ) -> Result<Option<Result<CodeRow, String>>, Error> {
        let r = sqlx::query("UPDATE auth_codes SET used = 1 WHERE code_hash = $1 AND used = 0")
            .bind(code_hash)
            .execute(&self.db.pool)
            .await?;
        let row = sqlx::query("SELECT * FROM auth_codes WHERE code_hash = $1")
            .bind(code_hash)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let code = CodeRow {
            realm: row.try_get("realm")?,
            client_id: row.try_get("client_id")?,
            session_id: row.try_get("session_id")?,
            redirect_uri: row.try_get("redirect_uri")?,
            scope: row.try_get("scope")?,
            nonce: row.try_get("nonce")?,
            code_challenge: row.try_get("code_challenge")?,
            challenge_method: row.try_get("challenge_method")?,
            expires_ms: row.try_get("expires_ms")?,
        };
        Ok(Some(if r.rows_affected() == 1 {
            Ok(code)
        } else {
            Err(code.session_id)
        }))
    }

    pub async fn revoke_jti(&self, jti: &str, expires_ms: i64) -> Result<(), Error> {
        let r = sqlx::query("INSERT INTO revoked_tokens (jti, expires_ms) VALUES ($1, $2)")
            .bind(jti)
            .bind(expires_ms)
            .execute(&self.db.pool)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(Error::Db(e)),
        }
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool, Error> {
        let row = sqlx::query("SELECT jti FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Deletes what has expired: keys past their grace, spent codes, refresh ids, revocations,
    /// and sessions idle or older than the realm allows.
    pub async fn purge(&self, now_ms: i64) -> Result<(), Error> {
        for q in [
            "DELETE FROM signing_keys WHERE expires_ms IS NOT NULL AND expires_ms <= $1",
            "DELETE FROM auth_codes WHERE expires_ms <= $1",
            "DELETE FROM refresh_tokens WHERE expires_ms <= $1",
            "DELETE FROM revoked_tokens WHERE expires_ms <= $1",
        ] {
            sqlx::query(q).bind(now_ms).execute(&self.db.pool).await?;
        }
        sqlx::query(
            "DELETE FROM sessions WHERE EXISTS (SELECT 1 FROM realms r WHERE r.name = sessions.realm \
             AND (sessions.last_ms + r.sso_idle_s * 1000 <= $1 OR sessions.created_ms + r.sso_max_s * 1000 <= $1))",
        )
        .bind(now_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}
