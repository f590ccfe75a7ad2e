//! The worker's side of the queue: claim with a lease, heartbeat, complete, hand back.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};
use std::time::Duration;

use crate::error::{QueueError, Result};
use crate::model::{parse_column, AttemptOutcome, ClaimedJob, JobKind, JobState};

const CLAIM_SQL: &str = include_str!("sql/claim.sql");
const HEARTBEAT_SQL: &str = include_str!("sql/heartbeat.sql");
const COMPLETE_SQL: &str = include_str!("sql/complete.sql");
const HAND_BACK_SQL: &str = include_str!("sql/hand_back.sql");
const REGISTER_WORKER_SQL: &str = include_str!("sql/register_worker.sql");

/// Claims up to `limit` runnable jobs of `queue` for `worker`, leased for `lease`.
///
/// Uses `FOR UPDATE SKIP LOCKED`, so any number of workers can claim at once without
/// waiting on each other or taking the same job. Honors pause and the queue's fleet-wide cap.
pub async fn claim<'e>(
    db: impl PgExecutor<'e>,
    queue: &str,
    worker: &str,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    claim_kinds(db, queue, worker, limit, lease, None).await
}

/// Like [`claim`], taking only jobs of `kinds` (all kinds when `None`).
pub async fn claim_kinds<'e>(
    db: impl PgExecutor<'e>,
    queue: &str,
    worker: &str,
    limit: usize,
    lease: Duration,
    kinds: Option<&[JobKind]>,
) -> Result<Vec<ClaimedJob>> {
    let kinds: Option<Vec<&str>> = kinds.map(|k| k.iter().map(|k| k.as_str()).collect());
    let rows = sqlx::query(CLAIM_SQL)
        .bind(queue)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(kinds)
        .fetch_all(db)
        .await
        .map_err(QueueError::db("claim"))?;
    let mut jobs = rows
        .iter()
        .map(|r| {
            Ok(ClaimedJob {
                id: r.get("id"),
                queue: r.get("queue"),
                kind: parse_column("kind", r.get::<&str, _>("kind"))?,
                payload: r.get::<sqlx::types::Json<serde_json::Value>, _>("payload").0,
                priority: r.get("priority"),
                attempt: r.get("attempt"),
                max_attempts: r.get("max_attempts"),
                timeout_ms: r.get("timeout_ms"),
                tags: r.get("tags"),
                pipeline_id: r.get("pipeline_id"),
                created_at: r.get("created_at"),
                attempted_at: r.get("attempted_at"),
                run_at: r.get("run_at"),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The UPDATE returns rows in storage order; hand them out in claim order.
    jobs.sort_unstable_by_key(|j| (std::cmp::Reverse(j.priority), j.id));
    Ok(jobs)
}

/// Result of a heartbeat for one held job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Job id.
    pub id: i64,
    /// Someone asked to cancel it.
    pub cancel_requested: bool,
}

/// Extends `worker`'s leases on `ids`. Jobs missing from the answer are no longer held
/// by this worker (rescued after a stall, or finished): their handlers must stop.
pub async fn heartbeat<'e>(
    db: impl PgExecutor<'e>,
    worker: &str,
    ids: &[i64],
    lease: Duration,
) -> Result<Vec<LeaseStatus>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(HEARTBEAT_SQL)
        .bind(worker)
        .bind(ids)
        .bind(lease.as_secs_f64())
        .fetch_all(db)
        .await
        .map_err(QueueError::db("heartbeat"))?;
    Ok(rows
        .iter()
        .map(|r| LeaseStatus {
            id: r.get("id"),
            cancel_requested: r.get("cancel"),
        })
        .collect())
}

/// How one attempt ended, as reported by the worker that ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Job id.
    pub id: i64,
    /// The attempt number the worker was given at claim.
    pub attempt: i32,
    /// How it ended (`lost` and `interrupted` are not reported this way).
    pub outcome: AttemptOutcome,
    /// Typed result, stored on the job and the attempt.
    pub result: Option<serde_json::Value>,
    /// Error text for failures.
    pub error: Option<String>,
    /// When the handler started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// For failures: when to try again; `None` fails the job for good.
    pub retry_at: Option<DateTime<Utc>>,
    /// What the attempt's kind reported (kind-owned JSON; `None` for most jobs).
    pub details: Option<serde_json::Value>,
}

/// Records a batch of finished attempts by `worker` in one statement and returns the new
/// state of each job it still held. Repeating a completion is harmless: jobs not held by
/// `worker` at that attempt are skipped and get no second attempt row.
pub async fn complete<'e>(
    db: impl PgExecutor<'e>,
    worker: &str,
    done: &[Completion],
) -> Result<Vec<(i64, JobState)>> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = done.iter().map(|c| c.id).collect();
    let attempts: Vec<i32> = done.iter().map(|c| c.attempt).collect();
    let outcomes: Vec<&str> = done.iter().map(|c| c.outcome.as_str()).collect();
    let results: Vec<Option<sqlx::types::Json<&serde_json::Value>>> = done
        .iter()
        .map(|c| c.result.as_ref().map(sqlx::types::Json))
        .collect();
    let errors: Vec<Option<&str>> = done.iter().map(|c| c.error.as_deref()).collect();
    let started: Vec<DateTime<Utc>> = done.iter().map(|c| c.started_at).collect();
    let finished: Vec<DateTime<Utc>> = done.iter().map(|c| c.finished_at).collect();
    let retry: Vec<Option<DateTime<Utc>>> = done.iter().map(|c| c.retry_at).collect();
    let details: Vec<Option<sqlx::types::Json<&serde_json::Value>>> = done
        .iter()
        .map(|c| c.details.as_ref().map(sqlx::types::Json))
        .collect();
    let rows = sqlx::query(COMPLETE_SQL)
        .bind(worker)
        .bind(&ids)
        .bind(&attempts)
        .bind(&outcomes)
        .bind(&results)
        .bind(&errors)
        .bind(&started)
        .bind(&finished)
        .bind(&retry)
        .bind(&details)
        .fetch_all(db)
        .await
        .map_err(QueueError::db("complete"))?;
    rows.iter()
        .map(|r| Ok((r.get("id"), parse_column("state", r.get::<&str, _>("state"))?)))
        .collect()
}

/// A job handed back without spending an attempt; `started_at` is set when its handler had
/// begun (it then gets an `interrupted` attempt row saying `reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandBack {
    /// Job id.
    pub id: i64,
    /// When its handler started, if it did.
    pub started_at: Option<DateTime<Utc>>,
    /// Why, for the attempt row; None: the worker shut down.
    pub reason: Option<String>,
}

/// Returns jobs `worker` holds to the queue without spending their attempt. Started
/// ones get an `interrupted` attempt row. Returns how many were handed back.
pub async fn hand_back<'e>(db: impl PgExecutor<'e>, worker: &str, jobs: &[HandBack]) -> Result<u64> {
    Ok(hand_back_ids(db, worker, jobs).await?.len() as u64)
}

/// Like [`hand_back`], returning the ids of the jobs really handed back (those `worker`
/// still held).
pub async fn hand_back_ids<'e>(db: impl PgExecutor<'e>, worker: &str, jobs: &[HandBack]) -> Result<Vec<i64>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    let started: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.started_at).collect();
    let reasons: Vec<Option<&str>> = jobs.iter().map(|j| j.reason.as_deref()).collect();
    let row = sqlx::query(HAND_BACK_SQL)
        .bind(worker)
        .bind(&ids)
        .bind(&started)
        .bind(&reasons)
        .fetch_one(db)
        .await
        .map_err(QueueError::db("hand back"))?;
    Ok(row.get::<Vec<i64>, _>("ids"))
}

/// Records `worker` (host, pid, queues) in the registry, or refreshes its heartbeat.
pub async fn register_worker<'e>(
    db: impl PgExecutor<'e>,
    worker: &str,
    host: &str,
    pid: u32,
    queues: &[String],
) -> Result<()> {
    // A queue a worker serves is a metric label from now on (others count as `other`).
    for q in queues {
        kiln_metrics::queues::allow(q);
    }
    sqlx::query(REGISTER_WORKER_SQL)
        .bind(worker)
        .bind(host)
        .bind(i32::try_from(pid).unwrap_or(i32::MAX))
        .bind(queues)
        .execute(db)
        .await
        .map_err(QueueError::db("register worker"))?;
    Ok(())
}

/// Marks `worker` as stopped in the registry.
pub async fn deregister_worker<'e>(db: impl PgExecutor<'e>, worker: &str) -> Result<()> {
    sqlx::query("UPDATE kiln_workers SET stopped_at = now() WHERE id = $1")
        .bind(worker)
        .execute(db)
        .await
        .map_err(QueueError::db("deregister worker"))?;
    Ok(())
}
