//! Pushes changed jobs to Press: coalesced batches (at most one request per interval, at
//! most 100 jobs each), kept and retried with backoff on failure or 429 (honouring
//! `Retry-After`). Best-effort: Press also polls `GET /agent/jobs?ids=`.

use crate::worker::Engine;
use pressoir_core::{Secret, Shutdown};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub const PATH: &str = "/api/method/press.api.callbacks.agent_jobs";
pub const MAX_JOBS: i64 = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Pusher {
    pub engine: Arc<Engine>,
    pub url: String,
    pub server: String,
    pub password: Secret,
    pub interval: Duration,
}

enum Outcome {
    Pushed(usize),
    Retry(Option<Duration>),
}

impl Pusher {
    pub async fn run(self, shutdown: Shutdown) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client; pushes to Press are off");
                return;
            }
        };
        let url = format!("{}{PATH}", self.url.trim_end_matches('/'));
        let mut last: Option<Instant> = None;
        let mut backoff = self.interval.max(Duration::from_millis(100));
        loop {
            // Push once per interval at most.
            if let Some(t) = last {
                let wake = t + self.interval;
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = shutdown.wait() => return,
                }
            }
            let batch = match self.engine.store.unpushed(MAX_JOBS).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read jobs to push");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.engine.changed.notified() => {}
                    _ = shutdown.wait() => return,
                }
                continue;
            }
            last = Some(Instant::now());
            let jobs: Vec<Value> = batch.iter().map(|(j, _)| j.to_json()).collect();
            let body = json!({"server": self.server, "jobs": jobs});
            match self.post(&client, &url, &body).await {
                Outcome::Pushed(n) => {
                    backoff = self.interval.max(Duration::from_millis(100));
                    let versions: Vec<(i64, i64)> = batch.iter().map(|(j, v)| (j.id, *v)).collect();
                    if let Err(e) = self.engine.store.mark_pushed(&versions).await {
                        tracing::warn!(error = %e, "cannot record pushed jobs");
                    }
                    tracing::debug!(jobs = n, "pushed job changes to press");
                }
                Outcome::Retry(after) => {
                    let wait = after.unwrap_or(backoff).min(MAX_BACKOFF * 5);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait() => return,
                    }
                }
            }
        }
    }

    async fn post(&self, client: &reqwest::Client, url: &str, body: &Value) -> Outcome {
        let resp = client
            .post(url)
            .bearer_auth(self.password.expose())
            .json(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "push to press failed; will retry");
                return Outcome::Retry(None);
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Pushed(body["jobs"].as_array().map_or(0, Vec::len));
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        tracing::warn!(status = status.as_u16(), "press refused a push; will retry");
        Outcome::Retry(after)
    }
}
