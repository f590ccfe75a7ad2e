//! Errors of the generation kind and its loop.

use kiln_artifacts::ArtifactError;
use kiln_llm::LlmError;
use kiln_pipeline::PipelineError;
use kiln_queue::QueueError;
use kiln_worker::{JobError, KindError};

/// What can go wrong generating an iteration, moving the loop on or submitting.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The model could not be asked (every provider failed, no route, missing key…).
    #[error("model: {0}")]
    Llm(#[from] LlmError),
    /// A workspace artifact could not be read, packed or stored.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The validation jobs could not be enqueued, or the pipeline read.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Enqueueing failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A database call failed.
    #[error("generation: {op}: {source}")]
    Database {
        /// The operation.
        op: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The temporary workspace could not be written.
    #[error("workspace directory: {0}")]
    Io(#[from] std::io::Error),
    /// A generation job outside a generation pipeline, or a pipeline in an impossible state.
    #[error("{0}")]
    Invalid(String),
    /// A refused request field (`prompt`, `max_iterations`, `workspace`…).
    #[error("{field}: {message}")]
    Field {
        /// The request field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The attempt was asked to stop (cancel, timeout, shutdown).
    #[error("stopped before the iteration was recorded")]
    Stopped,
}

impl GenerateError {
    /// For an API: the request field to blame when the submitter's input is at fault, or
    /// None for Kiln's own failures.
    pub fn client_field(&self) -> Option<String> {
        match self {
            GenerateError::Field { field, .. } => Some(field.clone()),
            GenerateError::Pipeline(e) => e.client_field().map(str::to_owned),
            GenerateError::Artifact(ArtifactError::Git(_) | ArtifactError::TimedOut(_)) => Some("git".into()),
            GenerateError::Artifact(
                ArtifactError::TooLarge { .. } | ArtifactError::Invalid(_) | ArtifactError::Io { .. },
            ) => Some("workspace".into()),
            _ => None,
        }
    }

    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> GenerateError {
        move |source| GenerateError::Database { op, source }
    }
}

impl KindError for GenerateError {
    fn to_job_error(&self) -> JobError {
        match self {
            GenerateError::Database { source, .. }
            | GenerateError::Artifact(ArtifactError::Database { source, .. })
                if kiln_worker::database_unreachable(source) =>
            {
                JobError::database_unavailable(self.to_string())
            }
            GenerateError::Llm(e) if e.is_retryable() => JobError::retryable(self.to_string()),
            GenerateError::Llm(_) | GenerateError::Invalid(_) | GenerateError::Field { .. } => {
                JobError::permanent(self.to_string())
            }
            GenerateError::Artifact(ArtifactError::TooLarge { .. } | ArtifactError::Invalid(_)) => {
                JobError::permanent(self.to_string())
            }
            _ => JobError::retryable(self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_permanent_and_outages_retryable() {
        let no_route = GenerateError::Llm(LlmError::NoRoute("balanced"));
        assert!(!no_route.to_job_error().is_retryable());
        let db = GenerateError::Database {
            op: "x",
            source: sqlx::Error::PoolTimedOut,
        };
        assert!(db.to_job_error().is_retryable());
        // An unreachable database is not the job's fault: handed back, no attempt spent.
        assert!(
            matches!(db.to_job_error(), JobError::Unavailable { .. }),
            "{:?}",
            db.to_job_error()
        );
        let wrong = GenerateError::Database {
            op: "x",
            source: sqlx::Error::RowNotFound,
        };
        assert!(matches!(wrong.to_job_error(), JobError::Retryable(_)));
        let big = GenerateError::Artifact(ArtifactError::TooLarge { size: 2, cap: 1 });
        assert!(!big.to_job_error().is_retryable());
    }
}
