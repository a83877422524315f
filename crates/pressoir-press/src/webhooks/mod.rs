//! Press webhooks: durable, signed, retried.
//!
//! - [`store::enqueue`] writes one delivery row per subscribed webhook in the caller's
//!   transaction, so an event exists exactly when the change that caused it committed.
//! - [`deliver`] claims due deliveries (the head of each (webhook, site) lane only, so order is
//!   kept per site), sends them with a per-attempt timeout through [`guard`]'s pinned resolver,
//!   logs every attempt, retries with capped exponential backoff and jitter, and disables a
//!   webhook after sustained failure.
//! - [`sign`] is the Standard Webhooks signature; [`api`] the `press.api.webhook.*` methods.
//!
//! It must not: log or return a secret (signing secret, `X-Webhook-Secret`, configured header
//! values), connect to a loopback, private or link-local address unless `allow_private` is set,
//! or let one slow receiver hold up another.

pub mod api;
pub mod deliver;
pub mod guard;
pub mod sign;
pub mod store;

use std::time::Duration;

/// The events a webhook can subscribe to, with what they mean.
pub const EVENTS: [(&str, &str); 8] = [
    ("site.created", "a site was created (data: the site)"),
    (
        "site.status_changed",
        "a site's status changed (data: the site, old_status, new_status)",
    ),
    ("site.archived", "a site was archived (data: the site)"),
    (
        "site.plan_changed",
        "a site's plan changed (data: the site, old_plan, new_plan)",
    ),
    (
        "backup.completed",
        "a site backup completed (data: the backup)",
    ),
    ("backup.failed", "a site backup failed (data: the backup)"),
    ("job.failed", "an agent job failed (data: the job)"),
    (
        "server.status_changed",
        "a server's status changed (data: the server, old_status, new_status)",
    ),
];

/// The event sent by `add` (and by `update` when the URL changes); needs a 2xx answer.
pub const VALIDATE_EVENT: &str = "Webhook Validate";

pub fn is_event(name: &str) -> bool {
    EVENTS.iter().any(|(e, _)| *e == name)
}

/// Webhook settings of a Press.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Allow loopback, private and link-local targets (local development only).
    pub allow_private: bool,
    /// Attempts per delivery before it is marked Failed.
    pub max_attempts: u32,
    /// Webhooks per team (administrator webhooks are not counted).
    pub max_per_team: u32,
    /// Timeout of one attempt, connect to last body byte read.
    pub timeout: Duration,
    /// The first retry's delay; each next one doubles, up to `backoff_cap`, with jitter.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// A webhook is disabled after this many consecutive failed attempts...
    pub disable_after_failures: u32,
    /// ...that have lasted at least this long.
    pub disable_after: Duration,
    /// How often the worker looks for new deliveries when idle.
    pub poll_interval: Duration,
    /// Attempts in flight at once, in all, and per webhook.
    pub max_in_flight: usize,
    pub max_in_flight_per_webhook: usize,
    /// Sent and failed deliveries and their attempts are kept this long.
    pub retention: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private: false,
            max_attempts: 8,
            max_per_team: 5,
            timeout: Duration::from_secs(5),
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            disable_after_failures: 20,
            disable_after: Duration::from_secs(3600),
            poll_interval: Duration::from_millis(20),
            max_in_flight: 256,
            max_in_flight_per_webhook: 32,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
