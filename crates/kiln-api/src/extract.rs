//! Extractors whose refusals are JSON errors naming the field (axum's own answer in plain
//! text): request bodies with a size cap, path parameters and query strings.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use kiln_wire::json::{field_of, JsonError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// Reads a JSON body of at most `limit` bytes into `T`; errors name the field (a path like
/// `jobs[3].priority`), unknown fields included. Oversized bodies get 413.
pub async fn read_json<T: DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, limit).await?;
    parse_json(&bytes)
}

/// Reads a body of at most `limit` bytes (413 beyond), refusing non-JSON content types.
pub async fn read_body(
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("expected Content-Type application/json, got {ct:?}"),
            )
            .field("Content-Type"));
        }
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over the cap of {limit} bytes"),
        )
        .field("body")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.to_string().contains("length limit exceeded") {
                    return Err(too_large());
                }
                source = s.source();
            }
            Err(ApiError::bad_request(
                "body",
                format!("could not read the request body: {e}"),
            ))
        }
    }
}

/// Parses a JSON object into `T`, naming the field of the first error: malformed JSON is a
/// 400, an array or a value that does not fit a 422 (see [`kiln_wire::json::parse_object`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    kiln_wire::json::parse_object(bytes).map_err(|e| {
        let status = match e {
            JsonError::Malformed(_) => StatusCode::BAD_REQUEST,
            JsonError::NotAnObject | JsonError::Field { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string()).field(e.field())
    })
}

/// A JSON body capped at the server's default body limit.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        read_json(&parts.headers, body, state.config.body_limit)
            .await
            .map(JsonBody)
    }
}

/// Path parameters; a bad one is a 400 naming it.
pub struct PathParam<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParam<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        // For a route with one parameter the rejection names no key: take it from the route.
        let only_param = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .and_then(|p| {
                let mut names = p
                    .as_str()
                    .split('/')
                    .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')));
                let first = names.next()?;
                names.next().is_none().then(|| first.to_owned())
            })
            .unwrap_or_else(|| "path".to_owned());
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParam(v)),
            Err(axum::extract::rejection::PathRejection::FailedToDeserializePathParams(e)) => {
                let field = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => key.clone(),
                    _ => only_param,
                };
                Err(ApiError::bad_request(field, e.body_text()))
            }
            Err(e) => Err(ApiError::bad_request(only_param, e.body_text())),
        }
    }
}

/// A query string; a bad parameter is a 400 naming it.
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Ok(QueryParams(v)),
            Err(err) => {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                Err(ApiError::bad_request(field_of(&path, &message), message))
            }
        }
    }
}
