//! Errors of the queue crate.

use crate::spec::ValidationError;

/// What can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The request was refused before touching the database.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A database call failed; `op` names the queue operation.
    #[error("queue operation `{op}` failed: {source}")]
    Database {
        /// The queue operation that failed.
        op: &'static str,
        /// The underlying driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The job does not exist (or was pruned).
    #[error("job {0} not found")]
    NotFound(i64),
    /// The job is in a state that does not allow the operation.
    #[error("job {id} is {state}: cannot {action}")]
    WrongState {
        /// Job id.
        id: i64,
        /// Its current state.
        state: String,
        /// What was asked.
        action: &'static str,
    },
    /// Another live job already holds this unique key.
    #[error("another live job holds unique key {0:?}")]
    UniqueKeyTaken(String),
    /// A row from the database did not match the model (a bug or a schema drift).
    #[error("unexpected value in column `{column}`: {value:?}")]
    Decode {
        /// Column name.
        column: &'static str,
        /// The value found.
        value: String,
    },
}

impl QueueError {
    /// Wraps a driver error with the operation it happened in.
    pub fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> QueueError {
        move |source| QueueError::Database { op, source }
    }

    /// True when retrying the same call later may succeed (connection lost, server restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Database { source, .. } => match source {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // admin_shutdown, crash_shutdown, cannot_connect_now, serialization, deadlock
                    matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
                        || code.starts_with("08")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
