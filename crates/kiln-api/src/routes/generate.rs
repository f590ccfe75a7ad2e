//! `POST /v1/pipelines`: start a generation pipeline (generate → validate → regenerate with
//! feedback). The reply is the pipeline as stored (202: it runs on the worker fleet).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_generate::{submit_generation, GenerateError, GenerateRequest, Start};
use kiln_kinds::generation::Preference;
use kiln_kinds::Language;
use kiln_pipeline::SubmitOptions;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::pipelines::PipelineReply;
use super::sources::{check_tags, git, tarball, unprocessable};
use super::tags;
use crate::auth::{Auth, JobsWrite};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::read_json;
use crate::AppState;
pub use kiln_wire::pipelines::PipelineRequest;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_pipeline))
}

impl From<GenerateError> for ApiError {
    fn from(e: GenerateError) -> Self {
        if let Some(field) = e.client_field() {
            let status = match &e {
                GenerateError::Artifact(kiln_artifacts::ArtifactError::TooLarge { .. }) => {
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            return ApiError::new(status, e.to_string()).field(field);
        }
        match e {
            GenerateError::Pipeline(p) => p.into(),
            GenerateError::Queue(q) => ApiError::from(q),
            GenerateError::Database { source, .. } => ApiError::from(source),
            e => ApiError::internal("generation pipeline", e),
        }
    }
}

/// Checks a request and turns it into the library's request; errors name the field.
fn plan(req: PipelineRequest, max_workspace_bytes: u64) -> ApiResult<(GenerateRequest, Vec<String>)> {
    if req.kind != "generation" {
        return Err(unprocessable(
            "kind",
            format!(
                "must be \"generation\" (got {:?}); validation pipelines are POST /v1/pipelines/validate",
                req.kind
            ),
        ));
    }
    let prompt = req
        .prompt
        .ok_or_else(|| unprocessable("prompt", "is required: what should the model do?"))?;
    let start = match (req.workspace, req.workspace_tar_gz_base64, req.git) {
        (None, None, None) => Start::Empty,
        (Some(d), None, None) => Start::Artifact(d),
        (None, Some(b64), None) => Start::Source(tarball(&b64, max_workspace_bytes)?),
        (None, None, Some(g)) => Start::Source(git(g)?),
        (_, _, Some(_)) => {
            return Err(unprocessable(
                "git",
                "give one of workspace, workspace_tar_gz_base64 and git",
            ))
        }
        _ => {
            return Err(unprocessable(
                "workspace_tar_gz_base64",
                "give one of workspace, workspace_tar_gz_base64 and git",
            ))
        }
    };
    let language = match req.language {
        Some(l) => Some(l.parse::<Language>().map_err(|e| unprocessable("language", e))?),
        None => None,
    };
    let preference = match req.preference {
        Some(p) => p
            .parse::<Preference>()
            .map_err(|e| unprocessable("preference", e.to_string()))?,
        None => Preference::default(),
    };
    check_tags(&req.tags)?;
    Ok((
        GenerateRequest {
            prompt,
            start,
            language,
            max_iterations: req.max_iterations,
            budget_usd: req.budget_usd,
            preference,
        },
        req.tags,
    ))
}

/// Start a generation pipeline: iteration 1 is enqueued at once; each iteration's code is
/// validated (test, lint, security-scan) and the failures fed back until it passes or a
/// limit (`max_iterations`, `budget_usd`) is reached. Nothing is written when it is refused.
#[utoipa::path(
    post, path = "/v1/pipelines", tag = tags::PIPELINES,
    request_body(content = PipelineRequest, content_type = "application/json"),
    responses(
        (status = 202, body = PipelineReply),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "Body or workspace over its cap", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "A refused value, by field (`prompt`, `max_iterations`, `workspace`…)", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:write"]))
)]
async fn create_pipeline(
    auth: Auth<JobsWrite>,
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<PipelineReply>)> {
    let (parts, body) = request.into_parts();
    let req: PipelineRequest = read_json(&parts.headers, body, state.config.pipeline_body_limit).await?;
    let (req, tags) = plan(req, state.config.max_workspace_bytes)?;
    let opts = SubmitOptions {
        tags,
        created_by_token: Some(auth.token_id),
        git_access: state.config.git_access.clone(),
        git_timeout: state.config.git_timeout,
        max_workspace_bytes: state.config.max_workspace_bytes,
        ..SubmitOptions::default()
    };
    let s = submit_generation(&state.pool, req, &opts).await?;
    let view = kiln_pipeline::get(&state.pool, s.pipeline_id).await?;
    Ok((StatusCode::ACCEPTED, Json(view.into())))
}
