//! Who is calling: sessions (`sid` cookie, with CSRF checks), API keys
//! (`Authorization: token key:secret` or Basic), and argon2 passwords with login throttling.
//!
//! [`Authenticator`] is the one place that turns request headers into a [`Caller`]; a Bearer
//! path (tokens from the identity service) plugs in through [`BearerVerifier`].

use crate::error::{Error, Result};
use crate::store::Store;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use http::HeaderMap;
use http::Method;
use pressoir_core::TokenHash;
use pressoir_core::clock::now_ms;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Session { sid_hash: String },
    ApiKey,
    Bearer,
}

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub full_name: String,
    pub is_admin: bool,
    pub default_team: Option<String>,
    pub via: Via,
    /// A Bearer token granting read methods only (the OIDC read-only role).
    pub read_only: bool,
}

#[derive(Debug, Clone)]
struct UserInfo {
    full_name: String,
    is_admin: bool,
    default_team: Option<String>,
}

/// What a verified Bearer token may do as its Press user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Administrator rights, whatever the user's own.
    Admin,
    /// The user's own rights.
    Full,
    /// Read methods only; anything else is a 403 PermissionError.
    ReadOnly,
}

/// A verified Bearer token: the Press user it acts as, and how far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerGrant {
    pub user: String,
    pub access: Access,
}

/// Why a Bearer token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerRefusal {
    /// Not a valid token (signature, expiry, issuer, audience): 401.
    Invalid,
    /// A valid token whose roles grant nothing in Press: 403.
    NoAccess,
}

/// Verifies a Bearer token and names its user (a Press user name) and access; the identity
/// service's verifier is adapted to this in the binary.
pub trait BearerVerifier: Send + Sync {
    fn verify(
        &self,
        token: &str,
    ) -> futures::future::BoxFuture<'_, std::result::Result<BearerGrant, BearerRefusal>>;
}

fn argon() -> Argon2<'static> {
    // OWASP's second argon2id profile (19 MiB, 2 passes): a login costs a few tens of ms.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("argon2: {e}")))
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => argon().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A random token of `bytes` bytes as hex.
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Failed logins per user and per IP: each failure slows the next try, and past
/// `max_failures` in `window` the key is refused until the window has passed.
pub struct Throttle {
    inner: Mutex<HashMap<String, (u32, Instant)>>,
    /// Failures allowed per user name in a window.
    pub max_failures: u32,
    /// Failures allowed per client IP (several users may share one, as on `pressoir up`).
    pub max_failures_per_ip: u32,
    pub window: Duration,
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Throttle {
            inner: Mutex::new(HashMap::new()),
            max_failures,
            max_failures_per_ip: max_failures.saturating_mul(5),
            window,
        }
    }

    fn keys(user: &str, ip: Option<IpAddr>) -> [String; 2] {
        [
            format!("u:{user}"),
            format!("ip:{}", ip.map(|i| i.to_string()).unwrap_or_default()),
        ]
    }

    /// `Err(retry_after)` when this user or IP is locked out, else the delay to apply.
    pub fn check(&self, user: &str, ip: Option<IpAddr>) -> std::result::Result<Duration, Duration> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut worst = 0u32;
        for k in Self::keys(user, ip) {
            if let Some((n, since)) = m.get(&k).copied() {
                if since.elapsed() > self.window {
                    m.remove(&k);
                    continue;
                }
                let max = if k.starts_with("ip:") {
                    self.max_failures_per_ip
                } else {
                    self.max_failures
                };
                if n >= max {
                    return Err(self.window.saturating_sub(since.elapsed()));
                }
                // The delay follows the user's failures, and an IP's at a fifth of the pace.
                let weight = if k.starts_with("ip:") { n / 5 } else { n };
                worst = worst.max(weight);
            }
        }
        Ok(Duration::from_millis(100 * u64::from(worst.min(10))))
    }

    pub fn failed(&self, user: &str, ip: Option<IpAddr>) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            let w = self.window;
            m.retain(|_, (_, since)| since.elapsed() <= w);
        }
        for k in Self::keys(user, ip) {
            let e = m.entry(k).or_insert((0, Instant::now()));
            e.0 += 1;
        }
    }

    pub fn succeeded(&self, user: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&format!("u:{user}"));
    }
}

/// The CSRF token header Frappe's desk sends.
pub const CSRF_HEADER: &str = "x-frappe-csrf-token";

pub struct Authenticator {
    store: Store,
    pub session_ttl: Duration,
    pub throttle: Throttle,
    pub bearer: Option<Arc<dyn BearerVerifier>>,
    /// API key → (user, secret hash, fetched at): saves a query per token-authenticated call.
    key_cache: Mutex<HashMap<String, (String, TokenHash, Instant)>>,
    user_cache: Mutex<HashMap<String, (UserInfo, Instant)>>,
}

const CACHE_TTL: Duration = Duration::from_secs(5);

impl Authenticator {
    pub fn new(store: Store, session_ttl: Duration) -> Self {
        Authenticator {
            store,
            session_ttl,
            throttle: Throttle::new(10, Duration::from_secs(300)),
            bearer: None,
            key_cache: Mutex::new(HashMap::new()),
            user_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a user's password, with throttling. Errors are Frappe's login errors.
    pub async fn login(
        &self,
        usr: &str,
        pwd: &str,
        ip: Option<IpAddr>,
    ) -> Result<crate::store::User> {
        if usr.is_empty() || pwd.is_empty() {
            return Err(Error::auth("Incomplete login details"));
        }
        match self.throttle.check(usr, ip) {
            Err(wait) => {
                return Err(Error::too_many(format!(
                    "Too many failed login attempts. Try again in {} seconds",
                    wait.as_secs().max(1)
                )));
            }
            Ok(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
            Ok(_) => {}
        }
        let user = self.store.user(usr).await?;
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let pwd_owned = pwd.to_string();
        // argon2 is CPU work: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => verify_password(&h, &pwd_owned),
            None => {
                // Same cost whether or not the user exists.
                let _ = hash_password(&pwd_owned);
                false
            }
        })
        .await
        .unwrap_or(false);
        match user {
            Some(u) if ok && u.enabled == 1 => {
                self.throttle.succeeded(usr);
                Ok(u)
            }
            Some(u) if ok && u.enabled != 1 => Err(Error::auth("User disabled or missing")),
            _ => {
                self.throttle.failed(usr, ip);
                Err(Error::auth("Invalid login credentials"))
            }
        }
    }

    /// Starts a session: returns `(sid, csrf_token)`.
    pub async fn start_session(&self, user: &str) -> Result<(String, String)> {
        let sid = random_token(24);
        let csrf = random_token(16);
        let expires = now_ms() + self.session_ttl.as_millis() as i64;
        self.store
            .create_session(
                &TokenHash::of(sid.as_bytes()).to_hex(),
                user,
                &csrf,
                expires,
            )
            .await?;
        Ok((sid, csrf))
    }

    pub async fn end_session(&self, caller: &Caller) -> Result<()> {
        if let Via::Session { sid_hash } = &caller.via {
            self.store.delete_session(sid_hash).await?;
        }
        Ok(())
    }

    pub fn forget_key(&self, key: &str) {
        self.key_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    async fn user_info(&self, user: &str) -> Result<Option<UserInfo>> {
        if let Some((info, at)) = self
            .user_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(info));
        }
        let Some(u) = self.store.user(user).await? else {
            return Ok(None);
        };
        if u.enabled != 1 {
            return Ok(None);
        }
        let info = UserInfo {
            full_name: u.full_name.clone(),
            is_admin: u.is_admin == 1,
            default_team: u.default_team.clone(),
        };
        let mut c = self.user_cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(user.to_string(), (info.clone(), Instant::now()));
        Ok(Some(info))
    }

    /// Forgets what is cached about a user (after a team or password change).
    pub fn forget_user(&self, user: &str) {
        self.user_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
    }

    fn caller(user: String, info: UserInfo, via: Via) -> Caller {
        Caller {
            user,
            full_name: info.full_name,
            is_admin: info.is_admin,
            default_team: info.default_team,
            via,
            read_only: false,
        }
    }

    /// The caller of a request, if it carries valid credentials. A present but invalid
    /// credential is an error, never a silent guest.
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        host: &str,
    ) -> Result<Option<Caller>> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| Error::auth("Invalid Authorization header"))?;
            let (scheme, rest) = value
                .trim()
                .split_once(' ')
                .ok_or_else(|| Error::auth("Invalid Authorization header"))?;
            let rest = rest.trim();
            let user = match scheme.to_ascii_lowercase().as_str() {
                "token" => self.check_key(rest).await?,
                "basic" => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(rest)
                        .map_err(|_| Error::auth("Invalid Authorization header"))?;
                    let text = String::from_utf8(raw)
                        .map_err(|_| Error::auth("Invalid Authorization header"))?;
                    self.check_key(&text).await?
                }
                "bearer" => {
                    let Some(v) = &self.bearer else {
                        return Err(Error::auth("Bearer tokens are not accepted here"));
                    };
                    let g = v.verify(rest).await.map_err(|r| match r {
                        BearerRefusal::Invalid => Error::auth("Invalid Bearer token"),
                        BearerRefusal::NoAccess => {
                            Error::permission("the token's roles grant no access to Press")
                        }
                    })?;
                    let info = self
                        .user_info(&g.user)
                        .await?
                        .ok_or_else(|| Error::auth("User disabled or missing"))?;
                    let mut c = Self::caller(g.user, info, Via::Bearer);
                    c.is_admin |= g.access == Access::Admin;
                    c.read_only = g.access == Access::ReadOnly;
                    return Ok(Some(c));
                }
                _ => return Err(Error::auth("Invalid Authorization header")),
            };
            let info = self
                .user_info(&user)
                .await?
                .ok_or_else(|| Error::auth("User disabled or missing"))?;
            return Ok(Some(Self::caller(user, info, Via::ApiKey)));
        }
        let Some(sid) = cookie(headers, "sid") else {
            return Ok(None);
        };
        if sid == "Guest" || sid.is_empty() {
            return Ok(None);
        }
        let sid_hash = TokenHash::of(sid.as_bytes()).to_hex();
        let Some(session) = self.store.session(&sid_hash).await? else {
            return Err(Error::auth("Session expired or invalid"));
        };
        if session.expires < now_ms() {
            self.store.delete_session(&sid_hash).await?;
            return Err(Error::auth("Session expired"));
        }
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            check_csrf(headers, host, &session.csrf_token)?;
        }
        let info = self
            .user_info(&session.user_name)
            .await?
            .ok_or_else(|| Error::auth("User disabled or missing"))?;
        Ok(Some(Self::caller(
            session.user_name,
            info,
            Via::Session { sid_hash },
        )))
    }

    async fn check_key(&self, pair: &str) -> Result<String> {
        let (key, secret) = pair
            .split_once(':')
            .ok_or_else(|| Error::auth("Invalid Authorization header"))?;
        let cached = self
            .key_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        let (user, hash) = match cached {
            Some((u, h, at)) if at.elapsed() < CACHE_TTL => (u, h),
            _ => {
                let Some((u, h)) = self.store.api_key(key).await? else {
                    return Err(Error::auth("Invalid API key or secret"));
                };
                let h = TokenHash::from_hex(&h)
                    .ok_or_else(|| Error::internal("corrupt api secret hash"))?;
                let mut c = self.key_cache.lock().unwrap_or_else(|p| p.into_inner());
                if c.len() > 10_000 {
                    c.clear();
                }
                c.insert(key.to_string(), (u.clone(), h.clone(), Instant::now()));
                (u, h)
            }
        };
        if hash.verify(secret.as_bytes()) {
            Ok(user)
        } else {
            Err(Error::auth("Invalid API key or secret"))
        }
    }
}

/// Cookie sessions on unsafe methods: a browser from another origin sends `Origin`, which must
/// name this host, unless the page proves itself with the session's CSRF token. curl sends no
/// `Origin`, so it keeps working with the cookie alone; SameSite=Lax covers the rest.
fn check_csrf(headers: &HeaderMap, host: &str, token: &str) -> Result<()> {
    if let Some(t) = headers.get(CSRF_HEADER) {
        return if pressoir_core::Secret::new(token).matches(t.as_bytes()) {
            Ok(())
        } else {
            Err(Error::validation("Invalid Request: CSRF token mismatch"))
        };
    }
    let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(origin)
        .trim_end_matches('/');
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(Error::validation(
            "Invalid Request: cross-origin request without a CSRF token",
        ))
    }
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        for part in text.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == name
            {
                return Some(val.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("admin").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "admin"));
        assert!(!verify_password(&h, "Admin"));
    }

    #[test]
    fn throttle_locks_out_after_the_limit() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let ip = Some("127.0.0.1".parse().unwrap());
        assert_eq!(t.check("a", ip), Ok(Duration::ZERO));
        t.failed("a", ip);
        assert_eq!(t.check("a", ip), Ok(Duration::from_millis(100)));
        t.failed("a", ip);
        t.failed("a", ip);
        assert!(t.check("a", ip).is_err());
        assert!(
            t.check("a", Some("10.0.0.1".parse().unwrap())).is_err(),
            "the user is locked from anywhere"
        );
        assert!(
            t.check("b", ip).is_ok(),
            "another user on the same IP is not, yet"
        );
        for _ in 0..12 {
            t.failed("b", ip);
        }
        assert!(
            t.check("c", ip).is_err(),
            "past five times the user limit the IP is locked too"
        );
    }

    #[test]
    fn csrf_lets_curl_through_but_not_other_origins() {
        let mut h = HeaderMap::new();
        assert!(check_csrf(&h, "cloud.localhost:30080", "tok").is_ok());
        h.insert(
            http::header::ORIGIN,
            "http://cloud.localhost:30080".parse().unwrap(),
        );
        assert!(check_csrf(&h, "cloud.localhost:30080", "tok").is_ok());
        h.insert(http::header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_csrf(&h, "cloud.localhost:30080", "tok").is_err());
        h.insert(CSRF_HEADER, "tok".parse().unwrap());
        assert!(check_csrf(&h, "cloud.localhost:30080", "tok").is_ok());
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, "a=1; sid=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "sid").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "x"), None);
    }
}
