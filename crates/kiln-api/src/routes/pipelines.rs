//! `/v1/pipelines`: submit a validation pipeline (`test`, `lint` and `security-scan` on one
//! workspace, uploaded as a base64 tar.gz or checked out from git) and read it with its
//! verdict, or wait for that verdict. Submitting needs `jobs:write`, reading `jobs:read`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use kiln_artifacts::ArtifactError;
use kiln_pipeline::{PipelineError, PipelineView, Source, SubmitOptions};
use kiln_validate::Language;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::sources::{check_tags, git, tarball, unprocessable};
use super::tags;
use crate::auth::{Auth, JobsRead, JobsWrite};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{read_json, PathParam, QueryParams};
use crate::schema::{PipelineDoc, PipelineSummaryDoc};
use crate::AppState;
pub use kiln_wire::pipelines::{GitSource, SubmittedPipeline, ValidateRequest, MAX_WAIT_SECS};

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(validate))
        .routes(routes!(get_pipeline))
        .routes(routes!(wait_pipeline))
        .routes(routes!(pipeline_workspace))
}

/// A pipeline with its jobs, and `summary`: the `kiln submit validate --json` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineReply {
    /// The pipeline as stored.
    #[serde(flatten)]
    #[schema(inline, value_type = PipelineDoc)]
    pub pipeline: PipelineView,
    /// `{"pipeline_id", "verdict", "quality_score", "test", "lint", "security"}`.
    #[schema(value_type = PipelineSummaryDoc)]
    pub summary: serde_json::Value,
}

impl From<PipelineView> for PipelineReply {
    fn from(pipeline: PipelineView) -> Self {
        PipelineReply {
            summary: pipeline.summary(),
            pipeline,
        }
    }
}

/// How long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait at most (1..=300, default 30); the pipeline is returned as it is then.
    pub timeout_secs: Option<u64>,
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        if let Some(field) = e.client_field() {
            let status = match &e {
                PipelineError::NotFound(_) => StatusCode::NOT_FOUND,
                PipelineError::Artifact(ArtifactError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            return ApiError::new(status, e.to_string()).field(field);
        }
        match e {
            PipelineError::Queue(q) => ApiError::from(q),
            PipelineError::Database { source, .. } => ApiError::from(source),
            e => ApiError::internal("pipeline operation", e),
        }
    }
}

fn secs(field: &str, v: Option<u64>) -> ApiResult<Option<Duration>> {
    match v {
        Some(s) if s == 0 || s > 86_400 => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("must be between 1 and 86400 seconds, got {s}"),
        )
        .field(field)),
        v => Ok(v.map(Duration::from_secs)),
    }
}

/// Checks a request and turns it into the pipeline's source and options.
fn plan(req: ValidateRequest, max_workspace_bytes: u64) -> ApiResult<(Source, SubmitOptions)> {
    let source =
        match (req.workspace_tar_gz_base64, req.git) {
            (Some(_), Some(_)) => {
                return Err(unprocessable(
                    "git",
                    "give either workspace_tar_gz_base64 or git, not both",
                ))
            }
            (None, None) => return Err(unprocessable(
                "workspace_tar_gz_base64",
                "give the workspace: workspace_tar_gz_base64 (a base64 tar.gz) or git {\"source\", \"ref\"}",
            )),
            (Some(b64), None) => tarball(&b64, max_workspace_bytes)?,
            (None, Some(g)) => git(g)?,
        };
    let mut languages = Vec::with_capacity(req.languages.len());
    for (i, l) in req.languages.iter().enumerate() {
        languages.push(
            l.parse::<Language>()
                .map_err(|e| unprocessable(format!("languages[{i}]"), e))?,
        );
    }
    let mut opts = SubmitOptions {
        languages,
        test_timeout: secs("test_timeout_secs", req.test_timeout_secs)?,
        max_workspace_bytes,
        ..SubmitOptions::default()
    };
    if let Some(t) = secs("timeout_secs", req.timeout_secs)? {
        opts.timeout = t;
    }
    if let Some(n) = req.max_attempts {
        if !(1..=100).contains(&n) {
            return Err(unprocessable(
                "max_attempts",
                format!("must be between 1 and 100, got {n}"),
            ));
        }
        opts.max_attempts = n;
    }
    if let Some(p) = req.priority {
        if !(-100..=100).contains(&p) {
            return Err(unprocessable(
                "priority",
                format!("must be between -100 and 100, got {p}"),
            ));
        }
        opts.priority = p;
    }
    check_tags(&req.tags)?;
    opts.tags = req.tags;
    Ok((source, opts))
}

/// Submit a validation pipeline: the workspace is stored once and its `test`, `lint` and
/// `security-scan` jobs are enqueued together. Nothing is written when it is refused.
#[utoipa::path(
    post, path = "/v1/pipelines/validate", tag = tags::PIPELINES,
    request_body(content = ValidateRequest, content_type = "application/json"),
    responses(
        (status = 201, body = SubmittedPipeline),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "Body or workspace over its cap", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "A refused value, by field (`workspace`, `languages[0]`, `git`…)", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:write"]))
)]
async fn validate(
    auth: Auth<JobsWrite>,
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<SubmittedPipeline>)> {
    let (parts, body) = request.into_parts();
    let req: ValidateRequest = read_json(&parts.headers, body, state.config.pipeline_body_limit).await?;
    let (source, mut opts) = plan(req, state.config.max_workspace_bytes)?;
    opts.created_by_token = Some(auth.token_id);
    opts.git_access = state.config.git_access.clone();
    opts.git_timeout = state.config.git_timeout;
    // The library blames `workspace`; name the request field the workspace came in.
    let source_field = match source {
        Source::Git { .. } => "git",
        _ => "workspace_tar_gz_base64",
    };
    let s = kiln_pipeline::submit(&state.pool, source, &opts)
        .await
        .map_err(|e| {
            let mut err = ApiError::from(e);
            if err.field.as_deref() == Some("workspace") {
                err.field = Some(source_field.to_owned());
            }
            err
        })?;
    Ok((
        StatusCode::CREATED,
        Json(SubmittedPipeline {
            pipeline_id: s.pipeline_id,
            workspace: s.workspace,
            languages: s.languages.iter().map(|l| l.as_str().to_owned()).collect(),
            jobs: s.jobs,
        }),
    ))
}

/// Read a pipeline: its jobs, and once finished its verdict, quality score and results.
#[utoipa::path(
    get, path = "/v1/pipelines/{id}", tag = tags::PIPELINES,
    params(("id" = i64, Path, description = "Pipeline id")),
    responses(
        (status = 200, body = PipelineReply),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn get_pipeline(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<PipelineReply>> {
    Ok(Json(kiln_pipeline::get(&state.pool, id).await?.into()))
}

/// Wait up to `timeout_secs` for a pipeline's verdict, then return it as it is (check
/// `state`: `finished` or still `running`).
#[utoipa::path(
    get, path = "/v1/pipelines/{id}/wait", tag = tags::PIPELINES,
    params(("id" = i64, Path, description = "Pipeline id"), WaitQuery),
    responses(
        (status = 200, body = PipelineReply),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn wait_pipeline(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    QueryParams(q): QueryParams<WaitQuery>,
) -> ApiResult<Json<PipelineReply>> {
    let secs = q.timeout_secs.unwrap_or(30);
    if secs == 0 || secs > MAX_WAIT_SECS {
        return Err(ApiError::bad_request(
            "timeout_secs",
            format!("must be between 1 and {MAX_WAIT_SECS}, got {secs}"),
        ));
    }
    let waited = tokio::select! {
        r = kiln_pipeline::wait(&state.pool, Some(&state.listener), id, Duration::from_secs(secs)) => Some(r),
        () = state.shutdown.cancelled() => None,
    };
    let view = match waited {
        Some(Ok(v)) => v,
        Some(Err(PipelineError::WaitTimedOut { .. })) | None => kiln_pipeline::get(&state.pool, id).await?,
        Some(Err(e)) => return Err(e.into()),
    };
    Ok(Json(view.into()))
}

/// Download the workspace a pipeline ends with, as a tar (`application/x-tar`): for a
/// generation pipeline the edited workspace of its result, for a validation pipeline the
/// workspace it ran on.
#[utoipa::path(
    get, path = "/v1/pipelines/{id}/workspace", tag = tags::PIPELINES,
    params(("id" = i64, Path, description = "Pipeline id")),
    responses(
        (status = 200, description = "The workspace as a tar", content_type = "application/x-tar", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such pipeline, or its workspace was pruned", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn pipeline_workspace(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<impl IntoResponse> {
    let view = kiln_pipeline::get(&state.pool, id).await?;
    let Some(digest) = view.result_workspace().map(str::to_owned) else {
        return Err(ApiError::not_found(format!(
            "pipeline {id} has no workspace yet (a generation pipeline started from nothing has one once it settles)"
        )));
    };
    let tree = kiln_artifacts::load(&state.pool, &digest, state.config.max_workspace_bytes)
        .await
        .map_err(|e| match e {
            ArtifactError::NotFound(_) => {
                ApiError::not_found(format!("pipeline {id}'s workspace {digest} was pruned"))
            }
            e => ApiError::internal("workspace read", e),
        })?;
    let tar = tokio::task::spawn_blocking(move || tree.to_tar())
        .await
        .map_err(|e| ApiError::internal("workspace tar", e))?
        .map_err(|e| ApiError::internal("workspace tar", e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"pipeline-{id}-workspace.tar\""),
            ),
        ],
        tar,
    ))
}
