//! Background upkeep any worker may run: rescue expired leases, promote due jobs,
//! settle jobs waiting on parents, prune finished jobs. All safe to run concurrently.

use sqlx::{PgExecutor, Row};
use std::time::Duration;

use crate::error::{QueueError, Result};
use crate::model::{parse_column, JobKind, JobState};

const RESCUE_SQL: &str = include_str!("sql/rescue.sql");
const PROMOTE_SQL: &str = include_str!("sql/promote.sql");
const RESOLVE_PENDING_SQL: &str = include_str!("sql/resolve_pending.sql");
const PRUNE_SQL: &str = include_str!("sql/prune.sql");

/// A job taken back from a worker whose lease ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    /// Job id.
    pub id: i64,
    /// The attempt that was lost.
    pub attempt: i32,
    /// `retryable`, or `failed` when it was the last attempt.
    pub state: JobState,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: JobKind,
}

/// Takes back up to 1000 jobs whose lease expired, recording a `lost` attempt for each;
/// they run again after `delay`, or fail when out of attempts.
pub async fn rescue_expired<'e>(db: impl PgExecutor<'e>, delay: Duration) -> Result<Vec<Rescued>> {
    let rows = sqlx::query(RESCUE_SQL)
        .bind(delay.as_secs_f64())
        .fetch_all(db)
        .await
        .map_err(QueueError::db("rescue expired leases"))?;
    rows.iter()
        .map(|r| {
            Ok(Rescued {
                id: r.get("id"),
                attempt: r.get("attempt"),
                state: parse_column("state", r.get::<&str, _>("state"))?,
                queue: r.get("queue"),
                kind: parse_column("kind", r.get::<&str, _>("kind"))?,
            })
        })
        .collect()
}

/// Moves due `scheduled` and `retryable` jobs to `available`; returns how many.
pub async fn promote_due<'e>(db: impl PgExecutor<'e>) -> Result<u64> {
    let row = sqlx::query(PROMOTE_SQL)
        .fetch_one(db)
        .await
        .map_err(QueueError::db("promote due jobs"))?;
    Ok(row.get::<i64, _>("promoted") as u64)
}

/// Releases pending jobs whose parents all succeeded and cancels those with a dead
/// parent; returns (released, cancelled).
pub async fn resolve_pending<'e>(db: impl PgExecutor<'e>) -> Result<(u64, u64)> {
    let row = sqlx::query(RESOLVE_PENDING_SQL)
        .fetch_one(db)
        .await
        .map_err(QueueError::db("resolve pending jobs"))?;
    Ok((
        row.get::<i64, _>("released") as u64,
        row.get::<i64, _>("cancelled") as u64,
    ))
}

/// How long finished jobs are kept, per final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Succeeded jobs, in seconds (default one day).
    pub succeeded_secs: u64,
    /// Failed jobs, in seconds (default one week).
    pub failed_secs: u64,
    /// Cancelled jobs, in seconds (default one week).
    pub cancelled_secs: u64,
    /// Job events (the outbox), in seconds (default one week).
    pub events_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            succeeded_secs: 86_400,
            failed_secs: 7 * 86_400,
            cancelled_secs: 7 * 86_400,
            events_secs: 7 * 86_400,
        }
    }
}

/// Deletes up to `batch` finished jobs per final state, and up to `batch` events, older than
/// `retention` allows; returns how many rows were deleted.
pub async fn prune(db: &mut sqlx::PgConnection, retention: &Retention, batch: i64) -> Result<u64> {
    let mut total = 0;
    for (state, secs) in [
        (JobState::Succeeded, retention.succeeded_secs),
        (JobState::Failed, retention.failed_secs),
        (JobState::Cancelled, retention.cancelled_secs),
    ] {
        let pruned: i64 = sqlx::query_scalar(PRUNE_SQL)
            .bind(state.as_str())
            .bind(secs as f64)
            .bind(batch)
            .fetch_one(&mut *db)
            .await
            .map_err(QueueError::db("prune"))?;
        total += pruned as u64;
    }
    total += crate::events::prune(&mut *db, Duration::from_secs(retention.events_secs), batch).await?;
    Ok(total)
}

const DEAD_TUPLES_SQL: &str = include_str!("sql/dead_tuples.sql");

/// Whether any job of the fleet is running (through the partial `kiln_jobs_running` index).
pub async fn any_running(pool: &sqlx::PgPool) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM kiln_jobs WHERE state = 'running')")
        .fetch_one(pool)
        .await
        .map_err(QueueError::db("read running jobs"))
}

/// Whether [`vacuum_if_needed`] with these arguments would find `kiln_jobs` due a vacuum (it
/// takes no lock).
pub async fn vacuum_due(pool: &sqlx::PgPool, min_dead: i64, ratio: f64, min_gap: Duration) -> Result<bool> {
    // The first column is `due`.
    sqlx::query_scalar::<_, bool>(DEAD_TUPLES_SQL)
        .bind(min_dead)
        .bind(ratio)
        .bind(min_gap.as_secs_f64())
        .bind(false)
        .fetch_one(pool)
        .await
        .map_err(QueueError::db("read dead tuples"))
}

/// Vacuums (and analyzes) `kiln_jobs` when at least `min_dead` dead row versions — and more
/// than `ratio` times the live rows — have piled up, unless another worker is already doing
/// it or the table was vacuumed (by anyone) less than `min_gap` ago. Returns whether it
/// vacuumed.
///
/// Every claim and completion leaves a dead row version and a dead entry in the claim index,
/// which later claims walk over until a vacuum removes them: after a 100k-job burn-down a claim
/// of one new job took 8 ms instead of 0.3 ms. Autovacuum looks at a database once a minute at
/// best; this runs from the workers' maintenance pass. The ANALYZE also refreshes the planner's
/// picture of a table whose states changed wholesale.
pub async fn vacuum_if_needed(
    db: &mut sqlx::PgConnection,
    min_dead: i64,
    ratio: f64,
    min_gap: Duration,
) -> Result<bool> {
    let row = sqlx::query(DEAD_TUPLES_SQL)
        .bind(min_dead)
        .bind(ratio)
        .bind(min_gap.as_secs_f64())
        .bind(true)
        .fetch_one(&mut *db)
        .await
        .map_err(QueueError::db("read dead tuples"))?;
    if !row.get::<bool, _>("due") || !row.get::<bool, _>("locked") {
        return Ok(false);
    }
    let vacuumed = sqlx::raw_sql("VACUUM (ANALYZE) kiln_jobs")
        .execute(&mut *db)
        .await
        .map_err(QueueError::db("vacuum kiln_jobs"));
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('kiln.vacuum', 0))")
        .execute(&mut *db)
        .await
        .map_err(QueueError::db("release the vacuum lock"))?;
    vacuumed.map(|_| true)
}
