//! The schedule store: create, read, list, change, switch on/off and delete schedules.
//! Every write validates first ([`ScheduleSpec::validate`]) and refuses by field name, so
//! an HTTP handler can call these directly and map [`SchedulerError`] to 4xx/404/409.

use chrono::{DateTime, Utc};
use kiln_queue::JobSpec;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Row};

use crate::error::{Result, SchedulerError};
use crate::spec::{SchedulePatch, ScheduleSpec, Ticks};

const INSERT_SQL: &str = include_str!("sql/insert.sql");
const UPSERT_SQL: &str = include_str!("sql/upsert.sql");
const UPDATE_SQL: &str = include_str!("sql/update.sql");
const GET_SQL: &str = include_str!("sql/get.sql");
const GET_FOR_UPDATE_SQL: &str = include_str!("sql/get_for_update.sql");
const LIST_SQL: &str = include_str!("sql/list.sql");
const DELETE_SQL: &str = include_str!("sql/delete.sql");
const PRUNE_DECLARED_SQL: &str = include_str!("sql/prune_declared.sql");

/// Where a schedule was defined.
pub const SOURCE_API: &str = "api";
/// Declared in `workers.toml` (re-applied at every scheduler start).
pub const SOURCE_CONFIG: &str = "config";

/// A stored schedule with its firing record.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// Unique name.
    pub name: String,
    /// Cron expression as given.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// The job template.
    pub job: JobSpec,
    /// On/off switch.
    pub enabled: bool,
    /// Fire one catch-up run for ticks missed while no scheduler ran.
    pub catch_up: bool,
    /// `api` or `config` (declared in `workers.toml`).
    pub source: String,
    /// Every tick at or before this time has been handled.
    pub fired_through: DateTime<Utc>,
    /// When the last tick's job was enqueued.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The job of the last tick.
    pub last_job_id: Option<i64>,
    /// Ticks fired so far.
    pub fired_count: i64,
    /// Ticks passed over because no scheduler was running.
    pub missed_count: i64,
    /// The next tick, while enabled.
    pub next_tick: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Definition last changed at.
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// The definition part, as a spec.
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            name: self.name.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            job: self.job.clone(),
            enabled: self.enabled,
            catch_up: self.catch_up,
        }
    }

    /// Parses the stored expression (validated when stored).
    pub fn ticks(&self) -> Result<Ticks> {
        Ok(Ticks::parse(&self.cron, &self.timezone)?)
    }
}

pub(crate) fn from_row(r: &PgRow) -> Result<Schedule> {
    let job: sqlx::types::Json<JobSpec> = r
        .try_get("job")
        .map_err(SchedulerError::db("decode schedule job"))?;
    let mut s = Schedule {
        name: r.get("name"),
        cron: r.get("cron"),
        timezone: r.get("timezone"),
        job: job.0,
        enabled: r.get("enabled"),
        catch_up: r.get("catch_up"),
        source: r.get("source"),
        fired_through: r.get("fired_through"),
        last_fired_at: r.get("last_fired_at"),
        last_job_id: r.get("last_job_id"),
        fired_count: r.get("fired_count"),
        missed_count: r.get("missed_count"),
        next_tick: None,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    };
    if s.enabled {
        let from = s.fired_through.max(Utc::now());
        s.next_tick = s.ticks().ok().and_then(|t| t.next_after(from));
    }
    Ok(s)
}

fn bind_spec<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    spec: &'q ScheduleSpec,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&spec.name)
        .bind(&spec.cron)
        .bind(&spec.timezone)
        .bind(sqlx::types::Json(&spec.job))
        .bind(spec.enabled)
        .bind(spec.catch_up)
}

/// Creates a schedule; its first tick is the first after now.
/// Errors: [`SchedulerError::Invalid`] (by field), [`SchedulerError::AlreadyExists`].
pub async fn create<'e>(db: impl PgExecutor<'e>, spec: ScheduleSpec) -> Result<Schedule> {
    let valid = spec.validate()?;
    let row = bind_spec(sqlx::query(INSERT_SQL), &valid.spec)
        .bind(SOURCE_API)
        .fetch_optional(db)
        .await
        .map_err(SchedulerError::db("create schedule"))?;
    match row {
        Some(row) => from_row(&row),
        None => Err(SchedulerError::AlreadyExists(valid.spec.name)),
    }
}

/// Creates or redefines a schedule declared in `workers.toml` (source `config`).
pub async fn upsert_declared<'e>(db: impl PgExecutor<'e>, spec: ScheduleSpec) -> Result<Schedule> {
    let valid = spec.validate()?;
    let row = bind_spec(sqlx::query(UPSERT_SQL), &valid.spec)
        .fetch_one(db)
        .await
        .map_err(SchedulerError::db("upsert schedule"))?;
    from_row(&row)
}

/// Reads one schedule. Errors: [`SchedulerError::NotFound`].
pub async fn get<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<Schedule> {
    let row = sqlx::query(GET_SQL)
        .bind(name)
        .fetch_optional(db)
        .await
        .map_err(SchedulerError::db("get schedule"))?
        .ok_or_else(|| SchedulerError::NotFound(name.to_owned()))?;
    from_row(&row)
}

/// Every schedule, by name.
pub async fn list<'e>(db: impl PgExecutor<'e>) -> Result<Vec<Schedule>> {
    let rows = sqlx::query(LIST_SQL)
        .fetch_all(db)
        .await
        .map_err(SchedulerError::db("list schedules"))?;
    rows.iter().map(from_row).collect()
}

/// Changes the fields `patch` names, validating the result as a whole. A changed
/// expression, time zone or switch takes effect from now: no tick of the old definition,
/// or of the time it was off, is fired. Errors: `Invalid` (by field), `NotFound`.
pub async fn update(pool: &PgPool, name: &str, patch: &SchedulePatch) -> Result<Schedule> {
    let mut tx = pool
        .begin()
        .await
        .map_err(SchedulerError::db("update schedule"))?;
    let row = sqlx::query(GET_FOR_UPDATE_SQL)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(SchedulerError::db("update schedule"))?
        .ok_or_else(|| SchedulerError::NotFound(name.to_owned()))?;
    let current = from_row(&row)?;
    let valid = patch.apply(&current.spec()).validate()?;
    let row = bind_spec(sqlx::query(UPDATE_SQL), &valid.spec)
        .fetch_one(&mut *tx)
        .await
        .map_err(SchedulerError::db("update schedule"))?;
    let updated = from_row(&row)?;
    tx.commit().await.map_err(SchedulerError::db("update schedule"))?;
    Ok(updated)
}

/// Switches a schedule on or off (on: from the next tick after now).
pub async fn set_enabled(pool: &PgPool, name: &str, enabled: bool) -> Result<Schedule> {
    let patch = SchedulePatch {
        enabled: Some(enabled),
        ..SchedulePatch::default()
    };
    update(pool, name, &patch).await
}

/// Deletes a schedule (jobs it already enqueued stay). Errors: [`SchedulerError::NotFound`].
pub async fn delete<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<()> {
    let done = sqlx::query(DELETE_SQL)
        .bind(name)
        .execute(db)
        .await
        .map_err(SchedulerError::db("delete schedule"))?;
    if done.rows_affected() == 0 {
        return Err(SchedulerError::NotFound(name.to_owned()));
    }
    Ok(())
}

/// Brings the stored `config` schedules in line with a fleet file (`[[schedules]]`), in one
/// transaction: each entry is created or updated in order, and a `config` schedule the file no
/// longer declares is deleted (API-created schedules are left alone). A refusal names the
/// entry (`schedules[2].cron`) and changes nothing.
pub async fn declare(pool: &PgPool, specs: &[ScheduleSpec]) -> Result<Vec<Schedule>> {
    for (i, spec) in specs.iter().enumerate() {
        spec.clone().validate().map_err(|mut v| {
            v.field = format!("schedules[{i}].{}", v.field);
            SchedulerError::Invalid(v)
        })?;
        if let Some(first) = specs[..i].iter().position(|s| s.name == spec.name) {
            return Err(SchedulerError::Invalid(kiln_queue::ValidationError::new(
                format!("schedules[{i}].name"),
                format!("`{}` is already declared by schedules[{first}]", spec.name),
            )));
        }
    }
    let mut tx = pool
        .begin()
        .await
        .map_err(SchedulerError::db("declare schedules"))?;
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let s = upsert_declared(&mut *tx, spec.clone()).await?;
        tracing::info!(schedule = %s.name, cron = %s.cron, timezone = %s.timezone, enabled = s.enabled, next = ?s.next_tick, "schedule declared");
        out.push(s);
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let removed: Vec<String> = sqlx::query_scalar(PRUNE_DECLARED_SQL)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await
        .map_err(SchedulerError::db("remove undeclared schedules"))?;
    tx.commit()
        .await
        .map_err(SchedulerError::db("declare schedules"))?;
    for name in removed {
        tracing::info!(schedule = %name, "schedule removed: no longer declared in the fleet file");
    }
    Ok(out)
}
