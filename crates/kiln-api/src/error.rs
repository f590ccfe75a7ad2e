//! The API's one error type: every refusal is a JSON body `{"error": …, "field": …}` with a
//! 4xx status, and every failure a 5xx with a message that leaks no internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_queue::{QueueError, ValidationError};
pub use kiln_wire::error::ErrorBody;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// The field it is about.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// Names the field the error is about.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400 about `field`.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message).field(field)
    }

    /// 422: well-formed JSON whose values are refused.
    pub fn invalid(e: ValidationError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).field(e.field)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 401 with the standard challenge.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 500 for a failure we log but do not describe to the client.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{context} failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(ErrorBody {
                error: self.message,
                field: self.field,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Invalid(v) => ApiError::invalid(v),
            QueueError::NotFound(id) => ApiError::not_found(format!("job {id} not found")),
            QueueError::WrongState { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            QueueError::UniqueKeyTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string()).field("unique_key")
            }
            e if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry",
                )
            }
            e => ApiError::internal("queue operation", e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(QueueError::db("api")(e))
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
