//! The end-of-run checks: every accepted job (and every job the schedules fired) final
//! exactly once, its attempts consistent with its outcome, and nothing left on any engine.

use anyhow::{Context, Result};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::HashMap;

const LEDGER_SQL: &str = include_str!("sql/ledger.sql");

/// What the checks found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Ledger {
    /// Jobs checked: accepted through the API plus those the schedules fired.
    pub jobs: i64,
    /// Of those, fired by a schedule.
    pub scheduled: i64,
    /// Accepted but absent, or not final at the end.
    pub lost: i64,
    /// Succeeded more than once, or an attempt number recorded twice.
    pub duplicated: i64,
    /// Final, but the attempt rows do not add up to the job's attempts and outcome.
    pub inconsistent: i64,
    /// Final `succeeded`.
    pub succeeded: i64,
    /// Final `failed` (a fault can spend every attempt; not lost, but reported).
    pub failed: i64,
    /// Attempts recorded `lost` (a worker died or its lease ran out).
    pub lost_attempts: i64,
    /// Attempts recorded `interrupted` (handed back by a draining worker).
    pub interrupted_attempts: i64,
    /// Schedule ticks whose idempotency key was used twice.
    pub duplicated_ticks: i64,
}

/// Reads the ledger for the `accepted` ids and every job tagged `schedule:TICK_SCHEDULE`.
pub async fn ledger(pool: &PgPool, accepted: &[i64], schedule: &str) -> Result<Ledger> {
    let row: (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(LEDGER_SQL)
        .bind(accepted)
        .bind(format!("schedule:{schedule}"))
        .fetch_one(pool)
        .await
        .context("read the ledger")?;
    Ok(Ledger {
        jobs: row.0,
        scheduled: row.1,
        lost: row.2,
        duplicated: row.3,
        inconsistent: row.4,
        succeeded: row.5,
        failed: row.6,
        lost_attempts: row.7,
        interrupted_attempts: row.8,
        duplicated_ticks: row.9,
    })
}

/// Containers and volumes on `docker` whose `kiln.worker` label starts with `prefix`.
pub async fn leftovers(docker: &bollard::Docker, prefix: &str) -> Result<Vec<String>> {
    Ok(objects(docker, prefix)
        .await?
        .into_iter()
        .map(|(what, _)| what)
        .collect())
}

/// The workers (`kiln.worker` labels) owning the objects [`leftovers`] would list.
pub async fn leftover_owners(docker: &bollard::Docker, prefix: &str) -> Result<Vec<String>> {
    Ok(objects(docker, prefix)
        .await?
        .into_iter()
        .map(|(_, w)| w)
        .collect())
}

/// `(description, owning worker)` of every container and volume of a worker named `prefix…`.
async fn objects(docker: &bollard::Docker, prefix: &str) -> Result<Vec<(String, String)>> {
    let filters = HashMap::from([("label".to_string(), vec!["kiln.worker".to_string()])]);
    let mut found = Vec::new();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("list containers")?;
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let worker = label("kiln.worker");
        if worker.starts_with(prefix) {
            let id: String = c.id.unwrap_or_default().chars().take(12).collect();
            let what = format!(
                "container {id} of {worker} (job {}, attempt {}; {})",
                label("kiln.job"),
                label("kiln.attempt"),
                c.status.unwrap_or_default()
            );
            found.push((what, worker));
        }
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&filters).build()))
        .await
        .context("list volumes")?;
    for v in volumes.volumes.unwrap_or_default() {
        if let Some(w) = v.labels.get("kiln.worker").filter(|w| w.starts_with(prefix)) {
            found.push((format!("volume {} of {w}", v.name), w.clone()));
        }
    }
    Ok(found)
}
