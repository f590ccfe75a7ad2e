//! An idempotency key reused with a different request is a conflict (409), not a silent
//! answer with someone else's job: when an enqueue returns an existing job for the request's
//! idempotency key, the stored job must be the same request (queue, kind, payload, priority,
//! timeout, unique key, tags, parents, and attempts allowed as far as a retry may have raised them).

use kiln_queue::{Enqueued, NewJob};
use sqlx::Row;

use crate::error::{ApiError, ApiResult};

const JOBS_SQL: &str = include_str!("sql/idempotent_jobs.sql");

struct Stored {
    idempotency_key: Option<String>,
    queue: String,
    kind: String,
    payload: serde_json::Value,
    priority: i16,
    max_attempts: i32,
    attempt: i32,
    timeout_ms: i32,
    unique_key: Option<String>,
    tags: Vec<String>,
    depends_on: Vec<i64>,
}

impl Stored {
    /// True when the stored job is what `job` asks for. A retry by hand raises
    /// `max_attempts` once the original ones are spent, so a larger stored value matches
    /// when the job has used at least the requested number of attempts.
    fn matches(&self, job: &NewJob) -> bool {
        let attempts_match = self.max_attempts == job.max_attempts
            || (self.max_attempts > job.max_attempts && self.attempt >= job.max_attempts);
        self.queue == job.queue
            && self.kind == job.kind.as_str()
            && self.payload == job.payload
            && self.priority == job.priority
            && attempts_match
            && self.timeout_ms == job.timeout_ms
            && self.unique_key == job.unique_key
            && self.tags == job.tags
            && self.depends_on == job.depends_on
    }
}

/// Checks every returned, not created, job whose stored idempotency key is the request's:
/// a difference in what was asked is a 409 naming `field` (for a batch, `jobs[i]`).
pub async fn check_repeats(
    pool: &sqlx::PgPool,
    jobs: &[NewJob],
    out: &[Enqueued],
    field: impl Fn(usize) -> String,
) -> ApiResult<()> {
    let repeats: Vec<(usize, i64)> = jobs
        .iter()
        .zip(out)
        .enumerate()
        .filter(|(_, (job, e))| !e.created && job.idempotency_key.is_some())
        .map(|(i, (_, e))| (i, e.id))
        .collect();
    if repeats.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = repeats.iter().map(|r| r.1).collect();
    let rows = sqlx::query(JOBS_SQL).bind(&ids).fetch_all(pool).await?;
    for (i, id) in repeats {
        let Some(row) = rows.iter().find(|r| r.get::<i64, _>("id") == id) else {
            continue; // finished and pruned since: nothing left to compare with
        };
        let stored = Stored {
            idempotency_key: row.get("idempotency_key"),
            queue: row.get("queue"),
            kind: row.get("kind"),
            payload: row.get::<sqlx::types::Json<serde_json::Value>, _>("payload").0,
            priority: row.get("priority"),
            max_attempts: row.get("max_attempts"),
            attempt: row.get("attempt"),
            timeout_ms: row.get("timeout_ms"),
            unique_key: row.get("unique_key"),
            tags: row.get("tags"),
            depends_on: row.get("depends_on"),
        };
        let job = &jobs[i];
        // A live job holding the unique key (not the idempotency key) answers as before.
        if stored.idempotency_key != job.idempotency_key {
            continue;
        }
        if !stored.matches(job) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "idempotency key {:?} was used for a different request (job {id}); use a new key",
                    job.idempotency_key.as_deref().unwrap_or_default()
                ),
            )
            .field(field(i)));
        }
    }
    Ok(())
}
