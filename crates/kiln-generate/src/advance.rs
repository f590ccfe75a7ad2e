//! Moving the loop on. When every job of a generation pipeline is final, [`advance`] (under
//! the pipeline's row lock, so any number of workers may run it) settles the last iteration's
//! validation into its verdict and score, then ends the pipeline — `passed`, `partial` (with
//! `stop_reason` `max_iterations` or `budget`, its result the best iteration) or `failed` —
//! or enqueues the next iteration's generation job. [`advancer`] runs it for the pipelines of
//! final job events (the outbox), with a polling fallback.

use std::time::Duration;

use kiln_kinds::GenerationPayload;
use kiln_pipeline::{follower, merge, PipelineStep};
use kiln_queue::events::{self, types, NewEvent};
use kiln_queue::{JobKind, Listener, NewJob};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::error::GenerateError;
use crate::store::{self, IterationRow};

const LOCK_SQL: &str = include_str!("sql/lock.sql");
const FINISH_SQL: &str = include_str!("sql/finish.sql");
const VALIDATED_SQL: &str = include_str!("sql/validated.sql");
const ATTEMPT_VERDICT_SQL: &str = include_str!("sql/attempt_verdict.sql");
const READY_SQL: &str = include_str!("sql/ready.sql");

/// Per-attempt timeout of a generation job (its calls, with retries and failover).
pub const GENERATION_TIMEOUT: Duration = Duration::from_secs(1800);
/// Tries of a generation job (only retryable failures are retried).
pub const GENERATION_ATTEMPTS: i32 = 3;

/// The quality score of an iteration: its validation's score, −1 when more than 3 iterations
/// were needed (never below 1).
pub fn iteration_score(validation_score: Option<i16>, iteration: u32) -> Option<i16> {
    validation_score.map(|s| if iteration > 3 { (s - 1).max(1) } else { s })
}

/// The iteration a pipeline's result is: a passed one first, then the highest score, then
/// the earliest.
pub fn best(rows: &[IterationRow]) -> Option<&IterationRow> {
    rows.iter().filter(|r| r.state == "validated").max_by_key(|r| {
        (
            r.verdict.as_deref() == Some("passed"),
            r.quality_score.unwrap_or(0),
            std::cmp::Reverse(r.iteration),
        )
    })
}

/// The generation job of iteration `n` of pipeline `pid` (idempotent per iteration).
pub fn generation_job(pid: i64, request: &GenerationPayload, n: u32, tags: &[String]) -> NewJob {
    let payload = GenerationPayload {
        iteration: n,
        ..request.clone()
    };
    let mut job = NewJob::new(
        JobKind::Generation.as_str(),
        JobKind::Generation,
        serde_json::to_value(payload).expect("payload serialises"),
    )
    .pipeline(pid)
    .timeout(GENERATION_TIMEOUT)
    .max_attempts(GENERATION_ATTEMPTS)
    .idempotency_key(format!("pipeline:{pid}:iteration:{n}:generation"))
    .tag(format!("pipeline:{pid}"))
    .tag(format!("iteration:{n}"));
    for t in tags {
        job = job.tag(t.clone());
    }
    job
}

/// How a pipeline ends.
struct End<'a> {
    verdict: &'static str,
    stop_reason: Option<&'static str>,
    chosen: Option<&'a IterationRow>,
    errors: Option<Value>,
}

/// Writes the end of pipeline `pid` (once) with its result and the `pipeline.finished` event
/// after `before` (other events of the same change).
async fn finish(
    conn: &mut PgConnection,
    pid: i64,
    start_workspace: Option<&str>,
    rows: &[IterationRow],
    end: End<'_>,
    before: Vec<NewEvent>,
) -> Result<(), GenerateError> {
    let (tokens, cost) = store::spent(&mut *conn, pid).await?;
    let start = store::tree(&mut *conn, start_workspace).await?;
    let (workspace, diff, validation) = match end.chosen {
        Some(c) => {
            let tree = store::tree(&mut *conn, Some(&c.workspace)).await?;
            let d = store::diff(&start, &tree).await?;
            (
                Some(c.workspace.clone()),
                d.unified,
                c.validation.clone().unwrap_or(Value::Null),
            )
        }
        None => (start_workspace.map(str::to_owned), String::new(), Value::Null),
    };
    let part = |k: &str| validation.get(k).cloned().unwrap_or(Value::Null);
    let score = end.chosen.and_then(|c| c.quality_score);
    let mut result = json!({
        "workspace": workspace,
        "iterations": rows.len(),
        "best_iteration": end.chosen.map(|c| c.iteration),
        "tokens": store::tokens_json(&tokens),
        "cost_usd": cost.dollars(),
        "stop_reason": end.stop_reason,
        "test": part("test"),
        "lint": part("lint"),
        "security": part("security"),
        "diff": diff,
    });
    let mut errors = validation.get("errors").cloned().unwrap_or(Value::Null);
    if let Some(Value::Object(extra)) = end.errors {
        if !errors.is_object() {
            errors = json!({});
        }
        for (k, v) in extra {
            errors[k] = v;
        }
    }
    if !errors.is_null() {
        result["errors"] = errors;
    }
    let done = sqlx::query(FINISH_SQL)
        .bind(pid)
        .bind(end.verdict)
        .bind(end.stop_reason)
        .bind(score)
        .bind(sqlx::types::Json(&result))
        .fetch_optional(&mut *conn)
        .await
        .map_err(GenerateError::db("finish pipeline"))?;
    if done.is_some() {
        let mut evs = before;
        evs.push(NewEvent {
            pipeline_id: Some(pid),
            ..NewEvent::new(
                types::PIPELINE_FINISHED,
                json!({"kind": "generation", "verdict": end.verdict, "stop_reason": end.stop_reason,
                       "quality_score": score, "iterations": rows.len(), "cost_usd": cost.dollars()}),
            )
        });
        events::emit(&mut *conn, &evs).await?;
        tracing::info!(pipeline = pid, verdict = end.verdict, stop_reason = ?end.stop_reason, quality_score = ?score,
            iterations = rows.len(), cost_usd = cost.dollars(), "generation pipeline finished");
    }
    Ok(())
}

/// Locks pipeline `pid`; `None` when it is not a running generation pipeline.
async fn lock(
    conn: &mut PgConnection,
    pid: i64,
) -> Result<Option<(Option<String>, GenerationPayload)>, GenerateError> {
    let row = sqlx::query(LOCK_SQL)
        .bind(pid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(GenerateError::db("lock pipeline"))?;
    let Some(row) = row.filter(|r| r.get::<String, _>("state") == "running") else {
        return Ok(None);
    };
    let request: sqlx::types::Json<GenerationPayload> = row
        .try_get("request")
        .map_err(GenerateError::db("pipeline request"))?;
    Ok(Some((row.get("workspace"), request.0)))
}

/// Ends pipeline `pid` without a new iteration to validate: `why` = `budget` (a budget refused
/// the iteration's first call: `partial`/`budget` with the best earlier iteration, or
/// `failed` when there is none) or anything else (`failed`: nothing was generated).
pub async fn finish_without(
    pool: &PgPool,
    pid: i64,
    why: &str,
    event: Option<NewEvent>,
) -> Result<(), GenerateError> {
    let mut tx = pool.begin().await.map_err(GenerateError::db("begin"))?;
    let Some((start, _)) = lock(&mut tx, pid).await? else {
        return Ok(());
    };
    let rows = store::iterations(&mut *tx, pid).await?;
    let chosen = best(&rows);
    let end = match (why, chosen) {
        ("budget", Some(c)) => End {
            verdict: "partial",
            stop_reason: Some("budget"),
            chosen: Some(c),
            errors: None,
        },
        ("budget", None) => End {
            verdict: "failed",
            stop_reason: None,
            chosen: None,
            errors: Some(json!({"generation": "the budget refused the first call: nothing was generated"})),
        },
        _ => End {
            verdict: "failed",
            stop_reason: None,
            chosen,
            errors: Some(json!({"generation": "the model generated nothing"})),
        },
    };
    finish(
        &mut tx,
        pid,
        start.as_deref(),
        &rows,
        end,
        event.into_iter().collect(),
    )
    .await?;
    tx.commit().await.map_err(GenerateError::db("commit"))?;
    Ok(())
}

/// Moves generation pipeline `pid` on if all its jobs are final (see the module doc).
/// Idempotent: returns false when there was nothing to do.
pub async fn advance(pool: &PgPool, pid: i64) -> Result<bool, GenerateError> {
    let mut tx = pool.begin().await.map_err(GenerateError::db("begin"))?;
    let Some((start, request)) = lock(&mut tx, pid).await? else {
        return Ok(false);
    };
    let jobs = store::jobs(&mut tx, pid, None).await?;
    let live = |s: &str| !matches!(s, "succeeded" | "failed" | "cancelled");
    if jobs.iter().any(|j| live(&j.summary.state)) {
        return Ok(false);
    }
    let Some(gen) = jobs
        .iter()
        .filter(|j| j.summary.kind == JobKind::Generation.as_str())
        .max_by_key(|j| (j.iteration, j.summary.id))
    else {
        return Err(GenerateError::Invalid(format!(
            "generation pipeline {pid} has no generation job"
        )));
    };
    let n = gen.iteration;
    let mut rows = store::iterations(&mut *tx, pid).await?;
    let mut before = Vec::new();
    let Some(idx) = rows.iter().position(|r| r.iteration == n) else {
        // The iteration's job ended without recording it: a permanent error or out of tries.
        let why = format!(
            "generation job {} (iteration {n}) {}: {}",
            gen.summary.id,
            gen.summary.state,
            gen.summary.last_error.as_deref().unwrap_or("no error recorded")
        );
        let chosen = best(&rows);
        let end = End {
            verdict: "failed",
            stop_reason: None,
            chosen,
            errors: Some(json!({ "generation": why })),
        };
        finish(&mut tx, pid, start.as_deref(), &rows, end, before).await?;
        tx.commit().await.map_err(GenerateError::db("commit"))?;
        return Ok(true);
    };
    if rows[idx].state == "validating" {
        let vjobs = store::jobs(&mut tx, pid, Some(&format!("iteration:{n}"))).await?;
        let summaries: Vec<_> = vjobs
            .into_iter()
            .filter(|j| j.summary.kind != JobKind::Generation.as_str())
            .map(|j| j.summary)
            .collect();
        let merged = merge(&summaries);
        let score = iteration_score(merged.quality_score, n);
        sqlx::query(VALIDATED_SQL)
            .bind(pid)
            .bind(n as i32)
            .bind(merged.verdict.as_str())
            .bind(score)
            .bind(sqlx::types::Json(&merged.result))
            .execute(&mut *tx)
            .await
            .map_err(GenerateError::db("settle iteration"))?;
        let r = &mut rows[idx];
        sqlx::query(ATTEMPT_VERDICT_SQL)
            .bind(r.job_id)
            .bind(sqlx::types::Json(json!({
                "verdict": merged.verdict.as_str(), "quality_score": score,
                "validation_score": merged.quality_score,
                "validation_jobs": summaries.iter().map(|j| j.id).collect::<Vec<_>>(),
            })))
            .execute(&mut *tx)
            .await
            .map_err(GenerateError::db("record the verdict on the attempt"))?;
        r.state = "validated".into();
        r.verdict = Some(merged.verdict.as_str().into());
        r.quality_score = score;
        r.validation = Some(merged.result);
        before.push(NewEvent {
            pipeline_id: Some(pid),
            job_id: Some(r.job_id),
            ..NewEvent::new(
                types::GENERATION_ITERATION,
                json!({"iteration": n, "verdict": r.verdict, "quality_score": score,
                       "tokens": r.record.get("tokens"), "cost_usd": r.record.get("cost_usd"),
                       "workspace": r.workspace}),
            )
        });
        tracing::info!(pipeline = pid, iteration = n, verdict = merged.verdict.as_str(), quality_score = ?score, "iteration validated");
    }
    let current = &rows[idx];
    let end = if current.verdict.as_deref() == Some("passed") {
        Some(End {
            verdict: "passed",
            stop_reason: None,
            chosen: Some(current),
            errors: None,
        })
    } else if current.budget_stop || n >= request.max_iterations {
        Some(End {
            verdict: "partial",
            stop_reason: Some(if current.budget_stop {
                "budget"
            } else {
                "max_iterations"
            }),
            chosen: best(&rows),
            errors: None,
        })
    } else {
        None
    };
    match end {
        Some(end) => finish(&mut tx, pid, start.as_deref(), &rows, end, before).await?,
        None => {
            if !before.is_empty() {
                events::emit(&mut *tx, &before).await?;
            }
            let tags: Vec<String> = Vec::new();
            let next = [generation_job(pid, &request, n + 1, &tags)];
            let enq = kiln_queue::enqueue_many_on(&mut tx, &next).await?;
            tx.commit().await.map_err(GenerateError::db("commit"))?;
            kiln_queue::count_committed(&next, &enq);
            tracing::info!(
                pipeline = pid,
                iteration = n + 1,
                "next iteration enqueued with feedback"
            );
            return Ok(true);
        }
    }
    tx.commit().await.map_err(GenerateError::db("commit"))?;
    Ok(true)
}

/// Advances every running generation pipeline none of whose jobs is live (up to `limit`).
pub async fn advance_ready(pool: &PgPool, limit: i64) -> Result<usize, GenerateError> {
    let ids: Vec<i64> = sqlx::query_scalar(READY_SQL)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(GenerateError::db("ready generation pipelines"))?;
    let mut n = 0;
    for id in ids {
        n += advance(pool, id).await? as usize;
    }
    Ok(n)
}

/// The generation loop's step for the outbox [`follower`]: [`advance`] and [`advance_ready`].
struct Advancer;

impl PipelineStep for Advancer {
    type Error = GenerateError;

    fn name(&self) -> &'static str {
        "generation loop"
    }

    async fn step(&mut self, pool: &PgPool, id: i64) -> Result<bool, GenerateError> {
        advance(pool, id).await
    }

    async fn ready(&mut self, pool: &PgPool) -> Result<usize, GenerateError> {
        advance_ready(pool, 100).await
    }
}

/// Moves generation pipelines on as their jobs finish, until `stop` fires: kiln-pipeline's
/// outbox [`follower`] (woken through the process's [`Listener`]) with [`advance`] as its step
/// and, every `poll`, [`advance_ready`] in case it fell behind. Any number may run.
pub async fn advancer(pool: PgPool, listener: Listener, poll: Duration, stop: CancellationToken) {
    follower(Advancer, pool, listener, poll, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(iteration: u32, verdict: &str, score: Option<i16>) -> IterationRow {
        IterationRow {
            iteration,
            job_id: 1,
            state: "validated".into(),
            workspace: format!("w{iteration}"),
            budget_stop: false,
            verdict: Some(verdict.into()),
            quality_score: score,
            validation: None,
            record: Value::Null,
        }
    }

    #[test]
    fn the_retry_penalty_applies_after_three_iterations() {
        assert_eq!(iteration_score(Some(8), 3), Some(8));
        assert_eq!(iteration_score(Some(8), 4), Some(7));
        assert_eq!(iteration_score(Some(1), 5), Some(1));
        assert_eq!(iteration_score(None, 5), None);
    }

    #[test]
    fn the_best_iteration_is_passed_then_highest_score_then_earliest() {
        let rows = vec![
            row(1, "failed", Some(6)),
            row(2, "error", None),
            row(3, "failed", Some(6)),
        ];
        assert_eq!(best(&rows).unwrap().iteration, 1);
        let rows = vec![row(1, "failed", Some(9)), row(2, "passed", Some(7))];
        assert_eq!(best(&rows).unwrap().iteration, 2);
        assert!(best(&[]).is_none());
    }
}
