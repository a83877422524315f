//! Press bills through the Lago API (issue 6 §2): a team is a Lago customer, a site is a
//! subscription (external id = the site's name) on its plan's billing code; a plan change
//! changes the subscription, archiving terminates it; `storage_gb` usage is sampled per Active
//! site on a schedule. It speaks only HTTP to billing ([`pressoir_billing::client::LagoClient`]),
//! so a real Lago works by configuration alone.
//!
//! Every call is first a row of `billing_outbox`, written in the transaction of the site change
//! that causes it ([`store::site_event`], called from the site event hook), and a worker drains
//! that outbox with backoff: billing down loses nothing. Sends are idempotent (subscription
//! external ids; usage transaction ids derived from site and period).
//!
//! It must not: invent usage figures (a site the agent cannot measure is not billed usage),
//! hold the site transaction open on network I/O, or read the environment.

pub mod api;
pub mod meter;
pub mod store;
pub mod worker;

pub use meter::{AgentMeter, Meter, MeterFuture, Usage, UsageMeter};
use pressoir_core::Secret;
use std::time::Duration;

/// The Lago metric Press sends storage samples on, and its property.
pub const STORAGE_METRIC: &str = "storage_gb";
pub const STORAGE_FIELD: &str = "gb_used";

/// Where billing is and how Press talks to it.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// The Lago server's root (`http://billing.localhost`, `https://api.getlago.com`).
    pub url: String,
    pub api_key: Secret,
    /// How often usage is sampled; also the period a usage transaction id is derived from.
    pub usage_interval: Duration,
    /// How often the outbox is read when idle.
    pub poll_interval: Duration,
    /// First retry delay after a failed send; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How a site's usage is measured; `None` asks the site's agent ([`AgentMeter`]).
    pub meter: Option<Meter>,
}

impl BillingConfig {
    pub fn new(url: impl Into<String>, api_key: Secret) -> Self {
        BillingConfig {
            url: url.into(),
            api_key,
            usage_interval: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            meter: None,
        }
    }
}

/// `bytes` as decimal gigabytes (10^9), exactly, without floating point: "5.5", "0.000001".
pub fn gb_string(bytes: u64) -> String {
    let whole = bytes / 1_000_000_000;
    let frac = bytes % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:09}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gigabytes_are_exact() {
        assert_eq!(gb_string(0), "0");
        assert_eq!(gb_string(5_500_000_000), "5.5");
        assert_eq!(gb_string(1_000), "0.000001");
        assert_eq!(gb_string(3_000_000_001), "3.000000001");
    }
}
