//! `/v1/tokens`: create (the secret is shown once), list, revoke. Admin only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Admin, Auth};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{JsonBody, PathParam};
use crate::tokens::{self, NewToken, TokenError};
use crate::AppState;
pub use kiln_wire::tokens::{CreateToken, TokenList};

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

fn store_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Database(db) => ApiError::from(db),
        e => ApiError::internal("token store", e),
    }
}

/// Create an API token; the response is the only time its secret is shown.
#[utoipa::path(
    post, path = "/v1/tokens", tag = tags::TOKENS,
    request_body(content = CreateToken, content_type = "application/json"),
    responses(
        (status = 201, body = NewToken),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn create_token(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 128 || name.contains('\0') {
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "must be 1 to 128 characters").field("name"),
        );
    }
    if req.scopes.is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "at least one scope").field("scopes"));
    }
    let token = tokens::create(&state.pool, name, &req.scopes)
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// List API tokens (without their secrets).
#[utoipa::path(
    get, path = "/v1/tokens", tag = tags::TOKENS,
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["admin"]))
)]
async fn list_tokens(_auth: Auth<Admin>, State(state): State<AppState>) -> ApiResult<Json<TokenList>> {
    let tokens = tokens::list(&state.pool).await.map_err(store_error)?;
    Ok(Json(TokenList { tokens }))
}

/// Revoke an API token; it is refused from then on.
#[utoipa::path(
    delete, path = "/v1/tokens/{id}", tag = tags::TOKENS,
    params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn revoke_token(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
) -> ApiResult<StatusCode> {
    match tokens::revoke(&state.pool, id).await.map_err(store_error)? {
        Some(hash) => {
            state.tokens.forget(&hash);
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!("token {id} not found"))),
    }
}
