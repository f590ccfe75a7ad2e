//! Operator actions and inspection: cancel, retry, pause/resume/cap queues, read jobs.

use sqlx::{postgres::PgRow, PgExecutor, Row};

use crate::error::{QueueError, Result};
use serde::{Deserialize, Serialize};

use crate::model::{parse_column, AttemptRecord, JobRecord, JobState};

const CANCEL_SQL: &str = include_str!("sql/cancel.sql");
const RETRY_SQL: &str = include_str!("sql/retry.sql");
const SET_QUEUE_SQL: &str = include_str!("sql/set_queue.sql");
const QUEUE_COUNTS_SQL: &str = include_str!("sql/queue_counts.sql");
const GET_JOB_SQL: &str = include_str!("sql/get_job.sql");
const ATTEMPTS_SQL: &str = include_str!("sql/attempts.sql");

/// The channel on which running jobs are told to stop; the payload is the job id.
pub const CANCEL_CHANNEL: &str = "kiln_cancel";
/// The channel on which workers are told a queue has new work; the payload is the queue.
pub const JOBS_CHANNEL: &str = "kiln_jobs";

/// Cancels job `id`. Returns its state afterwards: `cancelled`, or `running` when its worker
/// has been asked to stop (it records a `cancelled` attempt once it has).
pub async fn cancel(db: &sqlx::PgPool, id: i64) -> Result<JobState> {
    let row = sqlx::query(CANCEL_SQL)
        .bind(id)
        .fetch_optional(db)
        .await
        .map_err(QueueError::db("cancel"))?;
    match row {
        Some(row) => parse_column("state", row.get::<&str, _>("state")),
        None => {
            let job = get_job(db, id).await?;
            Err(QueueError::WrongState {
                id,
                state: job.state.to_string(),
                action: "cancel",
            })
        }
    }
}

/// Makes a finished job (`failed`, `cancelled` or `succeeded`) available again, with room
/// for one more attempt.
pub async fn retry(db: &sqlx::PgPool, id: i64) -> Result<()> {
    let row = sqlx::query(RETRY_SQL)
        .bind(id)
        .fetch_optional(db)
        .await
        .map_err(|e| {
            if let sqlx::Error::Database(d) = &e {
                if d.constraint() == Some("kiln_jobs_unique_key") {
                    return QueueError::UniqueKeyTaken(format!("job {id}'s unique key"));
                }
            }
            QueueError::db("retry")(e)
        })?;
    if row.is_none() {
        let job = get_job(db, id).await?;
        return Err(QueueError::WrongState {
            id,
            state: job.state.to_string(),
            action: "retry",
        });
    }
    Ok(())
}

/// A queue's settings, fleet-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSettings {
    /// Queue name.
    pub name: String,
    /// No job is claimed while paused.
    pub paused: bool,
    /// At most this many of its jobs run at once across the fleet.
    pub max_running: Option<i32>,
}

/// Changes a queue's settings: `paused` if given, and `max_running` if `set_cap` (where
/// `None` lifts the cap). Workers are woken to notice.
pub async fn configure_queue<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    paused: Option<bool>,
    max_running: Option<i32>,
    set_cap: bool,
) -> Result<QueueSettings> {
    let row = sqlx::query(SET_QUEUE_SQL)
        .bind(name)
        .bind(paused)
        .bind(max_running)
        .bind(set_cap)
        .fetch_one(db)
        .await
        .map_err(QueueError::db("configure queue"))?;
    Ok(QueueSettings {
        name: row.get("name"),
        paused: row.get("paused"),
        max_running: row.get("max_running"),
    })
}

/// Pauses `name` fleet-wide: running jobs finish, no new ones start.
pub async fn pause<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<QueueSettings> {
    configure_queue(db, name, Some(true), None, false).await
}

/// Resumes `name` fleet-wide.
pub async fn resume<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<QueueSettings> {
    configure_queue(db, name, Some(false), None, false).await
}

/// Jobs of one queue in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueCount {
    /// Queue.
    pub queue: String,
    /// State, or `None` for a configured queue that has no jobs.
    pub state: Option<JobState>,
    /// How many.
    pub count: i64,
    /// Paused fleet-wide.
    pub paused: bool,
    /// Fleet-wide cap.
    pub max_running: Option<i32>,
}

/// Counts jobs per queue and state.
pub async fn queue_counts<'e>(db: impl PgExecutor<'e>) -> Result<Vec<QueueCount>> {
    let rows = sqlx::query(QUEUE_COUNTS_SQL)
        .fetch_all(db)
        .await
        .map_err(QueueError::db("queue counts"))?;
    rows.iter()
        .map(|r| {
            Ok(QueueCount {
                queue: r.get("queue"),
                state: r
                    .get::<Option<&str>, _>("state")
                    .map(|s| parse_column("state", s))
                    .transpose()?,
                count: r.get("count"),
                paused: r.get("paused"),
                max_running: r.get("max_running"),
            })
        })
        .collect()
}

pub(crate) fn job_from_row(r: &PgRow) -> Result<JobRecord> {
    Ok(JobRecord {
        id: r.get("id"),
        queue: r.get("queue"),
        kind: parse_column("kind", r.get::<&str, _>("kind"))?,
        state: parse_column("state", r.get::<&str, _>("state"))?,
        payload: r.get::<sqlx::types::Json<serde_json::Value>, _>("payload").0,
        priority: r.get("priority"),
        run_at: r.get("run_at"),
        attempt: r.get("attempt"),
        max_attempts: r.get("max_attempts"),
        timeout_ms: r.get("timeout_ms"),
        unique_key: r.get("unique_key"),
        idempotency_key: r.get("idempotency_key"),
        tags: r.get("tags"),
        pipeline_id: r.get("pipeline_id"),
        depends_on: r.get("depends_on"),
        created_at: r.get("created_at"),
        attempted_at: r.get("attempted_at"),
        finalized_at: r.get("finalized_at"),
        locked_by: r.get("locked_by"),
        lease_expires_at: r.get("lease_expires_at"),
        cancel_requested_at: r.get("cancel_requested_at"),
        result: json_column(r, "result"),
        last_error: r.get("last_error"),
    })
}

/// Reads one job.
pub async fn get_job<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<JobRecord> {
    let row = sqlx::query(GET_JOB_SQL)
        .bind(id)
        .fetch_optional(db)
        .await
        .map_err(QueueError::db("get job"))?
        .ok_or(QueueError::NotFound(id))?;
    job_from_row(&row)
}

/// Reads a job's attempts, oldest first.
pub async fn attempts<'e>(db: impl PgExecutor<'e>, job_id: i64) -> Result<Vec<AttemptRecord>> {
    let rows = sqlx::query(ATTEMPTS_SQL)
        .bind(job_id)
        .fetch_all(db)
        .await
        .map_err(QueueError::db("list attempts"))?;
    rows.iter()
        .map(|r| {
            Ok(AttemptRecord {
                id: r.get("id"),
                job_id: r.get("job_id"),
                attempt: r.get("attempt"),
                worker_id: r.get("worker_id"),
                started_at: r.get("started_at"),
                finished_at: r.get("finished_at"),
                outcome: parse_column("outcome", r.get::<&str, _>("outcome"))?,
                error: r.get("error"),
                result: json_column(r, "result"),
                details: match json_column(r, "details") {
                    Some(serde_json::Value::Object(map)) => map,
                    _ => serde_json::Map::new(),
                },
            })
        })
        .collect()
}

/// The diff of a job's latest attempt that recorded one (all `None` when none did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDiff {
    /// Job id.
    pub job_id: i64,
    /// The attempt the diff is from; absent when no attempt recorded a diff.
    pub attempt: Option<i32>,
    /// Unified diff.
    pub diff: Option<String>,
    /// Files touched.
    pub files: Option<i32>,
    /// Lines added.
    pub insertions: Option<i32>,
    /// Lines removed.
    pub deletions: Option<i32>,
}

/// Reads the diff of job `id`'s latest attempt that recorded one (the API's and the CLI's
/// diff views). Fails with [`QueueError::NotFound`] for an unknown job.
pub async fn latest_diff(db: &sqlx::PgPool, id: i64) -> Result<JobDiff> {
    get_job(db, id).await?;
    let latest = attempts(db, id)
        .await?
        .into_iter()
        .rev()
        .find(|a| a.diff().is_some());
    let counts = latest.as_ref().and_then(|a| a.diff_counts());
    let narrow = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    Ok(JobDiff {
        job_id: id,
        attempt: latest.as_ref().map(|a| a.attempt),
        diff: latest.as_ref().and_then(|a| a.diff()).map(str::to_owned),
        files: counts.map(|c| narrow(c.0)),
        insertions: counts.map(|c| narrow(c.1)),
        deletions: counts.map(|c| narrow(c.2)),
    })
}

/// A nullable jsonb column as a JSON value.
fn json_column(row: &PgRow, name: &str) -> Option<serde_json::Value> {
    row.get::<Option<sqlx::types::Json<serde_json::Value>>, _>(name)
        .map(|j| j.0)
}
