//! The worker handlers of `test`, `lint` and `security-scan`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kiln_queue::{ClaimedJob, JobKind};
use kiln_sandbox::{JobLabels, Limits, Sandbox};
use kiln_worker::{Finished, Job, JobContext, JobError, JobHandler, KindError, WorkerBuilderKiln};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use kiln_artifacts::ArtifactError;

use crate::cache;
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
    settings: Settings,
}

/// Per-fleet settings of the validation kinds, from `workers.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Workspace quota (bytes, files) per queue; queues not named get the sandbox's default
    /// (1 GiB, 100,000 files).
    pub queue_quotas: HashMap<String, (u64, u64)>,
    /// Bytes of live log stored per attempt (`[worker] live_log_cap_bytes`).
    pub live_log_cap_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queue_quotas: HashMap::new(),
            live_log_cap_bytes: kiln_queue::logs::DEFAULT_LIVE_LOG_CAP,
        }
    }
}

impl Settings {
    /// The settings a worker's queues and `[worker] live_log_cap_bytes` give: each queue's
    /// quota, its unset half defaulted.
    pub fn from_queues(queues: &[kiln_worker::QueueConfig], live_log_cap_bytes: u64) -> Self {
        let d = Limits::default();
        let queue_quotas = queues
            .iter()
            .filter(|q| q.workspace_quota_bytes.is_some() || q.workspace_quota_files.is_some())
            .map(|q| {
                let quota = (
                    q.workspace_quota_bytes.unwrap_or(d.disk_bytes),
                    q.workspace_quota_files.unwrap_or(d.disk_files),
                );
                (q.name.clone(), quota)
            })
            .collect();
        Settings {
            queue_quotas,
            live_log_cap_bytes,
        }
    }

    /// The sandbox limits of a job claimed from `queue`.
    pub fn limits_for(&self, queue: &str) -> Limits {
        let mut limits = Limits::default();
        if let Some(&(bytes, files)) = self.queue_quotas.get(queue) {
            limits.disk_bytes = bytes;
            limits.disk_files = files;
        }
        limits
    }
}

/// The kinds a [`Validator`] handles.
pub const KINDS: [JobKind; 3] = [JobKind::Test, JobKind::Lint, JobKind::SecurityScan];

/// What a validation job returns: test results for `test`, findings for `lint` and
/// `security-scan` (serialized as the bare object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ValidationOutput {
    /// Of a `test` job.
    Test(crate::TestResult),
    /// Of a `lint` or `security-scan` job.
    Findings(crate::Findings),
}

/// How long a worker whose Docker engine did not answer claims no validation job.
pub const ENGINE_DOWN_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

impl KindError for ValidateError {
    fn to_job_error(&self) -> JobError {
        if let ValidateError::Sandbox(e @ kiln_sandbox::SandboxError::DaemonUnavailable(_)) = self {
            return JobError::Unavailable {
                message: e.to_string(),
                pause: ENGINE_DOWN_PAUSE,
            };
        }
        if let ValidateError::Artifact(ArtifactError::Database { source, .. }) = self {
            if kiln_worker::database_unreachable(source) {
                return JobError::database_unavailable(self.to_string());
            }
        }
        if self.is_retryable() {
            JobError::retryable(self.to_string())
        } else {
            JobError::permanent(self.to_string())
        }
    }
}

impl JobHandler for Validator {
    type Payload = ValidationPayload;
    type Output = ValidationOutput;
    type Error = ValidateError;

    async fn run(
        &self,
        job: Job<ValidationPayload>,
        ctx: JobContext,
    ) -> Finished<ValidationOutput, ValidateError> {
        self.handle(job.meta, job.payload, ctx).await
    }
}

/// Time kept back from a job's timeout for reading reports and recording the attempt: 10 %,
/// between 2 and 10 seconds.
pub fn tool_budget(job_timeout: Duration) -> Duration {
    let margin = (job_timeout / 10).clamp(Duration::from_secs(2), Duration::from_secs(10));
    job_timeout.saturating_sub(margin).max(Duration::from_secs(1))
}

impl Validator {
    /// A validator over `pool` and `sandbox` with the image tags `images`.
    pub fn new(pool: PgPool, sandbox: Sandbox, images: Images) -> Self {
        Self::with_settings(pool, sandbox, images, Settings::default())
    }

    /// Like [`Validator::new`], with per-queue workspace quotas and a live-log cap.
    pub fn with_settings(pool: PgPool, sandbox: Sandbox, images: Images, settings: Settings) -> Self {
        Validator {
            inner: Arc::new(Inner {
                pool,
                sandbox,
                images,
                max_workspace_bytes: kiln_artifacts::DEFAULT_MAX_BYTES,
                settings,
            }),
        }
    }

    /// Registers the handler of the three kinds on a worker builder (the validation module
    /// does this through the registry; tests and embedders may call it directly).
    pub fn register(&self, builder: WorkerBuilderKiln) -> WorkerBuilderKiln {
        let handler: Arc<dyn kiln_worker::Handler> = Arc::new(kiln_worker::typed(self.clone()));
        KINDS
            .iter()
            .fold(builder, |b, kind| b.shared_handler(*kind, handler.clone()))
    }

    /// Runs one job: loads its workspace, runs its kind's tools, and returns the typed result
    /// with the attempt's details (the merged sandbox report). A tool that ran and found
    /// problems is a success.
    pub async fn handle(
        &self,
        job: ClaimedJob,
        payload: ValidationPayload,
        ctx: JobContext,
    ) -> Finished<ValidationOutput, ValidateError> {
        let kind = job.kind;
        let logs = LogForwarder::with_cap(
            self.inner.pool.clone(),
            job.id,
            job.attempt,
            self.inner.settings.live_log_cap_bytes,
        );
        let mut record = Record::default();
        let work = self.run(&job, &payload, &ctx, &logs, &mut record);
        let out = tokio::select! {
            r = work => r,
            _ = ctx.cancel.cancelled() => Err(ValidateError::Stopped),
        };
        logs.finish().await;
        if let Err(e) = &out {
            tracing::warn!(job = job.id, %kind, error = %e, "validation job could not run");
        }
        // Whatever happened, the attempt records what the sandbox reported (or where the
        // cached result came from).
        let Record { runs, cached } = record;
        let details = cached.or_else(|| (!runs.is_empty()).then(|| details::merge(&runs).to_json()));
        Finished::new(out).with_details(details)
    }

    async fn run(
        &self,
        job: &ClaimedJob,
        payload: &ValidationPayload,
        ctx: &JobContext,
        logs: &LogForwarder,
        record: &mut Record,
    ) -> Result<ValidationOutput, ValidateError> {
        let kind = job.kind;
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
        let images = self.image_ids(kind, &projects).await;
        let inputs = cache::Inputs {
            kind,
            workspace: &payload.workspace,
            projects: &projects,
            honour: payload.honour_suppressions,
            images: &images,
        };
        let key = cache::key(&inputs);
        if let Some(key) = &key {
            match cache::get(&self.inner.pool, key).await {
                Ok(Some(hit)) => {
                    logs.note(&format!(
                        "{kind}: the same inputs were validated before (job {}): cached result",
                        hit.source_job.map_or("?".into(), |j| j.to_string())
                    ));
                    record.cached =
                        Some(serde_json::json!({"cache": {"key": key.0, "source_job": hit.source_job}}));
                    return Ok(hit.output);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job = job.id, error = %e, "validation cache unreadable; running the tools")
                }
            }
        }
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
            limits: self.inner.settings.limits_for(&job.queue),
        };
        let out = run_tools(
            &at,
            kind,
            &tree,
            &projects,
            payload.honour_suppressions,
            &mut record.runs,
        )
        .await?;
        if let Some(key) = &key {
            if let Err(e) = cache::put(&self.inner.pool, key, &inputs, &out, job.id).await {
                tracing::warn!(job = job.id, error = %e, "validation cache not written");
            }
        }
        Ok(out)
    }

    /// The engine's ids of the images a job of `kind` on `projects` runs in (empty ids when
    /// the engine cannot say: no cache key then).
    async fn image_ids(&self, kind: JobKind, projects: &[language::Project]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for name in cache::images_of(kind, projects) {
            let Ok(tag) = self.inner.images.tag(name) else {
                return Vec::new();
            };
            v.push((tag.to_string(), self.inner.sandbox.image_id(tag).await));
        }
        v
    }
}

/// What an attempt leaves for its record: the sandbox runs, or where a cached result came from.
#[derive(Default)]
struct Record {
    runs: Vec<details::Run>,
    cached: Option<serde_json::Value>,
}

/// Runs the tools of `kind` on `tree`'s `projects`.
async fn run_tools(
    at: &Attempt<'_>,
    kind: JobKind,
    tree: &kiln_artifacts::Tree,
    projects: &[language::Project],
    honour: bool,
    runs: &mut Vec<details::Run>,
) -> Result<ValidationOutput, ValidateError> {
    let ws = runner::sandbox_workspace(tree)?;
    Ok(match kind {
        JobKind::Test => ValidationOutput::Test(runner::test(at, &ws, projects, runs).await?),
        JobKind::Lint => ValidationOutput::Findings(runner::lint(at, &ws, projects, honour, runs).await?),
        JobKind::SecurityScan => {
            ValidationOutput::Findings(runner::security(at, &ws, projects, honour, runs).await?)
        }
        other => {
            return Err(ValidateError::Payload(format!(
                "kind `{other}` is not a validation kind"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_the_database_cannot_give_is_handed_back_not_failed() {
        let down = ValidateError::Artifact(ArtifactError::Database {
            op: "load",
            source: sqlx::Error::PoolTimedOut,
        });
        assert!(
            matches!(down.to_job_error(), JobError::Unavailable { pause, .. } if pause == kiln_worker::DATABASE_DOWN_PAUSE),
            "{:?}",
            down.to_job_error()
        );
        let missing = ValidateError::Artifact(ArtifactError::Database {
            op: "load",
            source: sqlx::Error::RowNotFound,
        });
        assert!(matches!(missing.to_job_error(), JobError::Retryable(_)));
    }

    #[test]
    fn a_queue_gets_its_own_quota_and_others_the_default() {
        let queues = [
            kiln_worker::QueueConfig::new("small").workspace_quota(16 << 20, 500),
            kiln_worker::QueueConfig {
                workspace_quota_files: Some(50),
                ..kiln_worker::QueueConfig::new("few-files")
            },
            kiln_worker::QueueConfig::new("test"),
        ];
        let s = Settings::from_queues(&queues, 1 << 16);
        assert_eq!(s.live_log_cap_bytes, 1 << 16);
        let small = s.limits_for("small");
        assert_eq!((small.disk_bytes, small.disk_files), (16 << 20, 500));
        let few = s.limits_for("few-files");
        assert_eq!((few.disk_bytes, few.disk_files), (1 << 30, 50));
        assert_eq!(s.limits_for("test"), Limits::default());
        assert_eq!(s.limits_for("unknown"), Limits::default());
    }

    #[test]
    fn the_tools_get_most_of_the_timeout() {
        assert_eq!(tool_budget(Duration::from_secs(120)), Duration::from_secs(110));
        assert_eq!(tool_budget(Duration::from_secs(20)), Duration::from_secs(18));
        assert_eq!(tool_budget(Duration::from_secs(5)), Duration::from_secs(3));
    }
}
