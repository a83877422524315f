//! The authorization endpoint: a plain login page for the authorization-code flow, and the
//! end of RP-initiated logout. Errors about the client or its redirect URI are shown on the
//! page (never redirected to an unchecked URI); the others go back to the client.

use crate::http::{AppState, Form, PeerIp, realm_view};
use crate::model::{self, Client};
use crate::service::{RealmView, Service};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::{HeaderValue, StatusCode, header};
use std::collections::HashMap;
use std::sync::Arc;

/// The parameters the login form carries from the GET to the POST.
const CARRIED: [&str; 8] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:24rem;margin:4rem auto}}label,input{{display:block;width:100%;margin:.3rem 0}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = (status, Html(page)).into_response();
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_page(msg: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        "We are sorry...",
        &format!("<p>{}</p>", esc(msg)),
    )
}

/// A checked authorization request.
struct AuthRequest {
    client: Arc<Client>,
    redirect_uri: String,
    scope: String,
    params: HashMap<String, String>,
}

/// Sends the browser back to the client with `pairs` added to the redirect URI's query.
fn back(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page("Invalid parameter: redirect_uri");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Redirect::to(url.as_str()).into_response()
}

fn error_back(p: &HashMap<String, String>, redirect_uri: &str, code: &str, desc: &str) -> Response {
    let mut pairs = vec![("error", code), ("error_description", desc)];
    if let Some(s) = p.get("state") {
        pairs.push(("state", s));
    }
    back(redirect_uri, &pairs)
}

#[allow(clippy::result_large_err)]
fn check(v: &RealmView, p: HashMap<String, String>) -> Result<AuthRequest, Response> {
    let p: HashMap<String, String> = p.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let Some(client) = p
        .get("client_id")
        .and_then(|c| v.clients.get(c))
        .filter(|c| c.enabled)
    else {
        return Err(error_page("Client not found."));
    };
    if !client.standard_flow {
        return Err(error_page(
            "Client is not allowed to initiate browser login.",
        ));
    }
    let Some(redirect_uri) = p
        .get("redirect_uri")
        .filter(|u| client.redirect_allowed(u))
        .cloned()
    else {
        return Err(error_page("Invalid parameter: redirect_uri"));
    };
    if p.get("response_type").map(String::as_str) != Some("code") {
        return Err(error_back(
            &p,
            &redirect_uri,
            "unsupported_response_type",
            "Client is not allowed to use this response_type",
        ));
    }
    // There is no browser SSO session here, so a silent request can never succeed.
    if p.get("prompt")
        .is_some_and(|v| v.split_whitespace().any(|x| x == "none"))
    {
        return Err(error_back(
            &p,
            &redirect_uri,
            "login_required",
            "No active session",
        ));
    }
    let scope = match model::grant_scopes(client, p.get("scope").map(String::as_str)) {
        Ok(s) => s.join(" "),
        Err(_) => {
            return Err(error_back(
                &p,
                &redirect_uri,
                "invalid_scope",
                "Invalid scopes",
            ));
        }
    };
    match (
        p.get("code_challenge"),
        p.get("code_challenge_method").map(String::as_str),
    ) {
        (None, _) if client.public => {
            return Err(error_back(
                &p,
                &redirect_uri,
                "invalid_request",
                "Missing parameter: code_challenge",
            ));
        }
        (Some(_), Some(m)) if m != "S256" && m != "plain" => {
            return Err(error_back(
                &p,
                &redirect_uri,
                "invalid_request",
                "Invalid parameter: code challenge method is not supported.",
            ));
        }
        _ => {}
    }
    Ok(AuthRequest {
        client: client.clone(),
        redirect_uri,
        scope,
        params: p,
    })
}

fn form(v: &RealmView, req: &AuthRequest, message: Option<&str>, username: &str) -> Response {
    let mut hidden = String::new();
    for k in CARRIED {
        if let Some(val) = req.params.get(k) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(val)
            ));
        }
    }
    let msg = message
        .map(|m| format!("<p role=\"alert\" id=\"input-error\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<p>Sign in to {client}</p>{msg}<form id=\"kc-form-login\" method=\"post\">{hidden}\
         <label for=\"username\">Username or email</label><input id=\"username\" name=\"username\" value=\"{user}\" autofocus autocomplete=\"username\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
         <input type=\"submit\" id=\"kc-login\" value=\"Sign In\"></form>",
        client = esc(&req.client.client_id),
        user = esc(username),
    );
    html(
        if message.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        &format!("Sign in to {}", v.realm.name),
        &body,
    )
}

pub async fn page(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let v = match realm_view(&svc, &realm).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match check(&v, q) {
        Ok(req) => {
            let hint = req.params.get("login_hint").cloned().unwrap_or_default();
            form(&v, &req, None, &hint)
        }
        Err(r) => r,
    }
}

pub async fn submit(
    State(svc): State<AppState>,
    Path(realm): Path<String>,
    PeerIp(peer): PeerIp,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let v = match realm_view(&svc, &realm).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(f) = Form::parse(&body) else {
        return error_page("Invalid request.");
    };
    // The authorization parameters come from the form, or from the query if the form was
    // posted to a URL carrying them.
    let mut params = q;
    for k in CARRIED {
        if let Some(val) = f.get(k) {
            params.insert(k.to_string(), val.to_string());
        }
    }
    let req = match check(&v, params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let username = f.get("username").unwrap_or("");
    let password = f.get("password").unwrap_or("");
    if username.is_empty() {
        return form(&v, &req, Some("Invalid username or password."), "");
    }
    let user = match svc
        .authenticate_user(&v.realm.name, username, password, peer)
        .await
    {
        Ok(u) => u,
        Err(e) if e.description == "Account disabled" => {
            return form(
                &v,
                &req,
                Some("Account is disabled, contact your administrator."),
                username,
            );
        }
        Err(e) if e.status.is_server_error() => return e.into_response(),
        Err(_) => return form(&v, &req, Some("Invalid username or password."), username),
    };
    let r = async {
        let session = svc.new_session(&v, &req.client, &user, &req.scope).await?;
        let challenge = req.params.get("code_challenge").map(|c| {
            let m = req
                .params
                .get("code_challenge_method")
                .map(String::as_str)
                .unwrap_or("plain");
            (c.as_str(), m)
        });
        let code = svc
            .new_code(
                &v,
                &session,
                &req.redirect_uri,
                req.params.get("nonce").map(String::as_str),
                challenge,
            )
            .await?;
        Ok::<_, crate::Error>((session, code))
    }
    .await;
    match r {
        Ok((session, code)) => {
            let mut pairs = vec![
                ("code", code.as_str()),
                ("session_state", session.id.as_str()),
                ("iss", v.issuer.as_str()),
            ];
            if let Some(s) = req.params.get("state") {
                pairs.push(("state", s));
            }
            back(&req.redirect_uri, &pairs)
        }
        Err(e) => crate::oauth::OAuthError::from(e).into_response(),
    }
}

/// RP-initiated logout: ends the session named by `id_token_hint` and goes back to
/// `post_logout_redirect_uri` when that client registered it.
pub async fn end_session(svc: &Service, v: &RealmView, p: &HashMap<String, String>) -> Response {
    let hint = p.get("id_token_hint").filter(|s| !s.is_empty());
    let client_id = match hint {
        Some(t) => match svc.end_session_by_id_token(v, t).await {
            Ok(c) => c,
            Err(e) => return crate::oauth::OAuthError::from(e).into_response(),
        },
        None => None,
    };
    if let Some(uri) = p.get("post_logout_redirect_uri").filter(|s| !s.is_empty()) {
        let client = client_id
            .as_deref()
            .or(p.get("client_id").map(String::as_str))
            .and_then(|c| v.clients.get(c));
        match client {
            Some(c) if c.redirect_allowed(uri) && hint.is_some() => {
                let mut pairs = Vec::new();
                if let Some(s) = p.get("state") {
                    pairs.push(("state", s.as_str()));
                }
                return back(uri, &pairs);
            }
            _ => return error_page("Invalid redirect uri"),
        }
    }
    html(
        StatusCode::OK,
        "You are logged out",
        "<p>You are logged out.</p>",
    )
}
