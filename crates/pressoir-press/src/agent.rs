//! Press's client for the agent API (the Press/agent contract): batch submission, batched
//! status reads, ping. It only speaks HTTP; what to send and when is the dispatcher's.

use crate::domain::job_status;
use crate::store::JobUpdate;
use pressoir_core::clock::parse_rfc3339_ms;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What went wrong talking to an agent.
#[derive(Debug)]
pub enum AgentError {
    /// 429: try again after this long.
    Limited(Duration),
    /// Down, unreachable, 5xx: retry later.
    Unavailable(String),
    /// 4xx other than 429: the request itself is wrong. `index` names a batch entry if known.
    Rejected {
        status: u16,
        message: String,
        index: Option<usize>,
    },
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::Limited(d) => write!(f, "agent rate limit, retry in {}s", d.as_secs()),
            AgentError::Unavailable(m) => write!(f, "agent unavailable: {m}"),
            AgentError::Rejected {
                status, message, ..
            } => write!(f, "agent rejected the request ({status}): {message}"),
        }
    }
}

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
}

/// One job to submit.
pub struct Submission {
    pub agent_job_id: String,
    pub job_type: String,
    pub data: Value,
}

impl Default for AgentClient {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(4)
            .build()
            .unwrap_or_default();
        AgentClient { http }
    }

    fn url(base: &str, path: &str) -> String {
        format!("{}{}", base.trim_end_matches('/'), path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, AgentError> {
        let resp = req
            .send()
            .await
            .map_err(|e| AgentError::Unavailable(without_url(&e)))?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let wait = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(2);
            return Err(AgentError::Limited(Duration::from_secs(wait.max(1))));
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_server_error() {
            return Err(AgentError::Unavailable(format!("status {status}")));
        }
        if !status.is_success() {
            let message = body
                .get("message")
                .or_else(|| body.get("error"))
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string();
            let field = body.get("field").and_then(|f| f.as_str()).unwrap_or("");
            let index = batch_index(field).or_else(|| batch_index(&message));
            let message = if field.is_empty() {
                message
            } else {
                format!("{field}: {message}")
            };
            return Err(AgentError::Rejected {
                status: status.as_u16(),
                message,
                index,
            });
        }
        Ok(body)
    }

    /// `GET /agent/ping`: the agent's version and the round trip.
    pub async fn ping(&self, base: &str, password: &str) -> Result<(String, Duration), AgentError> {
        let t = Instant::now();
        let v = self
            .send(
                self.http
                    .get(Self::url(base, "/agent/ping"))
                    .bearer_auth(password),
            )
            .await?;
        let version = v
            .get("agent")
            .and_then(|a| a.as_str())
            .unwrap_or("")
            .to_string();
        Ok((version, t.elapsed()))
    }

    /// `POST /agent/jobs`: at most 100 jobs; the answer's agent ids, in the same order.
    pub async fn submit(
        &self,
        base: &str,
        password: &str,
        jobs: &[Submission],
    ) -> Result<Vec<String>, AgentError> {
        let body = json!({
            "jobs": jobs.iter().map(|j| json!({
                "agent_job_id": j.agent_job_id, "job_type": j.job_type, "data": j.data,
            })).collect::<Vec<_>>()
        });
        let v = self
            .send(
                self.http
                    .post(Self::url(base, "/agent/jobs"))
                    .bearer_auth(password)
                    .json(&body),
            )
            .await?;
        let list = job_list(&v);
        if list.len() != jobs.len() {
            return Err(AgentError::Unavailable(format!(
                "agent answered {} jobs for {}",
                list.len(),
                jobs.len()
            )));
        }
        Ok(list.iter().map(|j| id_text(j.get("id"))).collect())
    }

    /// `GET /agent/jobs?ids=...`: the current state of these agent jobs.
    pub async fn jobs(
        &self,
        base: &str,
        password: &str,
        ids: &[String],
    ) -> Result<Vec<Value>, AgentError> {
        let url = format!("{}?ids={}", Self::url(base, "/agent/jobs"), ids.join(","));
        let v = self.send(self.http.get(url).bearer_auth(password)).await?;
        Ok(job_list(&v))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    kind.to_string()
}

fn job_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .get("jobs")
            .or_else(|| o.get("message"))
            .and_then(|j| j.as_array())
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn id_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The index in `jobs[3].data.name`, the way the agent names a bad batch entry.
fn batch_index(message: &str) -> Option<usize> {
    let i = message.find("jobs[")?;
    let rest = &message[i + 5..];
    let end = rest.find(']')?;
    rest[..end].parse().ok()
}

/// Parses one job JSON of the contract into an update, keyed by Press's job name. Jobs that
/// carry no Press name (`agent_job_id`) fall back to `name_of_id`.
pub fn parse_job(v: &Value, name_of_id: impl Fn(&str) -> Option<String>) -> Option<JobUpdate> {
    let agent_id = id_text(v.get("id"));
    let name = match v.get("agent_job_id").and_then(|n| n.as_str()) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => name_of_id(&agent_id)?,
    };
    let status = job_status::from_agent(v.get("status")?.as_str()?)?;
    let time = |k: &str| v.get(k).and_then(|t| t.as_str()).and_then(parse_rfc3339_ms);
    let steps = v
        .get("steps")
        .cloned()
        .filter(|s| s.is_array())
        .unwrap_or_else(|| json!([]));
    let error = match v.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    Some(JobUpdate {
        name,
        agent_id: (!agent_id.is_empty()).then_some(agent_id),
        status,
        steps,
        result: v.get("result").cloned().filter(|r| !r.is_null()),
        error,
        started: time("started_at"),
        ended: time("ended_at"),
        duration_ms: v.get("duration_ms").and_then(|d| d.as_i64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_jobs() {
        let v = json!({"id":"7","agent_job_id":"abc","job_type":"New Site","status":"Running",
            "created_at":"2026-12-04T14:32:13.123Z","started_at":"2026-12-04T14:32:13.200Z","ended_at":null,
            "duration_ms":null,"steps":[{"name":"New Site","status":"Running"}],"result":null,"error":null});
        let u = parse_job(&v, |_| None).unwrap();
        assert_eq!(u.name, "abc");
        assert_eq!(u.agent_id.as_deref(), Some("7"));
        assert_eq!(u.status, "Running");
        assert!(u.started.is_some() && u.ended.is_none());
        assert!(parse_job(&json!({"id": 7, "status":"Weird"}), |_| Some("x".into())).is_none());
    }

    #[test]
    fn finds_the_bad_batch_entry() {
        assert_eq!(batch_index("jobs[3].data.name: invalid"), Some(3));
        assert_eq!(batch_index("nope"), None);
    }
}
