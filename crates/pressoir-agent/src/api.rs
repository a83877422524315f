//! The Agent API over HTTP: thin handlers that parse, call the store and the engine, and
//! answer JSON. Authentication is one SHA-256 and a constant-time compare per request.

use crate::error::{ApiError, ErrorCode};
use crate::job::{FieldError, JobSpec, JobStatus, SiteRef};
use crate::names::{BenchName, SiteName};
use crate::store::{NewJob, Summary};
use crate::worker::Engine;
use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use pressoir_core::TokenHash;
use pressoir_core::clock::now_ms;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The most jobs one batch may submit, and the most one lookup may return.
pub const MAX_BATCH: usize = 100;
pub const MAX_LOOKUP: usize = 1000;
/// The longest caller's job id accepted.
pub const MAX_AGENT_JOB_ID: usize = 140;

pub struct ApiState {
    pub engine: Arc<Engine>,
    pub token: TokenHash,
    ping: Bytes,
    pong: Bytes,
}

pub fn router(engine: Arc<Engine>, token: TokenHash) -> Router {
    let state = Arc::new(ApiState {
        engine,
        token,
        ping: Bytes::from(json!({"status": "ok", "agent": env!("CARGO_PKG_VERSION")}).to_string()),
        pong: Bytes::from_static(br#"{"message":"pong"}"#),
    });
    Router::new()
        .route("/agent/ping", get(ping))
        .route("/ping", get(pong))
        .route("/agent/job", post(submit_one))
        .route("/agent/jobs", get(list_jobs).post(submit_batch))
        .route("/agent/job/{id}", get(get_job))
        .route("/jobs/{ids}", get(get_jobs_compat))
        .route("/agent/benches/{bench}/sites/{site}/usage", get(site_usage))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// The 429 body of the Agent API (the rate-limit layer adds the headers).
pub fn rate_limited() -> Response {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many requests; retry after the delay in Retry-After",
    )
    .into_response()
}

/// The password a request presents: the Bearer token, or the password part of Basic.
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.as_bytes().to_vec())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        Some(decoded[colon + 1..].to_vec())
    } else {
        None
    }
}

async fn authenticate(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    match presented(req.headers()) {
        Some(pw) if st.token.verify(&pw) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn json(status: StatusCode, value: Value) -> Response {
    json_bytes(status, Bytes::from(value.to_string()))
}

async fn ping(State(st): State<Arc<ApiState>>) -> Response {
    json_bytes(StatusCode::OK, st.ping.clone())
}

async fn pong(State(st): State<Arc<ApiState>>) -> Response {
    json_bytes(StatusCode::OK, st.pong.clone())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint",
    )
}

fn body_json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
        }
        _ => ApiError::new(ErrorCode::InvalidRequest, "cannot read the request body"),
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn agent_job_id(raw: Option<&Value>, field: &str) -> Result<Option<String>, FieldError> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => check_agent_job_id(s, field).map(Some),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

fn check_agent_job_id(s: &str, field: &str) -> Result<String, FieldError> {
    if s.is_empty()
        || s.len() > MAX_AGENT_JOB_ID
        || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_AGENT_JOB_ID} printable ASCII characters"),
        ));
    }
    Ok(s.to_string())
}

/// Validates one `{job_type, data}` into a job to store.
fn new_job(
    entry: &Value,
    agent_job_id: Option<String>,
    st: &ApiState,
) -> Result<NewJob, FieldError> {
    let job_type = match entry.get("job_type") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => return Err(FieldError::new("job_type", "is required")),
        Some(_) => return Err(FieldError::new("job_type", "must be a string")),
    };
    let data = entry.get("data").unwrap_or(&Value::Null);
    let spec = JobSpec::parse(job_type, data, &st.engine.benches)?;
    let (data, secrets) = spec.stored();
    Ok(NewJob {
        agent_job_id,
        job_type: spec.job_type().to_string(),
        site_key: spec.ordering_key(),
        data,
        secrets,
        steps: spec.plan().into_iter().map(|k| k.name()).collect(),
    })
}

async fn store_jobs(st: &ApiState, jobs: &[NewJob]) -> Result<Vec<Summary>, ApiError> {
    let submitted = st.engine.store.submit(jobs, now_ms()).await?;
    st.engine.enqueue(&submitted);
    Ok(submitted)
}

async fn submit_one(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let aid = match headers.get("x-agent-job-id") {
        None => None,
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::field("X-Agent-Job-Id", "must be printable ASCII"))?;
            Some(check_agent_job_id(s, "X-Agent-Job-Id")?)
        }
    };
    let body = body_json(body)?;
    let job = new_job(&body, aid, &st)?;
    let mut out = store_jobs(&st, &[job]).await?;
    let summary = out
        .pop()
        .ok_or_else(|| ApiError::internal(&"submission returned no job"))?;
    Ok(json(StatusCode::ACCEPTED, summary.to_json()))
}

async fn submit_batch(
    State(st): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_json(body)?;
    let entries = match body.get("jobs") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(ApiError::field("jobs", "is required")),
        Some(_) => return Err(ApiError::field("jobs", "must be a list")),
    };
    if entries.is_empty() || entries.len() > MAX_BATCH {
        return Err(ApiError::field(
            "jobs",
            format!("must list 1 to {MAX_BATCH} jobs"),
        ));
    }
    let mut jobs = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let prefix = format!("jobs[{i}]");
        if !entry.is_object() {
            return Err(ApiError::field(prefix, "must be an object"));
        }
        let aid = agent_job_id(entry.get("agent_job_id"), "agent_job_id")
            .map_err(|e| e.within(&prefix))?;
        jobs.push(new_job(entry, aid, &st).map_err(|e| e.within(&prefix))?);
    }
    let out = store_jobs(&st, &jobs).await?;
    let list: Vec<Value> = out.iter().map(Summary::to_json).collect();
    Ok(json(StatusCode::ACCEPTED, json!({"jobs": list})))
}

fn parse_id(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|id| *id > 0)
}

async fn get_job(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found(format!("job '{id}' does not exist"));
    let n = parse_id(&id).ok_or_else(missing)?;
    let job = st.engine.store.job(n).await?.ok_or_else(missing)?;
    Ok(json(StatusCode::OK, job.to_json()))
}

/// frappe/agent's `GET /jobs/<id>` (one job) and `GET /jobs/<id1,id2>` (a list).
async fn get_jobs_compat(
    State(st): State<Arc<ApiState>>,
    Path(ids): Path<String>,
) -> Result<Response, ApiError> {
    if !ids.contains(',') {
        return get_job(State(st), Path(ids)).await;
    }
    let ids = split_ids(&ids, "ids")?;
    let jobs = st.engine.store.jobs(&ids).await?;
    Ok(json(
        StatusCode::OK,
        Value::Array(jobs.iter().map(|j| j.to_json()).collect()),
    ))
}

/// `GET /agent/benches/{bench}/sites/{site}/usage`: `{"database_bytes", "files_bytes"}` as
/// the driver measures them now.
async fn site_usage(
    State(st): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((bench, site)) =
        path.map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "the path is malformed"))?;
    let bench = BenchName::parse(&bench).map_err(|m| ApiError::field("bench", m))?;
    let name = SiteName::parse(&site).map_err(|m| ApiError::field("site", m))?;
    if st.engine.benches.apps(&bench).is_none() {
        return Err(ApiError::not_found(format!(
            "bench '{bench}' does not exist"
        )));
    }
    let site = SiteRef { bench, name };
    let usage = st
        .engine
        .driver
        .usage(&site)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "site '{}' does not exist on bench '{}'",
                site.name, site.bench
            ))
        })?;
    Ok(json(
        StatusCode::OK,
        json!({"database_bytes": usage.database_bytes, "files_bytes": usage.files_bytes}),
    ))
}

fn split_list(text: &str, field: &str) -> Result<Vec<String>, ApiError> {
    let items: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if items.len() > MAX_LOOKUP {
        return Err(ApiError::field(
            field,
            format!("must list at most {MAX_LOOKUP} ids"),
        ));
    }
    Ok(items)
}

fn split_ids(text: &str, field: &str) -> Result<Vec<i64>, ApiError> {
    split_list(text, field)?
        .iter()
        .map(|s| {
            parse_id(s).ok_or_else(|| ApiError::field(field, format!("'{s}' is not a job id")))
        })
        .collect()
}

/// `GET /agent/jobs?ids=1,2` | `?agent_job_ids=a,b` | `?status=Running[&limit=N]` | nothing
/// (the most recent jobs). Answers `{"jobs": [...]}`.
async fn list_jobs(
    State(st): State<Arc<ApiState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
        .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "the query string is malformed"))?;
    let filters = ["ids", "agent_job_ids", "status"]
        .iter()
        .filter(|k| q.contains_key(**k))
        .count();
    if filters > 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "use only one of ids, agent_job_ids and status",
        ));
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LOOKUP as i64).contains(n))
            .ok_or_else(|| {
                ApiError::field("limit", format!("must be a number from 1 to {MAX_LOOKUP}"))
            })?,
    };
    let store = &st.engine.store;
    let jobs = if let Some(ids) = q.get("ids") {
        store.jobs(&split_ids(ids, "ids")?).await?
    } else if let Some(ids) = q.get("agent_job_ids") {
        store
            .jobs_by_agent_job_ids(&split_list(ids, "agent_job_ids")?)
            .await?
    } else if let Some(s) = q.get("status") {
        let status = JobStatus::parse(s).ok_or_else(|| {
            ApiError::field("status", "must be Pending, Running, Success or Failure")
        })?;
        store.jobs_by_status(Some(status), limit).await?
    } else {
        store.jobs_by_status(None, limit).await?
    };
    let list: Vec<Value> = jobs.iter().map(|j| j.to_json()).collect();
    Ok(json(StatusCode::OK, json!({"jobs": list})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn bearer_and_basic_present_the_password() {
        assert_eq!(presented(&h("Bearer abc")).unwrap(), b"abc");
        assert_eq!(presented(&h("bearer abc")).unwrap(), b"abc");
        let basic = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        assert_eq!(presented(&h(&format!("Basic {basic}"))).unwrap(), b"pa:ss");
        assert!(presented(&h("Basic !!!")).is_none());
        assert!(presented(&h("Token abc")).is_none());
        assert!(presented(&HeaderMap::new()).is_none());
    }
}
