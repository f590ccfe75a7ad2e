//! What the loop reads and writes: pipelines, iterations, the ledger's totals, trees and
//! their diffs.

use kiln_artifacts::{Tree, TreeEntry};
use kiln_llm::{Usage, Usd};
use kiln_pipeline::JobSummary;
use kiln_sandbox::diff::WorkspaceDiff;
use kiln_sandbox::snapshot::{sha256_hex, SnapEntry, Snapshot};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgExecutor, Row};

use crate::error::GenerateError;

const ITERATIONS_SQL: &str = include_str!("sql/iterations.sql");
const JOBS_SQL: &str = include_str!("sql/jobs.sql");
const SPENT_SQL: &str = include_str!("sql/spent.sql");

/// Cap of a workspace the loop loads or writes (the artifacts' default cap).
pub const WORKSPACE_CAP: u64 = kiln_artifacts::DEFAULT_MAX_BYTES;

/// One stored iteration.
#[derive(Debug, Clone)]
pub struct IterationRow {
    /// 1-based.
    pub iteration: u32,
    /// Its generation job.
    pub job_id: i64,
    /// `validating` or `validated`.
    pub state: String,
    /// Its workspace's digest.
    pub workspace: String,
    /// A budget cut its calls short.
    pub budget_stop: bool,
    /// Its verdict once validated.
    pub verdict: Option<String>,
    /// Its score once validated (penalty applied).
    pub quality_score: Option<i16>,
    /// The merged validation result once validated.
    pub validation: Option<Value>,
    /// The job's record (tokens, cost, provider…).
    pub record: Value,
}

/// The iterations of `pipeline`, oldest first.
pub async fn iterations<'e>(
    db: impl PgExecutor<'e>,
    pipeline: i64,
) -> Result<Vec<IterationRow>, GenerateError> {
    let rows = sqlx::query(ITERATIONS_SQL)
        .bind(pipeline)
        .fetch_all(db)
        .await
        .map_err(GenerateError::db("read iterations"))?;
    Ok(rows
        .iter()
        .map(|r| IterationRow {
            iteration: r.get::<i32, _>("iteration") as u32,
            job_id: r.get("job_id"),
            state: r.get("state"),
            workspace: r.get("workspace"),
            budget_stop: r.get("budget_stop"),
            verdict: r.get("verdict"),
            quality_score: r.get("quality_score"),
            validation: r
                .get::<Option<sqlx::types::Json<Value>>, _>("validation")
                .map(|v| v.0),
            record: r.get::<sqlx::types::Json<Value>, _>("record").0,
        })
        .collect())
}

/// A pipeline job with the iteration its payload names (1 for validation jobs' payloads).
pub struct PipelineJob {
    /// What merging reads.
    pub summary: JobSummary,
    /// `payload.iteration` (generation jobs).
    pub iteration: u32,
}

/// The jobs of `pipeline` (those tagged `tag` when given), oldest first.
pub async fn jobs(
    conn: &mut PgConnection,
    pipeline: i64,
    tag: Option<&str>,
) -> Result<Vec<PipelineJob>, GenerateError> {
    let rows = sqlx::query(JOBS_SQL)
        .bind(pipeline)
        .bind(tag)
        .fetch_all(conn)
        .await
        .map_err(GenerateError::db("read pipeline jobs"))?;
    Ok(rows
        .iter()
        .map(|j| PipelineJob {
            summary: JobSummary {
                id: j.get("id"),
                kind: j.get("kind"),
                state: j.get("state"),
                attempt: j.get("attempt"),
                max_attempts: j.get("max_attempts"),
                result: j
                    .get::<Option<sqlx::types::Json<Value>>, _>("result")
                    .map(|x| x.0),
                last_error: j.get("last_error"),
                created_at: j.get("created_at"),
                finalized_at: j.get("finalized_at"),
            },
            iteration: j.get::<i32, _>("iteration").max(1) as u32,
        })
        .collect())
}

/// Tokens and exact cost the ledger holds for `pipeline` (every answered call, repeated
/// ones included: they were paid for).
pub async fn spent<'e>(db: impl PgExecutor<'e>, pipeline: i64) -> Result<(Usage, Usd), GenerateError> {
    let (input, output, cache_read, cache_write, pico): (i64, i64, i64, i64, i64) = sqlx::query_as(SPENT_SQL)
        .bind(pipeline)
        .fetch_one(db)
        .await
        .map_err(GenerateError::db("read the cost ledger"))?;
    Ok((
        Usage {
            input: input as u64,
            output: output as u64,
            cache_read: cache_read as u64,
            cache_write: cache_write as u64,
        },
        Usd(pico),
    ))
}

/// `{"input", "output", "cache_read", "cache_write"}`.
pub fn tokens_json(u: &Usage) -> Value {
    json!({"input": u.input, "output": u.output, "cache_read": u.cache_read, "cache_write": u.cache_write})
}

/// The tree of artifact `digest`, or an empty tree for `None`.
pub async fn tree<'e>(db: impl PgExecutor<'e>, digest: Option<&str>) -> Result<Tree, GenerateError> {
    match digest {
        None => Ok(Tree::default()),
        Some(d) => Ok(kiln_artifacts::load(db, d, WORKSPACE_CAP).await?),
    }
}

/// A tree as the sandbox's differ sees it.
fn snapshot(t: &Tree) -> Snapshot {
    let mut snap = Snapshot::default();
    for (path, entry) in &t.entries {
        let e = match entry {
            TreeEntry::File { data, executable } => SnapEntry::File {
                size: data.len() as u64,
                sha256: sha256_hex(data),
                mode: if *executable { 0o755 } else { 0o644 },
                data: Some(data.clone()),
            },
            TreeEntry::Symlink { target } => SnapEntry::Symlink {
                target: target.clone(),
            },
        };
        snap.entries.insert(path.clone(), e);
    }
    snap
}

/// The diff from `before` to `after` (bounded: a deadline and a size cap), off the runtime.
pub async fn diff(before: &Tree, after: &Tree) -> Result<WorkspaceDiff, GenerateError> {
    let (before, after) = (snapshot(before), snapshot(after));
    tokio::task::spawn_blocking(move || WorkspaceDiff::between(&before, &after))
        .await
        .map_err(|e| GenerateError::Invalid(format!("diff task: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Tree {
        let mut t = Tree::default();
        for (p, d) in files {
            t.entries.insert(
                p.to_string(),
                TreeEntry::File {
                    data: d.as_bytes().to_vec(),
                    executable: false,
                },
            );
        }
        t
    }

    #[tokio::test]
    async fn diffs_between_trees_are_unified_with_counts() {
        let before = tree(&[("test_calc.py", "x\n")]);
        let after = tree(&[
            ("test_calc.py", "x\n"),
            ("calc.py", "def add(a, b):\n    return a - b\n"),
        ]);
        let d = diff(&before, &after).await.unwrap();
        assert_eq!((d.files_changed, d.insertions, d.deletions), (1, 2, 0));
        assert!(d.unified.contains("+++ b/calc.py"), "{}", d.unified);
        assert!(d.unified.contains("+    return a - b"), "{}", d.unified);
    }
}
