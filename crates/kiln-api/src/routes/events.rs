//! `/v1/events`: the job-event outbox, as JSON pages after an id or as a Server-Sent Events
//! stream that resumes after `Last-Event-ID`. Ids are in commit order, so reading `id > after`
//! never skips an event.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use kiln_queue::events::{self, EventFilter};
use kiln_queue::{JobKind, Signal};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Auth, JobsRead};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::QueryParams;
use crate::AppState;
pub use kiln_wire::events::EventPage;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
}

/// Most events in one page.
pub const MAX_LIMIT: i64 = 1000;
/// How often a stream reads the outbox even without a notification.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Cursor, page size and filters of the event routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a higher id (a previous page's `next_after`; 0 or absent: the oldest kept).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Most events returned (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only this type (`job.succeeded`, `job.failed`, `job.cancelled`, `job.retryable`,
    /// `pipeline.finished`, or a kind's own).
    #[serde(rename = "type")]
    #[param(rename = "type", max_length = 64)]
    pub event_type: Option<String>,
    /// Only this job's events.
    #[param(minimum = 1)]
    pub job: Option<i64>,
    /// Only this pipeline's events.
    #[param(minimum = 1)]
    pub pipeline: Option<i64>,
    /// Only this queue's events.
    #[param(max_length = 64)]
    pub queue: Option<String>,
    /// Only this kind's events.
    pub kind: Option<String>,
}

impl EventsQuery {
    fn filter(&self, after: Option<i64>) -> Result<EventFilter, ApiError> {
        let after = after.or(self.after).unwrap_or(0);
        if after < 0 {
            return Err(ApiError::bad_request("after", "event ids are not negative"));
        }
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(
                "limit",
                format!("between 1 and {MAX_LIMIT}"),
            ));
        }
        if let Some(t) = &self.event_type {
            if t.is_empty() || t.len() > 64 {
                return Err(ApiError::bad_request("type", "1 to 64 characters"));
            }
        }
        for (field, id) in [("job", self.job), ("pipeline", self.pipeline)] {
            if id.is_some_and(|id| id <= 0) {
                return Err(ApiError::bad_request(field, "ids are positive"));
            }
        }
        if self.queue.as_ref().is_some_and(|q| q.is_empty() || q.len() > 64) {
            return Err(ApiError::bad_request("queue", "1 to 64 characters"));
        }
        if let Some(k) = &self.kind {
            k.parse::<JobKind>()
                .map_err(|e| ApiError::bad_request("kind", e))?;
        }
        Ok(EventFilter {
            after,
            limit,
            types: self.event_type.clone().map(|t| vec![t]),
            job_id: self.job,
            pipeline_id: self.pipeline,
            queue: self.queue.clone(),
            kind: self.kind.clone(),
        })
    }
}

/// Events after `after`, oldest first.
#[utoipa::path(
    get, path = "/v1/events", tag = tags::EVENTS,
    params(EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn list_events(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult<Json<EventPage>> {
    let filter = q.filter(None)?;
    let last_id = events::last_id(&state.pool).await?;
    let events = events::list(&state.pool, &filter).await?;
    let next_after = events.last().map(|e| e.id).unwrap_or(filter.after);
    Ok(Json(EventPage {
        events,
        next_after,
        last_id,
    }))
}

/// The same events as a Server-Sent Events stream (`id:` is the event id, `event:` its type),
/// following new ones as they commit; resumes after `Last-Event-ID` when given.
#[utoipa::path(
    get, path = "/v1/events/stream", tag = tags::EVENTS,
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad parameter or Last-Event-ID", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn stream_events(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    QueryParams(q): QueryParams<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let resume = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID", "must be an event id"))
        })
        .transpose()?;
    let filter = q.filter(resume)?;
    // Subscribe before the first read so no notification falls between the two.
    let wake = state.listener.subscribe(events::CHANNEL);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(state, filter, wake, tx));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// Sends events as they commit until the client leaves or the server shuts down.
async fn follow(
    state: AppState,
    mut filter: EventFilter,
    mut wake: tokio::sync::broadcast::Receiver<Signal>,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    loop {
        match events::list(&state.pool, &filter).await {
            Ok(page) => {
                let full = page.len() as i64 == filter.limit;
                for e in page {
                    filter.after = e.id;
                    let event = SseEvent::default()
                        .id(e.id.to_string())
                        .event(e.kind_of_event.clone())
                        .json_data(&e)
                        .expect("an event serializes");
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "event stream: read failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = tx.closed() => return,
            _ = state.shutdown.cancelled() => return,
            got = wake.recv() => if let Err(RecvError::Closed) = got {
                tokio::time::sleep(POLL_EVERY).await;
            },
        }
    }
}
