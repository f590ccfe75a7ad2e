//! The payload of `preview` jobs: which workspace to serve, on which port, for how long.

use kiln_queue::JobKind;
use serde::{Deserialize, Serialize};

use crate::validation::Language;
use crate::{check_digest, Kind, Payload, PayloadError};

/// Longest preview life, in seconds (one day).
pub const MAX_TTL_SECS: u64 = 86_400;
/// Most arguments of a start command, and the longest one.
const MAX_ARGS: usize = 64;
const MAX_ARG_BYTES: usize = 4096;

/// What a preview job serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewPayload {
    /// The workspace artifact to serve.
    pub workspace: String,
    /// The port the app listens on inside its container.
    pub port: u16,
    /// The start command, as argv (never a shell string); detected from the project when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The project's language, when the workspace does not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// How long the preview lives, in seconds (60 to one day; default one hour).
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

fn default_ttl() -> u64 {
    3600
}

impl Payload for PreviewPayload {
    fn check(&self) -> Result<(), PayloadError> {
        check_digest("workspace", &self.workspace)?;
        if self.port == 0 {
            return Err(PayloadError::new("port", "must be between 1 and 65535"));
        }
        if !(60..=MAX_TTL_SECS).contains(&self.ttl_secs) {
            return Err(PayloadError::new(
                "ttl_secs",
                format!("must be between 60 and {MAX_TTL_SECS}"),
            ));
        }
        if self.command.len() > MAX_ARGS {
            return Err(PayloadError::new(
                "command",
                format!("at most {MAX_ARGS} arguments"),
            ));
        }
        for (i, arg) in self.command.iter().enumerate() {
            if arg.len() > MAX_ARG_BYTES || arg.contains('\0') {
                return Err(PayloadError::new(
                    format!("command[{i}]"),
                    format!("at most {MAX_ARG_BYTES} bytes and no NUL"),
                ));
            }
        }
        Ok(())
    }
}

/// The `preview` kind.
#[derive(Debug, Clone, Copy)]
pub struct Preview;

impl Kind for Preview {
    type Payload = PreviewPayload;
    const KINDS: &'static [JobKind] = &[JobKind::Preview];
}
