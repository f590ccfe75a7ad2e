//! Errors of validation jobs, and whether a retry may help.

use kiln_artifacts::ArtifactError;
use kiln_sandbox::SandboxError;

/// Why a validation job could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The payload is not a validation payload.
    #[error("invalid payload: {0}")]
    Payload(String),
    /// The workspace has no file that names a supported language.
    #[error("no recognised language in the workspace: expected pyproject.toml, setup.py or *.py (python), package.json (javascript), go.mod (go) or Cargo.toml (rust)")]
    NoLanguage,
    /// A language was named that the workspace does not contain or Kiln does not support.
    #[error("language `{0}`: {1}")]
    Language(String, String),
    /// The workspace artifact could not be loaded.
    #[error("workspace: {0}")]
    Artifact(#[from] ArtifactError),
    /// The sandbox could not run the tools.
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// A tool ran but left no usable report (it crashed, or was misconfigured).
    #[error("{tool} could not run ({language}): {detail}")]
    ToolFailed {
        /// The tool.
        tool: String,
        /// The language project it ran for.
        language: String,
        /// Exit code and the end of its error output.
        detail: String,
    },
    /// A linter or scanner was still running at the deadline (a test run that times out is
    /// recorded as an error case instead). Retryable: a less loaded machine may finish.
    #[error("{tool} ({language}) did not finish within {seconds:.0} s")]
    TimedOut {
        /// The tool.
        tool: String,
        /// The language project (or projects).
        language: String,
        /// The time it had.
        seconds: f64,
    },
    /// The attempt was stopped (cancelled, timed out or the worker is shutting down).
    #[error("stopped: the attempt was cancelled, timed out or the worker is shutting down")]
    Stopped,
    /// A run wrote past its workspace quota (bytes or files): its reports cannot be trusted
    /// and the run is never a pass. Not retryable: the same code fills the same quota.
    #[error("{label}: the workspace quota was exceeded ({used_bytes} bytes, {used_files} files in /work)")]
    DiskQuota {
        /// The run (tool and language).
        label: String,
        /// Bytes the run left in `/work`.
        used_bytes: u64,
        /// Files the run left in `/work`.
        used_files: u64,
    },
    /// No image is known for a language.
    #[error("no image for {0}: {1}")]
    Image(String, String),
}

impl ValidateError {
    /// True when another attempt may succeed (the Docker daemon or the database was
    /// unavailable); a missing language, a broken tool or a missing image will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            ValidateError::Sandbox(e) => e.is_retryable(),
            ValidateError::TimedOut { .. } | ValidateError::Stopped => true,
            ValidateError::Artifact(ArtifactError::Database { .. }) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_causes_are_retried() {
        assert!(!ValidateError::NoLanguage.is_retryable());
        let timed_out = ValidateError::TimedOut {
            tool: "semgrep".into(),
            language: "go".into(),
            seconds: 18.0,
        };
        assert!(timed_out.is_retryable());
        assert_eq!(timed_out.to_string(), "semgrep (go) did not finish within 18 s");
        let broken = ValidateError::ToolFailed {
            tool: "ruff".into(),
            language: "python".into(),
            detail: "exit 2".into(),
        };
        assert!(!broken.is_retryable());
        assert!(SandboxError::DaemonUnavailable("down".into())
            .to_string()
            .contains("down"));
        assert!(ValidateError::Sandbox(SandboxError::DaemonUnavailable("down".into())).is_retryable());
        assert!(!ValidateError::Sandbox(SandboxError::ImageMissing("kiln-x".into())).is_retryable());
    }
}
