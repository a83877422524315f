//! The worker pool: runs jobs step by step with the driver, records every step in the store,
//! and recovers after a restart (Pending jobs run; a job caught Running resumes at its first
//! unfinished step when that step may run again, and otherwise ends Failure "interrupted").

use crate::config::Benches;
use crate::driver::{Driver, StepContext};
use crate::error::Error;
use crate::job::{JobSpec, JobStatus, StepKind, StepStatus};
use crate::sched::Scheduler;
use crate::store::{Store, Summary, Then};
use pressoir_core::Shutdown;
use pressoir_core::clock::now_ms;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The error recorded for a job whose step was cut short and cannot run again.
pub const INTERRUPTED: &str = "interrupted";

pub struct Engine {
    pub store: Store,
    pub driver: Arc<dyn Driver>,
    pub benches: Benches,
    pub sched: Scheduler,
    /// Fires on every change of a job (the pusher listens).
    pub changed: Notify,
}

impl Engine {
    pub fn new(store: Store, driver: Arc<dyn Driver>, benches: Benches) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            driver,
            benches,
            sched: Scheduler::default(),
            changed: Notify::new(),
        })
    }

    /// Queues what a previous run left unfinished. Call before the workers start.
    pub async fn recover(&self) -> Result<usize, Error> {
        let unfinished = self.store.unfinished().await?;
        let mut queued = 0;
        for (id, key) in unfinished {
            let Some(work) = self.store.work(id).await? else {
                continue;
            };
            if work.status == JobStatus::Running {
                let current = work
                    .steps
                    .iter()
                    .position(|(_, s)| matches!(s, StepStatus::Running));
                if let Some(idx) = current {
                    let kind = StepKind::from_name(&work.steps[idx].0);
                    if !kind.is_some_and(|k| self.driver.resumable(k)) {
                        tracing::warn!(job = id, step = %work.steps[idx].0, "job was interrupted mid-step; failing it");
                        self.store
                            .fail(
                                id,
                                Some(idx as i64),
                                "the agent stopped while this step ran, and it cannot safely run again",
                                INTERRUPTED,
                                now_ms(),
                            )
                            .await?;
                        continue;
                    }
                    tracing::info!(job = id, step = %work.steps[idx].0, "resuming interrupted job");
                }
            }
            self.sched.push(id, key);
            queued += 1;
        }
        self.changed.notify_one();
        Ok(queued)
    }

    /// Queues jobs just submitted (those not seen before).
    pub fn enqueue(&self, submitted: &[Summary]) {
        for s in submitted.iter().filter(|s| s.created) {
            self.sched.push(s.id, s.site_key.clone());
        }
        self.changed.notify_one();
    }

    pub fn spawn_workers(self: &Arc<Self>, n: usize, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        (0..n.max(1))
            .map(|_| {
                let engine = self.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    loop {
                        let id = tokio::select! {
                            id = engine.sched.next() => id,
                            _ = shutdown.wait() => return,
                        };
                        if shutdown.is_triggered() {
                            // Still Pending in the store: it runs after the restart.
                            return;
                        }
                        // A job runs in its own task so that a panicking step fails its job
                        // instead of taking a worker down with it.
                        let (e, s) = (engine.clone(), shutdown.clone());
                        match tokio::spawn(async move { e.run_job(id, &s).await }).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::error!(job = id, error = %e, "job could not be run"),
                            Err(join) => {
                                tracing::error!(job = id, error = %join, "job task failed");
                                if let Err(e) = engine.store.fail(id, None, "", "internal error while running the step", now_ms()).await {
                                    tracing::error!(job = id, error = %e, "cannot record the failure");
                                }
                            }
                        }
                        engine.sched.finish(id);
                        engine.changed.notify_one();
                    }
                })
            })
            .collect()
    }

    /// Runs a job from its first unfinished step.
    async fn run_job(&self, id: i64, shutdown: &Shutdown) -> Result<(), Error> {
        let Some(work) = self.store.work(id).await? else {
            return Ok(());
        };
        if work.status.is_terminal() {
            return Ok(());
        }
        let spec = match JobSpec::from_stored(
            &work.job_type,
            &work.data,
            work.secrets.as_ref(),
            &self.benches,
        ) {
            Ok(s) => s,
            Err(e) => {
                self.store
                    .fail(
                        id,
                        None,
                        "",
                        &format!("the stored job cannot run: {e}"),
                        now_ms(),
                    )
                    .await?;
                return Ok(());
            }
        };
        let plan = spec.plan();
        let Some(mut idx) = work
            .steps
            .iter()
            .position(|(_, s)| matches!(s, StepStatus::Pending | StepStatus::Running))
        else {
            self.store.succeed_job(id, now_ms()).await?;
            return Ok(());
        };
        let mut resumed = work.steps[idx].1 == StepStatus::Running;
        if !resumed {
            self.store.start_step(id, idx as i64, now_ms()).await?;
            self.changed.notify_one();
        }
        loop {
            let name = &work.steps[idx].0;
            let Some(kind) = plan.get(idx).copied().filter(|k| k.name() == name.as_str()) else {
                self.store
                    .fail(
                        id,
                        Some(idx as i64),
                        "",
                        &format!("step '{name}' is not part of this job's plan"),
                        now_ms(),
                    )
                    .await?;
                return Ok(());
            };
            let ctx = StepContext {
                job_id: id,
                resumed,
            };
            let outcome = self.driver.run(&spec, kind, ctx).await;
            let now = now_ms();
            match outcome {
                Ok(done) => {
                    let last = idx + 1 >= work.steps.len();
                    let then = if last {
                        Then::Succeed
                    } else if shutdown.is_triggered() {
                        Then::Stop
                    } else {
                        Then::Start(idx as i64 + 1)
                    };
                    let output = if resumed {
                        format!("(resumed after a restart)\n{}", done.output)
                    } else {
                        done.output
                    };
                    self.store
                        .succeed_step(id, idx as i64, &output, done.result.as_ref(), then, now)
                        .await?;
                    self.changed.notify_one();
                    match then {
                        Then::Start(_) => {
                            idx += 1;
                            resumed = false;
                        }
                        _ => return Ok(()),
                    }
                }
                Err(failed) => {
                    self.store
                        .fail(id, Some(idx as i64), &failed.output, &failed.reason, now)
                        .await?;
                    self.changed.notify_one();
                    return Ok(());
                }
            }
        }
    }
}
