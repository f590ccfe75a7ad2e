//! Operations: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, and the JSON answers for
//! unknown paths and methods.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::error::ApiError;
use crate::AppState;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// Liveness or readiness.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Each dependency checked: `ok` or what went wrong.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, String>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = tags::OPS, responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Default::default(),
    })
}

/// The database and the Docker engine are reachable.
#[utoipa::path(
    get, path = "/readyz", tag = tags::OPS,
    responses((status = 200, body = Health), (status = 503, description = "A dependency is down", body = Health))
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    const LIMIT: Duration = Duration::from_secs(2);
    let db = async {
        match tokio::time::timeout(LIMIT, sqlx::query("SELECT 1").execute(&state.pool)).await {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => format!("unreachable: {e}"),
            Err(_) => "no answer within 2 s".to_owned(),
        }
    };
    let docker = async {
        match &state.docker {
            None => "no Docker client could be configured".to_owned(),
            Some(d) => match tokio::time::timeout(LIMIT, d.ping()).await {
                Ok(Ok(_)) => "ok".to_owned(),
                Ok(Err(e)) => format!("unreachable: {e}"),
                Err(_) => "no answer within 2 s".to_owned(),
            },
        }
    };
    let (db, docker) = tokio::join!(db, docker);
    let ok = db == "ok" && docker == "ok";
    let checks = [("database".to_owned(), db), ("docker".to_owned(), docker)].into();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ok { "ok" } else { "unavailable" }.into(),
            checks,
        }),
    )
}

/// This process's metrics in the Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = tags::OPS,
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        kiln_metrics::render(),
    )
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = tags::OPS,
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    Json(crate::openapi().clone())
}

/// JSON 404 for unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// JSON 405 for known paths with another method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
