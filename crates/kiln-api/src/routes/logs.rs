//! A job's logs: a JSON page after a cursor, or a live Server-Sent Events stream that follows
//! the running attempt and ends once the job is final.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use kiln_queue::logs::LogRecord;
use kiln_queue::{admin, QueueError, Signal};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Auth, JobsRead};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{PathParam, QueryParams};
use crate::AppState;
pub use kiln_wire::logs::LogPage;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(job_logs))
        .routes(routes!(stream_logs))
}

/// How often a live stream looks at the job even without a notification.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
const PAGE: i64 = 500;

/// Paging of a job's logs.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only chunks after this position, `ATTEMPT:SEQ` (a previous page's `next`).
    pub after: Option<String>,
    /// Most chunks to return (1 to 1000, default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Parses `ATTEMPT:SEQ`.
fn parse_position(field: &str, s: &str) -> ApiResult<(i32, i32)> {
    s.split_once(':')
        .and_then(|(a, q)| Some((a.trim().parse().ok()?, q.trim().parse().ok()?)))
        .ok_or_else(|| ApiError::bad_request(field, format!("{s:?} is not a log position ATTEMPT:SEQ")))
}

fn position(r: &LogRecord) -> String {
    format!("{}:{}", r.attempt, r.seq)
}

/// Read a job's log chunks after a position.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/logs", tag = tags::JOBS,
    params(("id" = i64, Path, description = "Job id"), LogsQuery),
    responses(
        (status = 200, body = LogPage),
        (status = 400, description = "Bad id or parameter", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn job_logs(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    QueryParams(q): QueryParams<LogsQuery>,
) -> ApiResult<Json<LogPage>> {
    let after = q
        .after
        .as_deref()
        .map(|a| parse_position("after", a))
        .transpose()?;
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("{limit} is out of range 1..=1000"),
        ));
    }
    // State first: chunks written before the job became final are all visible after it.
    let job = admin::get_job(&state.pool, id).await?;
    let chunks = kiln_queue::logs::read(&state.pool, id, after, limit).await?;
    let dropped = kiln_queue::logs::drops(&state.pool, id).await?;
    let next = chunks.last().map(position).or(q.after);
    let done = job.state.is_final() && (chunks.len() as i64) < limit;
    Ok(Json(LogPage {
        job_id: id,
        chunks,
        next,
        done,
        dropped,
    }))
}

/// Follow a job's logs live as Server-Sent Events.
///
/// Each chunk is an event `log` whose `id` is its position (`ATTEMPT:SEQ`; a reconnecting
/// client sends it back as `Last-Event-ID`) and whose data is the chunk as JSON. Once the job
/// is final and every chunk was sent, an event `end` carries `{"state": …, "dropped": […]}`
/// (per attempt, the output past the live-log cap, counted not stored) and the stream closes.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/logs/stream", tag = tags::JOBS,
    params(
        ("id" = i64, Path, description = "Job id"),
        ("after" = Option<String>, Query, description = "Start after this position ATTEMPT:SEQ"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad id or position", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn stream_logs(
    _auth: Auth<JobsRead>,
    State(state): State<AppState>,
    PathParam(id): PathParam<i64>,
    QueryParams(q): QueryParams<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_position("Last-Event-ID", v))
        .transpose()?;
    let after = match resume {
        Some(p) => Some(p),
        None => q
            .after
            .as_deref()
            .map(|a| parse_position("after", a))
            .transpose()?,
    };
    admin::get_job(&state.pool, id).await?;
    // Subscribe before the first read so no notification falls between the two.
    let wake = state.listener.subscribe(kiln_queue::logs::LOGS_CHANNEL);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(state, id, after, wake, tx));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// Query of the live stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Start after this position.
    pub after: Option<String>,
}

/// Sends chunks as they are stored until the job is final, the client leaves or the server
/// shuts down.
async fn follow(
    state: AppState,
    id: i64,
    mut after: Option<(i32, i32)>,
    mut wake: broadcast::Receiver<Signal>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    loop {
        let step: Result<Option<String>, QueueError> = async {
            let job = admin::get_job(&state.pool, id).await?;
            loop {
                let chunks = kiln_queue::logs::read(&state.pool, id, after, PAGE).await?;
                let full = chunks.len() as i64 == PAGE;
                for c in chunks {
                    after = Some((c.attempt, c.seq));
                    let event = Event::default()
                        .event("log")
                        .id(position(&c))
                        .json_data(&c)
                        .expect("a log chunk serializes");
                    if tx.send(Ok(event)).await.is_err() {
                        return Ok(Some(String::new()));
                    }
                }
                if !full {
                    break;
                }
            }
            Ok(job.state.is_final().then(|| job.state.to_string()))
        }
        .await;
        match step {
            Ok(Some(s)) if s.is_empty() => return,
            Ok(Some(final_state)) => {
                let dropped = kiln_queue::logs::drops(&state.pool, id).await.unwrap_or_default();
                let end = Event::default()
                    .event("end")
                    .data(serde_json::json!({"state": final_state, "dropped": dropped}).to_string());
                let _ = tx.send(Ok(end)).await;
                return;
            }
            Ok(None) => {}
            Err(QueueError::NotFound(_)) => {
                let end = Event::default()
                    .event("end")
                    .data(serde_json::json!({"state": "pruned"}).to_string());
                let _ = tx.send(Ok(end)).await;
                return;
            }
            Err(e) => tracing::warn!(job = id, error = %e, "live logs: read failed; will retry"),
        }
        let deadline = tokio::time::sleep(POLL_EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => return,
                _ = state.shutdown.cancelled() => return,
                got = wake.recv() => match got {
                    Ok(Signal::Notified(job)) if job.parse() == Ok(id) => break,
                    Ok(Signal::Notified(_)) => continue,
                    Ok(Signal::Reconnected) => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut deadline).await;
                        break;
                    }
                },
            }
        }
    }
}
