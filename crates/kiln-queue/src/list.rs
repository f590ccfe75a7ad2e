//! Listing jobs with filters, newest first, in keyset-paginated pages.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::admin::job_from_row;
use crate::error::{QueueError, Result};
use crate::model::{JobKind, JobRecord, JobState};

const LIST_SQL: &str = include_str!("sql/list_jobs.sql");

/// Largest page [`list_jobs`] returns.
pub const MAX_PAGE: i64 = 500;

/// Which jobs to list; every field left `None` (or empty) matches all.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<JobKind>,
    /// Only these states (any of them).
    pub states: Vec<JobState>,
    /// Only jobs carrying this tag.
    pub tag: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Only jobs of this pipeline.
    pub pipeline_id: Option<i64>,
}

/// One page of jobs, newest first, with ids below `before` (the previous page's last id),
/// at most `limit` (clamped to 1..=[`MAX_PAGE`]). Keyset pagination on the primary key: a
/// page costs the same however deep it is, and jobs enqueued meanwhile never shift pages.
pub async fn list_jobs<'e>(
    db: impl PgExecutor<'e>,
    filter: &JobFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<JobRecord>> {
    let states: Option<Vec<&str>> =
        (!filter.states.is_empty()).then(|| filter.states.iter().map(|s| s.as_str()).collect());
    let rows = sqlx::query(LIST_SQL)
        .bind(filter.queue.as_deref())
        .bind(filter.kind.map(|k| k.as_str()))
        .bind(states)
        .bind(filter.tag.as_deref())
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(filter.pipeline_id)
        .bind(before)
        .bind(limit.clamp(1, MAX_PAGE))
        .fetch_all(db)
        .await
        .map_err(QueueError::db("list jobs"))?;
    rows.iter().map(job_from_row).collect()
}
