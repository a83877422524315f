//! Drivers run the steps of jobs on a server. The job model ([`crate::job`]) decides which
//! steps a job has; a driver decides what each step does on this machine.
//!
//! `local` (this crate) needs no Frappe: a site is a directory with `site_config.json` and an
//! SQLite database. Later drivers (Frappe's `bench` CLI, MariaDB, backups to S3) implement the
//! same trait.

pub mod local;

use crate::job::{JobSpec, SiteRef, StepKind};
use futures::future::BoxFuture;
use serde_json::Value;

/// What a step runs with.
#[derive(Debug, Clone, Copy)]
pub struct StepContext {
    pub job_id: i64,
    /// The step was Running when the agent stopped, and runs again: it must finish what the
    /// interrupted run began (or see that it already did) rather than fail on its traces.
    pub resumed: bool,
}

/// A step that succeeded: what it did (never a secret), and the job's result if it sets one.
#[derive(Debug, Clone, Default)]
pub struct StepDone {
    pub output: String,
    pub result: Option<Value>,
}

/// A step that failed: what it did before failing, and why (the job's error).
#[derive(Debug, Clone)]
pub struct StepFailed {
    pub output: String,
    pub reason: String,
}

impl StepFailed {
    pub fn new(output: impl Into<String>, reason: impl Into<String>) -> Self {
        StepFailed {
            output: output.into(),
            reason: reason.into(),
        }
    }
}

pub type StepResult = Result<StepDone, StepFailed>;

/// What a site takes on disk, as measured by its driver (Press bills storage from it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The site's database: its file(s), journals included.
    pub database_bytes: u64,
    /// Everything else the site keeps (files, config, logs).
    pub files_bytes: u64,
}

pub trait Driver: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Whether a step interrupted mid-way (the agent was killed) may simply run again. A step
    /// that is not resumable fails its job with the reason "interrupted".
    fn resumable(&self, step: StepKind) -> bool;

    /// Runs one step of `job`. Output and errors must never contain a secret.
    fn run<'a>(
        &'a self,
        job: &'a JobSpec,
        step: StepKind,
        ctx: StepContext,
    ) -> BoxFuture<'a, StepResult>;

    /// Measures what `site` takes on disk; `Ok(None)` when the site does not exist. The
    /// error is logged, never shown to callers.
    fn usage<'a>(&'a self, site: &'a SiteRef) -> BoxFuture<'a, Result<Option<Usage>, String>>;
}
