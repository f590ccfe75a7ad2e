//! `/v1/schedules`: cron schedules that enqueue a job at each tick. Create, list, read,
//! change (including switching on/off with `{"enabled": false}`) and delete. Reading needs
//! `jobs:read`, writing `admin`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_scheduler::{store, Schedule, SchedulePatch, ScheduleSpec, SchedulerError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Admin, Auth, JobsRead};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{JsonBody, PathParam};
use crate::schema::{ScheduleDoc, SchedulePatchDoc, ScheduleSpecDoc};
use crate::AppState;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(get_schedule, patch_schedule, delete_schedule))
}

/// Every schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Sorted by name.
    #[schema(value_type = Vec<ScheduleDoc>)]
    pub schedules: Vec<Schedule>,
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Invalid(v) => ApiError::invalid(v),
            SchedulerError::NotFound(_) => ApiError::not_found(e.to_string()),
            SchedulerError::AlreadyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string()).field("name")
            }
            SchedulerError::Database { source, .. } => ApiError::from(source),
            SchedulerError::Queue(q) => ApiError::from(q),
        }
    }
}

/// Create a schedule; its first tick is the first after now.
#[utoipa::path(
    post, path = "/v1/schedules", tag = tags::SCHEDULES,
    request_body(content = ScheduleSpecDoc, content_type = "application/json"),
    responses(
        (status = 201, body = ScheduleDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "A schedule has this name", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "A refused value, by field (`cron`, `timezone`, `job.kind`…)", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn create_schedule(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    JsonBody(spec): JsonBody<ScheduleSpec>,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    let s = store::create(&state.pool, spec).await?;
    tracing::info!(schedule = %s.name, cron = %s.cron, timezone = %s.timezone, "schedule created over the API");
    Ok((StatusCode::CREATED, Json(s)))
}

/// List every schedule with its firing record and next tick.
#[utoipa::path(
    get, path = "/v1/schedules", tag = tags::SCHEDULES,
    responses((status = 200, body = ScheduleList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["jobs:read"]))
)]
async fn list_schedules(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
) -> ApiResult<Json<ScheduleList>> {
    Ok(Json(ScheduleList {
        schedules: store::list(&state.pool).await?,
    }))
}

/// Read one schedule.
#[utoipa::path(
    get, path = "/v1/schedules/{name}", tag = tags::SCHEDULES,
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, body = ScheduleDoc),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn get_schedule(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> ApiResult<Json<Schedule>> {
    Ok(Json(store::get(&state.pool, &name).await?))
}

/// Change a schedule: fields left out stay; `{"enabled": false}` switches it off. A changed
/// expression, time zone or switch takes effect from now.
#[utoipa::path(
    patch, path = "/v1/schedules/{name}", tag = tags::SCHEDULES,
    params(("name" = String, Path, description = "Schedule name")),
    request_body(content = SchedulePatchDoc, content_type = "application/json"),
    responses(
        (status = 200, body = ScheduleDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn patch_schedule(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    JsonBody(patch): JsonBody<SchedulePatch>,
) -> ApiResult<Json<Schedule>> {
    let s = store::update(&state.pool, &name, &patch).await?;
    tracing::info!(schedule = %s.name, cron = %s.cron, enabled = s.enabled, "schedule changed over the API");
    Ok(Json(s))
}

/// Delete a schedule (jobs it already enqueued stay).
#[utoipa::path(
    delete, path = "/v1/schedules/{name}", tag = tags::SCHEDULES,
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn delete_schedule(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> ApiResult<StatusCode> {
    store::delete(&state.pool, &name).await?;
    tracing::info!(schedule = %name, "schedule deleted over the API");
    Ok(StatusCode::NO_CONTENT)
}
