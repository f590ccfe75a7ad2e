//! The payload of `test`, `lint` and `security-scan` jobs.

use serde::{Deserialize, Serialize};

use crate::error::ValidateError;
use crate::language::Language;

/// What a validation job runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationPayload {
    /// The workspace artifact's digest (`sha256:…`, see `kiln-artifacts`).
    pub workspace: String,
    /// Languages to run; detected from the workspace when absent or empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<Language>,
    /// Honour the workspace's own security-tool suppressions and configuration (`# nosec`,
    /// `# nosemgrep`, `.semgrepignore`, `.bandit`…); by default they are ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub honour_suppressions: bool,
}

impl ValidationPayload {
    /// Reads and checks a job's payload.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, ValidateError> {
        let p: ValidationPayload =
            serde_json::from_value(v.clone()).map_err(|e| ValidateError::Payload(e.to_string()))?;
        let hex = p.workspace.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ValidateError::Payload(format!(
                "`workspace` must be an artifact digest `sha256:<64 hex>`, got {:?}",
                p.workspace
            )));
        }
        Ok(p)
    }
}
