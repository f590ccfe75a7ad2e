//! Reading a pipeline: its state, its jobs and (once settled) its verdict; waiting for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_queue::Listener;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

use crate::error::PipelineError;
use crate::settle::settle;

const GET_SQL: &str = include_str!("sql/get.sql");
const JOBS_SQL: &str = include_str!("sql/jobs.sql");
const ITERATIONS_SQL: &str = include_str!("sql/iterations.sql");

/// One iteration of a generation pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct IterationSummary {
    /// 1-based.
    pub iteration: i32,
    /// The generation job.
    pub job_id: i64,
    /// `validating` or `validated`.
    pub state: String,
    /// The workspace it produced (artifact digest).
    pub workspace: String,
    /// The conversation with the model (artifact digest of `messages.json`).
    pub messages: String,
    /// A budget cut its calls short; the loop ends after it.
    pub budget_stop: bool,
    /// Its validation's verdict once validated.
    pub verdict: Option<String>,
    /// Its quality score once validated (the retry penalty applied).
    pub quality_score: Option<i16>,
    /// Provider, model, tokens, cost, latency, retries, diff counts.
    pub record: serde_json::Value,
    /// Generated at.
    pub created_at: DateTime<Utc>,
    /// Validated at.
    pub validated_at: Option<DateTime<Utc>>,
}

/// One job of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// Job id.
    pub id: i64,
    /// `test`, `lint` or `security-scan`.
    pub kind: String,
    /// Its state.
    pub state: String,
    /// Attempts begun.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Its result, once it succeeded.
    pub result: Option<serde_json::Value>,
    /// Its last error.
    pub last_error: Option<String>,
    /// Enqueued at.
    pub created_at: DateTime<Utc>,
    /// Final at.
    pub finalized_at: Option<DateTime<Utc>>,
}

/// A pipeline as stored, with its jobs.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineView {
    /// Pipeline id.
    pub pipeline_id: i64,
    /// `validation` or `generation`.
    pub kind: String,
    /// Workspace artifact digest (a generation pipeline's input; none when it started empty).
    pub workspace: Option<String>,
    /// Languages run.
    pub languages: Vec<String>,
    /// `running` or `finished`.
    pub state: String,
    /// `passed`, `failed` or `error` once finished; generation pipelines also `partial`.
    pub verdict: Option<String>,
    /// Why a `partial` generation pipeline stopped: `max_iterations` or `budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// 1..=10 once finished (none when the verdict is `error`).
    pub quality_score: Option<i16>,
    /// The merged results `{"test", "lint", "security"}` once finished.
    pub result: Option<serde_json::Value>,
    /// Tags.
    pub tags: Vec<String>,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Settled at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its jobs.
    pub jobs: Vec<JobSummary>,
    /// A generation pipeline's iterations (empty for validation pipelines).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<IterationSummary>,
}

impl PipelineView {
    /// True once settled.
    pub fn is_finished(&self) -> bool {
        self.state == "finished"
    }

    /// The workspace a pipeline ends with: the one its result names (a generation pipeline's
    /// edited workspace) or else the one it ran on; None for a generation pipeline that started
    /// from nothing and has no result yet.
    pub fn result_workspace(&self) -> Option<&str> {
        self.result
            .as_ref()
            .and_then(|r| r.get("workspace"))
            .and_then(|w| w.as_str())
            .or(self.workspace.as_deref())
    }

    /// The `kiln submit validate --json` object: `{"pipeline_id", "verdict", "quality_score",
    /// "test", "lint", "security"}` (results are null until the pipeline is finished, and a
    /// job that could not run has null with its error under `errors`). For a generation
    /// pipeline, the `kiln submit generate --json` object: `{"pipeline_id", "verdict",
    /// "stop_reason", "iterations", "quality_score", "tokens", "cost_usd", "test", "lint",
    /// "security", "diff"}` (of the resulting iteration; `diff` from the start).
    pub fn summary(&self) -> serde_json::Value {
        let part = |k: &str| {
            self.result
                .as_ref()
                .and_then(|r| r.get(k))
                .cloned()
                .unwrap_or(serde_json::Value::Null)
        };
        if self.kind == "generation" {
            return serde_json::json!({
                "pipeline_id": self.pipeline_id,
                "verdict": self.verdict,
                "stop_reason": self.stop_reason,
                "iterations": self.iterations.len(),
                "quality_score": self.quality_score,
                "tokens": part("tokens"),
                "cost_usd": part("cost_usd"),
                "test": part("test"),
                "lint": part("lint"),
                "security": part("security"),
                "diff": part("diff"),
            });
        }
        let mut out = serde_json::json!({
            "pipeline_id": self.pipeline_id,
            "verdict": self.verdict,
            "quality_score": self.quality_score,
            "test": part("test"),
            "lint": part("lint"),
            "security": part("security"),
        });
        if let Some(errors) = self.result.as_ref().and_then(|r| r.get("errors")) {
            out["errors"] = errors.clone();
        }
        out
    }
}

pub(crate) async fn read(pool: &PgPool, id: i64) -> Result<PipelineView, PipelineError> {
    let mut conn = pool.acquire().await.map_err(PipelineError::db("get pipeline"))?;
    read_on(&mut conn, id).await
}

/// Reads pipeline `id` and its jobs on one connection (inside the caller's transaction).
pub async fn read_on(conn: &mut PgConnection, id: i64) -> Result<PipelineView, PipelineError> {
    let r = sqlx::query(GET_SQL)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(PipelineError::db("get pipeline"))?
        .ok_or(PipelineError::NotFound(id))?;
    let jobs = sqlx::query(JOBS_SQL)
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .map_err(PipelineError::db("pipeline jobs"))?
        .iter()
        .map(|j| JobSummary {
            id: j.get("id"),
            kind: j.get("kind"),
            state: j.get("state"),
            attempt: j.get("attempt"),
            max_attempts: j.get("max_attempts"),
            result: j
                .get::<Option<sqlx::types::Json<serde_json::Value>>, _>("result")
                .map(|x| x.0),
            last_error: j.get("last_error"),
            created_at: j.get("created_at"),
            finalized_at: j.get("finalized_at"),
        })
        .collect();
    let kind: String = r.get("kind");
    let iterations = if kind == "generation" {
        sqlx::query(ITERATIONS_SQL)
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(PipelineError::db("pipeline iterations"))?
            .iter()
            .map(|i| IterationSummary {
                iteration: i.get("iteration"),
                job_id: i.get("job_id"),
                state: i.get("state"),
                workspace: i.get("workspace"),
                messages: i.get("messages"),
                budget_stop: i.get("budget_stop"),
                verdict: i.get("verdict"),
                quality_score: i.get("quality_score"),
                record: i.get::<sqlx::types::Json<serde_json::Value>, _>("record").0,
                created_at: i.get("created_at"),
                validated_at: i.get("validated_at"),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(PipelineView {
        pipeline_id: r.get("id"),
        kind,
        workspace: r.get("workspace"),
        languages: r.get("languages"),
        state: r.get("state"),
        verdict: r.get("verdict"),
        stop_reason: r.get("stop_reason"),
        quality_score: r.get("quality_score"),
        result: r
            .get::<Option<sqlx::types::Json<serde_json::Value>>, _>("result")
            .map(|x| x.0),
        tags: r.get("tags"),
        created_at: r.get("created_at"),
        finished_at: r.get("finished_at"),
        jobs,
        iterations,
    })
}

/// Reads pipeline `id`, settling it first when all its jobs are final (so a reader never sees
/// a finished set of jobs under a running pipeline).
pub async fn get(pool: &PgPool, id: i64) -> Result<PipelineView, PipelineError> {
    settle(pool, id).await
}

/// Waits until pipeline `id` is finished (or `timeout` passes) and returns it. Woken by the
/// `pipeline.finished` and `job.*` events through `listener` (the process's one LISTEN
/// connection), re-reading at least every second in case a notification was missed.
pub async fn wait(
    pool: &PgPool,
    listener: Option<&Listener>,
    id: i64,
    timeout: Duration,
) -> Result<PipelineView, PipelineError> {
    let start = tokio::time::Instant::now();
    let mut wakeups = listener.map(|l| l.subscribe(kiln_queue::events::CHANNEL));
    loop {
        let view = get(pool, id).await?;
        if view.is_finished() {
            return Ok(view);
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(PipelineError::WaitTimedOut {
                id,
                waited: start.elapsed(),
            });
        }
        let nap = left.min(Duration::from_secs(1));
        match wakeups.as_mut() {
            Some(rx) => {
                let _ = tokio::time::timeout(nap, rx.recv()).await;
            }
            None => tokio::time::sleep(nap).await,
        }
    }
}
