//! Pruning by age: finished pipelines, then the workspace artifacts nothing refers to any more.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::PipelineError;

const PRUNE_SQL: &str = include_str!("sql/prune.sql");
const CREATOR_SQL: &str = include_str!("sql/creator.sql");

/// How long finished pipelines and unreferenced artifacts are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineRetention {
    /// Finished pipelines (default one week, like failed jobs).
    pub finished: Duration,
    /// Artifacts no pipeline or job refers to (default one day).
    pub unreferenced_artifacts: Duration,
    /// Validation cache entries neither written nor used (default one week).
    pub cache: Duration,
}

impl Default for PipelineRetention {
    fn default() -> Self {
        PipelineRetention {
            finished: Duration::from_secs(7 * 86_400),
            unreferenced_artifacts: Duration::from_secs(86_400),
            cache: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Finished pipelines deleted.
    pub pipelines: u64,
    /// Artifacts deleted.
    pub artifacts: u64,
    /// Validation cache entries deleted.
    pub cache: u64,
}

/// Deletes pipelines finished longer ago than `retention.finished` (in batches of 1,000),
/// then artifacts older than `retention.unreferenced_artifacts` that nothing refers to, then
/// validation cache entries unused for `retention.cache`.
pub async fn prune(pool: &PgPool, retention: &PipelineRetention) -> Result<Pruned, PipelineError> {
    let mut out = Pruned::default();
    loop {
        let n: i64 = sqlx::query_scalar(PRUNE_SQL)
            .bind(retention.finished.as_secs_f64())
            .bind(1_000_i64)
            .fetch_one(pool)
            .await
            .map_err(PipelineError::db("prune pipelines"))?;
        out.pipelines += n as u64;
        if n < 1_000 {
            break;
        }
    }
    out.artifacts = kiln_artifacts::prune_unreferenced(pool, retention.unreferenced_artifacts).await?;
    out.cache = kiln_validate::cache::prune(pool, retention.cache)
        .await
        .map_err(PipelineError::db("prune the validation cache"))?;
    Ok(out)
}

/// The API token that created pipeline `id` (`None`: the CLI or a library call did).
pub async fn creator(pool: &PgPool, id: i64) -> Result<Option<i64>, PipelineError> {
    sqlx::query_scalar(CREATOR_SQL)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(PipelineError::db("pipeline creator"))?
        .ok_or(PipelineError::NotFound(id))
}
