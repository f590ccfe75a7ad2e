//! Attempt logs: chunks appended while a sandboxed attempt runs, read back in order (and
//! tailed live by listening on [`LOGS_CHANNEL`]). Chunks are stored as the bytes the job wrote
//! (NUL and invalid UTF-8 included); what went past an attempt's live-log cap is counted in
//! [`drops`], not stored.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Row};

use crate::error::{QueueError, Result};

const APPEND_SQL: &str = include_str!("sql/logs_append.sql");
const READ_SQL: &str = include_str!("sql/logs_read.sql");
const DROPS_RECORD_SQL: &str = include_str!("sql/logs_drops_record.sql");
const DROPS_READ_SQL: &str = include_str!("sql/logs_drops_read.sql");

/// Default cap of an attempt's stored live log, in bytes.
pub const DEFAULT_LIVE_LOG_CAP: u64 = 8 << 20;

/// The channel notified after each append; the payload is the job id.
pub const LOGS_CHANNEL: &str = "kiln_logs";

/// One chunk of output to append; `seq` orders the chunks of an attempt (from 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Position within the attempt; re-sending a chunk with a used `seq` is ignored.
    pub seq: i32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The bytes, as the job wrote them.
    pub data: Vec<u8>,
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
    /// The text: the bytes as UTF-8, invalid sequences replaced (NUL bytes kept).
    pub data: String,
    /// The exact bytes in base64, only when they are not valid UTF-8 (`data` then differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// When it was stored.
    pub at: DateTime<Utc>,
}

impl LogRecord {
    /// The bytes exactly as stored.
    pub fn bytes(&self) -> Vec<u8> {
        self.data_base64
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_else(|| self.data.as_bytes().to_vec())
    }
}

/// What went past an attempt's live-log cap: counted, not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDrops {
    /// Attempt number.
    pub attempt: i32,
    /// Bytes of output not stored.
    pub dropped_bytes: i64,
    /// Chunks not stored (or stored in part).
    pub dropped_chunks: i64,
    /// The cap in force, in bytes.
    pub cap_bytes: i64,
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
    let data: Vec<&[u8]> = chunks.iter().map(|c| c.data.as_slice()).collect();
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
        .map(|r| {
            let bytes: Vec<u8> = r.get("data");
            let (data, data_base64) = match String::from_utf8(bytes) {
                Ok(text) => (text, None),
                Err(e) => {
                    let bytes = e.into_bytes();
                    (
                        String::from_utf8_lossy(&bytes).into_owned(),
                        Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                    )
                }
            };
            LogRecord {
                attempt: r.get("attempt"),
                seq: r.get("seq"),
                stream: r.get("stream"),
                data,
                data_base64,
                at: r.get("at"),
            }
        })
        .collect())
}

/// Records what went past the live-log cap of job `job_id`'s attempt (counts only grow).
pub async fn record_drops<'e>(db: impl PgExecutor<'e>, job_id: i64, drops: LogDrops) -> Result<()> {
    sqlx::query(DROPS_RECORD_SQL)
        .bind(job_id)
        .bind(drops.attempt)
        .bind(drops.dropped_bytes)
        .bind(drops.dropped_chunks)
        .bind(drops.cap_bytes)
        .execute(db)
        .await
        .map_err(QueueError::db("record dropped logs"))?;
    Ok(())
}

/// What went past the live-log cap, per attempt of job `job_id` (attempts within it: none).
pub async fn drops<'e>(db: impl PgExecutor<'e>, job_id: i64) -> Result<Vec<LogDrops>> {
    let rows = sqlx::query(DROPS_READ_SQL)
        .bind(job_id)
        .fetch_all(db)
        .await
        .map_err(QueueError::db("read dropped logs"))?;
    Ok(rows
        .iter()
        .map(|r| LogDrops {
            attempt: r.get("attempt"),
            dropped_bytes: r.get("dropped_bytes"),
            dropped_chunks: r.get("dropped_chunks"),
            cap_bytes: r.get("cap_bytes"),
        })
        .collect())
}
