//! `/v1/jobs`: enqueue (one, or a batch of up to 10,000), read, list, cancel, retry, diff.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use kiln_queue::views::{self, ListParams};
use kiln_queue::{admin, JobRecord, JobSpec, JobState, NewJob, ValidationError};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Auth, JobsRead, JobsWrite};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{parse_json, read_body, PathParam, QueryParams};
use crate::AppState;
pub use kiln_wire::jobs::{
    BatchRequest, BatchResponse, EnqueuedJob, JobDetail, JobDiff, JobPage, JobStateReply, INLINE_DIFF_BYTES,
};

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(create_batch))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_job))
        .routes(routes!(job_diff))
}

/// The header naming a request whose repeats must return the same job(s).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Filters and paging of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    #[param(value_type = Option<crate::schema::JobKind>)]
    pub kind: Option<String>,
    /// Only these states, comma-separated (e.g. `available,running`).
    pub state: Option<String>,
    /// Only jobs carrying this tag.
    pub tag: Option<String>,
    /// Created at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub created_after: Option<String>,
    /// Created before this RFC 3339 time.
    #[param(format = DateTime)]
    pub created_before: Option<String>,
    /// Only jobs of this pipeline.
    pub pipeline_id: Option<i64>,
    /// Page size (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The `Idempotency-Key` header, if present and well-formed.
fn idempotency_header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(IDEMPOTENCY_HEADER, "must be 1 to 200 visible ASCII characters");
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s.is_empty() || s.len() > 200 || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(bad());
    }
    kiln_queue::spec::check_client_key(IDEMPOTENCY_HEADER, s).map_err(ApiError::invalid)?;
    Ok(Some(s.to_owned()))
}

fn reply(out: kiln_queue::Enqueued) -> (StatusCode, Json<EnqueuedJob>) {
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(EnqueuedJob {
            id: out.id,
            created: out.created,
        }),
    )
}

/// Enqueue one job.
///
/// Concurrent requests share one insert statement and commit; each gets its own id.
/// With `Idempotency-Key`, a repeat returns the first job (200) instead of creating one (201).
#[utoipa::path(
    post, path = "/v1/jobs", tag = tags::JOBS,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key return the same job")),
    request_body(content = crate::schema::JobSpecDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Enqueued", body = EnqueuedJob),
        (status = 200, description = "An existing job stands for this request", body = EnqueuedJob),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token lacks jobs:write", body = ErrorBody),
        (status = 409, description = "The idempotency key was used for a different request", body = ErrorBody),
        (status = 413, description = "Body over the cap", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A field is refused (`pipeline_id` always; keys starting with `schedule:` or `hook:`)", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:write"]))
)]
async fn create_job(
    _auth: Auth<JobsWrite>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<EnqueuedJob>)> {
    let key = idempotency_header(&headers)?;
    let bytes = read_body(&headers, body, state.config.body_limit).await?;
    let spec: JobSpec = parse_json(&bytes)?;
    let mut job = kiln_kinds::new_job(spec).map_err(ApiError::invalid)?;
    apply_key(&mut job, key.as_deref(), None)?;
    let out = state.coalescer.enqueue(job.clone()).await?;
    let field = if key.is_some() {
        IDEMPOTENCY_HEADER
    } else {
        "idempotency_key"
    };
    crate::idempotency::check_repeats(&state.pool, std::slice::from_ref(&job), &[out], |_| {
        field.to_owned()
    })
    .await?;
    Ok(reply(out))
}

/// Puts the request's idempotency key on a job (`KEY` for a single job, `KEY#i` for the
/// `i`-th of a batch) unless it carries its own; a single job's own key must agree.
fn apply_key(job: &mut NewJob, key: Option<&str>, index: Option<usize>) -> ApiResult<()> {
    let Some(key) = key else { return Ok(()) };
    match (index, &job.idempotency_key) {
        (None, Some(own)) if own != key => Err(ApiError::invalid(ValidationError::new(
            IDEMPOTENCY_HEADER,
            "differs from the body's idempotency_key",
        ))),
        (None, _) => {
            job.idempotency_key = Some(key.to_owned());
            Ok(())
        }
        (Some(_), Some(_)) => Ok(()),
        (Some(i), None) => {
            job.idempotency_key = Some(format!("{key}#{i}"));
            Ok(())
        }
    }
}

/// Enqueue up to 10,000 jobs in one statement: all are accepted or none.
///
/// With `Idempotency-Key: K`, job `i` without its own key gets `K#i`, so a repeated batch
/// returns the same jobs.
#[utoipa::path(
    post, path = "/v1/jobs/batch", tag = tags::JOBS,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key return the same jobs")),
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Enqueued (at least one new job)", body = BatchResponse),
        (status = 200, description = "Every job already existed", body = BatchResponse),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Token lacks jobs:write", body = ErrorBody),
        (status = 409, description = "An idempotency key was used for a different request (`jobs[i]`)", body = ErrorBody),
        (status = 413, description = "Body over the cap", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A field is refused (e.g. `jobs[3].priority`, `jobs[0].pipeline_id`)", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:write"]))
)]
async fn create_batch(
    _auth: Auth<JobsWrite>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<BatchResponse>)> {
    let key = idempotency_header(&headers)?;
    let bytes = read_body(&headers, body, state.config.batch_body_limit).await?;
    let req: BatchRequest = parse_json(&bytes)?;
    let max = state.config.max_batch_jobs;
    if req.jobs.is_empty() || req.jobs.len() > max {
        return Err(ApiError::invalid(ValidationError::new(
            "jobs",
            format!("{} jobs; a batch holds 1 to {max}", req.jobs.len()),
        )));
    }
    let mut jobs = kiln_kinds::new_jobs(req.jobs).map_err(ApiError::invalid)?;
    for (i, job) in jobs.iter_mut().enumerate() {
        apply_key(job, key.as_deref(), Some(i))?;
    }
    let out = kiln_queue::enqueue_many(&state.enqueue_pool, &jobs).await;
    state.notifier.wake(&jobs);
    let out = out?;
    crate::idempotency::check_repeats(&state.pool, &jobs, &out, |i| format!("jobs[{i}]")).await?;
    let status = if out.iter().any(|e| e.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let jobs = out
        .into_iter()
        .map(|e| EnqueuedJob {
            id: e.id,
            created: e.created,
        })
        .collect();
    Ok((status, Json(BatchResponse { jobs })))
}

/// Read a job with its attempts.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = tags::JOBS,
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, body = JobDetail),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn get_job(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<JobDetail>> {
    let found = views::job_with_attempts(&state.pool, id, Some(INLINE_DIFF_BYTES)).await?;
    Ok(Json(found.into()))
}

impl From<ListQuery> for ListParams {
    fn from(q: ListQuery) -> Self {
        ListParams {
            queue: q.queue,
            kind: q.kind,
            state: q.state,
            tag: q.tag,
            created_after: q.created_after,
            created_before: q.created_before,
            pipeline_id: q.pipeline_id,
            limit: q.limit,
            cursor: q.cursor,
        }
    }
}

/// List jobs, newest first, with filters and keyset pagination.
#[utoipa::path(
    get, path = "/v1/jobs", tag = tags::JOBS,
    params(ListQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, description = "A bad filter, named in `field`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn list_jobs(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    let req = ListParams::from(q)
        .parse()
        .map_err(|e| ApiError::bad_request(e.field, e.message))?;
    let mut jobs = kiln_queue::list::list_jobs(&state.pool, &req.filter, req.before, req.limit).await?;
    let full = jobs.len() as i64 == req.limit;
    let kept = within_bytes(&jobs, state.config.list_payload_bytes);
    let cut = kept < jobs.len();
    jobs.truncate(kept);
    let next_cursor = (full || cut)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(Json(JobPage { jobs, next_cursor }))
}

/// How many of `jobs` fit, in order, within `cap` bytes of payloads and results (at least one).
fn within_bytes(jobs: &[JobRecord], cap: usize) -> usize {
    let mut total = 0usize;
    for (i, j) in jobs.iter().enumerate() {
        let size = |v: &serde_json::Value| serde_json::to_vec(v).map_or(0, |b| b.len());
        total += size(&j.payload) + j.result.as_ref().map_or(0, size);
        if total > cap && i > 0 {
            return i;
        }
    }
    jobs.len()
}

/// Cancel a job; a running one is stopped by its worker (state stays `running` until then).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = tags::JOBS,
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, body = JobStateReply),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Already final", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:write"]))
)]
async fn cancel_job(
    _auth: Auth<JobsWrite>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<JobStateReply>> {
    let state = admin::cancel(&state.pool, id).await?;
    Ok(Json(JobStateReply { id, state }))
}

/// Run a finished job (`failed`, `cancelled`, `succeeded`) again. A job of a pipeline reopens
/// its pipeline: only the token that submitted the pipeline, or an admin, may do that.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = tags::JOBS,
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, body = JobStateReply),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Token lacks jobs:write, or the job's pipeline was submitted by another token", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Not final, or its unique key is taken", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:write"]))
)]
async fn retry_job(
    auth: Auth<JobsWrite>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<JobStateReply>> {
    let job = admin::get_job(&state.pool, id).await?;
    if let (Some(pipeline), false) = (job.pipeline_id, auth.admin) {
        let creator = match kiln_pipeline::creator(&state.pool, pipeline).await {
            Ok(c) => c,
            Err(kiln_pipeline::PipelineError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if creator != Some(auth.token_id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "job {id} belongs to pipeline {pipeline}, which this token did not submit; \
                     retrying it would reopen that pipeline"
                ),
            )
            .field("id"));
        }
    }
    admin::retry(&state.pool, id).await?;
    Ok(Json(JobStateReply {
        id,
        state: JobState::Available,
    }))
}

/// The diff of the job's latest attempt that recorded one.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/diff", tag = tags::JOBS,
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, body = crate::schema::JobDiffDoc),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn job_diff(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Json<JobDiff>> {
    Ok(Json(admin::latest_diff(&state.pool, id).await?))
}
