//! The delivery worker. Claims the head delivery of each (webhook, site) lane, sends each in
//! its own task with a per-attempt timeout (so a slow receiver only holds its own slots),
//! and records results in batches. At least once: a delivery is done only when its 2xx is
//! recorded; one claimed by a Press that stopped is claimed again when its lease ends.

use super::WebhookConfig;
use super::guard;
use super::sign;
use super::store::{self, Claimed, Outcome};
use crate::store::Store;
use pressoir_core::Shutdown;
use pressoir_core::clock::now_ms;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// The response bytes kept in the attempt log.
pub const EXCERPT_BYTES: usize = 1024;

/// The delay before retry number `attempt` (1 = after the first failure): `base * 2^(n-1)`
/// capped, then jittered down by up to half so retries of many deliveries spread out.
pub fn backoff(base: Duration, cap: Duration, attempt: i64, jitter: f64) -> Duration {
    let exp = (attempt.max(1) - 1).min(30) as u32;
    let raw = base.saturating_mul(1u32 << exp.min(31)).min(cap);
    raw.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// Replaces every secret in `text` with `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if t.contains(s.as_str()) {
            t = t.replace(s.as_str(), "***");
        }
    }
    t
}

fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > EXCERPT_BYTES {
        s.push('…');
    }
    s
}

/// One signed POST. Used for deliveries and for the validation ping; never follows a redirect
/// and never connects to an address the guard refuses.
pub struct Sent {
    pub status: Option<u16>,
    pub excerpt: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl Sent {
    pub fn ok(&self) -> bool {
        matches!(self.status, Some(s) if (200..300).contains(&s))
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn send(
    client: &reqwest::Client,
    allow_private: bool,
    timeout: Duration,
    url: &str,
    headers: &[(String, String)],
    secret: Option<&str>,
    signing_secret: &str,
    id: &str,
    body: &str,
) -> Sent {
    let started = Instant::now();
    let mut secrets: Vec<String> = vec![signing_secret.to_string()];
    secrets.extend(secret.map(str::to_string));
    secrets.extend(headers.iter().map(|(_, v)| v.clone()));
    let done = |status: Option<u16>, excerpt: Option<String>, error: Option<String>| Sent {
        status,
        excerpt: excerpt.map(|e| scrub(&e, &secrets)),
        error: error.map(|e| scrub(&e, &secrets)),
        duration_ms: started.elapsed().as_millis() as i64,
    };
    let u = match guard::check_url(url, allow_private) {
        Ok(u) => u,
        Err(e) => return done(None, None, Some(e)),
    };
    let ts = now_ms() / 1000;
    let mut req = client
        .post(u)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign::signature(signing_secret, id, ts, body.as_bytes()),
        );
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(s) = secret {
        req = req.header("X-Webhook-Secret", s);
    }
    let resp = match req.body(body.to_string()).send().await {
        Ok(r) => r,
        Err(e) => {
            let kind = if e.is_timeout() { "timed out: " } else { "" };
            return done(
                None,
                None,
                Some(format!("{kind}{}", guard::error_chain(&e))),
            );
        }
    };
    let status = resp.status().as_u16();
    // Read at most the excerpt's worth; the rest of a large body is not waited for.
    let mut buf: Vec<u8> = Vec::new();
    let mut resp = resp;
    let mut err = None;
    while buf.len() <= EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => {
                err = Some(if e.is_timeout() {
                    "timed out reading the response".to_string()
                } else {
                    guard::error_chain(&e)
                });
                break;
            }
        }
    }
    let error = match (err, (200..300).contains(&status)) {
        (Some(e), _) => Some(e),
        (None, true) => None,
        (None, false) => Some(format!("HTTP {status}")),
    };
    done(Some(status), Some(excerpt(&buf)), error)
}

/// The worker's handle: wakes it when something becomes due now.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Starts the delivery worker; it stops on `shutdown`, letting attempts in flight finish
/// (up to one timeout) and recording them.
pub fn spawn(
    store: Store,
    cfg: WebhookConfig,
    shutdown: Shutdown,
) -> (Waker, tokio::task::JoinHandle<()>) {
    let waker = Waker::default();
    let w = waker.clone();
    let h = tokio::spawn(async move { run(store, cfg, shutdown, w).await });
    (waker, h)
}

async fn run(store: Store, cfg: WebhookConfig, shutdown: Shutdown, waker: Waker) {
    let db = store.db.clone();
    let client = match guard::client(cfg.allow_private, cfg.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery is not running");
            return;
        }
    };
    let lease = (cfg.timeout + Duration::from_secs(5)).as_millis() as i64;
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let mut inflight: HashMap<String, usize> = HashMap::new();
    let mut total = 0usize;
    let mut done: Vec<Outcome> = Vec::new();
    let mut last_purge = Instant::now();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let cfg = Arc::new(cfg);
    let mut db_backoff = Duration::from_millis(0);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    loop {
        while let Ok(o) = rx.try_recv() {
            done.push(o);
        }
        let mut progressed = false;
        if !done.is_empty() {
            let c = cfg.clone();
            let retry_at = |attempt: i64| {
                let j = rng.r#gen::<f64>();
                now_ms() + backoff(c.backoff_base, c.backoff_cap, attempt, j).as_millis() as i64
            };
            match store::record(&db, &cfg, &done, retry_at).await {
                Ok(disabled) => {
                    for w in disabled {
                        tracing::warn!(webhook = %w, "webhook disabled after sustained failure");
                    }
                    for o in done.drain(..) {
                        if let Some(n) = inflight.get_mut(&o.webhook) {
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                inflight.remove(&o.webhook);
                            }
                        }
                        total = total.saturating_sub(1);
                    }
                    progressed = true;
                    db_backoff = Duration::ZERO;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record webhook attempts; retrying");
                    db_backoff =
                        (db_backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
                }
            }
        }
        if shutdown.is_triggered() {
            break;
        }
        let free = cfg.max_in_flight.saturating_sub(total);
        if free > 0 && db_backoff.is_zero() {
            let saturated: Vec<String> = inflight
                .iter()
                .filter(|(_, n)| **n >= cfg.max_in_flight_per_webhook)
                .map(|(k, _)| k.clone())
                .collect();
            let now = now_ms();
            // At most one webhook's cap per claim, so none exceeds twice its cap in flight.
            let limit = free.min(cfg.max_in_flight_per_webhook).max(1) as i64;
            match store::claim(&db, now, now + lease, limit, &saturated).await {
                Ok(batch) => {
                    progressed |= !batch.is_empty();
                    for d in batch {
                        *inflight.entry(d.webhook.clone()).or_default() += 1;
                        total += 1;
                        let client = client.clone();
                        let tx = tx.clone();
                        let c = cfg.clone();
                        tokio::spawn(async move {
                            let o = attempt(&client, &c, d).await;
                            let _ = tx.send(o);
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim webhook deliveries; retrying");
                    db_backoff = Duration::from_millis(200);
                }
            }
        }
        if last_purge.elapsed() > Duration::from_secs(600) {
            last_purge = Instant::now();
            let before = now_ms() - cfg.retention.as_millis() as i64;
            if let Err(e) = store::purge(&db, before).await {
                tracing::warn!(error = %e, "cannot purge the webhook log");
            }
        }
        if progressed && db_backoff.is_zero() {
            // Let outcomes gather (3 ms at most, half of those in flight) so one transaction
            // records many and one claim refills their slots.
            if total > done.len() {
                let want = (total / 2).clamp(1, 256);
                let _ = tokio::time::timeout(Duration::from_millis(3), async {
                    while done.len() < want {
                        match rx.recv().await {
                            Some(o) => done.push(o),
                            None => break,
                        }
                    }
                })
                .await;
            }
            continue;
        }
        let idle = if db_backoff.is_zero() {
            cfg.poll_interval
        } else {
            db_backoff
        };
        tokio::select! {
            _ = &mut stop => {}
            Some(o) = rx.recv() => done.push(o),
            _ = waker.0.notified() => {}
            _ = tokio::time::sleep(idle) => { db_backoff = Duration::ZERO; }
        }
    }
    // Let attempts in flight finish and record them; anything left is claimed again later.
    drop(tx);
    let deadline = tokio::time::Instant::now() + cfg.timeout + Duration::from_secs(1);
    while total > done.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(o)) => done.push(o),
            _ => break,
        }
    }
    if !done.is_empty() {
        let c = cfg.clone();
        let retry_at = |attempt: i64| {
            now_ms() + backoff(c.backoff_base, c.backoff_cap, attempt, 0.5).as_millis() as i64
        };
        if let Err(e) = store::record(&db, &cfg, &done, retry_at).await {
            tracing::warn!(error = %e, "cannot record webhook attempts at shutdown; they will be sent again");
        }
    }
}

async fn attempt(client: &reqwest::Client, cfg: &WebhookConfig, d: Claimed) -> Outcome {
    let headers: Vec<(String, String)> =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&d.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect();
    let at = now_ms();
    let r = send(
        client,
        cfg.allow_private,
        cfg.timeout,
        &d.url,
        &headers,
        d.secret.as_deref(),
        &d.signing_secret,
        &d.event_id,
        &d.payload,
    )
    .await;
    Outcome {
        seq: d.seq,
        delivery: d.id,
        webhook: d.webhook,
        event: d.event,
        event_id: d.event_id,
        attempt: d.attempts + 1,
        ok: r.ok(),
        status_code: r.status.map(i64::from),
        excerpt: r.excerpt,
        duration_ms: r.duration_ms,
        error: r.error,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let b = Duration::from_secs(10);
        let cap = Duration::from_secs(3600);
        assert_eq!(backoff(b, cap, 1, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(b, cap, 2, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(b, cap, 4, 0.0), Duration::from_secs(80));
        assert_eq!(backoff(b, cap, 40, 0.0), cap);
        assert_eq!(backoff(b, cap, 1, 1.0), Duration::from_secs(5));
        assert!(backoff(b, cap, 3, 0.3) < Duration::from_secs(40));
    }

    #[test]
    fn scrub_hides_secrets_and_excerpt_truncates() {
        assert_eq!(
            scrub(
                "echo whsec_abc and s3cret",
                &["whsec_abc".into(), "s3cret".into()]
            ),
            "echo *** and ***"
        );
        let long = vec![b'a'; 5000];
        let e = excerpt(&long);
        assert!(e.len() <= EXCERPT_BYTES + 4 && e.ends_with('…'));
    }
}
