//! Artifacts: the workspaces a job ran on (`/v1/jobs/{id}/artifacts`) and their bytes
//! (`/v1/artifacts/{digest}`, the canonical tar, gzip-compressed).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use kiln_artifacts::ArtifactError;
use kiln_queue::admin;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Auth, JobsRead};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::PathParam;
use crate::AppState;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(job_artifacts))
        .routes(routes!(download_artifact))
}

/// One artifact a job refers to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    /// What it is to the job (`workspace`: the files the job ran on).
    pub role: String,
    /// Content address, `sha256:…` of the canonical tar.
    pub digest: String,
    /// Bytes of the canonical tar.
    pub size_bytes: i64,
    /// Bytes stored (gzip).
    pub stored_bytes: i64,
    /// Entries in the tar.
    pub files: i32,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// Where to download it.
    pub download: String,
}

/// A job's artifacts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobArtifacts {
    /// The job.
    pub job_id: i64,
    /// Empty for kinds that run on no workspace.
    pub artifacts: Vec<ArtifactView>,
}

fn artifact_error(e: ArtifactError) -> ApiError {
    match e {
        ArtifactError::NotFound(d) => ApiError::not_found(format!("artifact {d} not found")),
        e => ApiError::internal("artifact read", e),
    }
}

/// The artifacts a job refers to (its workspace, for `test`, `lint` and `security-scan`).
#[utoipa::path(
    get, path = "/v1/jobs/{id}/artifacts", tag = tags::JOBS,
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, body = JobArtifacts),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn job_artifacts(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<JobArtifacts>> {
    let job = admin::get_job(&state.pool, id).await?;
    let mut artifacts = Vec::new();
    if let Some(digest) = job.payload.get("workspace").and_then(|w| w.as_str()) {
        match kiln_artifacts::info(&state.pool, digest).await {
            Ok(a) => artifacts.push(ArtifactView {
                role: "workspace".into(),
                download: format!("/v1/artifacts/{}", a.digest),
                digest: a.digest,
                size_bytes: a.size_bytes,
                stored_bytes: a.stored_bytes,
                files: a.files,
                created_at: a.created_at,
            }),
            // Pruned since, or a payload naming no stored artifact: nothing to list.
            Err(ArtifactError::NotFound(_)) => {}
            Err(e) => return Err(artifact_error(e)),
        }
    }
    Ok(Json(JobArtifacts {
        job_id: id,
        artifacts,
    }))
}

/// Downloads an artifact: its canonical tar, gzip-compressed (`application/gzip`).
#[utoipa::path(
    get, path = "/v1/artifacts/{digest}", tag = tags::JOBS,
    params(("digest" = String, Path, description = "`sha256:` and 64 lowercase hex digits", pattern = "^sha256:[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "The tar.gz", content_type = "application/gzip", body = Vec<u8>),
        (status = 400, description = "Not a digest", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such artifact", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn download_artifact(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(digest): PathParam<String>,
) -> ApiResult<impl IntoResponse> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::bad_request(
            "digest",
            "must be `sha256:` followed by 64 lowercase hex digits",
        ));
    }
    let bytes = kiln_artifacts::raw(&state.pool, &digest)
        .await
        .map_err(artifact_error)?;
    let name = format!("attachment; filename=\"{}.tar.gz\"", &hex[..12]);
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        bytes,
    ))
}
