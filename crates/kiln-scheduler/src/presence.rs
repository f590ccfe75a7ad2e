//! The registry of scheduler processes (`kiln_schedulers`): heartbeats, who leads, and
//! when any scheduler was running, which decides whether a past tick was "missed while no
//! scheduler ran" (not replayed) or merely late (fired now).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};
use std::time::Duration;

use crate::error::{Result, SchedulerError};

const REGISTER_SQL: &str = include_str!("sql/register.sql");
const HEARTBEAT_SQL: &str = include_str!("sql/heartbeat.sql");
const SET_LEADING_SQL: &str = include_str!("sql/set_leading.sql");
const STOPPED_SQL: &str = include_str!("sql/stopped.sql");
const COVERAGE_SQL: &str = include_str!("sql/coverage.sql");

/// Records scheduler `id` as running; returns its start time (database clock).
pub async fn register<'e>(db: impl PgExecutor<'e>, id: &str, host: &str, pid: u32) -> Result<DateTime<Utc>> {
    sqlx::query_scalar(REGISTER_SQL)
        .bind(id)
        .bind(host)
        .bind(i32::try_from(pid).unwrap_or(i32::MAX))
        .fetch_one(db)
        .await
        .map_err(SchedulerError::db("register scheduler"))
}

/// Refreshes `id`'s heartbeat (and forgets schedulers gone for a day).
pub async fn heartbeat<'e>(db: impl PgExecutor<'e>, id: &str) -> Result<()> {
    sqlx::query(HEARTBEAT_SQL)
        .bind(id)
        .execute(db)
        .await
        .map_err(SchedulerError::db("scheduler heartbeat"))?;
    Ok(())
}

/// Records whether `id` leads.
pub async fn set_leading<'e>(db: impl PgExecutor<'e>, id: &str, leading: bool) -> Result<()> {
    sqlx::query(SET_LEADING_SQL)
        .bind(id)
        .bind(leading)
        .execute(db)
        .await
        .map_err(SchedulerError::db("record scheduler leadership"))?;
    Ok(())
}

/// Records that `id` stopped.
pub async fn stopped<'e>(db: impl PgExecutor<'e>, id: &str) -> Result<()> {
    sqlx::query(STOPPED_SQL)
        .bind(id)
        .execute(db)
        .await
        .map_err(SchedulerError::db("record scheduler stop"))?;
    Ok(())
}

/// The periods during which some scheduler was running.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    spans: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Coverage {
    /// Reads the periods that end at or after `since`; a scheduler whose heartbeat stopped
    /// counts as running for `slack` after it. `me_since` (the caller, alive now) is added.
    pub async fn load<'e>(
        db: impl PgExecutor<'e>,
        since: DateTime<Utc>,
        slack: Duration,
        me_since: DateTime<Utc>,
    ) -> Result<Coverage> {
        let rows = sqlx::query(COVERAGE_SQL)
            .bind(slack.as_secs_f64())
            .bind(since)
            .fetch_all(db)
            .await
            .map_err(SchedulerError::db("read scheduler coverage"))?;
        let mut spans: Vec<_> = rows
            .iter()
            .map(|r| (r.get("started_at"), r.get("until")))
            .collect();
        spans.push((me_since, DateTime::<Utc>::MAX_UTC));
        Ok(Coverage { spans })
    }

    /// True when some scheduler was running at `t`.
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.spans.iter().any(|(from, until)| *from <= t && t <= *until)
    }
}
