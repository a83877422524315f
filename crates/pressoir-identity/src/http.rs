//! Keycloak's OIDC paths, under `/realms/{realm}` and the old `/auth/realms/{realm}`. Handlers
//! parse the request, call the service and shape the answer; they know no SQL.

use crate::login;
use crate::model::TokenResponse;
use crate::oauth::{Code, OAuthError, realm_not_found};
use crate::service::{ClientCreds, Peer, RealmView, Service};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use base64::Engine;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

pub type AppState = Arc<Service>;

/// The client's address, when the server recorded it.
pub struct PeerIp(pub Peer);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(PeerIp(Peer(ip)))
    }
}

/// A form body: empty values count as absent (python-keycloak sends empty `username`,
/// `password`, `code` and `redirect_uri` on every grant), a repeated key is refused.
pub struct Form(pub HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        // Decoding is lossy (invalid UTF-8 becomes U+FFFD), so any body parses.
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request("duplicated parameter"));
            }
        }
        Ok(Form(map))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

pub fn routes(
    limiter: Arc<pressoir_core::RateLimiter>,
    respond: pressoir_core::ratelimit::Responder,
) -> Router<AppState> {
    let mut r = Router::new();
    let mut tokens = Router::new();
    for prefix in ["/realms/{realm}", "/auth/realms/{realm}"] {
        let oc = format!("{prefix}/protocol/openid-connect");
        tokens = tokens.route(&format!("{oc}/token"), post(token));
        r = r
            .route(prefix, get(realm_info))
            .route(
                &format!("{prefix}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(&format!("{oc}/token/introspect"), post(introspect))
            .route(
                &format!("{oc}/userinfo"),
                get(userinfo_get).post(userinfo_post),
            )
            .route(&format!("{oc}/certs"), get(certs))
            .route(&format!("{oc}/revoke"), post(revoke))
            .route(&format!("{oc}/logout"), get(logout_get).post(logout_post))
            .route(&format!("{oc}/auth"), get(login::page).post(login::submit));
    }
    let tokens = pressoir_core::ratelimit::apply(
        tokens,
        limiter,
        pressoir_core::ratelimit::key_by_authorization,
        respond,
    );
    r.merge(tokens)
}

/// The realm's view or Keycloak's 404.
pub async fn realm_view(svc: &Service, realm: &str) -> Result<Arc<RealmView>, Response> {
    match svc.view(realm).await {
        Ok(Some(v)) if v.realm.enabled => Ok(v),
        Ok(_) => Err(realm_not_found()),
        Err(e) => Err(OAuthError::from(e).into_response()),
    }
}

macro_rules! view_or_return {
    ($svc:expr, $realm:expr) => {
        match realm_view(&$svc, &$realm).await {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}

fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

async fn realm_info(State(svc): State<AppState>, Path(realm): Path<String>) -> Response {
    let v = view_or_return!(svc, realm);
    let public_key = v
        .keys
        .signer(crate::crypto::Alg::RS256)
        .map(|k| k.public_key_b64().to_string());
    Json(json!({
        "realm": v.realm.name,
        "public_key": public_key,
        "token-service": format!("{}/protocol/openid-connect", v.issuer),
        "account-service": format!("{}/account", v.issuer),
        "tokens-not-before": 0,
    }))
    .into_response()
}

async fn discovery(State(svc): State<AppState>, Path(realm): Path<String>) -> Response {
    let v = view_or_return!(svc, realm);
    let i = &v.issuer;
    let oc = format!("{i}/protocol/openid-connect");
    let auth_methods = json!(["client_secret_basic", "client_secret_post"]);
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{oc}/auth"),
        "token_endpoint": format!("{oc}/token"),
        "introspection_endpoint": format!("{oc}/token/introspect"),
        "userinfo_endpoint": format!("{oc}/userinfo"),
        "end_session_endpoint": format!("{oc}/logout"),
        "revocation_endpoint": format!("{oc}/revoke"),
        "jwks_uri": format!("{oc}/certs"),
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": false,
        "grant_types_supported": ["authorization_code", "client_credentials", "password", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "userinfo_signing_alg_values_supported": ["none"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "name", "given_name",
            "family_name", "preferred_username", "email", "email_verified", "azp", "nonce"],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": false,
        "scopes_supported": ["openid", "profile", "email", "offline_access", "address", "phone"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}

async fn certs(State(svc): State<AppState>, Path(realm): Path<String>) -> Response {
    let v = view_or_return!(svc, realm);
    let mut resp = Json(v.keys.jwks()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1: form-encoded id and secret) and the
/// form; the form's fields win, as in Keycloak.
fn client_creds(headers: &HeaderMap, form: &Form, realm: &str) -> Result<ClientCreds, OAuthError> {
    let mut creds = ClientCreds {
        client_id: None,
        secret: None,
        basic: false,
    };
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let text = v.to_str().unwrap_or("");
        if let Some(b64) = text
            .strip_prefix("Basic ")
            .or_else(|| text.strip_prefix("basic "))
        {
            let bad = || OAuthError::invalid_client(Some(realm));
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| bad())?;
            let raw = String::from_utf8(raw).map_err(|_| bad())?;
            let (id, secret) = raw.split_once(':').ok_or_else(bad)?;
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            creds.client_id = Some(dec(id)).filter(|s| !s.is_empty());
            creds.secret = Some(dec(secret)).filter(|s| !s.is_empty());
            creds.basic = true;
        }
    }
    if let Some(id) = form.get("client_id") {
        if creds.client_id.as_deref().is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request(
                "client_id does not match the Authorization header",
            ));
        }
        creds.client_id = Some(id.to_string());
    }
    if let Some(s) = form.get("client_secret") {
        creds.secret = Some(s.to_string());
    }
    Ok(creds)
}

async fn token(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    PeerIp(peer): PeerIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = view_or_return!(svc, realm);
    let r = async {
        let form = Form::parse(&body)?;
        let Some(grant) = form.get("grant_type") else {
            return Err(OAuthError::invalid_request(
                "Missing form parameter: grant_type",
            ));
        };
        if !matches!(
            grant,
            "client_credentials" | "password" | "refresh_token" | "authorization_code"
        ) {
            return Err(OAuthError::bad(
                Code::UnsupportedGrantType,
                "Unsupported grant_type",
            ));
        }
        let creds = client_creds(&headers, &form, &v.realm.name)?;
        let client = svc.authenticate_client(&v, &creds, peer).await?;
        match grant {
            "client_credentials" => svc.client_credentials(&v, &client, form.get("scope")).await,
            "password" => {
                svc.password(
                    &v,
                    &client,
                    form.get("username"),
                    form.get("password"),
                    form.get("scope"),
                    peer,
                )
                .await
            }
            "refresh_token" => {
                let Some(rt) = form.get("refresh_token") else {
                    return Err(OAuthError::invalid_request(
                        "Missing parameter: refresh_token",
                    ));
                };
                svc.refresh(&v, &client, rt).await
            }
            _ => {
                if !client.standard_flow {
                    return Err(OAuthError::bad(
                        Code::UnauthorizedClient,
                        "Client not allowed to exchange code",
                    ));
                }
                svc.authorization_code(
                    &v,
                    &client,
                    form.get("code"),
                    form.get("redirect_uri"),
                    form.get("code_verifier"),
                )
                .await
            }
        }
    }
    .await;
    match r {
        Ok(t) => no_store(token_json(&t)),
        Err(e) => e.into_response(),
    }
}

/// The token response as JSON, written into a buffer sized for its tokens at once (axum's
/// `Json` starts at 128 bytes and doubles, copying a kilobyte-long token several times).
fn token_json(t: &TokenResponse) -> Response {
    let tokens = [&t.refresh_token, &t.id_token]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
    let mut body = Vec::with_capacity(t.access_token.len() + tokens + t.scope.len() + 256);
    match serde_json::to_writer(&mut body, t) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            OAuthError::from(crate::Error::Invalid(format!("token response: {e}"))).into_response()
        }
    }
}

/// The confidential client calling introspection, revocation or logout.
async fn caller(
    svc: &Service,
    v: &RealmView,
    headers: &HeaderMap,
    form: &Form,
    peer: Peer,
) -> Result<Arc<crate::model::Client>, OAuthError> {
    let creds = client_creds(headers, form, &v.realm.name)?;
    svc.authenticate_client(v, &creds, peer).await
}

async fn introspect(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    PeerIp(peer): PeerIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = view_or_return!(svc, realm);
    let r = async {
        let form = Form::parse(&body)?;
        let client = caller(&svc, &v, &headers, &form, peer).await?;
        if client.public {
            return Err(OAuthError::new(
                StatusCode::FORBIDDEN,
                Code::InvalidRequest,
                "Client not allowed.",
            ));
        }
        let Some(token) = form.get("token") else {
            return Err(OAuthError::invalid_request("Token not provided."));
        };
        Ok(svc.introspect(&v, token).await?)
    }
    .await;
    match r {
        Ok(body) => no_store(Json(body).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn revoke(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    PeerIp(peer): PeerIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = view_or_return!(svc, realm);
    let r = async {
        let form = Form::parse(&body)?;
        let client = caller(&svc, &v, &headers, &form, peer).await?;
        let Some(token) = form.get("token") else {
            return Err(OAuthError::invalid_request("Missing token parameter"));
        };
        svc.revoke(&v, &client, token).await
    }
    .await;
    match r {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => e.into_response(),
    }
}

async fn logout_post(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    PeerIp(peer): PeerIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = view_or_return!(svc, realm);
    let form = match Form::parse(&body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    if form.get("refresh_token").is_none() {
        return login::end_session(&svc, &v, &form.0).await;
    }
    let r = async {
        let client = caller(&svc, &v, &headers, &form, peer).await?;
        svc.logout(&v, &client, form.get("refresh_token").unwrap_or(""))
            .await
    }
    .await;
    match r {
        Ok(()) => no_store(StatusCode::NO_CONTENT.into_response()),
        Err(e) => e.into_response(),
    }
}

async fn logout_get(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let v = view_or_return!(svc, realm);
    login::end_session(&svc, &v, &q).await
}

async fn userinfo_get(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    userinfo(svc, realm, headers, None).await
}

async fn userinfo_post(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body).ok();
    let token = form.and_then(|f| f.get("access_token").map(str::to_string));
    userinfo(svc, realm, headers, token).await
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn userinfo(
    svc: AppState,
    realm: String,
    headers: HeaderMap,
    form_token: Option<String>,
) -> Response {
    let v = view_or_return!(svc, realm);
    let name = v.realm.name.clone();
    let r = async {
        let token = bearer(&headers).map(str::to_string).or(form_token);
        let Some(token) = token else {
            return Err(OAuthError::bearer(
                &name,
                StatusCode::UNAUTHORIZED,
                Code::InvalidRequest,
                "Token not provided",
            ));
        };
        let invalid = || {
            OAuthError::bearer(
                &name,
                StatusCode::UNAUTHORIZED,
                Code::InvalidToken,
                "Token verification failed",
            )
        };
        let Some(t) = svc.check_access(&v, &token).await? else {
            return Err(invalid());
        };
        let scope = t.claims["scope"].as_str().unwrap_or("");
        if !crate::model::has_scope(scope, "openid") {
            return Err(OAuthError::bearer(
                &name,
                StatusCode::FORBIDDEN,
                Code::InsufficientScope,
                "Missing openid scope",
            ));
        }
        let sub = t.claims["sub"].as_str().unwrap_or("");
        let azp = t.claims["azp"].as_str().unwrap_or("");
        let (Some(user), Some(client)) = (svc.store.user(sub).await?, v.clients.get(azp)) else {
            return Err(invalid());
        };
        if !user.enabled {
            return Err(invalid());
        }
        let mut out = serde_json::Map::new();
        let s = crate::model::Subject {
            user: &user,
            client,
            scope,
            session_id: None,
        };
        crate::model::profile_claims(&s, &mut out);
        Ok(Value::Object(out))
    }
    .await;
    match r {
        Ok(body) => no_store(Json(body).into_response()),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_drop_empty_fields_and_refuse_duplicates() {
        let f =
            Form::parse(b"grant_type=client_credentials&username=&password=&code=&scope=openid")
                .unwrap();
        assert_eq!(f.get("grant_type"), Some("client_credentials"));
        assert_eq!(f.get("username"), None);
        let e = Form::parse(b"a=1&a=2").err().unwrap();
        assert_eq!(e.description, "duplicated parameter");
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let raw = base64::engine::general_purpose::STANDARD.encode("my%20app:s%3Acret");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {raw}").parse().unwrap(),
        );
        let c = client_creds(&h, &Form(HashMap::new()), "r").unwrap();
        assert_eq!(c.client_id.as_deref(), Some("my app"));
        assert_eq!(c.secret.as_deref(), Some("s:cret"));
        assert!(c.basic);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        let e = client_creds(&h, &Form(HashMap::new()), "r").err().unwrap();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.www_authenticate.as_deref(), Some("Basic realm=\"r\""));
    }
}
