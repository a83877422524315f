//! Realm data and the pure rules of the protocol: which scopes a request gets, what claims a
//! token carries, PKCE, redirect URI matching. No I/O here.

use crate::crypto::Alg;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

#[derive(Debug, Clone)]
pub struct Realm {
    pub name: String,
    pub enabled: bool,
    pub access_lifespan_s: i64,
    pub sso_idle_s: i64,
    pub sso_max_s: i64,
    pub code_lifespan_s: i64,
    /// Hex secret of the realm's refresh-token HMAC key.
    pub refresh_secret: String,
}

impl Realm {
    /// A realm with Keycloak's default lifespans: 5 min access tokens, 30 min idle sessions,
    /// 10 h at most, 1 min codes.
    pub fn new(name: &str) -> Realm {
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        Realm {
            name: name.to_string(),
            enabled: true,
            access_lifespan_s: 300,
            sso_idle_s: 1800,
            sso_max_s: 36000,
            code_lifespan_s: 60,
            refresh_secret: hex::encode(secret),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub realm: String,
    pub client_id: String,
    /// SHA-256 hex of the secret: client secrets are machine-generated, high-entropy tokens.
    pub secret_hash: Option<String>,
    pub public: bool,
    pub service_accounts: bool,
    pub direct_grants: bool,
    pub standard_flow: bool,
    pub redirect_uris: Vec<String>,
    pub default_scopes: Vec<String>,
    pub optional_scopes: Vec<String>,
    /// `aud` of the tokens issued to this client; its own id when empty.
    pub audience: Vec<String>,
    pub alg: Alg,
    pub enabled: bool,
}

impl Client {
    /// A confidential client with Keycloak's defaults: standard flow and direct grants on,
    /// default scopes `profile email`, optional `offline_access`.
    pub fn new(realm: &str, client_id: &str) -> Client {
        Client {
            realm: realm.to_string(),
            client_id: client_id.to_string(),
            secret_hash: None,
            public: false,
            service_accounts: false,
            direct_grants: true,
            standard_flow: true,
            redirect_uris: Vec::new(),
            default_scopes: vec!["profile".into(), "email".into()],
            optional_scopes: vec!["offline_access".into(), "address".into(), "phone".into()],
            audience: Vec::new(),
            alg: Alg::RS256,
            enabled: true,
        }
    }

    /// Whether `uri` is one of the registered redirect URIs. As in Keycloak, a registered URI
    /// ending in `*` matches any URI with that prefix; anything else must match exactly.
    pub fn redirect_allowed(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| match r.strip_suffix('*') {
                Some(prefix) => uri.starts_with(prefix),
                None => r == uri,
            })
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub realm: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password_hash: Option<String>,
    pub enabled: bool,
    /// Set for the service-account user of a client.
    pub service_account_client: Option<String>,
    pub roles: Vec<String>,
}

impl User {
    pub fn new(realm: &str, username: &str) -> User {
        User {
            id: uuid::Uuid::new_v4().to_string(),
            realm: realm.to_string(),
            username: username.to_lowercase(),
            email: None,
            email_verified: false,
            first_name: None,
            last_name: None,
            password_hash: None,
            enabled: true,
            service_account_client: None,
            roles: Vec::new(),
        }
    }

    pub fn service_account(realm: &str, client_id: &str) -> User {
        let mut u = User::new(realm, &format!("service-account-{client_id}"));
        u.service_account_client = Some(client_id.to_string());
        u
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub realm: String,
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub auth_time_s: i64,
    pub created_ms: i64,
    pub last_ms: i64,
}

impl Session {
    pub fn alive(&self, realm: &Realm, now_ms: i64) -> bool {
        self.last_ms + realm.sso_idle_s * 1000 > now_ms
            && self.created_ms + realm.sso_max_s * 1000 > now_ms
    }

    /// When a refresh token issued now must expire: the idle timeout, capped by the max age.
    pub fn refresh_expiry_s(&self, realm: &Realm, now_s: i64) -> i64 {
        (now_s + realm.sso_idle_s).min(self.created_ms / 1000 + realm.sso_max_s)
    }
}

/// A fresh random (v4) UUID for a token's `jti`, from `rand`'s thread-local CSPRNG (seeded by
/// the OS): `Uuid::new_v4` asks the kernel for each one, a system call per token.
pub fn token_id() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// Default realm roles every Keycloak user has.
pub fn default_roles(realm: &str) -> Vec<String> {
    vec![
        format!("default-roles-{realm}"),
        "offline_access".to_string(),
        "uma_authorization".to_string(),
    ]
}

/// The scopes a token gets: `openid` if asked for or a default of the client, the client's
/// defaults, and those optional scopes that were asked for. An unknown scope is an error
/// carrying the offending names.
pub fn grant_scopes(client: &Client, requested: Option<&str>) -> Result<Vec<String>, String> {
    let asked: Vec<&str> = requested.unwrap_or("").split_whitespace().collect();
    let mut unknown = Vec::new();
    for s in &asked {
        let known = *s == "openid"
            || client.default_scopes.iter().any(|d| d == s)
            || client.optional_scopes.iter().any(|d| d == s);
        if !known {
            unknown.push(*s);
        }
    }
    if !unknown.is_empty() {
        return Err(unknown.join(" "));
    }
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    };
    if asked.contains(&"openid") || client.default_scopes.iter().any(|d| d == "openid") {
        push("openid");
    }
    for d in &client.default_scopes {
        push(d);
    }
    for s in &asked {
        push(s);
    }
    Ok(out)
}

pub fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split_whitespace().any(|s| s == wanted)
}

/// RFC 7636: a verifier is 43 to 128 unreserved characters; S256 compares
/// BASE64URL(SHA256(verifier)) with the challenge, `plain` compares them directly.
pub fn pkce_ok(method: Option<&str>, challenge: &str, verifier: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'));
    if !valid {
        return false;
    }
    let computed = match method.unwrap_or("plain") {
        "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        "plain" => verifier.to_string(),
        _ => return false,
    };
    use subtle::ConstantTimeEq;
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// What a token is about, resolved from the store.
pub struct Subject<'a> {
    pub user: &'a User,
    pub client: &'a Client,
    pub scope: &'a str,
    pub session_id: Option<&'a str>,
}

/// The identity claims a scope releases: `profile` gives the names and username, `email` the
/// address. Service accounts always carry their username and client id, as in Keycloak.
#[derive(Serialize)]
pub struct Profile<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    given_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

impl<'a> Profile<'a> {
    pub fn of(s: &Subject<'a>) -> Profile<'a> {
        let u = s.user;
        let mut p = Profile {
            sub: &u.id,
            preferred_username: None,
            name: None,
            given_name: None,
            family_name: None,
            email_verified: None,
            email: None,
            client_id: u.service_account_client.as_deref(),
        };
        if has_scope(s.scope, "profile") || u.service_account_client.is_some() {
            p.preferred_username = Some(&u.username);
            p.name = match (&u.first_name, &u.last_name) {
                (Some(f), Some(l)) => Some(Cow::Owned(format!("{f} {l}"))),
                (Some(n), None) | (None, Some(n)) => Some(Cow::Borrowed(n)),
                (None, None) => None,
            };
            p.given_name = u.first_name.as_deref();
            p.family_name = u.last_name.as_deref();
        }
        if has_scope(s.scope, "email") {
            p.email_verified = Some(u.email_verified);
            p.email = u.email.as_deref();
        }
        p
    }
}

/// The profile claims of `s`, added to `out` (for ID tokens and userinfo).
pub fn profile_claims(s: &Subject<'_>, out: &mut Map<String, Value>) {
    if let Ok(Value::Object(m)) = serde_json::to_value(Profile::of(s)) {
        out.extend(m);
    }
}

/// The access token's claims, in Keycloak's shape. A struct of borrowed fields rather than a
/// `Value` tree: the token endpoint builds one per grant, and the tree took dozens of
/// allocations (every key and value copied) to be serialized once and dropped.
#[derive(Serialize)]
pub struct AccessClaims<'a> {
    exp: i64,
    iat: i64,
    jti: &'a str,
    iss: &'a str,
    aud: Audience<'a>,
    typ: &'static str,
    azp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    realm_access: RealmAccess,
    scope: &'a str,
    #[serde(flatten)]
    profile: Profile<'a>,
}

/// `aud`: a string when there is one audience, as Keycloak writes it, else an array.
#[derive(Serialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

#[derive(Serialize)]
struct RealmAccess {
    roles: Vec<String>,
}

pub fn access_claims<'a>(
    s: &Subject<'a>,
    issuer: &'a str,
    iat: i64,
    exp: i64,
    jti: &'a str,
) -> AccessClaims<'a> {
    let c = s.client;
    let aud = match c.audience.as_slice() {
        [] => Audience::One(&c.client_id),
        [one] => Audience::One(one),
        many => Audience::Many(many),
    };
    let mut roles = default_roles(&c.realm);
    for r in &s.user.roles {
        if !roles.contains(r) {
            roles.push(r.clone());
        }
    }
    AccessClaims {
        exp,
        iat,
        jti,
        iss: issuer,
        aud,
        typ: "Bearer",
        azp: &c.client_id,
        sid: s.session_id,
        realm_access: RealmAccess { roles },
        scope: s.scope,
        profile: Profile::of(s),
    }
}

/// The ID token's claims (OIDC Core §2), with `at_hash` binding it to its access token.
#[allow(clippy::too_many_arguments)]
pub fn id_claims(
    s: &Subject<'_>,
    issuer: &str,
    iat: i64,
    exp: i64,
    auth_time: i64,
    nonce: Option<&str>,
    access_token: &str,
) -> Value {
    let mut m = Map::new();
    m.insert("exp".into(), json!(exp));
    m.insert("iat".into(), json!(iat));
    m.insert("auth_time".into(), json!(auth_time));
    m.insert("jti".into(), json!(token_id().to_string()));
    m.insert("iss".into(), json!(issuer));
    m.insert("aud".into(), json!(s.client.client_id));
    m.insert("typ".into(), json!("ID"));
    m.insert("azp".into(), json!(s.client.client_id));
    if let Some(n) = nonce {
        m.insert("nonce".into(), json!(n));
    }
    if let Some(sid) = s.session_id {
        m.insert("sid".into(), json!(sid));
    }
    let digest = Sha256::digest(access_token.as_bytes());
    m.insert(
        "at_hash".into(),
        json!(URL_SAFE_NO_PAD.encode(&digest[..16])),
    );
    profile_claims(s, &mut m);
    Value::Object(m)
}

/// Keycloak's token response.
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(rename = "not-before-policy")]
    pub not_before_policy: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_state: Option<String>,
    pub scope: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(s: &Subject<'_>, issuer: &str, iat: i64, exp: i64, jti: &str) -> Value {
        serde_json::to_value(access_claims(s, issuer, iat, exp, jti)).unwrap()
    }

    fn press() -> Client {
        let mut c = Client::new("frappe-cloud", "press");
        c.default_scopes = vec!["openid".into(), "profile".into(), "email".into()];
        c
    }

    #[test]
    fn scopes_include_defaults_and_reject_unknown_ones() {
        let c = Client::new("r", "app");
        assert_eq!(grant_scopes(&c, None).unwrap(), vec!["profile", "email"]);
        assert_eq!(
            grant_scopes(&c, Some("openid")).unwrap(),
            vec!["openid", "profile", "email"]
        );
        assert_eq!(
            grant_scopes(&c, Some("offline_access")).unwrap(),
            vec!["profile", "email", "offline_access"]
        );
        assert_eq!(grant_scopes(&c, Some("openid admin")).unwrap_err(), "admin");
        assert_eq!(
            grant_scopes(&press(), None).unwrap(),
            vec!["openid", "profile", "email"]
        );
    }

    #[test]
    fn pkce_s256_matches_the_rfc_example() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_ok(Some("S256"), challenge, verifier));
        assert!(!pkce_ok(
            Some("S256"),
            challenge,
            &verifier.replace('d', "e")
        ));
        assert!(!pkce_ok(Some("S256"), challenge, "short"));
        assert!(!pkce_ok(Some("S512"), challenge, verifier));
        assert!(pkce_ok(None, verifier, verifier));
    }

    #[test]
    fn redirect_uris_match_exactly_or_by_wildcard_prefix() {
        let mut c = press();
        c.redirect_uris = vec!["http://a/cb".into(), "http://b/*".into()];
        assert!(c.redirect_allowed("http://a/cb"));
        assert!(!c.redirect_allowed("http://a/cb2"));
        assert!(c.redirect_allowed("http://b/x/y"));
        assert!(!c.redirect_allowed("http://evil/"));
    }

    #[test]
    fn service_account_tokens_carry_client_id_and_username() {
        let c = press();
        let mut u = User::service_account("frappe-cloud", "press");
        u.roles = vec!["admin".into()];
        let s = Subject {
            user: &u,
            client: &c,
            scope: "openid profile email",
            session_id: None,
        };
        let t = claims(&s, "http://i/realms/frappe-cloud", 10, 310, "j");
        assert_eq!(t["preferred_username"], "service-account-press");
        assert_eq!(t["client_id"], "press");
        assert_eq!(t["azp"], "press");
        assert_eq!(t["aud"], "press");
        assert_eq!(t["typ"], "Bearer");
        assert!(t.get("sid").is_none());
        let roles = t["realm_access"]["roles"].as_array().unwrap();
        assert!(roles.contains(&json!("admin")));
        assert!(roles.contains(&json!("default-roles-frappe-cloud")));
    }

    #[test]
    fn sessions_end_when_idle_or_too_old_and_refresh_tokens_never_outlive_them() {
        let r = Realm::new("r");
        let s = Session {
            id: "s".into(),
            realm: "r".into(),
            user_id: "u".into(),
            client_id: "c".into(),
            scope: "openid".into(),
            auth_time_s: 0,
            created_ms: 0,
            last_ms: 0,
        };
        assert!(s.alive(&r, 1_799_000));
        assert!(!s.alive(&r, 1_800_000), "idle for 30 minutes");
        let busy = Session {
            last_ms: 35_999_000,
            ..s.clone()
        };
        assert!(busy.alive(&r, 35_999_500));
        assert!(!busy.alive(&r, 36_000_000), "older than 10 hours");
        assert_eq!(s.refresh_expiry_s(&r, 100), 1900);
        assert_eq!(s.refresh_expiry_s(&r, 35_000), 36_000);
    }

    #[test]
    fn email_and_names_follow_scopes() {
        let c = Client::new("r", "app");
        let mut u = User::new("r", "Ada");
        u.email = Some("ada@example.com".into());
        u.first_name = Some("Ada".into());
        let s = Subject {
            user: &u,
            client: &c,
            scope: "openid",
            session_id: Some("s"),
        };
        let t = claims(&s, "i", 0, 1, "j");
        assert!(t.get("email").is_none() && t.get("preferred_username").is_none());
        let s = Subject {
            scope: "openid profile email",
            ..s
        };
        let t = claims(&s, "i", 0, 1, "j");
        assert_eq!(t["email"], "ada@example.com");
        assert_eq!(t["preferred_username"], "ada");
        assert_eq!(t["name"], "Ada");
        assert_eq!(t["sid"], "s");
    }
}
