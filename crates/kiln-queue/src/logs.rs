//! Attempt logs: chunks appended while a sandboxed attempt runs, read back in order (and
//! tailed live by listening on [`LOGS_CHANNEL`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Row};

use crate::error::{QueueError, Result};

const APPEND_SQL: &str = include_str!("sql/logs_append.sql");
const READ_SQL: &str = include_str!("sql/logs_read.sql");

/// The channel notified after each append; the payload is the job id.
pub const LOGS_CHANNEL: &str = "kiln_logs";

/// One chunk of output to append; `seq` orders the chunks of an attempt (from 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Position within the attempt; re-sending a chunk with a used `seq` is ignored.
    pub seq: i32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text (invalid UTF-8 replaced).
    pub data: String,
}

/// A stored chunk, with its attempt and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Attempt number.
    pub attempt: i32,
    /// Position within the attempt.
    pub seq: i32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text.
    pub data: String,
    /// When it was stored.
    pub at: DateTime<Utc>,
}

/// Appends `chunks` of job `job_id`'s attempt `attempt` in one statement and notifies
/// [`LOGS_CHANNEL`]. Returns how many were new.
pub async fn append<'e>(
    db: impl PgExecutor<'e>,
    job_id: i64,
    attempt: i32,
    chunks: &[LogChunk],
) -> Result<u64> {
    if chunks.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i32> = chunks.iter().map(|c| c.seq).collect();
    let streams: Vec<&str> = chunks.iter().map(|c| c.stream.as_str()).collect();
    let data: Vec<&str> = chunks.iter().map(|c| c.data.as_str()).collect();
    let row = sqlx::query(APPEND_SQL)
        .bind(job_id)
        .bind(attempt)
        .bind(&seqs)
        .bind(&streams)
        .bind(&data)
        .fetch_one(db)
        .await
        .map_err(QueueError::db("append logs"))?;
    Ok(row.get::<i64, _>("written") as u64)
}

/// Reads up to `limit` chunks of job `job_id` after position `after` (attempt, seq), in order;
/// `None` reads from the start.
pub async fn read<'e>(
    db: impl PgExecutor<'e>,
    job_id: i64,
    after: Option<(i32, i32)>,
    limit: i64,
) -> Result<Vec<LogRecord>> {
    let (attempt, seq) = after.unwrap_or((i32::MIN, i32::MIN));
    let rows = sqlx::query(READ_SQL)
        .bind(job_id)
        .bind(attempt)
        .bind(seq)
        .bind(limit)
        .fetch_all(db)
        .await
        .map_err(QueueError::db("read logs"))?;
    Ok(rows
        .iter()
        .map(|r| LogRecord {
            attempt: r.get("attempt"),
            seq: r.get("seq"),
            stream: r.get("stream"),
            data: r.get("data"),
            at: r.get("at"),
        })
        .collect())
}
