//! Press's typed configuration. Secrets arrive resolved, as [`Secret`]s; the library never reads
//! the environment.

use crate::auth::BearerVerifier;
use pressoir_core::{RateSpec, Secret};
use std::sync::Arc;
use std::time::Duration;

/// Verifies `Authorization: Bearer` tokens (the identity service's access tokens).
#[derive(Clone)]
pub struct Bearer(pub Arc<dyn BearerVerifier>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

/// The default bench's apps, as the agent's `local` driver offers them.
pub const DEFAULT_APPS: [&str; 11] = [
    "frappe", "erpnext", "hrms", "crm", "helpdesk", "insights", "lms", "wiki", "drive", "builder",
    "payments",
];

/// A server Press registers (or refreshes) at every start, for example the embedded agent.
#[derive(Debug, Clone)]
pub struct ServerSeed {
    pub name: String,
    pub agent_url: String,
    pub agent_password: Secret,
    pub bench: String,
    pub apps: Vec<String>,
}

impl ServerSeed {
    pub fn new(name: &str, agent_url: &str, agent_password: Secret) -> Self {
        ServerSeed {
            name: name.into(),
            agent_url: agent_url.into(),
            agent_password,
            bench: "bench-0001".into(),
            apps: DEFAULT_APPS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// PostgreSQL schema (ignored on SQLite).
    pub db_schema: String,
    pub max_connections: u32,
    /// Sites are named `<subdomain>.<domain>`.
    pub domain: String,
    /// The `Administrator` password, set at first start (and kept afterwards).
    pub admin_password: Secret,
    /// The Press API's limit per credential (reference: 100/min).
    pub rate_limit: RateSpec,
    /// Press's own budget toward each agent (the agent's limit: 50/min by default).
    pub agent_rate_limit: RateSpec,
    pub servers: Vec<ServerSeed>,
    /// How often unfinished jobs are read back from agents.
    pub poll_interval: Duration,
    pub session_ttl: Duration,
    /// When set, `Authorization: Bearer <token>` authenticates the token's user.
    pub bearer: Option<Bearer>,
    /// Webhook delivery settings (issue 7).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Where Press bills through the Lago API (issue 6); `None` queues billing calls unsent.
    pub billing: Option<crate::billing::BillingConfig>,
    /// `site.archive` has the agent take an offsite backup first (unless the call says
    /// `skip_backup`); set it when the agents have offsite storage (issue 4).
    pub archive_backup: bool,
    /// Plans' backup policies, run by the backup scheduler every `backup_tick` (issue 4).
    pub backup_policies: Vec<crate::backup_policy::BackupPolicy>,
    pub backup_tick: Duration,
    /// How long the scheduler waits before it deletes a backup again after a failed
    /// "Delete Site Backup" job.
    pub backup_delete_backoff: crate::backup_policy::RetryBackoff,
    /// How often each server's agent reachability is checked (a ping, skipped when the
    /// dispatcher or poller heard from the agent more recently); failures closer together
    /// than this count once, so a server turns Broken only after a sustained outage.
    pub health_interval: Duration,
    /// Consecutive failed checks that turn an Active server Broken (an answer turns it back).
    pub health_failures: u32,
}

impl Config {
    pub fn new(database_url: impl Into<String>, admin_password: Secret) -> Self {
        Config {
            database_url: database_url.into(),
            db_schema: "press".into(),
            max_connections: 8,
            domain: "cloud.localhost".into(),
            admin_password,
            rate_limit: RateSpec::per(100, Duration::from_secs(60)),
            agent_rate_limit: RateSpec::per(50, Duration::from_secs(60)),
            servers: Vec::new(),
            poll_interval: Duration::from_secs(5),
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            bearer: None,
            webhooks: Default::default(),
            billing: None,
            archive_backup: false,
            backup_policies: Vec::new(),
            backup_tick: Duration::from_secs(60),
            backup_delete_backoff: Default::default(),
            health_interval: Duration::from_secs(5),
            health_failures: 3,
        }
    }
}
