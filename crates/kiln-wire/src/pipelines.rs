//! `/v1/pipelines` shapes: a validation request and what it created.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A git repository to check out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// Repository URL, `https://HOST[:PORT]/PATH` only (no credentials in it); its host must
    /// resolve to public addresses unless the API's configuration allows loopback or private
    /// ranges. Local paths are for the CLI.
    pub source: String,
    /// Branch, tag or commit; `HEAD` when absent.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// A validation to run. Give exactly one of `workspace_tar_gz_base64` and `git`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The workspace as a gzip-compressed tar, base64 (standard alphabet, padded). At most
    /// 50 MiB once unpacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_tar_gz_base64: Option<String>,
    /// Or a git repository checked out by Kiln.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// Languages to run (`python`, `javascript`, `go`, `rust`); detected when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// Per-attempt timeout of each job, seconds (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<u64>,
    /// Per-attempt timeout of the test job, seconds (default `timeout_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub test_timeout_secs: Option<u64>,
    /// Tries per job (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
    /// Job priority (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i16>,
    /// Tags on the pipeline and its jobs (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What a submission created.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmittedPipeline {
    /// The pipeline.
    pub pipeline_id: i64,
    /// The workspace artifact's digest.
    pub workspace: String,
    /// Languages that will run.
    pub languages: Vec<String>,
    /// The test, lint and security-scan job ids.
    pub jobs: Vec<i64>,
}

/// Longest server-side wait of one `GET /v1/pipelines/{id}/wait`.
pub const MAX_WAIT_SECS: u64 = 300;

/// `POST /v1/pipelines`: a generation pipeline (generate → validate → regenerate). The
/// starting workspace is at most one of `workspace` (a stored artifact's digest),
/// `workspace_tar_gz_base64` (an upload) and `git`; with none the model starts from nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineRequest {
    /// `generation` (validation pipelines are `POST /v1/pipelines/validate`).
    pub kind: String,
    /// What the model should do (at most 200,000 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Start from this stored artifact (`sha256:` + 64 hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Or from this gzip-compressed tar, base64 (at most 50 MiB unpacked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_tar_gz_base64: Option<String>,
    /// Or from a git repository checked out by Kiln (`https://` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// `python`, `javascript`, `go` or `rust`, when the workspace does not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Iterations allowed (1–10, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10)]
    pub max_iterations: Option<u32>,
    /// The pipeline's budget in USD (default from the workers' configuration, $10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// `fast`, `balanced` (default), `quality` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<String>,
    /// Tags on the pipeline and its jobs (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}
