//! A subset of Keycloak's admin REST API (`/admin/realms/...`): add and list realms, users,
//! clients and realm roles, grant roles, rotate keys. The caller presents a bearer token of
//! the seeded realm carrying its `admin` realm role (Keycloak's `master` realm plays this part).

use crate::Error;
use crate::admin::{self, ADMIN_ROLE, NewClient, NewUser};
use crate::crypto::Alg;
use crate::http::{AppState, bearer};
use crate::service::Service;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use pressoir_core::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Clone)]
pub struct AdminState {
    pub svc: Arc<Service>,
    /// The realm whose `admin` role may administer every realm.
    pub admin_realm: String,
}

/// Keycloak's admin error body.
fn err(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"errorMessage": msg}))).into_response()
}

fn from_error(e: Error) -> Response {
    match e {
        Error::Conflict(m) => err(StatusCode::CONFLICT, &m),
        Error::NotFound(m) => err(StatusCode::NOT_FOUND, &m),
        Error::Invalid(m) => err(StatusCode::BAD_REQUEST, &m),
        other => crate::oauth::OAuthError::from(other).into_response(),
    }
}

pub fn routes(state: AdminState) -> Router<AppState> {
    Router::new()
        .route("/admin/realms", get(list_realms).post(add_realm))
        .route(
            "/admin/realms/{realm}/users",
            get(list_users).post(add_user),
        )
        .route(
            "/admin/realms/{realm}/users/{id}/role-mappings/realm",
            post(grant_roles),
        )
        .route(
            "/admin/realms/{realm}/clients",
            get(list_clients).post(add_client),
        )
        .route(
            "/admin/realms/{realm}/roles",
            get(list_roles).post(add_role),
        )
        .route("/admin/realms/{realm}/keys/rotate", post(rotate))
        .route("/admin/realms/{realm}/users/{id}", get(get_user))
        .route("/admin/realms/{realm}/roles/{name}", get(get_role))
        .with_state(state)
}

/// Checks the caller's token: an access token of the admin realm with the `admin` role.
async fn authorize(st: &AdminState, headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = || {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "HTTP 401 Unauthorized"})),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        r
    };
    let Some(token) = bearer(headers) else {
        return Err(unauthorized());
    };
    let view = match st.svc.view(&st.admin_realm).await {
        Ok(Some(v)) => v,
        Ok(None) => return Err(unauthorized()),
        Err(e) => return Err(from_error(e)),
    };
    let t = match st.svc.check_access(&view, token).await {
        Ok(Some(t)) => t,
        Ok(None) => return Err(unauthorized()),
        Err(e) => return Err(from_error(e)),
    };
    let is_admin = t.claims["realm_access"]["roles"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x == ADMIN_ROLE));
    if !is_admin {
        return Err((
            StatusCode::FORBIDDEN,
            Json(json!({"error": "unknown_error"})),
        )
            .into_response());
    }
    Ok(())
}

macro_rules! authorized {
    ($st:expr, $h:expr) => {
        if let Err(r) = authorize(&$st, &$h).await {
            return r;
        }
    };
}

/// A JSON body, or Keycloak's 400 for one that does not parse.
#[allow(clippy::result_large_err)]
fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes)
        .map_err(|e| err(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
}

async fn realm_exists(st: &AdminState, realm: &str) -> Result<(), Response> {
    match st.svc.store.realm(realm).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Realm not found."})),
        )
            .into_response()),
        Err(e) => Err(from_error(e)),
    }
}

fn created(location: String, extra: Value) -> Response {
    let mut r = (StatusCode::CREATED, Json(extra)).into_response();
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn list_realms(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    authorized!(st, headers);
    match st.svc.store.realms().await {
        Ok(rs) => Json(rs.iter().map(|r| json!({"realm": r.name, "enabled": r.enabled, "accessTokenLifespan": r.access_lifespan_s})).collect::<Vec<_>>()).into_response(),
        Err(e) => from_error(e),
    }
}

#[derive(Deserialize)]
struct RealmRep {
    realm: String,
}

async fn add_realm(
    State(st): State<AdminState>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    authorized!(st, headers);
    let rep: RealmRep = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match admin::create_realm(&st.svc.store, &rep.realm).await {
        Ok(_) => created(
            format!("/admin/realms/{}", rep.realm),
            json!({"realm": rep.realm}),
        ),
        Err(Error::Conflict(_)) => err(
            StatusCode::CONFLICT,
            &format!(
                "Conflict detected. See logs for details: realm '{}' exists",
                rep.realm
            ),
        ),
        Err(e) => from_error(e),
    }
}

fn user_rep(u: &crate::model::User) -> Value {
    json!({
        "id": u.id, "username": u.username, "email": u.email, "emailVerified": u.email_verified,
        "firstName": u.first_name, "lastName": u.last_name, "enabled": u.enabled, "realmRoles": u.roles,
    })
}

async fn list_users(
    State(st): State<AdminState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized!(st, headers);
    if let Err(r) = realm_exists(&st, &realm).await {
        return r;
    }
    match st.svc.store.users(&realm).await {
        Ok(us) => Json(
            us.iter()
                .filter(|u| u.service_account_client.is_none())
                .map(user_rep)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => from_error(e),
    }
}

async fn get_user(
    State(st): State<AdminState>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    authorized!(st, headers);
    match st.svc.store.user(&id).await {
        Ok(Some(u)) if u.realm == realm => Json(user_rep(&u)).into_response(),
        Ok(_) => err(StatusCode::NOT_FOUND, "User not found"),
        Err(e) => from_error(e),
    }
}

#[derive(Deserialize)]
struct Credential {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserRep {
    username: String,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    #[serde(default)]
    credentials: Vec<Credential>,
    #[serde(default)]
    realm_roles: Vec<String>,
}

async fn add_user(
    State(st): State<AdminState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    authorized!(st, headers);
    let rep: UserRep = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Err(r) = realm_exists(&st, &realm).await {
        return r;
    }
    let password = rep
        .credentials
        .iter()
        .find(|c| c.kind == "password")
        .map(|c| Secret::new(c.value.clone()));
    let n = NewUser {
        realm: realm.clone(),
        username: rep.username,
        email: rep.email,
        first_name: rep.first_name,
        last_name: rep.last_name,
        password,
        roles: rep.realm_roles,
    };
    match admin::create_user(&st.svc.store, &n).await {
        Ok(u) => created(
            format!("/admin/realms/{realm}/users/{}", u.id),
            user_rep(&u),
        ),
        Err(Error::Conflict(_)) => err(StatusCode::CONFLICT, "User exists with same username"),
        Err(e) => from_error(e),
    }
}

#[derive(Deserialize)]
struct RoleRef {
    name: String,
}

async fn grant_roles(
    State(st): State<AdminState>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    authorized!(st, headers);
    let roles: Vec<RoleRef> = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let user = match st.svc.store.user(&id).await {
        Ok(Some(u)) if u.realm == realm => u,
        Ok(_) => return err(StatusCode::NOT_FOUND, "User not found"),
        Err(e) => return from_error(e),
    };
    for r in roles {
        if let Err(e) = admin::grant_role(&st.svc.store, &realm, &user.username, &r.name).await {
            return from_error(e);
        }
    }
    st.svc.invalidate(&realm);
    StatusCode::NO_CONTENT.into_response()
}

async fn list_clients(
    State(st): State<AdminState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized!(st, headers);
    if let Err(r) = realm_exists(&st, &realm).await {
        return r;
    }
    match st.svc.store.clients(&realm).await {
        Ok(cs) => Json(
            cs.iter()
                .map(|c| {
                    json!({
                        "clientId": c.client_id, "enabled": c.enabled, "publicClient": c.public,
                        "serviceAccountsEnabled": c.service_accounts, "directAccessGrantsEnabled": c.direct_grants,
                        "standardFlowEnabled": c.standard_flow, "redirectUris": c.redirect_uris,
                        "defaultClientScopes": c.default_scopes, "optionalClientScopes": c.optional_scopes,
                        "attributes": {"access.token.signed.response.alg": c.alg.as_str()},
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => from_error(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientRep {
    client_id: String,
    secret: Option<String>,
    #[serde(default)]
    public_client: bool,
    #[serde(default)]
    service_accounts_enabled: bool,
    #[serde(default)]
    redirect_uris: Vec<String>,
    default_client_scopes: Option<Vec<String>>,
    #[serde(default)]
    attributes: std::collections::HashMap<String, String>,
}

async fn add_client(
    State(st): State<AdminState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    authorized!(st, headers);
    let rep: ClientRep = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let alg = match rep.attributes.get("access.token.signed.response.alg") {
        None => Alg::RS256,
        Some(a) => match Alg::parse(a) {
            Some(a) => a,
            None => {
                return err(
                    StatusCode::BAD_REQUEST,
                    &format!("algorithm '{a}' must be RS256, ES256 or EdDSA"),
                );
            }
        },
    };
    let mut n = NewClient::new(&realm, &rep.client_id);
    n.secret = rep.secret.map(Secret::new);
    n.public = rep.public_client;
    n.service_accounts = rep.service_accounts_enabled;
    n.redirect_uris = rep.redirect_uris;
    n.default_scopes = rep.default_client_scopes;
    n.audience = rep
        .attributes
        .get("pressoir.audience")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    n.alg = alg;
    match admin::create_client(&st.svc.store, &n).await {
        Ok(secret) => {
            st.svc.invalidate(&realm);
            // Secrets are stored hashed, so the only time one can be shown is now.
            let mut rep = json!({"clientId": n.client_id});
            if let Some(s) = secret {
                rep["secret"] = json!(s.expose());
            }
            created(
                format!("/admin/realms/{realm}/clients/{}", n.client_id),
                rep,
            )
        }
        Err(Error::Conflict(_)) => err(
            StatusCode::CONFLICT,
            &format!("Client {} already exists", n.client_id),
        ),
        Err(e) => from_error(e),
    }
}

async fn list_roles(
    State(st): State<AdminState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized!(st, headers);
    if let Err(r) = realm_exists(&st, &realm).await {
        return r;
    }
    match st.svc.store.roles(&realm).await {
        Ok(rs) => Json(rs.iter().map(|(n, d)| json!({"name": n, "description": d, "composite": false, "clientRole": false})).collect::<Vec<_>>()).into_response(),
        Err(e) => from_error(e),
    }
}

async fn get_role(
    State(st): State<AdminState>,
    Path((realm, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    authorized!(st, headers);
    if let Err(r) = realm_exists(&st, &realm).await {
        return r;
    }
    match st.svc.store.roles(&realm).await {
        Ok(rs) => match rs.iter().find(|(n, _)| *n == name) {
            Some((n, d)) => Json(json!({"id": n, "name": n, "description": d, "composite": false, "clientRole": false, "containerId": realm})).into_response(),
            None => err(StatusCode::NOT_FOUND, "Could not find role"),
        },
        Err(e) => from_error(e),
    }
}

#[derive(Deserialize)]
struct RoleRep {
    name: String,
    #[serde(default)]
    description: String,
}

async fn add_role(
    State(st): State<AdminState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    authorized!(st, headers);
    let rep: RoleRep = match body(&bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match admin::create_role(&st.svc.store, &realm, &rep.name, &rep.description).await {
        Ok(()) => created(
            format!("/admin/realms/{realm}/roles/{}", rep.name),
            json!({"name": rep.name}),
        ),
        Err(Error::Conflict(_)) => err(
            StatusCode::CONFLICT,
            &format!("Role with name {} already exists", rep.name),
        ),
        Err(e) => from_error(e),
    }
}

async fn rotate(
    State(st): State<AdminState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized!(st, headers);
    match st.svc.rotate_keys(&realm).await {
        Ok(kids) => Json(json!({"active": kids})).into_response(),
        Err(e) => from_error(e),
    }
}
