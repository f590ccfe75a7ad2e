//! The payload of `test`, `lint` and `security-scan` jobs, and the languages they know.

use std::fmt;
use std::str::FromStr;

use kiln_queue::JobKind;
use serde::{Deserialize, Serialize};

use crate::{check_digest, Kind, Payload, PayloadError};

/// A supported language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python: pytest + coverage, ruff, bandit.
    Python,
    /// JavaScript on node: node's test runner, eslint.
    Javascript,
    /// Go: `go test -json`, `go vet`.
    Go,
    /// Rust: `cargo test` (with llvm-cov line coverage), `cargo clippy`.
    Rust,
}

impl Language {
    /// Every language, in a fixed order.
    pub const ALL: [Language; 4] = [
        Language::Python,
        Language::Javascript,
        Language::Go,
        Language::Rust,
    ];

    /// The name used in payloads, results and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Go => "go",
            Language::Rust => "rust",
        }
    }

    /// The job image (a directory under `images/`) its tests and linters run in.
    pub fn image(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "node",
            Language::Go => "go",
            Language::Rust => "rust",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "python" | "py" => Ok(Language::Python),
            "javascript" | "js" | "node" | "nodejs" => Ok(Language::Javascript),
            "go" | "golang" => Ok(Language::Go),
            "rust" | "rs" => Ok(Language::Rust),
            other => Err(format!(
                "unknown language {other:?}, expected one of: python, javascript (node), go, rust"
            )),
        }
    }
}

/// What a validation job runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationPayload {
    /// The workspace artifact's digest (`sha256:…`, see `kiln-artifacts`).
    pub workspace: String,
    /// Languages to run; detected from the workspace when absent or empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<Language>,
    /// Honour the workspace's own scanner and linter suppressions and configuration (`# nosec`,
    /// `.semgrepignore`, `# noqa`, `.eslintrc`, clippy `allow`…); by default they are ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub honour_suppressions: bool,
}

impl Payload for ValidationPayload {
    fn check(&self) -> Result<(), PayloadError> {
        check_digest("workspace", &self.workspace)
    }
}

/// The validation kinds: `test`, `lint`, `security-scan`.
#[derive(Debug, Clone, Copy)]
pub struct Validation;

impl Kind for Validation {
    type Payload = ValidationPayload;
    const KINDS: &'static [JobKind] = &[JobKind::Test, JobKind::Lint, JobKind::SecurityScan];
}
