//! Lago's error bodies, in one place: every refusal the API gives goes through [`ApiError`],
//! which maps each kind to its status and its exact body
//! (`{"status","error","code","error_details"}`).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The closed set of error codes this service answers with, besides `validation_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    CustomerNotFound,
    BillableMetricNotFound,
    PlanNotFound,
    SubscriptionNotFound,
    EventNotFound,
    InvoiceNotFound,
    WebhookEndpointNotFound,
    NoActiveSubscription,
    RouteNotFound,
    InvoiceNotVoidable,
    InvoiceNotFinalizable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::CustomerNotFound => "customer_not_found",
            Code::BillableMetricNotFound => "billable_metric_not_found",
            Code::PlanNotFound => "plan_not_found",
            Code::SubscriptionNotFound => "subscription_not_found",
            Code::EventNotFound => "event_not_found",
            Code::InvoiceNotFound => "invoice_not_found",
            Code::WebhookEndpointNotFound => "webhook_endpoint_not_found",
            Code::NoActiveSubscription => "no_active_subscription",
            Code::RouteNotFound => "route_not_found",
            Code::InvoiceNotVoidable => "not_voidable",
            Code::InvoiceNotFinalizable => "not_finalizable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::NoActiveSubscription => StatusCode::METHOD_NOT_ALLOWED,
            Code::InvoiceNotVoidable | Code::InvoiceNotFinalizable => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            _ => StatusCode::NOT_FOUND,
        }
    }
}

/// Field errors as Lago lists them: `{"field": ["value_is_mandatory"]}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, code: &str) {
        let v = self.0.entry(field.to_string()).or_default();
        if !v.iter().any(|c| c == code) {
            v.push(code.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn one(field: &str, code: &str) -> Self {
        let mut e = FieldErrors::default();
        e.add(field, code);
        e
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.0 {
            m.insert(k.clone(), json!(v));
        }
        Value::Object(m)
    }
}

#[derive(Debug)]
pub enum ApiError {
    /// 400 `BadRequest: <message>` (malformed JSON, missing root parameter).
    BadRequest(String),
    Unauthorized,
    /// 404 or 405 with a code.
    Code(Code),
    /// 422 `validation_errors` with field errors.
    Validation(FieldErrors),
    /// 422 `validation_errors` with errors keyed by batch index.
    BatchValidation(BTreeMap<usize, FieldErrors>),
    /// 429 from the rate limiter.
    TooManyRequests,
    /// 500; the cause is logged, never sent.
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, code: &str) -> Self {
        ApiError::Validation(FieldErrors::one(field, code))
    }

    pub fn body(&self) -> (StatusCode, Value) {
        match self {
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                json!({"status": 400, "error": format!("BadRequest: {m}")}),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"status": 401, "error": "Unauthorized"}),
            ),
            ApiError::Code(c) => {
                let s = c.status();
                let error = if s == StatusCode::NOT_FOUND {
                    "Not Found"
                } else {
                    "Method Not Allowed"
                };
                (
                    s,
                    json!({"status": s.as_u16(), "error": error, "code": c.as_str()}),
                )
            }
            ApiError::Validation(f) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                       "error_details": f.to_json()}),
            ),
            ApiError::BatchValidation(m) => {
                let mut d = Map::new();
                for (i, f) in m {
                    d.insert(i.to_string(), f.to_json());
                }
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                           "error_details": d}),
                )
            }
            ApiError::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"status": 429, "error": "Too Many Requests", "code": "too_many_requests"}),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"status": 500, "error": "Internal Server Error"}),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(cause = %cause, "internal error");
        }
        let (s, b) = self.body();
        (s, Json(b)).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Api(a) => a,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_lago_shaped() {
        let (s, b) = ApiError::Code(Code::NoActiveSubscription).body();
        assert_eq!(s, 405);
        assert_eq!(
            b,
            json!({"status":405,"error":"Method Not Allowed","code":"no_active_subscription"})
        );
        let (s, b) = ApiError::field("transaction_id", "value_already_exist").body();
        assert_eq!(s, 422);
        assert_eq!(
            b["error_details"]["transaction_id"][0],
            "value_already_exist"
        );
        let (_, b) = ApiError::Internal("secret cause".into()).body();
        assert!(!b.to_string().contains("secret"));
    }
}
