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
    /// `/readyz`: the sandbox isolation in force on this machine's engine (seccomp source,
    /// AppArmor, userns, limits enforced, core dumps, network, workspace quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub isolation: Option<serde_json::Value>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = tags::OPS, responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Default::default(),
        isolation: None,
    })
}

/// The database and the Docker engine are reachable; the isolation the engine gives sandbox
/// containers. Failures are named without their internal error text (logged instead): the
/// route is unauthenticated.
#[utoipa::path(
    get, path = "/readyz", tag = tags::OPS,
    responses((status = 200, body = Health), (status = 503, description = "A dependency is down", body = Health))
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    const LIMIT: Duration = Duration::from_secs(2);
    let db = async {
        let r = tokio::time::timeout(LIMIT, sqlx::query("SELECT 1").execute(&state.pool)).await;
        check("database", r.map(|r| r.map(|_| ())))
    };
    let docker = async {
        match &state.docker {
            None => ("not configured".to_owned(), None),
            Some(d) => {
                let r = tokio::time::timeout(LIMIT, kiln_sandbox::isolation::read(d)).await;
                let iso = r
                    .as_ref()
                    .ok()
                    .and_then(|r| r.as_ref().ok())
                    .map(|i| i.in_force());
                let text = check("docker", r.map(|r| r.map(|_| ())));
                (text, iso.and_then(|i| serde_json::to_value(i).ok()))
            }
        }
    };
    let (db, (docker, isolation)) = tokio::join!(db, docker);
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
            isolation,
        }),
    )
}

/// A dependency check's public answer: `ok`, `unreachable` or `no answer within 2 s`; the
/// error itself goes to the log only.
fn check<E: std::fmt::Display>(name: &str, r: Result<Result<(), E>, tokio::time::error::Elapsed>) -> String {
    match r {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::warn!(check = name, error = %e, "readiness check failed");
            "unreachable".to_owned()
        }
        Err(_) => "no answer within 2 s".to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_does_not_show_its_error_text() {
        let failed: Result<Result<(), String>, _> = Ok(Err(
            "error trying to connect: /run/secret/docker.sock: permission denied".into(),
        ));
        let text = check("docker", failed);
        assert_eq!(text, "unreachable");
        assert_eq!(check::<String>("database", Ok(Ok(()))), "ok");
    }
}
