//! What job handlers see and return: the typed contract a kind implements ([`JobHandler`]),
//! the untyped [`Handler`] the router calls, and the adapter between them.

use apalis_core::task::Task;
use futures::future::BoxFuture;
use kiln_kinds::Payload;
use kiln_queue::{ClaimedJob, JobKind};
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
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
}

/// A handler's failure, saying what to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// Another attempt may succeed (network, daemon busy…): retried with the kind's backoff.
    #[error("{0}")]
    Retryable(String),
    /// Worth retrying, but not before this delay (a provider's `retry-after`).
    #[error("{message}")]
    RetryAfter {
        /// What went wrong.
        message: String,
        /// How long to wait before the next attempt.
        after: Duration,
    },
    /// No retry can fix it (bad input, image missing…): the job fails now.
    #[error("{0}")]
    Permanent(String),
    /// This worker cannot run jobs now (its Docker engine is unreachable): the job is handed
    /// back without spending an attempt, and the worker claims nothing for `pause`.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// How long the worker stops claiming.
        pause: Duration,
    },
}

impl JobError {
    /// A failure worth retrying with backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable(message.into())
    }
    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent(message.into())
    }
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, JobError::Permanent(_))
    }
    /// The database did not answer ([`database_unreachable`]): the job is not at fault, so it
    /// is handed back without spending an attempt and claims pause for
    /// [`DATABASE_DOWN_PAUSE`] (the hand-back itself is retried until the database is back).
    pub fn database_unavailable(message: impl Into<String>) -> Self {
        JobError::Unavailable {
            message: message.into(),
            pause: DATABASE_DOWN_PAUSE,
        }
    }
}

/// How long a worker whose database did not answer a handler claims nothing.
pub const DATABASE_DOWN_PAUSE: Duration = Duration::from_secs(2);

/// Whether `e` says the database could not be reached — the pool timed out or is closed, the
/// connection failed or dropped, or the server is shutting down or starting (SQLSTATE classes
/// 08 and 57P) — rather than that a statement was wrong.
pub fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// How a kind's own error maps onto what the queue does next: every kind's error enum
/// implements this (underway's `ToTaskResult`).
pub trait KindError: std::error::Error + Send + 'static {
    /// Retry with backoff, retry after a delay, or fail for good.
    fn to_job_error(&self) -> JobError;
}

impl KindError for JobError {
    fn to_job_error(&self) -> JobError {
        self.clone()
    }
}

/// How an attempt ended, as its handler returns it: the result and the attempt's details
/// (kind-owned JSON stored on the attempt row, whatever the result) together.
#[derive(Debug)]
pub struct Finished<O, E> {
    /// The output, or the error.
    pub result: Result<O, E>,
    /// What this attempt produced beyond its output (the sandbox report, tokens and cost…).
    pub details: Option<serde_json::Value>,
}

impl<O, E> Finished<O, E> {
    /// A finish with nothing to record beyond the result.
    pub fn new(result: Result<O, E>) -> Self {
        Finished {
            result,
            details: None,
        }
    }
    /// The same finish recording `details` on the attempt.
    pub fn with_details(mut self, details: Option<serde_json::Value>) -> Self {
        self.details = details;
        self
    }
}

/// A claimed job with its payload already typed.
#[derive(Debug, Clone)]
pub struct Job<P> {
    /// The job as claimed (its raw payload included).
    pub meta: ClaimedJob,
    /// The payload, deserialized and checked once.
    pub payload: P,
}

/// The typed contract of a job kind's handler (River's `Worker[T]`, graphile_worker_rs's task
/// handler): its payload, its output and its error enum. The router reaches it through
/// [`typed`], which deserializes the payload once and serializes the output.
pub trait JobHandler: Send + Sync + 'static {
    /// What jobs of this kind carry (checked at enqueue by `kiln_kinds::check_payload`).
    type Payload: Payload;
    /// What a successful attempt returns, stored as the job's result.
    type Output: Serialize + Send + 'static;
    /// What a failed attempt returns; it says whether to retry.
    type Error: KindError;

    /// Runs one attempt of `job`.
    fn run(
        &self,
        job: Job<Self::Payload>,
        ctx: JobContext,
    ) -> impl Future<Output = Finished<Self::Output, Self::Error>> + Send;
}

/// Runs one kind of job, untyped: what the router calls. Kinds implement [`JobHandler`] and
/// are adapted with [`typed`]; a plain `async fn(ClaimedJob, JobContext) -> Result<Value,
/// JobError>` is a handler too (tests, embedding).
pub trait Handler: Send + Sync + 'static {
    /// Runs `job`.
    fn run(
        &self,
        job: ClaimedJob,
        ctx: JobContext,
    ) -> BoxFuture<'static, Finished<serde_json::Value, JobError>>;
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
    ) -> BoxFuture<'static, Finished<serde_json::Value, JobError>> {
        let fut = self(job, ctx);
        Box::pin(async move { Finished::new(fut.await) })
    }
}

/// Adapts a typed [`JobHandler`] to the untyped [`Handler`].
pub fn typed<H: JobHandler>(handler: H) -> impl Handler {
    Typed(Arc::new(handler))
}

struct Typed<H>(Arc<H>);

impl<H: JobHandler> Handler for Typed<H> {
    fn run(
        &self,
        job: ClaimedJob,
        ctx: JobContext,
    ) -> BoxFuture<'static, Finished<serde_json::Value, JobError>> {
        let handler = self.0.clone();
        Box::pin(async move {
            // Payloads are checked at enqueue; one that still does not parse (written around
            // the API, or by an older version) fails for good, naming the field.
            let payload = match H::Payload::from_json(&job.payload) {
                Ok(p) => p,
                Err(e) => {
                    return Finished::new(Err(JobError::permanent(format!("payload: {e}"))));
                }
            };
            let done = handler.run(Job { meta: job, payload }, ctx).await;
            let result = match done.result {
                Ok(out) => serde_json::to_value(out)
                    .map_err(|e| JobError::permanent(format!("the output does not serialize: {e}"))),
                Err(e) => Err(e.to_job_error()),
            };
            Finished {
                result,
                details: done.details,
            }
        })
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
    type Response = Finished<serde_json::Value, JobError>;
    type Error = JobError;
    type Future = BoxFuture<'static, Result<Self::Response, JobError>>;

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
            Some(handler) => {
                let fut = handler.run(job, ctx);
                Box::pin(async move { Ok(fut.await) })
            }
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
