//! The bearer-token verifier a resource server (Press) uses to accept access tokens from this
//! identity service or from a real Keycloak: it fetches the issuer's JWKS over HTTP, caches the
//! keys by `kid`, refetches on an unknown `kid` (at most once per `min_refetch`), and checks
//! the signature with the key's own algorithm, `exp`, `iss`, `aud` and `typ`.
//!
//! A verified token is remembered by its SHA-256 until its `exp`, so a client presenting the
//! same token on every request costs one hash, not one signature check. A remembered token
//! still needs the very key that verified it: once a JWKS fetch drops or replaces that key
//! (a revoked key), the token is checked afresh and refused. The keys themselves are refetched
//! when older than `max_key_age`, so a key removed from the issuer goes within that time even
//! when no unknown `kid` triggers a fetch.
//!
//! It is deliberately independent of the rest of this crate: it speaks only HTTP and JWT, so
//! pointing it at another issuer is configuration alone.
//!
//! ```text
//! // The issuer stays the public one; the keys can be fetched through an address that resolves
//! // from the server (auth.localhost does not resolve everywhere; /realms/ routes on any host).
//! let v = BearerVerifier::new(VerifierConfig {
//!     jwks_url: "http://127.0.0.1:30080/realms/frappe-cloud/protocol/openid-connect/certs".into(),
//!     ..VerifierConfig::keycloak("http://auth.localhost:30080/realms/frappe-cloud", "press")
//! });
//! let claims = v.verify(token).await?;   // Err(_) is a 401
//! if claims.is_service_account && claims.client_id.as_deref() == Some("press") { /* system */ }
//! ```

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The issuer, exactly as in the tokens' `iss` (`http://auth.localhost:30080/realms/frappe-cloud`).
    pub issuer: String,
    /// The audience the tokens must carry in `aud` (for Press: `press`).
    pub audience: String,
    /// `<issuer>/protocol/openid-connect/certs` for Keycloak and for Pressoir.
    pub jwks_url: String,
    /// Least time between two JWKS fetches caused by unknown key ids.
    pub min_refetch: Duration,
    /// Keys fetched longer ago than this are fetched again before use.
    pub max_key_age: Duration,
    /// Clock skew allowed on `exp`, in seconds.
    pub leeway_secs: u64,
    /// Other `iss` values to accept (a Keycloak reached under several host names).
    pub also_issuers: Vec<String>,
    /// Also accept a token whose `azp` is the audience when its `aud` lacks it: what a stock
    /// Keycloak issues to a client that has no audience mapper (`aud` is `account` or absent).
    pub accept_azp: bool,
}

impl VerifierConfig {
    /// Keycloak's layout: the JWKS sits at `<issuer>/protocol/openid-connect/certs`.
    pub fn keycloak(issuer: &str, audience: &str) -> VerifierConfig {
        let issuer = issuer.trim_end_matches('/').to_string();
        VerifierConfig {
            jwks_url: format!("{issuer}/protocol/openid-connect/certs"),
            issuer,
            audience: audience.to_string(),
            min_refetch: Duration::from_secs(10),
            max_key_age: Duration::from_secs(600),
            leeway_secs: 30,
            also_issuers: Vec::new(),
            accept_azp: false,
        }
    }
}

/// Why a token was refused. Every variant is a 401 for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token is signed by an unknown key")]
    UnknownKey,
    #[error("token algorithm is not allowed for its key")]
    Algorithm,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is from another issuer")]
    Issuer,
    #[error("token is for another audience")]
    Audience,
    #[error("token is not an access token")]
    NotAccessToken,
    #[error("cannot fetch the issuer's keys: {0}")]
    Jwks(String),
}

/// What a verified access token says about its bearer.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    pub sub: String,
    pub preferred_username: Option<String>,
    pub email: Option<String>,
    pub realm_roles: Vec<String>,
    /// The client the token was issued to (`azp`).
    pub azp: Option<String>,
    /// `client_id` (or the older `clientId`): set on service-account tokens.
    pub client_id: Option<String>,
    /// A client acting for itself (client_credentials), not a user.
    pub is_service_account: bool,
    pub scope: String,
    pub exp: i64,
    /// Every claim, for anything else the caller needs.
    pub raw: Value,
}

impl VerifiedClaims {
    pub fn has_role(&self, role: &str) -> bool {
        self.realm_roles.iter().any(|r| r == role)
    }
}

type Key = Arc<(DecodingKey, Algorithm)>;

struct Cached {
    keys: HashMap<String, Key>,
    fetched: Option<Instant>,
}

/// A token verified earlier, and the key that verified it.
#[derive(Clone)]
struct Seen {
    claims: Arc<VerifiedClaims>,
    kid: String,
    key: Key,
}

/// Verified tokens remembered at most; past it, expired ones go, then all.
const MAX_SEEN: usize = 10_000;

pub struct BearerVerifier {
    cfg: VerifierConfig,
    http: reqwest::Client,
    cache: RwLock<Cached>,
    fetching: tokio::sync::Mutex<()>,
    seen: RwLock<HashMap<[u8; 32], Seen>>,
}

fn alg_of(jwk: &Jwk) -> Option<Algorithm> {
    let declared = jwk.common.key_algorithm.and_then(|a| match a {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    });
    match (&jwk.algorithm, declared) {
        (_, Some(a)) => Some(a),
        // Without `alg`, only the one unambiguous default per key type.
        (AlgorithmParameters::RSA(_), None) => Some(Algorithm::RS256),
        (AlgorithmParameters::OctetKeyPair(_), None) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// The signing keys of a JWKS document. Keys this verifier cannot use (encryption keys,
/// symmetric keys, unknown types) are skipped, not fatal.
pub fn parse_jwks(doc: &Value) -> HashMap<String, Key> {
    let mut out = HashMap::new();
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return out;
    };
    for k in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), alg_of(&jwk)) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            out.insert(kid, Arc::new((key, alg)));
        }
    }
    out
}

impl BearerVerifier {
    pub fn new(cfg: VerifierConfig) -> BearerVerifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        BearerVerifier {
            cfg,
            http,
            cache: RwLock::new(Cached {
                keys: HashMap::new(),
                fetched: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
            seen: RwLock::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.cfg
    }

    fn lookup(&self, kid: &str) -> Option<Key> {
        let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
        c.keys.get(kid).cloned()
    }

    fn may_refetch(&self) -> bool {
        let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
        c.fetched
            .is_none_or(|t| t.elapsed() >= self.cfg.min_refetch)
    }

    /// Fetches the JWKS now (at most one fetch at a time; others wait and reuse it).
    pub async fn refresh(&self) -> Result<(), VerifyError> {
        let _one = self.fetching.lock().await;
        let resp = self
            .http
            .get(&self.cfg.jwks_url)
            .send()
            .await
            .map_err(|e| VerifyError::Jwks(e.without_url().to_string()))?;
        // Failed fetches count against the interval too, so a down issuer is not hammered.
        let mark = |keys: Option<HashMap<String, Key>>| {
            let mut c = self.cache.write().unwrap_or_else(|p| p.into_inner());
            c.fetched = Some(Instant::now());
            if let Some(k) = keys {
                c.keys = k;
            }
        };
        if !resp.status().is_success() {
            mark(None);
            return Err(VerifyError::Jwks(format!("status {}", resp.status())));
        }
        match resp.json::<Value>().await {
            Ok(doc) => {
                mark(Some(parse_jwks(&doc)));
                Ok(())
            }
            Err(_) => {
                mark(None);
                Err(VerifyError::Jwks("the JWKS is not JSON".into()))
            }
        }
    }

    /// Refetches keys older than `max_key_age` (once, however many requests notice); a failed
    /// fetch keeps the keys already known.
    async fn refresh_if_old(&self) {
        let before = self.cache.read().unwrap_or_else(|p| p.into_inner()).fetched;
        if before.is_none_or(|t| t.elapsed() < self.cfg.max_key_age) {
            return;
        }
        let _one = self.fetching.lock().await;
        let after = self.cache.read().unwrap_or_else(|p| p.into_inner()).fetched;
        drop(_one);
        if before == after {
            let _ = self.refresh().await;
        }
    }

    async fn key_for(&self, kid: &str) -> Result<Key, VerifyError> {
        if let Some(k) = self.lookup(kid) {
            return Ok(k);
        }
        if !self.may_refetch() {
            return Err(VerifyError::UnknownKey);
        }
        let before = self.cache.read().unwrap_or_else(|p| p.into_inner()).fetched;
        let _one = self.fetching.lock().await;
        // Another task may have fetched while this one waited.
        let after = self.cache.read().unwrap_or_else(|p| p.into_inner()).fetched;
        drop(_one);
        if before == after {
            self.refresh().await?;
        }
        self.lookup(kid).ok_or(VerifyError::UnknownKey)
    }

    /// A token verified earlier, if it has not expired and its key is still the one known.
    fn recall(&self, digest: &[u8; 32]) -> Option<Arc<VerifiedClaims>> {
        let seen = self
            .seen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()?;
        let key = self.lookup(&seen.kid)?;
        (Arc::ptr_eq(&key, &seen.key) && pressoir_core::clock::now_ms() / 1000 < seen.claims.exp)
            .then_some(seen.claims)
    }

    fn remember(&self, digest: [u8; 32], seen: Seen) {
        let mut m = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_SEEN {
            let now = pressoir_core::clock::now_ms() / 1000;
            m.retain(|_, s| s.claims.exp > now);
            if m.len() >= MAX_SEEN {
                m.clear();
            }
        }
        m.insert(digest, seen);
    }

    /// Verifies an access token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedClaims>, VerifyError> {
        self.refresh_if_old().await;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(c) = self.recall(&digest) {
            return Ok(c);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let entry = self.key_for(&kid).await?;
        let (key, alg) = (&entry.0, entry.1);
        if header.alg != alg {
            return Err(VerifyError::Algorithm);
        }
        let mut v = Validation::new(alg);
        let mut issuers = vec![self.cfg.issuer.as_str()];
        issuers.extend(self.cfg.also_issuers.iter().map(String::as_str));
        v.set_issuer(&issuers);
        if self.cfg.accept_azp {
            v.validate_aud = false;
            v.set_required_spec_claims(&["exp", "iss", "sub"]);
        } else {
            v.set_audience(&[&self.cfg.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        }
        v.leeway = self.cfg.leeway_secs;
        let data = jsonwebtoken::decode::<Value>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => VerifyError::Expired,
                K::InvalidIssuer => VerifyError::Issuer,
                K::InvalidAudience => VerifyError::Audience,
                K::InvalidSignature => VerifyError::BadSignature,
                K::InvalidAlgorithm => VerifyError::Algorithm,
                K::MissingRequiredClaim(c) if c == "aud" => VerifyError::Audience,
                K::MissingRequiredClaim(c) if c == "iss" => VerifyError::Issuer,
                _ => VerifyError::Malformed,
            }
        })?;
        if self.cfg.accept_azp && !audience_ok(&data.claims, &self.cfg.audience) {
            return Err(VerifyError::Audience);
        }
        let claims = Arc::new(claims_of(data.claims)?);
        let seen = Seen {
            claims: claims.clone(),
            kid,
            key: entry.clone(),
        };
        self.remember(digest, seen);
        Ok(claims)
    }
}

/// `aud` (a string or an array) holds `audience`, or `azp` is it.
fn audience_ok(claims: &Value, audience: &str) -> bool {
    let in_aud = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|x| x == audience),
        _ => false,
    };
    in_aud || claims.get("azp").and_then(Value::as_str) == Some(audience)
}

fn claims_of(raw: Value) -> Result<VerifiedClaims, VerifyError> {
    // ID and refresh tokens also carry iss and aud: only `Bearer` (or no `typ`, as other
    // issuers send) is an access token.
    if let Some(t) = raw.get("typ").and_then(Value::as_str)
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(VerifyError::NotAccessToken);
    }
    let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
    let sub = s("sub").ok_or(VerifyError::Malformed)?;
    let realm_roles = raw
        .pointer("/realm_access/roles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let client_id = s("client_id").or_else(|| s("clientId"));
    let preferred_username = s("preferred_username");
    let is_service_account = client_id.as_ref().is_some_and(|c| {
        preferred_username.as_deref()
            == Some(format!("service-account-{}", c.to_lowercase()).as_str())
    });
    Ok(VerifiedClaims {
        sub,
        email: s("email"),
        azp: s("azp"),
        scope: s("scope").unwrap_or_default(),
        exp: raw.get("exp").and_then(Value::as_i64).unwrap_or(0),
        preferred_username,
        client_id,
        realm_roles,
        is_service_account,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encryption_and_unknown_keys_are_skipped() {
        let doc = json!({"keys": [
            {"kid": "enc", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kid": "weird", "kty": "XYZ"},
            {"kid": "sig", "kty": "RSA", "alg": "RS256", "use": "sig", "n": "sXch", "e": "AQAB"},
        ]});
        let keys = parse_jwks(&doc);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["sig"].1, Algorithm::RS256);
    }

    #[test]
    fn the_audience_is_in_aud_or_else_azp() {
        assert!(audience_ok(&json!({"aud": "press"}), "press"));
        assert!(audience_ok(&json!({"aud": ["account", "press"]}), "press"));
        assert!(audience_ok(
            &json!({"aud": "account", "azp": "press"}),
            "press"
        ));
        assert!(!audience_ok(
            &json!({"aud": "account", "azp": "other"}),
            "press"
        ));
        assert!(!audience_ok(&json!({}), "press"));
    }

    #[test]
    fn only_bearer_tokens_are_access_tokens() {
        let base = json!({"sub": "u", "typ": "ID"});
        assert_eq!(claims_of(base).err(), Some(VerifyError::NotAccessToken));
        let sa = json!({"sub": "u", "typ": "Bearer", "client_id": "press",
            "preferred_username": "service-account-press", "realm_access": {"roles": ["admin"]}});
        let c = claims_of(sa).unwrap();
        assert!(c.is_service_account && c.has_role("admin"));
        let user = json!({"sub": "u", "preferred_username": "ada", "email": "a@x"});
        let c = claims_of(user).unwrap();
        assert!(!c.is_service_account);
        assert_eq!(c.email.as_deref(), Some("a@x"));
    }
}
