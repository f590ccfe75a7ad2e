//! Errors of the artifact store.

/// What can go wrong packing, storing or loading an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The workspace is larger than the cap.
    #[error("workspace is over the {cap} byte cap ({size} bytes or more)")]
    TooLarge {
        /// Bytes seen (at least).
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The source directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The artifact's bytes are not a valid gzip-compressed tar, or an entry is unsafe.
    #[error("invalid artifact: {0}")]
    Invalid(String),
    /// A git checkout failed.
    #[error("git: {0}")]
    Git(String),
    /// A git checkout did not finish within its deadline.
    #[error("git: the checkout did not finish within {0:?}")]
    TimedOut(std::time::Duration),
    /// No artifact with this digest.
    #[error("artifact {0} not found")]
    NotFound(String),
    /// A database call failed.
    #[error("artifact store: {op}: {source}")]
    Database {
        /// The operation.
        op: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
}

impl ArtifactError {
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> ArtifactError {
        move |source| ArtifactError::Database { op, source }
    }
}
