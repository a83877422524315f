//! Measuring a site's usage. Press never makes a figure up: a site nobody measured sends no
//! usage event.
//!
//! [`AgentMeter`] asks the site's agent at `GET /agent/benches/{bench}/sites/{site}/usage`
//! (Bearer = the agent password) for `{"database_bytes": <int>, "files_bytes": <int>}`, which
//! the agent's driver measures from the site's database and files, and treats 404 (an agent
//! predating that endpoint, or an unknown site) as "not measured".

use crate::store::{Server, Site};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// One site's measured size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub database_bytes: u64,
    pub files_bytes: u64,
}

impl Usage {
    pub fn total_bytes(&self) -> u64 {
        self.database_bytes.saturating_add(self.files_bytes)
    }
}

pub type MeterFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Usage>, String>> + Send + 'a>>;

/// Measures a site; `Ok(None)` means it cannot be measured (no event is sent).
pub trait UsageMeter: Send + Sync {
    fn measure<'a>(&'a self, site: &'a Site, server: &'a Server) -> MeterFuture<'a>;
}

#[derive(Clone)]
pub struct Meter(pub Arc<dyn UsageMeter>);

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meter(..)")
    }
}

/// Asks the site's agent (see the module doc for the contract).
pub struct AgentMeter {
    http: reqwest::Client,
}

impl Default for AgentMeter {
    fn default() -> Self {
        AgentMeter {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }
}

impl UsageMeter for AgentMeter {
    fn measure<'a>(&'a self, site: &'a Site, server: &'a Server) -> MeterFuture<'a> {
        Box::pin(async move {
            let url = format!(
                "{}/agent/benches/{}/sites/{}/usage",
                server.agent_url.trim_end_matches('/'),
                site.bench,
                site.name
            );
            let resp = self
                .http
                .get(url)
                .bearer_auth(&server.agent_password)
                .send()
                .await
                .map_err(|e| format!("agent unreachable: {}", e.without_url()))?;
            if resp.status().as_u16() == 404 {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(format!("agent answered {}", resp.status().as_u16()));
            }
            let v: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| format!("agent usage: {}", e.without_url()))?;
            let field = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
            match (field("database_bytes"), field("files_bytes")) {
                (Some(database_bytes), Some(files_bytes)) => Ok(Some(Usage {
                    database_bytes,
                    files_bytes,
                })),
                _ => Err("agent usage lacks database_bytes/files_bytes".into()),
            }
        })
    }
}
