//! The job-event outbox: every final transition, every `retryable`, every settled pipeline and
//! each kind's milestones, written in the same transaction as the change.
//!
//! Ids are strictly increasing and in commit order (migration 0010's `kiln_event_ids` holds one
//! counter row until commit), so a consumer that reads `id > last_seen` never skips a
//! late-committing event, and a missed `NOTIFY kiln_events` only delays it until the next read.
//! Storage keeps one row per writing statement (a completion batch's events as parallel
//! arrays); [`list`] expands them, so every reader sees one event per job with its own id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Row};
use std::time::Duration;

use crate::error::{QueueError, Result};

const LIST_SQL: &str = include_str!("sql/events_list.sql");
const EMIT_SQL: &str = include_str!("sql/events_emit.sql");
const PRUNE_SQL: &str = include_str!("sql/events_prune.sql");

/// The channel `kiln_event_ids` notifies (payload: the last id reserved).
pub const CHANNEL: &str = "kiln_events";

/// Event types written by the queue and pipelines; kinds add their own (`generation.iteration`).
pub mod types {
    /// A job ended well.
    pub const JOB_SUCCEEDED: &str = "job.succeeded";
    /// A job failed for good (out of attempts, or a permanent error).
    pub const JOB_FAILED: &str = "job.failed";
    /// A job was cancelled.
    pub const JOB_CANCELLED: &str = "job.cancelled";
    /// An attempt failed and the job will run again.
    pub const JOB_RETRYABLE: &str = "job.retryable";
    /// A pipeline reached its verdict.
    pub const PIPELINE_FINISHED: &str = "pipeline.finished";
    /// A generation pipeline's iteration was validated (its verdict, score, tokens, cost).
    pub const GENERATION_ITERATION: &str = "generation.iteration";
    /// A budget refused an LLM call before it was made.
    pub const BUDGET_EXCEEDED: &str = "budget.exceeded";
    /// Every type the queue and pipelines write.
    pub const ALL: &[&str] = &[
        JOB_SUCCEEDED,
        JOB_FAILED,
        JOB_CANCELLED,
        JOB_RETRYABLE,
        PIPELINE_FINISHED,
        GENERATION_ITERATION,
        BUDGET_EXCEEDED,
    ];
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing, in commit order.
    pub id: i64,
    /// `job.succeeded`, `pipeline.finished`, …
    #[serde(rename = "type")]
    pub kind_of_event: String,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// The job it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// The pipeline it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<i64>,
    /// The job's queue, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The job's kind, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A small type-specific body.
    pub data: serde_json::Value,
}

/// An event to write with [`emit`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewEvent {
    /// Its type.
    pub event_type: String,
    /// Subject job.
    pub job_id: Option<i64>,
    /// Subject pipeline.
    pub pipeline_id: Option<i64>,
    /// Subject queue.
    pub queue: Option<String>,
    /// Subject kind.
    pub kind: Option<String>,
    /// Body (keep it small: a few hundred bytes).
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event of `event_type` with body `data` and no subject yet.
    pub fn new(event_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            event_type: event_type.into(),
            data,
            ..Self::default()
        }
    }
}

/// Which events to read: those after `after`, at most `limit`, optionally filtered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventFilter {
    /// Read ids strictly greater than this (0: from the oldest kept).
    pub after: i64,
    /// Most events returned.
    pub limit: i64,
    /// Only these types.
    pub types: Option<Vec<String>>,
    /// Only this job's.
    pub job_id: Option<i64>,
    /// Only this pipeline's.
    pub pipeline_id: Option<i64>,
    /// Only this queue's.
    pub queue: Option<String>,
    /// Only this kind's.
    pub kind: Option<String>,
}

/// Reads events after `filter.after`, oldest first.
pub async fn list<'e>(db: impl PgExecutor<'e>, filter: &EventFilter) -> Result<Vec<Event>> {
    let rows = sqlx::query(LIST_SQL)
        .bind(filter.after)
        .bind(filter.limit.max(0))
        .bind(filter.types.as_deref())
        .bind(filter.job_id)
        .bind(filter.pipeline_id)
        .bind(filter.queue.as_deref())
        .bind(filter.kind.as_deref())
        .fetch_all(db)
        .await
        .map_err(QueueError::db("list events"))?;
    Ok(rows
        .iter()
        .map(|r| Event {
            id: r.get("id"),
            kind_of_event: r.get("type"),
            at: r.get("at"),
            job_id: r.get("job_id"),
            pipeline_id: r.get("pipeline_id"),
            queue: r.get("queue"),
            kind: r.get("kind"),
            data: r.get::<sqlx::types::Json<serde_json::Value>, _>("data").0,
        })
        .collect())
}

/// Writes `events` as part of the caller's transaction (call it last in that transaction: the
/// ids are reserved under a lock held until commit). Returns their ids.
pub async fn emit<'e>(db: impl PgExecutor<'e>, events: &[NewEvent]) -> Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let jobs: Vec<Option<i64>> = events.iter().map(|e| e.job_id).collect();
    let pipelines: Vec<Option<i64>> = events.iter().map(|e| e.pipeline_id).collect();
    let queues: Vec<Option<&str>> = events.iter().map(|e| e.queue.as_deref()).collect();
    let kinds: Vec<Option<&str>> = events.iter().map(|e| e.kind.as_deref()).collect();
    let data: Vec<sqlx::types::Json<&serde_json::Value>> =
        events.iter().map(|e| sqlx::types::Json(&e.data)).collect();
    let first: i64 = sqlx::query_scalar(EMIT_SQL)
        .bind(&types)
        .bind(&jobs)
        .bind(&pipelines)
        .bind(&queues)
        .bind(&kinds)
        .bind(&data)
        .fetch_one(db)
        .await
        .map_err(QueueError::db("emit events"))?;
    Ok((first..first + events.len() as i64).collect())
}

/// Deletes up to `batch` outbox rows (each a block of events written by one statement) older
/// than `older_than`; returns how many rows.
pub async fn prune<'e>(db: impl PgExecutor<'e>, older_than: Duration, batch: i64) -> Result<u64> {
    let done = sqlx::query(PRUNE_SQL)
        .bind(older_than.as_secs_f64())
        .bind(batch)
        .execute(db)
        .await
        .map_err(QueueError::db("prune events"))?;
    Ok(done.rows_affected())
}

/// The highest event id written so far (0 when none): where a consumer that wants only new
/// events starts.
pub async fn last_id<'e>(db: impl PgExecutor<'e>) -> Result<i64> {
    sqlx::query_scalar("SELECT last_id FROM kiln_event_counter")
        .fetch_one(db)
        .await
        .map_err(QueueError::db("read the last event id"))
}
