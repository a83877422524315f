//! The OAuth 2.0 / OIDC error vocabulary, mapped in this one place to status, body and
//! `WWW-Authenticate`. Descriptions reuse Keycloak's strings, which clients match on.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// The closed set of `error` codes this service answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedTokenType,
    InvalidScope,
    InvalidToken,
    InsufficientScope,
    AccessDenied,
    TemporarilyUnavailable,
    ServerError,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidClient => "invalid_client",
            Code::InvalidGrant => "invalid_grant",
            Code::UnauthorizedClient => "unauthorized_client",
            Code::UnsupportedGrantType => "unsupported_grant_type",
            Code::UnsupportedTokenType => "unsupported_token_type",
            Code::InvalidScope => "invalid_scope",
            Code::InvalidToken => "invalid_token",
            Code::InsufficientScope => "insufficient_scope",
            Code::AccessDenied => "access_denied",
            Code::TemporarilyUnavailable => "temporarily_unavailable",
            Code::ServerError => "server_error",
        }
    }
}

/// One error answer. Construct with the helpers; the status follows Keycloak.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: Code,
    pub description: String,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(status: StatusCode, code: Code, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
            www_authenticate: None,
            retry_after: None,
        }
    }

    pub fn bad(code: Code, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::bad(Code::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::bad(Code::InvalidGrant, description)
    }

    /// Failed client authentication; `basic_realm` is set when the client used HTTP Basic,
    /// which RFC 6749 §5.2 answers with a `WWW-Authenticate` challenge.
    pub fn invalid_client(basic_realm: Option<&str>) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            Code::InvalidClient,
            "Invalid client or Invalid client credentials",
        );
        e.www_authenticate = basic_realm.map(|r| format!("Basic realm=\"{r}\""));
        e
    }

    /// RFC 6750 §3: a bad bearer token on a resource (userinfo).
    pub fn bearer(realm: &str, status: StatusCode, code: Code, description: &str) -> Self {
        let mut e = Self::new(status, code, description);
        e.www_authenticate = Some(format!(
            "Bearer realm=\"{realm}\", error=\"{}\", error_description=\"{description}\"",
            code.as_str()
        ));
        e
    }

    pub fn server() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServerError,
            "internal error",
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code.as_str(), "error_description": self.description});
        let mut resp = (self.status, Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(w) = self
            .www_authenticate
            .and_then(|w| HeaderValue::from_str(&w).ok())
        {
            h.insert(header::WWW_AUTHENTICATE, w);
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<crate::Error> for OAuthError {
    fn from(e: crate::Error) -> Self {
        tracing::error!(error = %e, "identity request failed");
        OAuthError::server()
    }
}

/// Keycloak's answer for a realm that does not exist.
pub fn realm_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "Realm does not exist"})),
    )
        .into_response()
}
