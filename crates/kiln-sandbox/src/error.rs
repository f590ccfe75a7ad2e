//! Typed errors of the sandbox, and which of them are worth a retry.

use bollard::errors::Error as DockerError;

/// Why a job could not be run to an outcome.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The image is not in the engine (nothing can be pulled): not retryable.
    #[error("image {0} is missing (run `kiln images build`)")]
    ImageMissing(String),
    /// The Docker engine could not be reached or failed on its side: retryable.
    #[error("docker daemon unavailable: {0}")]
    DaemonUnavailable(String),
    /// The job's container was removed or stopped under it (its engine restarted, or something
    /// outside Kiln removed it): the run says nothing about the job's code, retryable.
    #[error("the job's container went away under it: {0}")]
    ContainerGone(String),
    /// Docker refused a request for a reason a retry will not fix.
    #[error("docker error: {0}")]
    Docker(String),
    /// The workspace given as input is invalid or too large.
    #[error("invalid workspace: {0}")]
    InvalidWorkspace(String),
    /// The job spec asks for something the sandbox does not allow.
    #[error("invalid job spec: {0}")]
    InvalidSpec(String),
}

impl SandboxError {
    /// True when the same attempt may succeed later (the daemon was unavailable, or the
    /// container went away under the job).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SandboxError::DaemonUnavailable(_) | SandboxError::ContainerGone(_)
        )
    }

    /// Classifies a bollard error: 404 on an image → `ImageMissing`; 404 on a container, or
    /// 409 "is not running" → `ContainerGone`; connection problems and 5xx →
    /// `DaemonUnavailable`; other refusals → `Docker`.
    pub(crate) fn from_docker(err: DockerError, image: &str) -> Self {
        match err {
            DockerError::DockerResponseServerError { status_code, message } => {
                if status_code == 404 && message.contains("image") {
                    SandboxError::ImageMissing(image.to_string())
                } else if (status_code == 404 && message.contains("No such container"))
                    || (status_code == 409 && message.contains("is not running"))
                {
                    SandboxError::ContainerGone(format!("{status_code}: {message}"))
                } else if status_code >= 500 {
                    SandboxError::DaemonUnavailable(format!("{status_code}: {message}"))
                } else {
                    SandboxError::Docker(format!("{status_code}: {message}"))
                }
            }
            DockerError::JsonDataError { .. }
            | DockerError::JsonSerdeError { .. }
            | DockerError::DockerContainerWaitError { .. } => SandboxError::Docker(err.to_string()),
            other => SandboxError::DaemonUnavailable(other.to_string()),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let missing = SandboxError::from_docker(
            DockerError::DockerResponseServerError {
                status_code: 404,
                message: "No such image: kiln-python:x".into(),
            },
            "kiln-python:x",
        );
        assert!(matches!(missing, SandboxError::ImageMissing(_)));
        assert!(!missing.is_retryable());
        let down = SandboxError::from_docker(DockerError::RequestTimeoutError, "i");
        assert!(down.is_retryable());
        let refused = SandboxError::from_docker(
            DockerError::DockerResponseServerError {
                status_code: 400,
                message: "bad".into(),
            },
            "i",
        );
        assert!(!refused.is_retryable());
    }
}
