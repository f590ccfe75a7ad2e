//! `/v1/hooks`: webhook CRUD (admin), and the delivery endpoints GitHub (or anything that
//! signs its body the same way, or the Standard Webhooks way) posts to. Deliveries carry no
//! bearer token: the HMAC of the body under the hook's secret is their credential, and an
//! unknown hook answers exactly like a wrong signature.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Admin, Auth};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{parse_json, read_body, JsonBody, PathParam};
use crate::hooks::payload::GithubDelivery;
use crate::hooks::{self, Delivered, DeliveryError, Hook, Trigger, GITHUB_EVENTS};
use crate::AppState;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_hook, list_hooks))
        .routes(routes!(get_hook, update_hook, delete_hook))
        .routes(routes!(github_delivery))
        .routes(routes!(generic_delivery))
}

/// A webhook as shown (its secret never is).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HookView {
    /// Name, the `{hook}` of the delivery URLs.
    pub name: String,
    /// The job a delivery enqueues, with `{{repository}}`, `{{commit}}`, `{{ref}}`,
    /// `{{event}}`, `{{delivery}}`, `{{hook}}` substituted in its strings.
    #[schema(value_type = crate::schema::JobSpecDoc)]
    pub job: Value,
    /// GitHub events it reacts to.
    pub events: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
}

impl From<Hook> for HookView {
    fn from(h: Hook) -> Self {
        HookView {
            name: h.name,
            job: h.template,
            events: h.events,
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

/// A webhook to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHook {
    /// `[a-z0-9][a-z0-9_.-]{0,63}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub name: String,
    /// HMAC key the sender signs with (16 to 256 characters).
    #[schema(min_length = 16, max_length = 256)]
    pub secret: String,
    /// The job template.
    #[schema(value_type = crate::schema::JobSpecDoc)]
    pub job: Value,
    /// GitHub events to react to (default both `push` and `pull_request`).
    #[schema(value_type = Option<Vec<HookEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
}

/// A GitHub event a hook can react to (documentation of `events`; checked by `check_events`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum HookEvent {
    /// `push`.
    Push,
    /// `pull_request`.
    PullRequest,
}

/// Changes to a webhook; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHook {
    /// New secret.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: Option<String>,
    /// New job template.
    #[schema(value_type = Option<crate::schema::JobSpecDoc>)]
    pub job: Option<Value>,
    /// New event list.
    #[schema(value_type = Option<Vec<HookEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
}

/// Every webhook.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HookList {
    /// By name.
    pub hooks: Vec<HookView>,
}

/// What a delivery did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryReply {
    /// `enqueued`, `duplicate`, `ignored` or `pong`.
    pub status: String,
    /// The job enqueued (now, or by the earlier identical delivery).
    pub job_id: Option<i64>,
    /// Why it was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(field)
}

fn check_hook_name(name: &str) -> ApiResult<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(unprocessable("name", "must match [a-z0-9][a-z0-9_.-]{0,63}"))
    }
}

fn check_secret(secret: &str) -> ApiResult<()> {
    if (16..=256).contains(&secret.len()) && !secret.contains('\0') {
        Ok(())
    } else {
        Err(unprocessable("secret", "must be 16 to 256 bytes"))
    }
}

fn check_events(events: &[String]) -> ApiResult<()> {
    if events.is_empty() {
        return Err(unprocessable("events", "name at least one event"));
    }
    for (i, e) in events.iter().enumerate() {
        if !GITHUB_EVENTS.contains(&e.as_str()) {
            return Err(unprocessable(
                format!("events[{i}]"),
                format!("unknown event {e:?}, expected push or pull_request"),
            ));
        }
    }
    Ok(())
}

fn check_template(name: &str, job: &Value) -> ApiResult<()> {
    hooks::check_template(name, job).map_err(ApiError::invalid)
}

/// Create a webhook.
#[utoipa::path(
    post, path = "/v1/hooks", tag = tags::HOOKS,
    request_body(content = CreateHook, content_type = "application/json"),
    responses(
        (status = 201, body = HookView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn create_hook(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateHook>,
) -> ApiResult<(StatusCode, Json<HookView>)> {
    check_hook_name(&req.name)?;
    check_secret(&req.secret)?;
    let events = req
        .events
        .unwrap_or_else(|| GITHUB_EVENTS.iter().map(|e| e.to_string()).collect());
    check_events(&events)?;
    check_template(&req.name, &req.job)?;
    match hooks::create(&state.pool, &req.name, &req.secret, &req.job, &events).await? {
        Some(h) => Ok((StatusCode::CREATED, Json(h.into()))),
        None => Err(ApiError::new(StatusCode::CONFLICT, format!("hook {:?} exists", req.name)).field("name")),
    }
}

/// List webhooks.
#[utoipa::path(
    get, path = "/v1/hooks", tag = tags::HOOKS,
    responses((status = 200, body = HookList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["admin"]))
)]
async fn list_hooks(_auth: Auth<Admin>, State(state): State<AppState>) -> ApiResult<Json<HookList>> {
    let hooks = hooks::list(&state.pool).await?;
    Ok(Json(HookList {
        hooks: hooks.into_iter().map(Into::into).collect(),
    }))
}

async fn find(state: &AppState, name: &str) -> ApiResult<Hook> {
    hooks::get(&state.pool, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("hook {name:?} not found")))
}

/// Read a webhook.
#[utoipa::path(
    get, path = "/v1/hooks/{hook}", tag = tags::HOOKS,
    params(("hook" = String, Path, description = "Hook name")),
    responses(
        (status = 200, body = HookView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such hook", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn get_hook(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> ApiResult<Json<HookView>> {
    Ok(Json(find(&state, &name).await?.into()))
}

/// Change a webhook's secret, job template or events.
#[utoipa::path(
    patch, path = "/v1/hooks/{hook}", tag = tags::HOOKS,
    params(("hook" = String, Path, description = "Hook name")),
    request_body(content = UpdateHook, content_type = "application/json"),
    responses(
        (status = 200, body = HookView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such hook", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn update_hook(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    JsonBody(req): JsonBody<UpdateHook>,
) -> ApiResult<Json<HookView>> {
    if let Some(s) = &req.secret {
        check_secret(s)?;
    }
    if let Some(e) = &req.events {
        check_events(e)?;
    }
    if let Some(job) = &req.job {
        check_template(&name, job)?;
    }
    hooks::update(
        &state.pool,
        &name,
        req.secret.as_deref(),
        req.job.as_ref(),
        req.events.as_deref(),
    )
    .await?
    .map(|h| Json(h.into()))
    .ok_or_else(|| ApiError::not_found(format!("hook {name:?} not found")))
}

/// Delete a webhook.
#[utoipa::path(
    delete, path = "/v1/hooks/{hook}", tag = tags::HOOKS,
    params(("hook" = String, Path, description = "Hook name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such hook", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
async fn delete_hook(
    _auth: Auth<Admin>,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> ApiResult<StatusCode> {
    if hooks::delete(&state.pool, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("hook {name:?} not found")))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn count(source: &str, result: &str) {
    kiln_metrics::metrics()
        .webhook_deliveries
        .with_label_values(&[source, result])
        .inc();
}

/// The one answer to a delivery that does not authenticate, whatever the reason (no such
/// hook, no signature, a wrong one): a sender cannot tell which hook names exist. `field`
/// depends only on the request (the signature header it used).
fn not_authenticated(field: &str) -> ApiError {
    ApiError::unauthorized("unknown hook, or a missing or wrong signature").field(field)
}

/// Reads the body (capped: 413), then finds the hook and checks the delivery's signature —
/// `X-Hub-Signature-256`, or on the generic endpoint Standard Webhooks' `webhook-signature`
/// over `webhook-id.webhook-timestamp.body` with the timestamp within
/// [`hooks::MAX_DELIVERY_AGE`] — answering every failure the same 401.
async fn authenticate(
    state: &AppState,
    source: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
    standard: bool,
) -> ApiResult<(Hook, axum::body::Bytes, Option<hooks::Signed>)> {
    let bytes = read_body(headers, body, state.config.hook_body_limit).await?;
    let signed = if standard {
        hooks::Signed::from_headers(headers)
    } else {
        None
    };
    let field = if signed.is_some() {
        "webhook-signature"
    } else {
        "X-Hub-Signature-256"
    };
    let hook = hooks::get(&state.pool, name).await?;
    let hub = header(headers, "x-hub-signature-256");
    let missing = signed.is_none() && hub.is_none();
    let verified = match (&hook, &signed) {
        (Some(h), Some(sig)) => sig.verify(&h.secret, &bytes),
        (Some(h), None) => hub.is_some_and(|sig| hooks::verify_signature(&h.secret, &bytes, sig)),
        (None, _) => {
            // The same work as a real check, so timing does not tell either.
            hooks::verify_signature("kiln-no-such-hook-secret", &bytes, "sha256=00");
            false
        }
    };
    let hook = match hook {
        Some(h) if verified => h,
        found => {
            let reason = match (found, missing) {
                (None, _) => "unknown_hook",
                (Some(_), true) => "missing_signature",
                (Some(_), false) => "bad_signature",
            };
            count(source, reason);
            return Err(not_authenticated(field));
        }
    };
    if let Some(sig) = &signed {
        if let Err(age) = sig.check_age(chrono::Utc::now()) {
            count(source, "stale");
            return Err(ApiError::unauthorized(format!(
                "webhook-timestamp is {age} s away from now; deliveries are accepted within {} s",
                hooks::MAX_DELIVERY_AGE.as_secs()
            ))
            .field("webhook-timestamp"));
        }
    }
    Ok((hook, bytes, signed))
}

fn ignored(source: &str, reason: String) -> (StatusCode, Json<DeliveryReply>) {
    count(source, "ignored");
    (
        StatusCode::ACCEPTED,
        Json(DeliveryReply {
            status: "ignored".into(),
            job_id: None,
            reason: Some(reason),
        }),
    )
}

async fn enqueue(
    state: &AppState,
    source: &str,
    hook: &Hook,
    t: &Trigger,
) -> ApiResult<(StatusCode, Json<DeliveryReply>)> {
    match hooks::deliver(&state.pool, hook, t).await {
        Ok(Delivered::Enqueued(id)) => {
            count(source, "enqueued");
            tracing::info!(hook = %hook.name, delivery = %t.delivery, job = id, "webhook enqueued a job");
            Ok((
                StatusCode::ACCEPTED,
                Json(DeliveryReply {
                    status: "enqueued".into(),
                    job_id: Some(id),
                    reason: None,
                }),
            ))
        }
        Ok(Delivered::Duplicate(id)) => {
            count(source, "duplicate");
            Ok((
                StatusCode::OK,
                Json(DeliveryReply {
                    status: "duplicate".into(),
                    job_id: id,
                    reason: None,
                }),
            ))
        }
        Err(DeliveryError::Template(e)) => {
            count(source, "invalid");
            Err(ApiError::invalid(e))
        }
        Err(DeliveryError::Queue(e)) => {
            count(source, "error");
            Err(e.into())
        }
    }
}

/// Receive a GitHub delivery (`push` or `pull_request`) and enqueue the hook's job for that
/// repository and commit. Signed with `X-Hub-Signature-256`; a repeated `X-GitHub-Delivery`
/// enqueues nothing.
#[utoipa::path(
    post, path = "/v1/hooks/github/{hook}", tag = tags::HOOKS,
    params(
        ("hook" = String, Path, description = "Hook name"),
        ("X-Hub-Signature-256" = String, Header, description = "sha256=HMAC of the body under the hook's secret"),
        ("X-GitHub-Event" = String, Header, description = "push, pull_request or ping"),
        ("X-GitHub-Delivery" = String, Header, description = "Unique delivery id"),
    ),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 202, description = "Enqueued, or ignored (another event or action)", body = DeliveryReply),
        (status = 200, description = "A repeated delivery, or a ping", body = DeliveryReply),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Unknown hook, or a missing or wrong signature (one answer for all)", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
async fn github_delivery(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<DeliveryReply>)> {
    const SRC: &str = "github";
    let (hook, bytes, _) = authenticate(&state, SRC, &name, &headers, body, false).await?;
    let event = header(&headers, "x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::bad_request("X-GitHub-Event", "missing X-GitHub-Event"))?
        .to_owned();
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 180)
        .ok_or_else(|| ApiError::bad_request("X-GitHub-Delivery", "missing or over 180 bytes"))?
        .to_owned();
    let payload: Value = parse_json(&bytes)?;
    if event == "ping" {
        count(SRC, "ping");
        return Ok((
            StatusCode::OK,
            Json(DeliveryReply {
                status: "pong".into(),
                job_id: None,
                reason: None,
            }),
        ));
    }
    if !hook.events.contains(&event) {
        return Ok(ignored(
            SRC,
            format!("event {event:?} is not one this hook reacts to"),
        ));
    }
    let t = match hooks::payload::github(event, delivery, &payload)
        .map_err(|e| unprocessable(e.field, e.message))?
    {
        GithubDelivery::Trigger(t) => t,
        GithubDelivery::Ignored(reason) => return Ok(ignored(SRC, reason)),
    };
    enqueue(&state, SRC, &hook, &t).await
}

/// Receive any signed JSON delivery and enqueue the hook's job. The body's top-level
/// `repository`, `commit` and `ref` strings (if present) fill the template; the delivery id is
/// `webhook-id`, `X-Kiln-Delivery` (or `X-GitHub-Delivery`), else the body's SHA-256, so a
/// replayed body is ignored. Signed either like GitHub (`X-Hub-Signature-256`) or like
/// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), whose signed
/// timestamp must be within 5 minutes of the server's clock.
#[utoipa::path(
    post, path = "/v1/hooks/generic/{hook}", tag = tags::HOOKS,
    params(
        ("hook" = String, Path, description = "Hook name"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "sha256=HMAC of the body under the hook's secret (or sign with webhook-*)"),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks: the delivery id"),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks: Unix seconds; refused when more than 5 minutes away"),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, space-separated"),
        ("X-Kiln-Delivery" = Option<String>, Header, description = "Unique delivery id"),
        ("X-Kiln-Event" = Option<String>, Header, description = "Event name for the template (default generic)"),
    ),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 202, description = "Enqueued", body = DeliveryReply),
        (status = 200, description = "A repeated delivery", body = DeliveryReply),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Unknown hook, a missing or wrong signature (one answer for all), or a stale webhook-timestamp", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
async fn generic_delivery(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<DeliveryReply>)> {
    const SRC: &str = "generic";
    let (hook, bytes, signed) = authenticate(&state, SRC, &name, &headers, body, true).await?;
    let payload: Value = parse_json(&bytes)?;
    if !payload.is_object() {
        return Err(unprocessable("body", "must be a JSON object"));
    }
    let delivery = match signed
        .as_ref()
        .map(|s| s.id.as_str())
        .or_else(|| header(&headers, "x-kiln-delivery"))
        .or_else(|| header(&headers, "x-github-delivery"))
    {
        Some(d) if !d.is_empty() && d.len() <= 180 => d.to_owned(),
        Some(_) => return Err(ApiError::bad_request("X-Kiln-Delivery", "must be 1 to 180 bytes")),
        None => format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
    };
    let event = header(&headers, "x-kiln-event")
        .filter(|e| !e.is_empty())
        .unwrap_or("generic")
        .chars()
        .take(64)
        .collect();
    let t =
        hooks::payload::generic(event, delivery, &payload).map_err(|e| unprocessable(e.field, e.message))?;
    enqueue(&state, SRC, &hook, &t).await
}
