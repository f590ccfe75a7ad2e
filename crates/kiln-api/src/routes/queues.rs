//! `/v1/queues`: counts by state, pause and resume fleet-wide.

use axum::extract::State;
use axum::Json;
use kiln_queue::{admin, views};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Admin, Auth, JobsRead};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::PathParam;
use crate::AppState;
pub use kiln_wire::queues::{QueueList, QueueSettingsView, QueueView};

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(pause_queue))
        .routes(routes!(resume_queue))
}

/// List queues with their job counts by state.
#[utoipa::path(
    get, path = "/v1/queues", tag = tags::QUEUES,
    responses((status = 200, body = QueueList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["jobs:read"]))
)]
async fn list_queues(_auth: Auth<JobsRead>, State(state): State<AppState>) -> ApiResult<Json<QueueList>> {
    let queues = views::queues(&state.pool)
        .await?
        .into_iter()
        .map(QueueView::from)
        .collect();
    Ok(Json(QueueList { queues }))
}

fn check_name(name: &str) -> ApiResult<()> {
    if kiln_queue::spec::valid_queue_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "name",
            "a queue name matches [a-z0-9][a-z0-9_.-]{0,63}",
        ))
    }
}

/// Pause a queue across the fleet: running jobs finish, no new ones start.
#[utoipa::path(
    post, path = "/v1/queues/{name}/pause", tag = tags::QUEUES,
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueSettingsView),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn pause_queue(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> ApiResult<Json<QueueSettingsView>> {
    check_name(&name)?;
    Ok(Json(admin::pause(&state.pool, &name).await?.into()))
}

/// Resume a paused queue.
#[utoipa::path(
    post, path = "/v1/queues/{name}/resume", tag = tags::QUEUES,
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueSettingsView),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn resume_queue(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> ApiResult<Json<QueueSettingsView>> {
    check_name(&name)?;
    Ok(Json(admin::resume(&state.pool, &name).await?.into()))
}
