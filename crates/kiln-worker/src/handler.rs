//! What job handlers see and return, and the per-kind router apalis calls.

use apalis_core::task::Task;
use futures::future::BoxFuture;
use kiln_queue::{AttemptDetails, ClaimedJob, JobKind};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Per-attempt context handed to a handler next to its job.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Job id.
    pub job_id: i64,
    /// Attempt number (1-based).
    pub attempt: i32,
    /// The worker running it (for labels).
    pub worker_id: Arc<str>,
    /// Wall-clock limit of this attempt.
    pub timeout: Duration,
    /// Fires when the attempt must stop (cancel, timeout, lease lost, shutdown).
    pub cancel: CancellationToken,
    /// What the handler's container reported, stored on the attempt row (see [`JobContext::record`]).
    pub details: Arc<Mutex<Option<AttemptDetails>>>,
}

impl JobContext {
    /// Records what this attempt's sandbox reported (exit code, logs, diff, timings); it is
    /// written with the attempt however the handler ends, success or failure.
    pub fn record(&self, details: AttemptDetails) {
        *self.details.lock().expect("attempt details lock") = Some(details);
    }

    /// Takes the recorded details (the lease layer does, when the attempt ends).
    pub(crate) fn take_details(&self) -> Option<AttemptDetails> {
        self.details.lock().expect("attempt details lock").take()
    }
}

/// A handler's failure: retried with backoff unless `retryable` is false.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl JobError {
    /// A failure worth retrying (network, daemon busy…).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
    /// A failure no retry can fix (bad payload, image missing…).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Runs one kind of job.
pub trait Handler: Send + Sync + 'static {
    /// Runs `job`; the returned JSON is stored as its result.
    fn run(
        &self,
        job: ClaimedJob,
        ctx: JobContext,
    ) -> BoxFuture<'static, Result<serde_json::Value, JobError>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(ClaimedJob, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<serde_json::Value, JobError>> + Send + 'static,
{
    fn run(
        &self,
        job: ClaimedJob,
        ctx: JobContext,
    ) -> BoxFuture<'static, Result<serde_json::Value, JobError>> {
        Box::pin(self(job, ctx))
    }
}

/// The apalis service of a Kiln worker: sends each job to its kind's handler.
#[derive(Clone, Default)]
pub struct Router {
    handlers: Arc<HashMap<JobKind, Arc<dyn Handler>>>,
}

impl Router {
    /// A router over `handlers`.
    pub fn new(handlers: HashMap<JobKind, Arc<dyn Handler>>) -> Self {
        Self {
            handlers: Arc::new(handlers),
        }
    }

    /// Kinds this router can run.
    pub fn kinds(&self) -> impl Iterator<Item = JobKind> + '_ {
        self.handlers.keys().copied()
    }
}

impl tower::Service<Task<ClaimedJob>> for Router {
    type Response = serde_json::Value;
    type Error = JobError;
    type Future = BoxFuture<'static, Result<serde_json::Value, JobError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<ClaimedJob>) -> Self::Future {
        let ctx = task.data().get::<JobContext>().cloned();
        let job = task.args;
        let Some(ctx) = ctx else {
            return Box::pin(async {
                Err(JobError::permanent("job reached the router without its context"))
            });
        };
        match self.handlers.get(&job.kind) {
            Some(handler) => handler.run(job, ctx),
            None => {
                let kind = job.kind;
                Box::pin(async move {
                    Err(JobError::permanent(format!(
                        "this worker has no handler for kind `{kind}`"
                    )))
                })
            }
        }
    }
}
