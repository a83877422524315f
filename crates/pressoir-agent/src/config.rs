//! The agent's typed configuration. Secrets arrive resolved (the binary reads flags, the
//! environment and files); the library never reads the environment.

use crate::names::{AppName, BenchName};
use pressoir_core::{RateSpec, Secret};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The reference's port.
pub const DEFAULT_PORT: u16 = 25052;

/// Apps the default bench offers.
pub const DEFAULT_APPS: &[&str] = &[
    "frappe", "erpnext", "hrms", "crm", "helpdesk", "insights", "lms", "wiki", "drive", "builder",
    "payments",
];

pub const DEFAULT_BENCH: &str = "bench-0001";

/// Which driver runs the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverKind {
    /// Sites are directories with a `site_config.json` and an SQLite database; no Frappe needed.
    #[default]
    Local,
}

impl std::str::FromStr for DriverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(DriverKind::Local),
            other => Err(format!("driver '{other}' is unknown; expected: local")),
        }
    }
}

/// The benches of this server and the apps each offers. The first is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Benches {
    default: BenchName,
    apps: BTreeMap<BenchName, Vec<AppName>>,
}

impl Benches {
    /// Benches from `(name, apps)` pairs; the first is the default. Every bench must offer frappe.
    pub fn new(benches: Vec<(String, Vec<String>)>) -> Result<Benches, String> {
        let mut map = BTreeMap::new();
        let mut default = None;
        for (name, apps) in benches {
            let bench = BenchName::parse(&name).map_err(|m| format!("bench name '{name}' {m}"))?;
            let apps = apps
                .iter()
                .map(|a| {
                    AppName::parse(a).map_err(|m| format!("app name '{a}' on bench '{name}' {m}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !apps.iter().any(|a| a.as_str() == "frappe") {
                return Err(format!("bench '{name}' must offer frappe"));
            }
            default.get_or_insert_with(|| bench.clone());
            map.insert(bench, apps);
        }
        let default = default.ok_or_else(|| "at least one bench is required".to_string())?;
        Ok(Benches { default, apps: map })
    }

    pub fn default_bench(&self) -> &BenchName {
        &self.default
    }

    pub fn apps(&self, bench: &BenchName) -> Option<&[AppName]> {
        self.apps.get(bench).map(Vec::as_slice)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BenchName, &[AppName])> {
        self.apps.iter().map(|(b, a)| (b, a.as_slice()))
    }
}

impl Default for Benches {
    fn default() -> Self {
        Benches::new(vec![(
            DEFAULT_BENCH.to_string(),
            DEFAULT_APPS.iter().map(|s| s.to_string()).collect(),
        )])
        .expect("the default bench is valid")
    }
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `agent.sqlite` (jobs) and `benches/`.
    pub data_dir: PathBuf,
    /// The agent password callers present (Bearer, or the password part of Basic). Only its
    /// hash is kept by the router; the value itself is used to authenticate pushes to Press.
    pub password: Secret,
    pub rate_limit: RateSpec,
    /// How many jobs run at once (jobs on one site still run one after another).
    pub workers: usize,
    pub driver: DriverKind,
    pub benches: Benches,
    /// The job store; `None` is `<data_dir>/agent.sqlite`. A `postgres://` URL also works
    /// (each agent then needs its own `database_schema`).
    pub database_url: Option<String>,
    pub database_schema: String,
    /// When set, changed jobs are pushed to `<press_url>/api/method/press.api.callbacks.agent_jobs`.
    pub press_url: Option<String>,
    /// This server's name, as Press knows it (sent with every push).
    pub server_name: String,
    /// The least time between two pushes (at least one second in production).
    pub push_interval: Duration,
    /// Offsite storage for backups (any S3: Pressoir's own, MinIO, AWS). `None`: the backup
    /// and restore jobs fail with a clear reason.
    pub storage: Option<StorageConfig>,
}

/// Where site backups go: an S3 bucket, reached path-style at `endpoint`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// e.g. `http://127.0.0.1:9000` or `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
    /// Keys start with `<prefix>/` (empty: at the bucket's root).
    pub prefix: String,
}

impl StorageConfig {
    /// Region `us-east-1`, prefix `sites`.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        access_key: impl Into<String>,
        secret_key: Secret,
    ) -> StorageConfig {
        StorageConfig {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            region: "us-east-1".to_string(),
            access_key: access_key.into(),
            secret_key,
            prefix: "sites".to_string(),
        }
    }
}

impl Config {
    /// Defaults: the reference's 50/min limit, 4 workers, the local driver, the default bench.
    pub fn new(data_dir: impl Into<PathBuf>, password: Secret) -> Config {
        Config {
            data_dir: data_dir.into(),
            password,
            rate_limit: RateSpec::per(50, Duration::from_secs(60)),
            workers: 4,
            driver: DriverKind::Local,
            benches: Benches::default(),
            database_url: None,
            database_schema: "agent".to_string(),
            press_url: None,
            server_name: "app-server-1".to_string(),
            push_interval: Duration::from_secs(1),
            storage: None,
        }
    }
}
