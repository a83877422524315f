//! The HTTP surface: Lago API v1 under `/api/v1`. Handlers are thin: they read the request,
//! call the service, and wrap the answer in Lago's envelope. They know no SQL.

use crate::input::{parse_body, root};
use crate::proto::{ApiError, Code};
use crate::service::App;
use crate::store::Page;
use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use pressoir_core::Secret;
use serde_json::{Value, json};
use std::sync::Arc;

type Res = Result<Json<Value>, ApiError>;
type St = State<Arc<App>>;

/// Query parameters in order, with `key[]` kept as `key` for repeated values.
struct Q(Vec<(String, String)>);

impl Q {
    fn parse(raw: Option<String>) -> Q {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
        Q(pairs
            .into_iter()
            .map(|(k, v)| (k.trim_end_matches("[]").to_string(), v))
            .collect())
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn page(&self) -> Page {
        let n = |k: &str, d: i64| {
            self.get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(d)
        };
        Page {
            page: n("page", 1),
            per_page: n("per_page", 100).min(1000),
        }
    }

    fn time(&self, k: &str) -> Option<i64> {
        let v = self.get(k)?;
        pressoir_core::clock::parse_rfc3339_ms(v)
            .or_else(|| crate::service::parse_event_timestamp(&Value::String(v.to_string())))
    }
}

fn wrap(key: &str, v: Value) -> Json<Value> {
    Json(json!({ key: v }))
}

pub fn router(app: Arc<App>, api_key: Secret) -> Router {
    let api = Router::new()
        .route("/customers", post(customer_upsert).get(customer_list))
        .route("/customers/{id}", get(customer_get).delete(customer_delete))
        .route("/customers/{id}/current_usage", get(current_usage))
        .route("/customers/{id}/invoices", get(customer_invoices))
        .route("/customers/{id}/subscriptions", get(customer_subscriptions))
        .route("/billable_metrics", post(metric_create).get(metric_list))
        .route(
            "/billable_metrics/{code}",
            get(metric_get).put(metric_update).delete(metric_delete),
        )
        .route("/plans", post(plan_create).get(plan_list))
        .route(
            "/plans/{code}",
            get(plan_get).put(plan_update).delete(plan_delete),
        )
        .route("/subscriptions", post(sub_create).get(sub_list))
        .route(
            "/subscriptions/{id}",
            get(sub_get).put(sub_update).delete(sub_delete),
        )
        .route("/events", post(event_create).get(event_list))
        .route("/events/batch", post(event_batch))
        .route("/events/{id}", get(event_get))
        .route("/invoices", get(invoice_list))
        .route("/invoices/{id}", get(invoice_get).put(invoice_update))
        .route("/invoices/{id}/finalize", put(invoice_finalize))
        .route("/invoices/{id}/void", post(invoice_void))
        .route(
            "/webhook_endpoints",
            post(endpoint_create).get(endpoint_list),
        )
        .route(
            "/webhook_endpoints/{id}",
            get(endpoint_get)
                .put(endpoint_update)
                .delete(endpoint_delete),
        )
        .route("/webhooks/json_public_key", get(public_key_json))
        .route("/webhooks/public_key", get(public_key_text))
        .method_not_allowed_fallback(|| async { not_found() })
        .layer(middleware::from_fn_with_state(Arc::new(api_key), auth))
        .with_state(app);
    Router::new()
        .nest("/api/v1", api)
        .fallback(|| async { not_found() })
}

fn not_found() -> Response {
    ApiError::Code(Code::RouteNotFound).into_response()
}

async fn auth(State(key): State<Arc<Secret>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(' ').nth(1))
        .unwrap_or("");
    if presented.is_empty() || !key.matches(presented.as_bytes()) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

// ---- customers ----

async fn customer_upsert(State(app): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "customer",
        app.upsert_customer(root(&v, "customer")?).await?,
    ))
}

async fn customer_get(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("customer", app.customer(&id).await?))
}

async fn customer_list(State(app): St, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    Ok(Json(app.customers(q.get("external_id"), q.page()).await?))
}

async fn customer_delete(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("customer", app.delete_customer(&id).await?))
}

async fn current_usage(State(app): St, Path(id): Path<String>, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    Ok(Json(
        app.current_usage(&id, q.get("external_subscription_id"))
            .await?,
    ))
}

async fn customer_invoices(State(app): St, Path(id): Path<String>, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    app.customer(&id).await?;
    Ok(Json(
        app.invoices(
            Some(&id),
            q.get("status"),
            q.get("payment_status"),
            q.page(),
        )
        .await?,
    ))
}

async fn customer_subscriptions(
    State(app): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Res {
    let q = Q::parse(q);
    app.customer(&id).await?;
    Ok(Json(
        app.subscriptions(Some(&id), q.get("plan_code"), &q.all("status"), q.page())
            .await?,
    ))
}

// ---- billable metrics ----

async fn metric_create(State(app): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "billable_metric",
        app.create_metric(root(&v, "billable_metric")?).await?,
    ))
}

async fn metric_get(State(app): St, Path(code): Path<String>) -> Res {
    Ok(wrap("billable_metric", app.metric(&code).await?))
}

async fn metric_list(State(app): St, RawQuery(q): RawQuery) -> Res {
    Ok(Json(app.metrics(Q::parse(q).page()).await?))
}

async fn metric_update(State(app): St, Path(code): Path<String>, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "billable_metric",
        app.update_metric(&code, root(&v, "billable_metric")?)
            .await?,
    ))
}

async fn metric_delete(State(app): St, Path(code): Path<String>) -> Res {
    Ok(wrap("billable_metric", app.delete_metric(&code).await?))
}

// ---- plans ----

async fn plan_create(State(app): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap("plan", app.create_plan(root(&v, "plan")?).await?))
}

async fn plan_get(State(app): St, Path(code): Path<String>) -> Res {
    Ok(wrap("plan", app.plan(&code).await?))
}

async fn plan_list(State(app): St, RawQuery(q): RawQuery) -> Res {
    Ok(Json(app.plans(Q::parse(q).page()).await?))
}

async fn plan_update(State(app): St, Path(code): Path<String>, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "plan",
        app.update_plan(&code, root(&v, "plan")?).await?,
    ))
}

async fn plan_delete(State(app): St, Path(code): Path<String>) -> Res {
    Ok(wrap("plan", app.delete_plan(&code).await?))
}

// ---- subscriptions ----

async fn sub_create(State(app): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "subscription",
        app.create_subscription(root(&v, "subscription")?).await?,
    ))
}

async fn sub_get(State(app): St, Path(id): Path<String>, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    Ok(wrap(
        "subscription",
        app.subscription(&id, q.get("status")).await?,
    ))
}

async fn sub_list(State(app): St, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    Ok(Json(
        app.subscriptions(
            q.get("external_customer_id"),
            q.get("plan_code"),
            &q.all("status"),
            q.page(),
        )
        .await?,
    ))
}

async fn sub_update(State(app): St, Path(id): Path<String>, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "subscription",
        app.update_subscription(&id, root(&v, "subscription")?)
            .await?,
    ))
}

async fn sub_delete(State(app): St, Path(id): Path<String>, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    Ok(wrap(
        "subscription",
        app.terminate_subscription(&id, q.get("status")).await?,
    ))
}

// ---- events ----

async fn event_create(State(app): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    let m = root(&v, "event")?;
    let mut out = app.ingest(&[m], false).await?;
    Ok(wrap("event", out.pop().unwrap_or(Value::Null)))
}

async fn event_batch(State(app): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    let items = match v.get("events") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => {
            return Err(ApiError::BadRequest(
                "param is missing or the value is empty: events".into(),
            ));
        }
        Some(_) => return Err(ApiError::field("events", "value_is_invalid")),
    };
    if items.is_empty() {
        return Err(ApiError::field("events", "no_events"));
    }
    if items.len() > 100 {
        return Err(ApiError::field("events", "too_many_events"));
    }
    let mut maps = Vec::with_capacity(items.len());
    let mut bad = std::collections::BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        match it.as_object() {
            Some(m) => maps.push(m),
            None => {
                bad.insert(
                    i,
                    crate::proto::FieldErrors::one("event", "value_is_invalid"),
                );
            }
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::BatchValidation(bad));
    }
    Ok(wrap("events", Value::Array(app.ingest(&maps, true).await?)))
}

async fn event_get(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("event", app.event(&id).await?))
}

async fn event_list(State(app): St, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    Ok(Json(
        app.events(
            q.get("code"),
            q.get("external_subscription_id"),
            q.time("timestamp_from"),
            q.time("timestamp_to"),
            q.page(),
        )
        .await?,
    ))
}

// ---- invoices ----

async fn invoice_list(State(app): St, RawQuery(q): RawQuery) -> Res {
    let q = Q::parse(q);
    let status = q
        .get("status")
        .map(str::to_string)
        .or_else(|| q.all("statuses").into_iter().next());
    let pstatus = q
        .get("payment_status")
        .map(str::to_string)
        .or_else(|| q.all("payment_statuses").into_iter().next());
    Ok(Json(
        app.invoices(
            q.get("external_customer_id"),
            status.as_deref(),
            pstatus.as_deref(),
            q.page(),
        )
        .await?,
    ))
}

async fn invoice_get(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("invoice", app.invoice(&id).await?))
}

async fn invoice_update(State(app): St, Path(id): Path<String>, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "invoice",
        app.update_invoice(&id, root(&v, "invoice")?).await?,
    ))
}

async fn invoice_finalize(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("invoice", app.finalize_invoice(&id).await?))
}

async fn invoice_void(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("invoice", app.void_invoice(&id).await?))
}

// ---- webhook endpoints ----

async fn endpoint_create(State(app): St, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "webhook_endpoint",
        app.save_endpoint(None, root(&v, "webhook_endpoint")?)
            .await?,
    ))
}

async fn endpoint_update(State(app): St, Path(id): Path<String>, body: Bytes) -> Res {
    let v = parse_body(&body)?;
    Ok(wrap(
        "webhook_endpoint",
        app.save_endpoint(Some(&id), root(&v, "webhook_endpoint")?)
            .await?,
    ))
}

async fn endpoint_get(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("webhook_endpoint", app.endpoint(&id).await?))
}

async fn endpoint_list(State(app): St, RawQuery(q): RawQuery) -> Res {
    Ok(Json(app.endpoints(Q::parse(q).page()).await?))
}

async fn endpoint_delete(State(app): St, Path(id): Path<String>) -> Res {
    Ok(wrap("webhook_endpoint", app.delete_endpoint(&id).await?))
}

async fn public_key_json(State(app): St) -> Res {
    let b64 = base64::engine::general_purpose::STANDARD.encode(app.signer.public_pem.as_bytes());
    Ok(Json(json!({"webhook": {"public_key": b64}})))
}

async fn public_key_text(State(app): St) -> Response {
    let b64 = base64::engine::general_purpose::STANDARD.encode(app.signer.public_pem.as_bytes());
    ([(http::header::CONTENT_TYPE, "text/plain")], b64).into_response()
}
