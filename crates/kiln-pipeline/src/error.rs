//! Errors of pipelines.

use kiln_artifacts::ArtifactError;
use kiln_queue::QueueError;
use kiln_validate::ValidateError;

/// What can go wrong submitting or reading a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The workspace could not be packed, stored or read (too large, unreadable, bad git ref).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The workspace has no recognised language, or a named language is unknown.
    #[error(transparent)]
    Validate(#[from] ValidateError),
    /// Enqueueing or reading jobs failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A database call failed.
    #[error("pipeline: {op}: {source}")]
    Database {
        /// The operation.
        op: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// No such pipeline.
    #[error("pipeline {0} not found")]
    NotFound(i64),
    /// [`wait`](crate::wait) gave up.
    #[error("pipeline {id} not finished after {waited:?}")]
    WaitTimedOut {
        /// The pipeline.
        id: i64,
        /// How long it waited.
        waited: std::time::Duration,
    },
}

impl PipelineError {
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> PipelineError {
        move |source| PipelineError::Database { op, source }
    }
}
