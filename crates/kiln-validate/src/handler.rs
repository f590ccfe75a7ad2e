//! The worker handlers of `test`, `lint` and `security-scan`.

use std::sync::Arc;
use std::time::Duration;

use kiln_queue::{ClaimedJob, JobKind};
use kiln_sandbox::{JobLabels, Sandbox};
use kiln_worker::{JobContext, JobError, WorkerBuilderKiln};
use sqlx::PgPool;

use crate::details;
use crate::error::ValidateError;
use crate::language;
use crate::logs::LogForwarder;
use crate::payload::ValidationPayload;
use crate::runner::{self, Attempt};

pub use crate::runner::Images;

/// Runs validation jobs: the database (workspaces, live logs), the sandbox and the images.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    sandbox: Sandbox,
    images: Images,
    max_workspace_bytes: u64,
}

/// The kinds a [`Validator`] handles.
pub const KINDS: [JobKind; 3] = [JobKind::Test, JobKind::Lint, JobKind::SecurityScan];

/// Time kept back from a job's timeout for reading reports and recording the attempt: 10 %,
/// between 2 and 10 seconds.
pub fn tool_budget(job_timeout: Duration) -> Duration {
    let margin = (job_timeout / 10).clamp(Duration::from_secs(2), Duration::from_secs(10));
    job_timeout.saturating_sub(margin).max(Duration::from_secs(1))
}

impl Validator {
    /// A validator over `pool` and `sandbox` with the image tags `images`.
    pub fn new(pool: PgPool, sandbox: Sandbox, images: Images) -> Self {
        Validator {
            inner: Arc::new(Inner {
                pool,
                sandbox,
                images,
                max_workspace_bytes: kiln_artifacts::DEFAULT_MAX_BYTES,
            }),
        }
    }

    /// Registers the three handlers on a worker builder.
    pub fn register(&self, mut builder: WorkerBuilderKiln) -> WorkerBuilderKiln {
        for kind in KINDS {
            let v = self.clone();
            builder = builder.handler(kind, move |job: ClaimedJob, ctx: JobContext| {
                let v = v.clone();
                async move { v.handle(job, ctx).await }
            });
        }
        builder
    }

    /// Runs one job: loads its workspace, runs its kind's tools, records the attempt's details
    /// and returns the typed result. A tool that ran and found problems is a success.
    pub async fn handle(&self, job: ClaimedJob, ctx: JobContext) -> Result<serde_json::Value, JobError> {
        let kind = job.kind;
        let to_job_error = |e: ValidateError| {
            tracing::warn!(job = job.id, %kind, error = %e, "validation job could not run");
            if e.is_retryable() {
                JobError::retryable(e.to_string())
            } else {
                JobError::permanent(e.to_string())
            }
        };
        let payload = ValidationPayload::from_json(&job.payload).map_err(to_job_error)?;
        let logs = LogForwarder::start(self.inner.pool.clone(), job.id, job.attempt);
        let mut runs = Vec::new();
        let work = self.run(kind, &job, &payload, &ctx, &logs, &mut runs);
        let out = tokio::select! {
            r = work => Some(r),
            _ = ctx.cancel.cancelled() => None,
        };
        // Whatever happened, the attempt records what the sandbox reported.
        if !runs.is_empty() {
            ctx.record(details::merge(&runs));
        }
        logs.finish().await;
        match out {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(to_job_error(e)),
            None => Err(JobError::retryable(
                "stopped: the attempt was cancelled, timed out or the worker is shutting down",
            )),
        }
    }

    async fn run(
        &self,
        kind: JobKind,
        job: &ClaimedJob,
        payload: &ValidationPayload,
        ctx: &JobContext,
        logs: &LogForwarder,
        runs: &mut Vec<details::Run>,
    ) -> Result<serde_json::Value, ValidateError> {
        let deadline = tokio::time::Instant::now() + tool_budget(ctx.timeout);
        let tree = kiln_artifacts::load(
            &self.inner.pool,
            &payload.workspace,
            self.inner.max_workspace_bytes,
        )
        .await?;
        let projects = language::select(&tree, &payload.languages);
        if projects.is_empty() {
            return Err(ValidateError::NoLanguage);
        }
        let names: Vec<String> = projects
            .iter()
            .map(|p| {
                if p.root.is_empty() {
                    p.language.to_string()
                } else {
                    format!("{} in {}/", p.language, p.root)
                }
            })
            .collect();
        logs.note(&format!("{kind} on {} ({})", payload.workspace, names.join(", ")));
        let ws = runner::sandbox_workspace(&tree)?;
        let at = Attempt {
            sandbox: &self.inner.sandbox,
            images: &self.inner.images,
            labels: JobLabels {
                job_id: job.id,
                attempt: job.attempt,
                worker_id: ctx.worker_id.to_string(),
            },
            deadline,
            logs: Some(logs),
        };
        let value = match kind {
            JobKind::Test => serde_json::to_value(runner::test(&at, &ws, &projects, runs).await?),
            JobKind::Lint => serde_json::to_value(runner::lint(&at, &ws, &projects, runs).await?),
            JobKind::SecurityScan => serde_json::to_value(
                runner::security(&at, &ws, &projects, payload.honour_suppressions, runs).await?,
            ),
            other => {
                return Err(ValidateError::Payload(format!(
                    "kind `{other}` is not a validation kind"
                )))
            }
        };
        Ok(value.expect("results serialise"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tools_get_most_of_the_timeout() {
        assert_eq!(tool_budget(Duration::from_secs(120)), Duration::from_secs(110));
        assert_eq!(tool_budget(Duration::from_secs(20)), Duration::from_secs(18));
        assert_eq!(tool_budget(Duration::from_secs(5)), Duration::from_secs(3));
    }
}
