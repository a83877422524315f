//! The job outbox's two background tasks: the dispatcher delivers Undelivered jobs to their
//! agent in batches (idempotent by Press's job name), and the poller reads unfinished jobs
//! back in batches to catch any push the agent could not make. Both share one pacer per
//! server, so Press stays within the agent's rate limit by coalescing instead of failing.
//! A third task keeps each server's status from its agent's reachability: every answer or
//! failure of a delivery, poll or ping is an observation; an Active server whose agent fails
//! `health_failures` checks in a row (at most one counted per `health_interval`) turns Broken,
//! and the first answer turns it Active again, each change with its `server.status_changed`
//! event. The ping is paced by the same per-server budget and skipped when the agent was
//! heard from recently.

use crate::agent::{AgentClient, AgentError, Submission, parse_job};
use crate::auth::random_token;
use crate::domain::{self, job_status, job_type};
use crate::error::Result;
use crate::store::{Job, JobUpdate, Server, Store};
use pressoir_core::clock::now_ms;
use pressoir_core::ratelimit::Decision;
use pressoir_core::{RateLimiter, RateSpec, Shutdown};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// At most this many jobs per request, as the contract allows.
pub const BATCH: usize = 100;

/// How long a claimed job is reserved for its delivery.
const LEASE_MS: i64 = 3_000;

pub struct Dispatcher {
    store: Store,
    client: AgentClient,
    wake: Notify,
    pacer: Arc<RateLimiter>,
    paused: Mutex<HashMap<String, Instant>>,
    poll_interval: Duration,
    /// With the agent's limit lifted, poll right after a delivery and then ever less often,
    /// so a short job is seen done within milliseconds even without a push.
    fast_poll: bool,
    poll_soon: Notify,
    health: Mutex<HashMap<String, Health>>,
    health_interval: Duration,
    health_failures: u32,
}

/// What this Press last heard from one server's agent.
struct Health {
    failures: u32,
    last_counted: Option<Instant>,
    last_seen: Instant,
}

impl Dispatcher {
    /// `health` is how often a server's reachability is checked, and how many consecutive
    /// failed checks turn it Broken.
    pub fn new(
        store: Store,
        client: AgentClient,
        agent_rate: RateSpec,
        poll_interval: Duration,
        health: (Duration, u32),
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            client,
            wake: Notify::new(),
            pacer: RateLimiter::new(agent_rate),
            paused: Mutex::new(HashMap::new()),
            poll_interval,
            fast_poll: agent_rate.is_off(),
            poll_soon: Notify::new(),
            health: Mutex::new(HashMap::new()),
            health_interval: health.0.max(Duration::from_millis(10)),
            health_failures: health.1.max(1),
        })
    }

    /// Tells the dispatcher that jobs were recorded.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// Starts the dispatcher, the poller and the health check; all stop when `shutdown` fires.
    pub fn spawn(self: &Arc<Self>, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let d = self.clone();
        let s = shutdown.clone();
        let a = tokio::spawn(async move { d.dispatch_loop(s).await });
        let d = self.clone();
        let s = shutdown.clone();
        let b = tokio::spawn(async move { d.poll_loop(s).await });
        let d = self.clone();
        let c = tokio::spawn(async move { d.health_loop(shutdown).await });
        vec![a, b, c]
    }

    fn is_paused(&self, server: &str) -> bool {
        let m = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        m.get(server).is_some_and(|until| *until > Instant::now())
    }

    fn pause(&self, server: &str, d: Duration) {
        let mut m = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + d;
        let e = m.entry(server.to_string()).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    /// One unit of the agent's budget for `server`, or a pause until the next one.
    fn take_budget(&self, server: &str) -> bool {
        match self.pacer.check(server) {
            Decision::Limited {
                retry_after_secs, ..
            } => {
                self.pause(server, Duration::from_secs(retry_after_secs.max(1)));
                false
            }
            _ => true,
        }
    }

    async fn dispatch_loop(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = self.wake.notified() => {
                    // Let a burst of calls land so they leave in one batch.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if let Err(e) = self.dispatch_once().await {
                tracing::warn!(error = %e, "dispatcher pass failed");
            }
        }
    }

    /// Delivers what is due on every server, one batch per server at a time, in parallel.
    pub async fn dispatch_once(&self) -> Result<()> {
        let servers = self.store.servers_with_due_jobs(now_ms()).await?;
        let work = servers
            .iter()
            .filter(|s| !self.is_paused(s))
            .map(|s| self.deliver(s));
        for r in futures::future::join_all(work).await {
            r?;
        }
        Ok(())
    }

    async fn deliver(&self, server_name: &str) -> Result<()> {
        let Some(server) = self.store.server(server_name).await? else {
            return Ok(());
        };
        loop {
            if !self.take_budget(server_name) {
                return Ok(());
            }
            let now = now_ms();
            let due = self
                .store
                .claim_due(server_name, now, now + LEASE_MS, BATCH as i64)
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            let full = due.len() == BATCH;
            self.deliver_batch(&server, &due).await?;
            if !full || self.is_paused(server_name) {
                return Ok(());
            }
        }
    }

    async fn deliver_batch(&self, server: &Server, due: &[Job]) -> Result<()> {
        let subs: Vec<Submission> = due.iter().map(submission).collect();
        let r = self
            .client
            .submit(&server.agent_url, &server.agent_password, &subs)
            .await;
        self.observe(server, !matches!(r, Err(AgentError::Unavailable(_))))
            .await;
        match r {
            Ok(ids) => {
                let delivered: Vec<(String, String)> =
                    due.iter().map(|j| j.name.clone()).zip(ids).collect();
                self.store.mark_delivered_many(&delivered).await?;
                if self.fast_poll {
                    self.poll_soon.notify_one();
                }
                tracing::debug!(server = %server.name, jobs = due.len(), "delivered");
            }
            Err(AgentError::Limited(wait)) => {
                tracing::info!(server = %server.name, wait_s = wait.as_secs(), "agent rate limit; holding jobs");
                self.pause(&server.name, wait);
                let names: Vec<String> = due.iter().map(|j| j.name.clone()).collect();
                self.store
                    .release(&names, now_ms() + wait.as_millis() as i64)
                    .await?;
            }
            Err(AgentError::Rejected {
                status,
                message,
                index,
            }) if status == 400 || status == 422 => {
                let bad: Vec<usize> = match index {
                    Some(i) if i < due.len() => vec![i],
                    _ => (0..due.len()).collect(),
                };
                for &i in &bad {
                    let msg = format!("agent rejected the job: {message}");
                    self.fail(&server.name, &due[i], &msg).await?;
                }
                // The rest of the batch was fine: due again at once, not at the lease's end.
                let rest: Vec<String> = due
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !bad.contains(i))
                    .map(|(_, j)| j.name.clone())
                    .collect();
                self.store.release(&rest, now_ms()).await?;
                self.wake();
            }
            Err(e) => {
                tracing::warn!(server = %server.name, error = %e, "delivery failed; will retry");
                let now = now_ms();
                for job in due {
                    let backoff = backoff_ms(job.retry_count);
                    self.store
                        .mark_retry(&job.name, now + backoff, &e.to_string())
                        .await?;
                }
                self.pause(&server.name, Duration::from_millis(500));
            }
        }
        Ok(())
    }

    async fn fail(&self, server: &str, job: &Job, message: &str) -> Result<()> {
        let u = JobUpdate {
            name: job.name.clone(),
            agent_id: None,
            status: job_status::FAILURE,
            steps: serde_json::from_str(&job.steps).unwrap_or_else(|_| json!([])),
            result: None,
            error: Some(message.to_string()),
            started: None,
            ended: Some(now_ms()),
            duration_ms: None,
        };
        self.store.apply_update(server, &u).await?;
        Ok(())
    }

    async fn poll_loop(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        const FIRST: Duration = Duration::from_millis(5);
        let mut wait = self.poll_interval;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.poll_soon.notified() => wait = FIRST,
            }
            match self.poll_once().await {
                // Progress: look again at once; no news: back off, up to the interval.
                // A big batch in flight is read less often, so polling never crowds out the work.
                Ok((true, changed, polled)) if self.fast_poll => {
                    wait = if changed > 0 {
                        (FIRST * (polled as u32 / 4).max(1)).min(self.poll_interval)
                    } else {
                        (wait * 2).clamp(FIRST, self.poll_interval)
                    }
                }
                Ok(_) => wait = self.poll_interval,
                Err(e) => {
                    wait = self.poll_interval;
                    tracing::warn!(error = %e, "poller pass failed");
                }
            }
        }
    }

    /// Reads back every server's unfinished jobs, up to one batch per server: whether some
    /// were unfinished, and how many changed.
    pub async fn poll_once(&self) -> Result<(bool, usize, usize)> {
        let servers = self.store.servers().await?;
        let work = servers
            .iter()
            .filter(|s| !self.is_paused(&s.name))
            .map(|s| self.poll_server(s));
        let (mut busy, mut changed, mut polled) = (false, 0, 0);
        for r in futures::future::join_all(work).await {
            let (b, c, p) = r?;
            busy |= b;
            changed += c;
            polled = polled.max(p);
        }
        Ok((busy, changed, polled))
    }

    async fn poll_server(&self, server: &Server) -> Result<(bool, usize, usize)> {
        let active = self.store.active_jobs(&server.name, BATCH as i64).await?;
        let polled = active.len();
        if active.is_empty() {
            return Ok((false, 0, 0));
        }
        if !self.take_budget(&server.name) {
            return Ok((true, 0, polled));
        }
        let mut changed = 0;
        let by_id: HashMap<String, String> = active
            .iter()
            .filter_map(|j| Some((j.agent_id.clone()?, j.name.clone())))
            .collect();
        let ids: Vec<String> = by_id.keys().cloned().collect();
        let r = self
            .client
            .jobs(&server.agent_url, &server.agent_password, &ids)
            .await;
        self.observe(server, !matches!(r, Err(AgentError::Unavailable(_))))
            .await;
        match r {
            Ok(list) => {
                // A job the agent answers without is one it never stored or lost (its store
                // was reset): deliver it again; the agent deduplicates by our job name.
                let known: std::collections::HashSet<String> = list
                    .iter()
                    .filter_map(|v| {
                        v.get("id").map(|i| {
                            i.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| i.to_string())
                        })
                    })
                    .collect();
                let lost: Vec<String> = by_id
                    .iter()
                    .filter(|(id, _)| !known.contains(*id))
                    .map(|(_, n)| n.clone())
                    .collect();
                if !lost.is_empty() {
                    tracing::warn!(server = %server.name, jobs = lost.len(), "agent does not know some delivered jobs; redelivering");
                    self.store.redeliver(&lost).await?;
                    self.wake();
                }
                let n = self
                    .apply(&server.name, &list, |id| by_id.get(id).cloned())
                    .await?;
                changed = n;
                tracing::debug!(server = %server.name, polled = ids.len(), changed = n, "polled");
                let names: Vec<String> = active.into_iter().map(|j| j.name).collect();
                self.store.mark_polled(&names, now_ms()).await?;
            }
            Err(AgentError::Limited(wait)) => self.pause(&server.name, wait),
            Err(e) => {
                tracing::debug!(server = %server.name, error = %e, "poll failed");
                self.pause(&server.name, Duration::from_millis(500));
            }
        }
        Ok((true, changed, polled))
    }

    /// Records one reachability observation of `server`'s agent and moves the server's status
    /// when the rule says so. A store error is logged: the next observation tries again.
    async fn observe(&self, server: &Server, reachable: bool) {
        let failures = {
            let mut m = self.health.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let h = m.entry(server.name.clone()).or_insert(Health {
                failures: 0,
                last_counted: None,
                last_seen: now,
            });
            h.last_seen = now;
            if reachable {
                h.failures = 0;
                h.last_counted = None;
            } else if h
                .last_counted
                .is_none_or(|t| now.duration_since(t) >= self.health_interval * 3 / 4)
            {
                // Failures in a quick burst (a batch and its retry) are one outage, not three.
                h.failures = h.failures.saturating_add(1);
                h.last_counted = Some(now);
            }
            h.failures
        };
        let Some(new) = domain::server_status_after_check(
            &server.status,
            reachable,
            failures,
            self.health_failures,
        ) else {
            return;
        };
        match self
            .store
            .set_server_status(&server.name, &server.status, new)
            .await
        {
            Ok(true) => {
                tracing::warn!(server = %server.name, old = %server.status, new, failures, "server status changed")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(server = %server.name, error = %e, "could not record the server's status")
            }
        }
    }

    fn heard_recently(&self, server: &str) -> bool {
        let m = self.health.lock().unwrap_or_else(|p| p.into_inner());
        m.get(server)
            .is_some_and(|h| h.last_seen.elapsed() < self.health_interval / 2)
    }

    async fn health_loop(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.health_interval) => {}
            }
            if let Err(e) = self.check_health_once().await {
                tracing::warn!(error = %e, "health check pass failed");
            }
        }
    }

    /// Pings every Active or Broken server not heard from lately, in parallel.
    pub async fn check_health_once(&self) -> Result<()> {
        let servers = self.store.servers().await?;
        let work = servers
            .iter()
            .filter(|s| s.status == "Active" || s.status == "Broken")
            .filter(|s| !self.heard_recently(&s.name))
            .map(|s| self.check_health(s));
        futures::future::join_all(work).await;
        Ok(())
    }

    async fn check_health(&self, server: &Server) {
        if !self.take_budget(&server.name) {
            return;
        }
        let limit = self.health_interval.max(Duration::from_secs(3));
        let reachable = match tokio::time::timeout(
            limit,
            self.client.ping(&server.agent_url, &server.agent_password),
        )
        .await
        {
            Ok(Ok(_)) | Ok(Err(AgentError::Limited(_))) | Ok(Err(AgentError::Rejected { .. })) => {
                true
            }
            Ok(Err(AgentError::Unavailable(_))) | Err(_) => false,
        };
        self.observe(server, reachable).await;
    }

    /// Applies job JSON from an agent (push or poll); returns how many changed something.
    pub async fn apply(
        &self,
        server: &str,
        jobs: &[Value],
        name_of_id: impl Fn(&str) -> Option<String>,
    ) -> Result<usize> {
        let updates: Vec<JobUpdate> = jobs
            .iter()
            .filter_map(|v| parse_job(v, &name_of_id))
            .collect();
        self.store.apply_updates(server, &updates).await
    }
}

/// What the agent receives for a job. New Site gets a fresh admin password here, at delivery:
/// it is never stored by Press, and a redelivery is deduplicated by the agent anyway.
fn submission(job: &Job) -> Submission {
    let mut data: Value = serde_json::from_str(&job.request_data).unwrap_or_else(|_| json!({}));
    if job.job_type == job_type::NEW_SITE
        && let Some(o) = data.as_object_mut()
    {
        o.insert("admin_password".into(), Value::String(random_token(16)));
    }
    Submission {
        agent_job_id: job.name.clone(),
        job_type: job.job_type.clone(),
        data,
    }
}

/// 0.5 s, 1 s, 2 s, ... capped at 30 s.
fn backoff_ms(retries: i64) -> i64 {
    let exp = retries.clamp(0, 6) as u32;
    (500i64 << exp).min(30_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(0), 500);
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(10), 30_000);
    }
}
