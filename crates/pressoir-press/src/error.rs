//! Frappe's error body and the closed set of `exc_type`s Press answers with, mapped to their
//! HTTP status in one place. Every failure of the API goes through [`Error`].

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

/// The `exc_type`s of Frappe's error body that Press uses. Anything else is a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExcType {
    /// 400 (the reference's 400, where Frappe answers 417).
    ValidationError,
    AuthenticationError,
    PermissionError,
    DoesNotExistError,
    DuplicateEntryError,
    TooManyRequestsError,
}

impl ExcType {
    pub fn status(self) -> StatusCode {
        match self {
            ExcType::ValidationError => StatusCode::BAD_REQUEST,
            ExcType::AuthenticationError => StatusCode::UNAUTHORIZED,
            ExcType::PermissionError => StatusCode::FORBIDDEN,
            ExcType::DoesNotExistError => StatusCode::NOT_FOUND,
            ExcType::DuplicateEntryError => StatusCode::CONFLICT,
            ExcType::TooManyRequestsError => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExcType::ValidationError => "ValidationError",
            ExcType::AuthenticationError => "AuthenticationError",
            ExcType::PermissionError => "PermissionError",
            ExcType::DoesNotExistError => "DoesNotExistError",
            ExcType::DuplicateEntryError => "DuplicateEntryError",
            ExcType::TooManyRequestsError => "TooManyRequestsError",
        }
    }
}

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure the caller can act on, answered in Frappe's body with its status.
    #[error("{1}")]
    Frappe(ExcType, String),
    #[error("database: {0}")]
    Db(#[from] pressoir_core::db::DbError),
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn validation(msg: impl Into<String>) -> Self {
        Error::Frappe(ExcType::ValidationError, msg.into())
    }
    pub fn auth(msg: impl Into<String>) -> Self {
        Error::Frappe(ExcType::AuthenticationError, msg.into())
    }
    pub fn permission(msg: impl Into<String>) -> Self {
        Error::Frappe(ExcType::PermissionError, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::Frappe(ExcType::DoesNotExistError, msg.into())
    }
    pub fn duplicate(msg: impl Into<String>) -> Self {
        Error::Frappe(ExcType::DuplicateEntryError, msg.into())
    }
    pub fn too_many(msg: impl Into<String>) -> Self {
        Error::Frappe(ExcType::TooManyRequestsError, msg.into())
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }
}

/// Frappe's body: `exc_type`, `exception`, and `_server_messages` (a JSON string holding a
/// list of JSON strings, each one message object), exactly as `frappe.throw` leaves it.
pub fn body(exc: &str, message: &str) -> serde_json::Value {
    let inner = json!({
        "message": message,
        "title": "Message",
        "indicator": "red",
        "raise_exception": 1,
    })
    .to_string();
    let server_messages =
        serde_json::Value::Array(vec![serde_json::Value::String(inner)]).to_string();
    json!({
        "exc_type": exc,
        "exception": format!("frappe.exceptions.{exc}: {message}"),
        "_server_messages": server_messages,
    })
}

pub fn frappe_response(exc: ExcType, message: &str) -> Response {
    (exc.status(), Json(body(exc.name(), message))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Frappe(exc, msg) => frappe_response(exc, &msg),
            other => {
                tracing::error!(error = %other, "internal error");
                let b = json!({
                    "exc_type": "Exception",
                    "_server_messages": serde_json::Value::Array(vec![serde_json::Value::String(
                        json!({"message": "Internal Server Error", "indicator": "red"}).to_string()
                    )]).to_string(),
                });
                (StatusCode::INTERNAL_SERVER_ERROR, Json(b)).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_json_strings_of_json() {
        let b = body("ValidationError", "plan 'Gold' does not exist");
        let outer: Vec<String> =
            serde_json::from_str(b["_server_messages"].as_str().unwrap()).unwrap();
        let inner: serde_json::Value = serde_json::from_str(&outer[0]).unwrap();
        assert_eq!(inner["message"], "plan 'Gold' does not exist");
        assert_eq!(b["exc_type"], "ValidationError");
    }

    #[test]
    fn statuses_follow_the_reference() {
        assert_eq!(ExcType::ValidationError.status(), 400);
        assert_eq!(ExcType::DuplicateEntryError.status(), 409);
        assert_eq!(ExcType::TooManyRequestsError.status(), 429);
    }
}
