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
    /// For an API: the request field to blame when the submitter's input is at fault
    /// (`workspace`, `languages`, `git`), or None for Kiln's own failures (database, queue).
    pub fn client_field(&self) -> Option<&'static str> {
        match self {
            PipelineError::Validate(ValidateError::Language(..)) => Some("languages"),
            PipelineError::Validate(_) => Some("workspace"),
            PipelineError::Artifact(ArtifactError::Git(_) | ArtifactError::TimedOut(_)) => Some("git"),
            PipelineError::Artifact(
                ArtifactError::TooLarge { .. } | ArtifactError::Invalid(_) | ArtifactError::Io { .. },
            ) => Some("workspace"),
            PipelineError::NotFound(_) => Some("pipeline_id"),
            _ => None,
        }
    }

    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> PipelineError {
        move |source| PipelineError::Database { op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_name_their_field() {
        assert_eq!(
            PipelineError::from(ValidateError::NoLanguage).client_field(),
            Some("workspace")
        );
        let big = PipelineError::from(ArtifactError::TooLarge { size: 9, cap: 1 });
        assert_eq!(big.client_field(), Some("workspace"));
        assert_eq!(
            PipelineError::from(ArtifactError::Git("bad ref".into())).client_field(),
            Some("git")
        );
        let db = PipelineError::Database {
            op: "x",
            source: sqlx::Error::PoolTimedOut,
        };
        assert_eq!(db.client_field(), None);
    }
}
