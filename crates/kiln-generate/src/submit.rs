//! Submitting a generation pipeline: store the starting workspace (if any), create the
//! pipeline with its request, and enqueue iteration 1 — one transaction.

use kiln_kinds::generation::Preference;
use kiln_kinds::{GenerationPayload, Language, Payload};
use kiln_pipeline::{Source, SubmitOptions};
use serde::Serialize;
use sqlx::PgPool;

use crate::advance::generation_job;
use crate::error::GenerateError;

const INSERT_PIPELINE_SQL: &str = include_str!("sql/insert_pipeline.sql");

/// Where the loop starts from.
#[derive(Debug, Clone)]
pub enum Start {
    /// An empty workspace.
    Empty,
    /// A stored artifact (its digest).
    Artifact(String),
    /// A directory, an upload or a git checkout, packed and stored first.
    Source(Source),
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The instruction to the model.
    pub prompt: String,
    /// The starting workspace.
    pub start: Start,
    /// The project's language, when the workspace does not tell.
    pub language: Option<Language>,
    /// Iterations allowed (1–10, default 5).
    pub max_iterations: Option<u32>,
    /// The pipeline's budget in USD (default from `[llm.generation]`).
    pub budget_usd: Option<f64>,
    /// The route.
    pub preference: Preference,
}

/// What a submission created.
#[derive(Debug, Clone, Serialize)]
pub struct SubmittedGeneration {
    /// The pipeline.
    pub pipeline_id: i64,
    /// The starting workspace (none: empty).
    pub workspace: Option<String>,
    /// The first iteration's generation job.
    pub job: i64,
}

/// Checks the request (a refusal names its field: `prompt`, `max_iterations`, `budget_usd`,
/// `workspace`, `git`), stores the starting workspace and creates the pipeline with its first
/// generation job. Nothing is written when it is refused. `opts` carries the packing cap, git
/// access, tags and the submitting token.
pub async fn submit_generation(
    pool: &PgPool,
    req: GenerateRequest,
    opts: &SubmitOptions,
) -> Result<SubmittedGeneration, GenerateError> {
    let payload = GenerationPayload {
        prompt: req.prompt,
        workspace: None,
        language: req.language,
        max_iterations: req.max_iterations.unwrap_or(5),
        budget_usd: req.budget_usd,
        preference: req.preference,
        iteration: 1,
    };
    payload.check().map_err(|e| GenerateError::Field {
        field: e.path.clone(),
        message: e.message.clone(),
    })?;
    let (packed, named) = match req.start {
        Start::Empty => (None, None),
        Start::Artifact(d) => (None, Some(d)),
        Start::Source(source) => (Some(kiln_pipeline::prepare(source, opts).await?), None),
    };
    let mut tx = pool.begin().await.map_err(GenerateError::db("begin"))?;
    let workspace = match (&named, &packed) {
        (_, Some(p)) => {
            kiln_artifacts::store(&mut *tx, p).await?;
            Some(p.digest.clone())
        }
        (Some(d), None) => {
            kiln_kinds::check_digest("workspace", d).map_err(|e| GenerateError::Field {
                field: "workspace".into(),
                message: e.message,
            })?;
            kiln_artifacts::info(&mut *tx, d).await.map_err(|e| match e {
                kiln_artifacts::ArtifactError::NotFound(_) => GenerateError::Field {
                    field: "workspace".into(),
                    message: format!("no artifact {d}: upload it first (POST /v1/artifacts)"),
                },
                e => e.into(),
            })?;
            Some(d.clone())
        }
        (None, None) => None,
    };
    let languages: Vec<&str> = payload.language.iter().map(|l| l.as_str()).collect();
    let pid: i64 = sqlx::query_scalar(INSERT_PIPELINE_SQL)
        .bind(&workspace)
        .bind(&languages)
        .bind(&opts.tags)
        .bind(opts.created_by_token)
        .bind(sqlx::types::Json(&payload))
        .fetch_one(&mut *tx)
        .await
        .map_err(GenerateError::db("insert pipeline"))?;
    let first = [generation_job(pid, &payload, 1, &opts.tags)];
    let enq = kiln_queue::enqueue_many_on(&mut tx, &first).await?;
    tx.commit().await.map_err(GenerateError::db("commit"))?;
    kiln_queue::count_committed(&first, &enq);
    tracing::info!(pipeline = pid, workspace = ?workspace, max_iterations = payload.max_iterations, "generation pipeline submitted");
    Ok(SubmittedGeneration {
        pipeline_id: pid,
        workspace,
        job: enq[0].id,
    })
}
