//! The identity service's operations: realm views cached in memory (clients, service
//! accounts, parsed keys), client and user authentication, grants, and token checks. HTTP
//! shapes live in `http.rs`, SQL in `store.rs`, pure rules in `model.rs`.

use crate::crypto::{Alg, HmacKey, KeyRing, SigningKey};
use crate::guard::{BruteForce, Guard, Verdict};
use crate::model::{self, Client, Realm, Session, Subject, TokenResponse, User};
use crate::oauth::{Code, OAuthError};
use crate::store::{CodeRow, KeyRow, RefreshUse, Store};
use crate::{Error, passwords};
use pressoir_core::TokenHash;
use pressoir_core::clock::now_ms;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a realm view is trusted before it is reloaded from the store (changes made by
/// another process, such as `pressoir identity` subcommands, show up within this).
const VIEW_TTL: Duration = Duration::from_secs(5);

/// Everything the hot paths need about one realm, loaded at once.
pub struct RealmView {
    pub realm: Realm,
    pub issuer: String,
    pub clients: HashMap<String, Arc<Client>>,
    /// Service-account users by client id, with their roles.
    pub service_users: HashMap<String, Arc<User>>,
    pub keys: KeyRing,
    pub refresh_key: HmacKey,
}

pub struct Service {
    pub store: Store,
    issuer_base: String,
    views: Mutex<HashMap<String, (Instant, Arc<RealmView>)>>,
    parsed: Mutex<HashMap<String, Arc<SigningKey>>>,
    /// One realm load at a time.
    loading: tokio::sync::Mutex<()>,
    users_guard: Guard,
    clients_guard: Guard,
}

/// Who presented what: the client address keys brute-force counters.
#[derive(Clone, Copy)]
pub struct Peer(pub Option<std::net::IpAddr>);

impl Peer {
    fn key(&self) -> String {
        match self.0 {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".into(),
        }
    }
}

/// Client credentials as presented, from the form or HTTP Basic.
pub struct ClientCreds {
    pub client_id: Option<String>,
    pub secret: Option<String>,
    pub basic: bool,
}

/// A verified access token.
pub struct AccessToken {
    pub claims: Value,
}

impl Service {
    pub fn new(store: Store, issuer_base: &str, brute_force: BruteForce) -> Service {
        Service {
            store,
            issuer_base: issuer_base.trim_end_matches('/').to_string(),
            views: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            users_guard: Guard::new(brute_force),
            clients_guard: Guard::new(brute_force),
        }
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{}", self.issuer_base, realm)
    }

    pub fn invalidate(&self, realm: &str) {
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(realm);
    }

    /// The realm's view, from the cache or the store. `None` if the realm does not exist.
    /// An expired view is reloaded by one caller while the others keep using the old one.
    pub async fn view(&self, realm: &str) -> Result<Option<Arc<RealmView>>, Error> {
        let cached = {
            let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
            views.get(realm).cloned()
        };
        if let Some((at, v)) = &cached
            && at.elapsed() < VIEW_TTL
        {
            return Ok(Some(v.clone()));
        }
        let _loading = match (&cached, self.loading.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some((_, stale)), Err(_)) => return Ok(Some(stale.clone())),
            (None, Err(_)) => self.loading.lock().await,
        };
        // Another caller may have loaded it while this one waited.
        if let Some((at, v)) = self
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(realm)
            && at.elapsed() < VIEW_TTL
        {
            return Ok(Some(v.clone()));
        }
        let Some(view) = self.load_view(realm).await? else {
            self.invalidate(realm);
            return Ok(None);
        };
        let view = Arc::new(view);
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(realm.to_string(), (Instant::now(), view.clone()));
        Ok(Some(view))
    }

    async fn load_view(&self, name: &str) -> Result<Option<RealmView>, Error> {
        let Some(realm) = self.store.realm(name).await? else {
            return Ok(None);
        };
        let mut clients = HashMap::new();
        let mut service_users = HashMap::new();
        for c in self.store.clients(name).await? {
            if c.service_accounts
                && let Some(u) = self
                    .store
                    .user_by_login(name, &format!("service-account-{}", c.client_id))
                    .await?
            {
                service_users.insert(c.client_id.clone(), Arc::new(u));
            }
            clients.insert(c.client_id.clone(), Arc::new(c));
        }
        let now = now_ms();
        let mut rows = self.store.keys(name, now).await?;
        for alg in Alg::ALL {
            if !rows.iter().any(|k| k.alg == alg && k.retired_ms.is_none()) {
                rows.insert(0, new_key(&self.store, name, alg, now).await?);
            }
        }
        let mut keys = KeyRing::default();
        for row in rows {
            let key = self.parsed_key(&row)?;
            if row.retired_ms.is_none() {
                keys.active.push(key);
            } else {
                keys.passive.push(key);
            }
        }
        let secret = hex::decode(&realm.refresh_secret)
            .map_err(|_| Error::Crypto("refresh secret".into()))?;
        let refresh_key = HmacKey::new(format!("hs-{name}"), &secret);
        Ok(Some(RealmView {
            issuer: self.issuer(name),
            realm,
            clients,
            service_users,
            keys,
            refresh_key,
        }))
    }

    fn parsed_key(&self, row: &KeyRow) -> Result<Arc<SigningKey>, Error> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = parsed.get(&row.kid) {
            return Ok(k.clone());
        }
        let k = Arc::new(SigningKey::from_pkcs8(
            row.kid.clone(),
            row.alg,
            &row.pkcs8,
        )?);
        parsed.insert(row.kid.clone(), k.clone());
        Ok(k)
    }

    /// Replaces every active key of the realm with a new one. The old keys stop signing now
    /// and stay published until the last token they signed has expired.
    pub async fn rotate_keys(&self, realm: &str) -> Result<Vec<String>, Error> {
        let r = self
            .store
            .realm(realm)
            .await?
            .ok_or_else(|| Error::NotFound(format!("realm '{realm}' does not exist")))?;
        let now = now_ms();
        let old = self.store.keys(realm, now).await?;
        let mut kids = Vec::new();
        for alg in Alg::ALL {
            kids.push(new_key(&self.store, realm, alg, now).await?.kid);
        }
        // Tokens live `access_lifespan_s`; a minute more covers clock skew and leeway.
        let expires = now + (r.access_lifespan_s + 60) * 1000;
        for k in old.iter().filter(|k| k.retired_ms.is_none()) {
            self.store.retire_key(&k.kid, now, expires).await?;
        }
        self.invalidate(realm);
        Ok(kids)
    }

    /// Rotates the realm's keys when its newest RS256 key is older than `max_age`.
    pub async fn rotate_if_older(&self, realm: &str, max_age: Duration) -> Result<bool, Error> {
        let now = now_ms();
        let keys = self.store.keys(realm, now).await?;
        let newest = keys
            .iter()
            .filter(|k| k.alg == Alg::RS256 && k.retired_ms.is_none())
            .map(|k| k.created_ms)
            .max();
        match newest {
            Some(t) if now - t < max_age.as_millis() as i64 => Ok(false),
            _ => {
                self.rotate_keys(realm).await?;
                Ok(true)
            }
        }
    }

    // ---- client authentication

    /// Authenticates the client of a token-endpoint-style request (client_secret_post or
    /// client_secret_basic). Public clients present only their id.
    pub async fn authenticate_client(
        &self,
        view: &RealmView,
        creds: &ClientCreds,
        peer: Peer,
    ) -> Result<Arc<Client>, OAuthError> {
        let realm = &view.realm.name;
        let basic = creds.basic.then_some(realm.as_str());
        let Some(client_id) = creds.client_id.as_deref() else {
            return Err(OAuthError::bad(
                Code::InvalidClient,
                "Missing client_id parameter",
            ));
        };
        let ip = peer.key();
        let ck = format!("c:{realm}:{client_id}:{ip}");
        let keys = [ck.as_str(), ip.as_str()];
        let now = now_ms();
        match self.clients_guard.check(&keys, now) {
            Verdict::Locked { retry_after } => {
                tracing::warn!(realm, client_id, "client authentication locked out");
                let mut e = OAuthError::invalid_client(basic);
                e.retry_after = Some(retry_after.as_secs().max(1));
                return Err(e);
            }
            Verdict::Go { delay } if !delay.is_zero() => tokio::time::sleep(delay).await,
            Verdict::Go { .. } => {}
        }
        let client = view
            .clients
            .get(client_id)
            .filter(|c| c.enabled)
            .filter(|c| {
                c.public
                    || match (&c.secret_hash, &creds.secret) {
                        (Some(h), Some(s)) => {
                            TokenHash::from_hex(h).is_some_and(|h| h.verify(s.as_bytes()))
                        }
                        _ => false,
                    }
            });
        match client {
            Some(c) => {
                self.clients_guard.success(&keys);
                Ok(c.clone())
            }
            None => {
                self.clients_guard.failure(&keys, now);
                Err(OAuthError::invalid_client(basic))
            }
        }
    }

    // ---- users

    /// Checks a username (or email) and password, with brute-force protection per user and
    /// per address. Every failure answers the same, whether the user exists or not.
    pub async fn authenticate_user(
        &self,
        realm: &str,
        login: &str,
        password: &str,
        peer: Peer,
    ) -> Result<User, OAuthError> {
        let ip = peer.key();
        let uk = format!("u:{realm}:{}", login.to_lowercase());
        let keys = [uk.as_str(), ip.as_str()];
        let bad = || {
            OAuthError::new(
                http::StatusCode::UNAUTHORIZED,
                Code::InvalidGrant,
                "Invalid user credentials",
            )
        };
        match self.users_guard.check(&keys, now_ms()) {
            Verdict::Locked { .. } => {
                tracing::warn!(realm, "password login locked out");
                return Err(bad());
            }
            Verdict::Go { delay } if !delay.is_zero() => tokio::time::sleep(delay).await,
            Verdict::Go { .. } => {}
        }
        let user = self.store.user_by_login(realm, login).await?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || passwords::verify(hash.as_deref(), &pw))
            .await
            .unwrap_or(false);
        let Some(user) = user.filter(|_| ok) else {
            self.users_guard.failure(&keys, now_ms());
            return Err(bad());
        };
        if !user.enabled {
            return Err(OAuthError::invalid_grant("Account disabled"));
        }
        self.users_guard.success(&keys);
        Ok(user)
    }

    // ---- issuing

    fn signer<'a>(
        &self,
        view: &'a RealmView,
        client: &Client,
    ) -> Result<&'a Arc<SigningKey>, OAuthError> {
        view.keys
            .signer(client.alg)
            .ok_or_else(|| OAuthError::from(Error::Crypto("no active key".into())))
    }

    /// Issues the token response for a subject. A session gets a refresh token (recorded for
    /// rotation); `want_id` adds an ID token.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue(
        &self,
        view: &RealmView,
        client: &Client,
        user: &User,
        scope: &str,
        session: Option<&Session>,
        want_id: bool,
        nonce: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let now_s = now_ms() / 1000;
        let life = view.realm.access_lifespan_s;
        let subject = Subject {
            user,
            client,
            scope,
            session_id: session.map(|s| s.id.as_str()),
        };
        let key = self.signer(view, client)?;
        let mut jti = uuid::Uuid::encode_buffer();
        let jti = model::token_id().hyphenated().encode_lower(&mut jti);
        let claims = model::access_claims(&subject, &view.issuer, now_s, now_s + life, jti);
        let access_token = key.sign(&claims)?;
        let id_token = if want_id {
            let auth_time = session.map(|s| s.auth_time_s).unwrap_or(now_s);
            let c = model::id_claims(
                &subject,
                &view.issuer,
                now_s,
                now_s + life,
                auth_time,
                nonce,
                &access_token,
            );
            Some(key.sign(&c)?)
        } else {
            None
        };
        let (refresh_token, refresh_expires_in) = match session {
            Some(s) => {
                let exp = s.refresh_expiry_s(&view.realm, now_s);
                let rjti = model::token_id().to_string();
                self.store.insert_refresh(&rjti, &s.id, exp * 1000).await?;
                let c = json!({
                    "exp": exp, "iat": now_s, "jti": rjti, "iss": view.issuer, "aud": view.issuer,
                    "sub": user.id, "typ": "Refresh", "azp": client.client_id, "sid": s.id,
                    "scope": scope,
                });
                (Some(view.refresh_key.sign(&c)?), exp - now_s)
            }
            None => (None, 0),
        };
        Ok(TokenResponse {
            access_token,
            expires_in: life,
            refresh_expires_in,
            refresh_token,
            token_type: "Bearer",
            id_token,
            not_before_policy: 0,
            session_state: session.map(|s| s.id.clone()),
            scope: scope.to_string(),
        })
    }

    pub async fn new_session(
        &self,
        view: &RealmView,
        client: &Client,
        user: &User,
        scope: &str,
    ) -> Result<Session, Error> {
        let now = now_ms();
        let s = Session {
            id: uuid::Uuid::new_v4().to_string(),
            realm: view.realm.name.clone(),
            user_id: user.id.clone(),
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            auth_time_s: now / 1000,
            created_ms: now,
            last_ms: now,
        };
        self.store.insert_session(&s).await?;
        Ok(s)
    }

    // ---- grants

    pub async fn client_credentials(
        &self,
        view: &RealmView,
        client: &Client,
        scope_param: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if client.public {
            return Err(OAuthError::new(
                http::StatusCode::UNAUTHORIZED,
                Code::UnauthorizedClient,
                "Public client not allowed to retrieve service account",
            ));
        }
        let user = match view.service_users.get(&client.client_id) {
            Some(u) if client.service_accounts => u,
            _ => {
                return Err(OAuthError::new(
                    http::StatusCode::UNAUTHORIZED,
                    Code::UnauthorizedClient,
                    "Client not enabled to retrieve service account",
                ));
            }
        };
        let scopes = scopes_or_error(client, scope_param)?;
        let want_id = scope_param.is_some_and(|s| model::has_scope(s, "openid"));
        self.issue(view, client, user, &scopes, None, want_id, None)
            .await
    }

    pub async fn password(
        &self,
        view: &RealmView,
        client: &Client,
        username: Option<&str>,
        password: Option<&str>,
        scope_param: Option<&str>,
        peer: Peer,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.direct_grants {
            return Err(OAuthError::bad(
                Code::UnauthorizedClient,
                "Client not allowed for direct access grants",
            ));
        }
        let Some(username) = username else {
            return Err(OAuthError::new(
                http::StatusCode::UNAUTHORIZED,
                Code::InvalidRequest,
                "Missing parameter: username",
            ));
        };
        let scopes = scopes_or_error(client, scope_param)?;
        let user = self
            .authenticate_user(&view.realm.name, username, password.unwrap_or(""), peer)
            .await?;
        let session = self.new_session(view, client, &user, &scopes).await?;
        let want_id = model::has_scope(&scopes, "openid");
        self.issue(view, client, &user, &scopes, Some(&session), want_id, None)
            .await
    }

    /// Checks a refresh token's signature, type, expiry and client; returns its claims.
    pub fn refresh_claims(
        &self,
        view: &RealmView,
        client: &Client,
        token: &str,
    ) -> Result<Value, OAuthError> {
        let claims = view
            .refresh_key
            .verify(token)
            .filter(|c| c["typ"] == "Refresh" && c["iss"] == view.issuer.as_str())
            .ok_or_else(|| OAuthError::invalid_grant("Invalid refresh token"))?;
        if claims["exp"].as_i64().unwrap_or(0) <= now_ms() / 1000 {
            return Err(OAuthError::invalid_grant("Token is not active"));
        }
        if claims["azp"] != client.client_id.as_str() {
            return Err(OAuthError::invalid_grant(
                "Invalid refresh token. Token client and authorized client don't match",
            ));
        }
        Ok(claims)
    }

    async fn live_session(&self, view: &RealmView, sid: &str) -> Result<Option<Session>, Error> {
        let s = self.store.session(sid).await?;
        Ok(s.filter(|s| s.alive(&view.realm, now_ms())))
    }

    /// Refreshes with rotation: each refresh token works once; presenting a spent one ends
    /// the whole session (reuse detection), as a stolen token would.
    pub async fn refresh(
        &self,
        view: &RealmView,
        client: &Client,
        token: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let claims = self.refresh_claims(view, client, token)?;
        let jti = claims["jti"].as_str().unwrap_or("");
        let sid = claims["sid"].as_str().unwrap_or("");
        let Some(session) = self.live_session(view, sid).await? else {
            return Err(OAuthError::invalid_grant("Session not active"));
        };
        match self.store.use_refresh(jti).await? {
            RefreshUse::Fresh(s) if s == session.id => {}
            RefreshUse::Reused(s) => {
                tracing::warn!(realm = %view.realm.name, "refresh token reused; ending its session");
                self.store.delete_session(&s).await?;
                return Err(OAuthError::invalid_grant("Stale token"));
            }
            _ => return Err(OAuthError::invalid_grant("Token is not active")),
        }
        let Some(user) = self
            .store
            .user(&session.user_id)
            .await?
            .filter(|u| u.enabled)
        else {
            return Err(OAuthError::invalid_grant("User disabled or not found"));
        };
        self.store.touch_session(&session.id, now_ms()).await?;
        let want_id = model::has_scope(&session.scope, "openid");
        self.issue(
            view,
            client,
            &user,
            &session.scope,
            Some(&session),
            want_id,
            None,
        )
        .await
    }

    /// Records a code for a session; returns the code to hand to the browser.
    pub async fn new_code(
        &self,
        view: &RealmView,
        session: &Session,
        redirect_uri: &str,
        nonce: Option<&str>,
        challenge: Option<(&str, &str)>,
    ) -> Result<String, Error> {
        let code = pressoir_core::Secret::generate(43);
        let row = CodeRow {
            realm: view.realm.name.clone(),
            client_id: session.client_id.clone(),
            session_id: session.id.clone(),
            redirect_uri: redirect_uri.to_string(),
            scope: session.scope.clone(),
            nonce: nonce.map(str::to_string),
            code_challenge: challenge.map(|c| c.0.to_string()),
            challenge_method: challenge.map(|c| c.1.to_string()),
            expires_ms: now_ms() + view.realm.code_lifespan_s * 1000,
        };
        self.store
            .insert_code(&TokenHash::of(code.expose().as_bytes()).to_hex(), &row)
            .await?;
        Ok(code.expose().to_string())
    }

    pub async fn authorization_code(
        &self,
        view: &RealmView,
        client: &Client,
        code: Option<&str>,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let Some(code) = code else {
            return Err(OAuthError::invalid_request("Missing parameter: code"));
        };
        let hash = TokenHash::of(code.as_bytes()).to_hex();
        let row = match self.store.take_code(&hash).await? {
            Some(Ok(row)) => row,
            Some(Err(session)) => {
                tracing::warn!(realm = %view.realm.name, "authorization code replayed; ending its session");
                self.store.delete_session(&session).await?;
                return Err(OAuthError::invalid_grant("Code not valid"));
            }
            None => return Err(OAuthError::invalid_grant("Code not valid")),
        };
        if row.realm != view.realm.name || row.client_id != client.client_id {
            return Err(OAuthError::invalid_grant("Code not valid"));
        }
        if row.expires_ms <= now_ms() {
            return Err(OAuthError::invalid_grant("Code is expired"));
        }
        if redirect_uri != Some(row.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant("Incorrect redirect_uri"));
        }
        if let Some(challenge) = &row.code_challenge {
            let Some(v) = verifier else {
                return Err(OAuthError::invalid_grant(
                    "PKCE code verifier not specified",
                ));
            };
            if !model::pkce_ok(row.challenge_method.as_deref(), challenge, v) {
                return Err(OAuthError::invalid_grant("PKCE verification failed"));
            }
        }
        let Some(session) = self.live_session(view, &row.session_id).await? else {
            return Err(OAuthError::invalid_grant("Session not active"));
        };
        let Some(user) = self
            .store
            .user(&session.user_id)
            .await?
            .filter(|u| u.enabled)
        else {
            return Err(OAuthError::invalid_grant("Session not active"));
        };
        let want_id = model::has_scope(&session.scope, "openid");
        self.issue(
            view,
            client,
            &user,
            &session.scope,
            Some(&session),
            want_id,
            row.nonce.as_deref(),
        )
        .await
    }

    // ---- reading tokens

    /// The claims of a live access token of this realm: good signature, `typ` Bearer, this
    /// issuer, not expired, not revoked, and its session (if any) still alive.
    pub async fn check_access(
        &self,
        view: &RealmView,
        token: &str,
    ) -> Result<Option<AccessToken>, Error> {
        let Some(claims) = view.keys.verify(token) else {
            return Ok(None);
        };
        if claims["typ"] != "Bearer" || claims["iss"] != view.issuer.as_str() {
            return Ok(None);
        }
        if claims["exp"].as_i64().unwrap_or(0) <= now_ms() / 1000 {
            return Ok(None);
        }
        if let Some(jti) = claims["jti"].as_str()
            && self.store.is_revoked(jti).await?
        {
            return Ok(None);
        }
        if let Some(sid) = claims["sid"].as_str()
            && self.live_session(view, sid).await?.is_none()
        {
            return Ok(None);
        }
        Ok(Some(AccessToken { claims }))
    }

    /// RFC 7662 introspection of an access or refresh token.
    pub async fn introspect(&self, view: &RealmView, token: &str) -> Result<Value, Error> {
        if let Some(t) = self.check_access(view, token).await? {
            let mut c = t.claims;
            if let Some(m) = c.as_object_mut() {
                let azp = m.get("azp").cloned().unwrap_or(Value::Null);
                m.insert("client_id".into(), azp);
                if let Some(u) = m.get("preferred_username").cloned() {
                    m.insert("username".into(), u);
                }
                m.insert("token_type".into(), json!("Bearer"));
                m.insert("active".into(), json!(true));
            }
            return Ok(c);
        }
        if let Some(mut c) = view.refresh_key.verify(token)
            && c["typ"] == "Refresh"
            && c["exp"].as_i64().unwrap_or(0) > now_ms() / 1000
            && self
                .live_session(view, c["sid"].as_str().unwrap_or(""))
                .await?
                .is_some()
        {
            if let Some(m) = c.as_object_mut() {
                let azp = m.get("azp").cloned().unwrap_or(Value::Null);
                m.insert("client_id".into(), azp);
                m.insert("token_type".into(), json!("Refresh"));
                m.insert("active".into(), json!(true));
            }
            return Ok(c);
        }
        Ok(json!({"active": false}))
    }

    /// RFC 7009: a refresh token ends its session; an access token is denied until it
    /// expires. Tokens of another client are refused; unknown tokens are not an error.
    pub async fn revoke(
        &self,
        view: &RealmView,
        client: &Client,
        token: &str,
    ) -> Result<(), OAuthError> {
        if let Some(c) = view.refresh_key.verify(token) {
            if c["azp"] != client.client_id.as_str() {
                return Err(OAuthError::invalid_request("Unmatching clients"));
            }
            self.store
                .delete_session(c["sid"].as_str().unwrap_or(""))
                .await?;
            return Ok(());
        }
        if let Some(c) = view.keys.verify(token) {
            if c["azp"] != client.client_id.as_str() {
                return Err(OAuthError::invalid_request("Unmatching clients"));
            }
            if let (Some(jti), Some(exp)) = (c["jti"].as_str(), c["exp"].as_i64()) {
                self.store.revoke_jti(jti, exp * 1000).await?;
            }
        }
        Ok(())
    }

    /// Backchannel logout with a refresh token: ends its session.
    pub async fn logout(
        &self,
        view: &RealmView,
        client: &Client,
        token: &str,
    ) -> Result<(), OAuthError> {
        let c = view
            .refresh_key
            .verify(token)
            .filter(|c| c["typ"] == "Refresh")
            .ok_or_else(|| OAuthError::invalid_grant("Invalid refresh token"))?;
        if c["azp"] != client.client_id.as_str() {
            return Err(OAuthError::invalid_grant(
                "Invalid refresh token. Token client and authorized client don't match",
            ));
        }
        self.store
            .delete_session(c["sid"].as_str().unwrap_or(""))
            .await?;
        Ok(())
    }

    /// Ends the session an ID token names (RP-initiated logout), if the token is ours.
    pub async fn end_session_by_id_token(
        &self,
        view: &RealmView,
        id_token: &str,
    ) -> Result<Option<String>, Error> {
        let Some(c) = view.keys.verify(id_token) else {
            return Ok(None);
        };
        if c["iss"] != view.issuer.as_str() {
            return Ok(None);
        }
        if let Some(sid) = c["sid"].as_str() {
            self.store.delete_session(sid).await?;
        }
        Ok(c["azp"].as_str().map(str::to_string))
    }
}

fn scopes_or_error(client: &Client, requested: Option<&str>) -> Result<String, OAuthError> {
    model::grant_scopes(client, requested)
        .map(|s| s.join(" "))
        .map_err(|bad| OAuthError::bad(Code::InvalidScope, format!("Invalid scopes: {bad}")))
}

async fn new_key(store: &Store, realm: &str, alg: Alg, now: i64) -> Result<KeyRow, Error> {
    let (key, der) = tokio::task::spawn_blocking(move || SigningKey::generate(alg))
        .await
        .map_err(|_| Error::Crypto("key generation task".into()))??;
    let row = KeyRow {
        kid: key.kid.clone(),
        realm: realm.to_string(),
        alg,
        pkcs8: der,
        created_ms: now,
        retired_ms: None,
        expires_ms: None,
    };
    store.insert_key(&row).await?;
    Ok(row)
}
