//! A small typed client for the Lago API v1, for Press: it works against this service and
//! against a real Lago alike (URL and API key). Errors carry Lago's `code`.
//!
//! Retries are safe by construction: subscriptions are idempotent on `external_id`, events on
//! `transaction_id` (a duplicate is reported as [`Sent::Duplicate`], not as an error).

use pressoir_core::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Lago's error codes a caller may act on; anything else is kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthorized,
    ValidationErrors,
    CustomerNotFound,
    PlanNotFound,
    SubscriptionNotFound,
    EventNotFound,
    InvoiceNotFound,
    NoActiveSubscription,
    TooManyRequests,
    Other(String),
}

impl ErrorCode {
    fn parse(status: u16, code: Option<&str>) -> ErrorCode {
        match (status, code) {
            (401, _) => ErrorCode::Unauthorized,
            (429, _) => ErrorCode::TooManyRequests,
            (_, Some("validation_errors")) => ErrorCode::ValidationErrors,
            (_, Some("customer_not_found")) => ErrorCode::CustomerNotFound,
            (_, Some("plan_not_found")) => ErrorCode::PlanNotFound,
            (_, Some("subscription_not_found")) => ErrorCode::SubscriptionNotFound,
            (_, Some("event_not_found")) => ErrorCode::EventNotFound,
            (_, Some("invoice_not_found")) => ErrorCode::InvoiceNotFound,
            (_, Some("no_active_subscription")) => ErrorCode::NoActiveSubscription,
            (_, Some(c)) => ErrorCode::Other(c.to_string()),
            (s, None) => ErrorCode::Other(format!("http_{s}")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("lago answered {status} {code:?}: {error}")]
    Api {
        status: u16,
        code: ErrorCode,
        error: String,
        /// `error_details`, when Lago gave them.
        details: Option<Value>,
        /// `X-RateLimit-Reset` on a 429, in seconds.
        retry_after_secs: Option<u64>,
    },
    #[error("cannot reach lago: {0}")]
    Transport(String),
    #[error("unexpected answer from lago: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when trying again later may succeed (billing down, throttled, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => *status == 429 || *status >= 500,
            ClientError::Decode(_) => false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CustomerInput {
    pub external_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Customer {
    pub lago_id: String,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriptionInput {
    pub external_customer_id: String,
    pub plan_code: String,
    pub external_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_time: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Subscription {
    pub lago_id: String,
    pub external_id: String,
    pub external_customer_id: Option<String>,
    pub plan_code: Option<String>,
    pub status: Option<String>,
    pub next_plan_code: Option<String>,
    pub downgrade_plan_date: Option<String>,
    pub started_at: Option<String>,
    pub terminated_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub transaction_id: String,
    pub external_subscription_id: String,
    pub code: String,
    /// Unix seconds; the server's time when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    pub properties: Map<String, Value>,
}

/// What became of an event sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Accepted,
    /// Lago already had this (external_subscription_id, transaction_id): counted once.
    Duplicate,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct BillableMetricRef {
    pub lago_id: String,
    pub name: String,
    pub code: String,
    pub aggregation_type: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChargeUsage {
    pub units: String,
    pub events_count: i64,
    pub amount_cents: i64,
    pub amount_currency: String,
    pub billable_metric: BillableMetricRef,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct CustomerUsage {
    pub from_datetime: String,
    pub to_datetime: String,
    pub issuing_date: String,
    pub currency: String,
    pub amount_cents: i64,
    pub taxes_amount_cents: i64,
    pub total_amount_cents: i64,
    pub charges_usage: Vec<ChargeUsage>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Invoice {
    pub lago_id: String,
    pub number: String,
    pub issuing_date: String,
    pub invoice_type: String,
    pub status: String,
    pub payment_status: String,
    pub currency: String,
    pub fees_amount_cents: i64,
    pub taxes_amount_cents: i64,
    pub total_amount_cents: i64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Meta {
    pub current_page: i64,
    pub next_page: Option<i64>,
    pub prev_page: Option<i64>,
    pub total_pages: i64,
    pub total_count: i64,
}

/// A Lago API client. `base_url` is the server's root (`http://billing.localhost`, or
/// `https://api.getlago.com`); `/api/v1/` is appended.
#[derive(Clone)]
pub struct LagoClient {
    pub base_url: String,
    pub api_key: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for LagoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagoClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LagoClient {
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Result<LagoClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(LagoClient {
            base_url: base_url.into(),
            api_key,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/api/v1/{}",
            self.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(self.api_key.expose())
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let reset = resp
            .headers()
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let json: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) if status >= 400 => Value::Null,
                Err(e) => return Err(ClientError::Decode(e.to_string())),
            }
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        Err(ClientError::Api {
            status,
            code: ErrorCode::parse(status, json.get("code").and_then(Value::as_str)),
            error: json
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            details: json.get("error_details").cloned(),
            retry_after_secs: if status == 429 { reset } else { None },
        })
    }

    fn take<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Result<T, ClientError> {
        let inner = v
            .get(key)
            .cloned()
            .ok_or_else(|| ClientError::Decode(format!("no '{key}' in the answer")))?;
        serde_json::from_value(inner).map_err(|e| ClientError::Decode(format!("{key}: {e}")))
    }

    /// Creates or updates the customer keyed by `external_id` (only the fields set change).
    pub async fn upsert_customer(&self, c: &CustomerInput) -> Result<Customer, ClientError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "customers",
                Some(json!({"customer": c})),
            )
            .await?;
        Self::take(&v, "customer")
    }

    /// Creates the subscription, or returns it when it exists with that plan; a different
    /// plan is an upgrade (now) or a downgrade (at period end).
    pub async fn create_subscription(
        &self,
        s: &SubscriptionInput,
    ) -> Result<Subscription, ClientError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "subscriptions",
                Some(json!({"subscription": s})),
            )
            .await?;
        Self::take(&v, "subscription")
    }

    /// Terminates the active subscription; `None` if there was none (already terminated).
    pub async fn terminate_subscription(
        &self,
        external_id: &str,
    ) -> Result<Option<Subscription>, ClientError> {
        let path = format!("subscriptions/{}", encode(external_id));
        match self.call(reqwest::Method::DELETE, &path, None).await {
            Ok(v) => Ok(Some(Self::take(&v, "subscription")?)),
            Err(ClientError::Api {
                code: ErrorCode::SubscriptionNotFound,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn send_event(&self, e: &Event) -> Result<Sent, ClientError> {
        match self
            .call(reqwest::Method::POST, "events", Some(json!({"event": e})))
            .await
        {
            Ok(_) => Ok(Sent::Accepted),
            Err(err) if is_duplicate(&err, None) => Ok(Sent::Duplicate),
            Err(err) => Err(err),
        }
    }

    /// Sends up to 100 events at once. A batch refused only because some were already
    /// received is sent again without those, so each event is counted exactly once.
    pub async fn send_events_batch(&self, events: &[Event]) -> Result<Vec<Sent>, ClientError> {
        let mut outcome = vec![Sent::Accepted; events.len()];
        let mut pending: Vec<usize> = (0..events.len()).collect();
        for _ in 0..3 {
            if pending.is_empty() {
                return Ok(outcome);
            }
            let body: Vec<&Event> = pending.iter().map(|&i| &events[i]).collect();
            match self
                .call(
                    reqwest::Method::POST,
                    "events/batch",
                    Some(json!({"events": body})),
                )
                .await
            {
                Ok(_) => return Ok(outcome),
                Err(err) => {
                    let Some(dups) = duplicate_indexes(&err, pending.len()) else {
                        return Err(err);
                    };
                    let mut next = Vec::new();
                    for (pos, &i) in pending.iter().enumerate() {
                        if dups.contains(&pos) {
                            outcome[i] = Sent::Duplicate;
                        } else {
                            next.push(i);
                        }
                    }
                    pending = next;
                }
            }
        }
        Ok(outcome)
    }

    pub async fn current_usage(
        &self,
        external_customer_id: &str,
        external_subscription_id: &str,
    ) -> Result<CustomerUsage, ClientError> {
        let path = format!(
            "customers/{}/current_usage?external_subscription_id={}",
            encode(external_customer_id),
            encode(external_subscription_id)
        );
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        Self::take(&v, "customer_usage")
    }

    pub async fn list_invoices(
        &self,
        external_customer_id: Option<&str>,
        page: i64,
        per_page: i64,
    ) -> Result<(Vec<Invoice>, Meta), ClientError> {
        let mut path = format!("invoices?page={page}&per_page={per_page}");
        if let Some(c) = external_customer_id {
            path.push_str(&format!("&external_customer_id={}", encode(c)));
        }
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        Ok((
            Self::take(&v, "invoices")?,
            Self::take(&v, "meta").unwrap_or_default(),
        ))
    }
}

/// A transaction id for a usage sample that is the same on every retry: the metric, the
/// subscription and the start of the sampling window (`every_secs` long) holding `at`. Sending
/// it twice counts it once.
pub fn transaction_id(
    code: &str,
    external_subscription_id: &str,
    at_unix_secs: i64,
    every_secs: i64,
) -> String {
    let every = every_secs.max(1);
    let window = at_unix_secs.div_euclid(every) * every;
    format!("{code}:{external_subscription_id}:{window}")
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn only_duplicate(v: &Value) -> bool {
    v.as_object().is_some_and(|m| {
        m.len() == 1
            && m.get("transaction_id")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|c| c == "value_already_exist"))
    })
}

fn is_duplicate(err: &ClientError, _: Option<()>) -> bool {
    matches!(err, ClientError::Api { status: 422, details: Some(d), .. } if only_duplicate(d))
}

/// The batch positions refused as duplicates, if duplicates are all that was refused.
fn duplicate_indexes(err: &ClientError, len: usize) -> Option<Vec<usize>> {
    let ClientError::Api {
        status: 422,
        details: Some(Value::Object(d)),
        ..
    } = err
    else {
        return None;
    };
    let mut out = Vec::new();
    for (k, v) in d {
        let i: usize = k.parse().ok()?;
        if i >= len || !only_duplicate(v) {
            return None;
        }
        out.push(i);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_recognized_by_index() {
        let err = ClientError::Api {
            status: 422,
            code: ErrorCode::ValidationErrors,
            error: "Unprocessable Entity".into(),
            details: Some(json!({"1": {"transaction_id": ["value_already_exist"]}})),
            retry_after_secs: None,
        };
        assert_eq!(duplicate_indexes(&err, 3), Some(vec![1]));
        let other = ClientError::Api {
            status: 422,
            code: ErrorCode::ValidationErrors,
            error: String::new(),
            details: Some(json!({"1": {"code": ["value_is_mandatory"]}})),
            retry_after_secs: None,
        };
        assert_eq!(duplicate_indexes(&other, 3), None);
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(
            transaction_id("storage_gb", "site-1", 7_205, 3_600),
            "storage_gb:site-1:7200"
        );
        assert_eq!(
            transaction_id("storage_gb", "site-1", 7_199, 3_600),
            transaction_id("storage_gb", "site-1", 3_600, 3_600)
        );
    }
}
