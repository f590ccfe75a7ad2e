//! Errors of the scheduler crate.

use kiln_queue::{QueueError, ValidationError};

/// What can go wrong with schedules.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The request was refused; `field` names the offending field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No schedule has this name.
    #[error("schedule {0:?} not found")]
    NotFound(String),
    /// A schedule with this name exists already.
    #[error("schedule {0:?} already exists")]
    AlreadyExists(String),
    /// A database call failed; `op` names the operation.
    #[error("scheduler operation `{op}` failed: {source}")]
    Database {
        /// The operation that failed.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Enqueueing a tick's job failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl SchedulerError {
    /// Wraps a driver error with the operation it happened in.
    pub fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> SchedulerError {
        move |source| SchedulerError::Database { op, source }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;
