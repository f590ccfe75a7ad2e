//! One leader pass: for every enabled schedule, fire its due ticks. Each tick is one
//! transaction that advances the schedule's cursor with a compare-and-set and enqueues the
//! tick's job (idempotency key `schedule:NAME:TICK`), so it fires exactly once even when two
//! schedulers briefly both believe they lead.

use chrono::{DateTime, Utc};
use kiln_queue::JobSpec;
use sqlx::{PgPool, Row};

use crate::error::{Result, SchedulerError};
use crate::presence::Coverage;
use crate::spec::{template_job, Ticks};

const ENABLED_SQL: &str = include_str!("sql/enabled.sql");
const ADVANCE_SQL: &str = include_str!("sql/advance.sql");
const SET_LAST_JOB_SQL: &str = include_str!("sql/set_last_job.sql");

/// An enabled schedule as the leader sees it.
pub(crate) struct Due {
    name: String,
    ticks: Ticks,
    job: JobSpec,
    catch_up: bool,
    fired_through: DateTime<Utc>,
}

/// The enabled schedules (those whose stored definition no longer parses are logged, skipped).
pub(crate) async fn load(pool: &PgPool) -> Result<Vec<Due>> {
    let rows = sqlx::query(ENABLED_SQL)
        .fetch_all(pool)
        .await
        .map_err(SchedulerError::db("load schedules"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.get("name");
        let ticks = match Ticks::parse(r.get("cron"), r.get("timezone")) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(schedule = %name, error = %e, "stored schedule does not parse; skipped");
                continue;
            }
        };
        let job: sqlx::types::Json<JobSpec> = r
            .try_get("job")
            .map_err(SchedulerError::db("decode schedule job"))?;
        out.push(Due {
            name,
            ticks,
            job: job.0,
            catch_up: r.get("catch_up"),
            fired_through: r.get("fired_through"),
        });
    }
    Ok(out)
}

/// The oldest cursor among `due` (how far back coverage must be read).
pub(crate) fn oldest(due: &[Due]) -> Option<DateTime<Utc>> {
    due.iter().map(|d| d.fired_through).min()
}

/// Fires what is due at `now` for every schedule; returns the next tick of any of them.
pub(crate) async fn pass(
    pool: &PgPool,
    due: Vec<Due>,
    coverage: &Coverage,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Option<DateTime<Utc>>> {
    let mut next: Option<DateTime<Utc>> = None;
    for d in due {
        let cursor = fire_due(pool, &d, coverage, now, limit).await?;
        if let Some(t) = d.ticks.next_after(cursor.max(now)) {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if cursor < now && d.ticks.next_after(cursor).is_some_and(|t| t <= now) {
            // More than `limit` ticks were due: come back at once.
            next = Some(now);
        }
    }
    Ok(next)
}

/// Handles the ticks of one schedule in `(fired_through, now]`; returns the cursor reached.
async fn fire_due(
    pool: &PgPool,
    d: &Due,
    coverage: &Coverage,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<DateTime<Utc>> {
    let mut cursor = d.fired_through;
    let mut missed: Option<(DateTime<Utc>, i64)> = None;
    for tick in d.ticks.between(d.fired_through, now, limit) {
        if !coverage.covers(tick) {
            missed = Some((tick, missed.map_or(1, |m| m.1 + 1)));
            continue;
        }
        if let Some((last, n)) = missed.take() {
            match settle_missed(pool, d, cursor, last, n).await? {
                true => cursor = last,
                false => return Ok(cursor),
            }
        }
        if !fire(pool, d, cursor, tick, false, 0).await? {
            return Ok(cursor);
        }
        cursor = tick;
    }
    if let Some((last, n)) = missed {
        if settle_missed(pool, d, cursor, last, n).await? {
            cursor = last;
        }
    }
    Ok(cursor)
}

/// `n` ticks up to `last` passed while no scheduler ran: skip them, or fire one catch-up run.
async fn settle_missed(
    pool: &PgPool,
    d: &Due,
    cursor: DateTime<Utc>,
    last: DateTime<Utc>,
    n: i64,
) -> Result<bool> {
    if d.catch_up {
        tracing::info!(schedule = %d.name, missed = n, tick = %last, "ticks missed while no scheduler ran: firing one catch-up run");
        return fire(pool, d, cursor, last, true, n - 1).await;
    }
    let moved = sqlx::query(ADVANCE_SQL)
        .bind(&d.name)
        .bind(cursor)
        .bind(last)
        .bind(false)
        .bind(n)
        .fetch_optional(pool)
        .await
        .map_err(SchedulerError::db("skip missed ticks"))?
        .is_some();
    if moved {
        tracing::info!(schedule = %d.name, missed = n, through = %last, "ticks missed while no scheduler ran are not replayed");
    }
    Ok(moved)
}

/// Fires `tick` of `d` if its cursor is still `cursor`; false when someone else moved it.
async fn fire(
    pool: &PgPool,
    d: &Due,
    cursor: DateTime<Utc>,
    tick: DateTime<Utc>,
    catch_up: bool,
    also_missed: i64,
) -> Result<bool> {
    let mut job = match template_job(&d.job) {
        Ok(job) => job,
        Err(e) => {
            // Stored before a rule tightened: record the tick as missed rather than loop on it.
            tracing::error!(schedule = %d.name, error = %e, "job template no longer valid; tick skipped");
            return settle_template_error(pool, d, cursor, tick, also_missed + 1).await;
        }
    };
    job.run_at = Some(tick);
    job.idempotency_key = Some(format!("schedule:{}:{}", d.name, tick.to_rfc3339()));
    job.tags.push(format!("schedule:{}", d.name));
    if catch_up {
        job.tags.push("catch-up".into());
        job.tags.truncate(kiln_queue::spec::MAX_TAGS);
    }
    let mut tx = pool.begin().await.map_err(SchedulerError::db("fire tick"))?;
    let moved = sqlx::query(ADVANCE_SQL)
        .bind(&d.name)
        .bind(cursor)
        .bind(tick)
        .bind(true)
        .bind(also_missed)
        .fetch_optional(&mut *tx)
        .await
        .map_err(SchedulerError::db("fire tick"))?
        .is_some();
    if !moved {
        tracing::debug!(schedule = %d.name, %tick, "tick already handled elsewhere");
        return Ok(false);
    }
    let enqueued = kiln_queue::enqueue_many_on(&mut tx, std::slice::from_ref(&job)).await?[0];
    sqlx::query(SET_LAST_JOB_SQL)
        .bind(&d.name)
        .bind(enqueued.id)
        .execute(&mut *tx)
        .await
        .map_err(SchedulerError::db("fire tick"))?;
    tx.commit().await.map_err(SchedulerError::db("fire tick"))?;
    kiln_queue::count_committed(std::slice::from_ref(&job), &[enqueued]);
    kiln_metrics::metrics()
        .schedule_ticks
        .with_label_values(&[&d.name])
        .inc();
    let late_ms = (Utc::now() - tick).num_microseconds().unwrap_or(0) as f64 / 1e3;
    tracing::info!(
        schedule = %d.name,
        %tick,
        job = enqueued.id,
        new = enqueued.created,
        catch_up,
        late_ms,
        "tick fired"
    );
    Ok(true)
}

async fn settle_template_error(
    pool: &PgPool,
    d: &Due,
    cursor: DateTime<Utc>,
    tick: DateTime<Utc>,
    n: i64,
) -> Result<bool> {
    Ok(sqlx::query(ADVANCE_SQL)
        .bind(&d.name)
        .bind(cursor)
        .bind(tick)
        .bind(false)
        .bind(n)
        .fetch_optional(pool)
        .await
        .map_err(SchedulerError::db("skip tick"))?
        .is_some())
}
