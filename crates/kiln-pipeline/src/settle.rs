//! Settling pipelines: once every job of a pipeline is final, its results are merged and its
//! verdict and score written, exactly once.

use std::time::Duration;

use kiln_queue::events::{self, types, NewEvent};
use kiln_queue::Listener;
use kiln_validate::{Findings, TestResult};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::error::PipelineError;
use crate::follow::{follower, PipelineStep};
use crate::score::{quality_score, Verdict};
use crate::view::{read, read_on, JobSummary, PipelineView};

const FINISH_SQL: &str = include_str!("sql/finish.sql");
const READY_SQL: &str = include_str!("sql/ready.sql");
const LOCK_SQL: &str = include_str!("sql/lock.sql");

/// A validation's outcome, merged from its `test`, `lint` and `security-scan` jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// `passed`, `failed`, or `error` when a job could not run or its result has the wrong shape.
    pub verdict: Verdict,
    /// 1..=10 unless the verdict is `error`.
    pub quality_score: Option<i16>,
    /// `{"test", "lint", "security"}` (null where a job could not run), with `errors` naming
    /// each job that could not run.
    pub result: serde_json::Value,
}

/// Merges the final jobs of one validation (the last job of each kind counts) into its
/// verdict, score and result.
pub fn merge(jobs: &[JobSummary]) -> Merged {
    let job = |kind: &str| jobs.iter().rev().find(|j| j.kind == kind);
    let mut errors = serde_json::Map::new();
    let mut part = |kind: &str, key: &str| -> serde_json::Value {
        match job(kind) {
            Some(j) if j.state == "succeeded" => j.result.clone().unwrap_or(serde_json::Value::Null),
            Some(j) => {
                errors.insert(
                    key.to_string(),
                    serde_json::json!(format!(
                        "{} job {} {}: {}",
                        kind,
                        j.id,
                        j.state,
                        j.last_error.as_deref().unwrap_or("no error recorded")
                    )),
                );
                serde_json::Value::Null
            }
            None => {
                errors.insert(key.to_string(), serde_json::json!(format!("no {kind} job")));
                serde_json::Value::Null
            }
        }
    };
    let test_v = part("test", "test");
    let lint_v = part("lint", "lint");
    let sec_v = part("security-scan", "security");
    let parsed = (
        serde_json::from_value::<TestResult>(test_v.clone()),
        serde_json::from_value::<Findings>(lint_v.clone()),
        serde_json::from_value::<Findings>(sec_v.clone()),
    );
    let (verdict, quality_score) = match (errors.is_empty(), parsed) {
        (true, (Ok(t), Ok(l), Ok(s))) => (
            crate::score::verdict(&t, &l, &s),
            Some(quality_score(&t, &l, &s) as i16),
        ),
        (true, _) => {
            errors.insert(
                "result".into(),
                serde_json::json!("a job's result does not have the validation shape"),
            );
            (Verdict::Error, None)
        }
        (false, _) => (Verdict::Error, None),
    };
    let mut result = serde_json::json!({"test": test_v, "lint": lint_v, "security": sec_v});
    if !errors.is_empty() {
        result["errors"] = serde_json::Value::Object(errors);
    }
    Merged {
        verdict,
        quality_score,
        result,
    }
}

/// True when the validation pipeline is running and every one of its jobs is final
/// (generation pipelines are moved on by their own module).
fn ready(view: &PipelineView) -> bool {
    view.kind == "validation"
        && !view.is_finished()
        && !view.jobs.is_empty()
        && view
            .jobs
            .iter()
            .all(|j| matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled"))
}

/// Settles pipeline `id` if all its jobs are final and it is still running; returns its view.
///
/// The settling transaction holds the pipeline's row lock while it reads the jobs, and a job
/// retried by hand takes the same lock to reopen its pipeline (migration 0009): a retry and a
/// settle are ordered one way or the other, so a pipeline never ends `finished` with a live job.
pub async fn settle(pool: &PgPool, id: i64) -> Result<PipelineView, PipelineError> {
    let view = read(pool, id).await?;
    if !ready(&view) {
        return Ok(view);
    }
    let mut tx = pool.begin().await.map_err(PipelineError::db("settle pipeline"))?;
    sqlx::query(LOCK_SQL)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(PipelineError::db("lock pipeline"))?;
    let view = read_on(&mut tx, id).await?;
    if !ready(&view) {
        return Ok(view);
    }
    let Merged {
        verdict: v,
        quality_score: score,
        result,
    } = merge(&view.jobs);
    let settled = sqlx::query(FINISH_SQL)
        .bind(id)
        .bind(v.as_str())
        .bind(score)
        .bind(sqlx::types::Json(&result))
        .fetch_optional(&mut *tx)
        .await
        .map_err(PipelineError::db("settle pipeline"))?;
    if settled.is_some() {
        // Last in the transaction: event ids are reserved under a lock held until commit.
        let finished = NewEvent {
            pipeline_id: Some(id),
            ..NewEvent::new(
                types::PIPELINE_FINISHED,
                serde_json::json!({"kind": view.kind, "verdict": v.as_str(), "quality_score": score}),
            )
        };
        events::emit(&mut *tx, &[finished]).await?;
    }
    tx.commit().await.map_err(PipelineError::db("settle pipeline"))?;
    if settled.is_some() {
        tracing::info!(pipeline = id, verdict = v.as_str(), quality_score = ?score, "pipeline settled");
    }
    read(pool, id).await
}

/// Settles every running pipeline whose jobs are all final (up to `limit`); returns how many.
pub async fn settle_ready(pool: &PgPool, limit: i64) -> Result<usize, PipelineError> {
    let ids: Vec<i64> = sqlx::query_scalar(READY_SQL)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(PipelineError::db("ready pipelines"))?;
    for &id in &ids {
        settle(pool, id).await?;
    }
    Ok(ids.len())
}

/// The validation settler's step: settles a pipeline whose jobs are all final, and hourly
/// prunes pipelines finished more than a week ago and workspace artifacts unreferenced for a
/// day ([`crate::prune`]).
struct Settler {
    last_prune: tokio::time::Instant,
}

impl PipelineStep for Settler {
    type Error = PipelineError;

    fn name(&self) -> &'static str {
        "validation settler"
    }

    async fn step(&mut self, pool: &PgPool, id: i64) -> Result<bool, PipelineError> {
        settle(pool, id).await.map(|_| true)
    }

    async fn ready(&mut self, pool: &PgPool) -> Result<usize, PipelineError> {
        let n = settle_ready(pool, 100).await?;
        if self.last_prune.elapsed() >= Duration::from_secs(3600) {
            self.last_prune = tokio::time::Instant::now();
            match crate::prune(pool, &crate::PipelineRetention::default()).await {
                Ok(p) if p.pipelines + p.artifacts > 0 => tracing::info!(
                    pipelines = p.pipelines,
                    artifacts = p.artifacts,
                    "pruned old pipelines and unreferenced workspace artifacts"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning pipelines and artifacts failed"),
            }
        }
        Ok(n)
    }
}

/// Settles validation pipelines as their jobs finish until `stop` fires: a [`follower`] of the
/// job-event outbox whose step is [`settle`] and whose ready-poll is [`settle_ready`], and
/// which hourly prunes old pipelines and unreferenced artifacts.
pub async fn settler(pool: PgPool, listener: Listener, poll: Duration, stop: CancellationToken) {
    let step = Settler {
        last_prune: tokio::time::Instant::now(),
    };
    follower(step, pool, listener, poll, stop).await
}
