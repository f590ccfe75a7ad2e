//! The `generation` job: one iteration of its pipeline. It asks the model (with the previous
//! iteration's feedback), stores the resulting workspace and the conversation as artifacts,
//! and — in one transaction — records the iteration and enqueues its validation jobs. A
//! repeated attempt of a recorded iteration makes no call: it returns the record.

use std::sync::Arc;

use kiln_artifacts::{Packed, Tree};
use kiln_kinds::GenerationPayload;
use kiln_llm::{CallFor, Complexity, Llm, RouteOf};
use kiln_pipeline::SubmitOptions;
use kiln_queue::events::{self, types, NewEvent};
use kiln_validate::language;
use kiln_worker::{Finished, Job, JobContext, JobHandler};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};

use crate::advance::finish_without;
use crate::config::LoopSettings;
use crate::converse::{converse, Ask, Conversation};
use crate::edit::EditDir;
use crate::error::GenerateError;
use crate::prompt;
use crate::store::{self, WORKSPACE_CAP};

const PIPELINE_SQL: &str = include_str!("sql/pipeline.sql");
const INSERT_ITERATION_SQL: &str = include_str!("sql/insert_iteration.sql");

/// Runs `generation` jobs.
#[derive(Clone)]
pub struct Generator {
    pool: PgPool,
    llm: Arc<Llm>,
    settings: LoopSettings,
}

impl Generator {
    /// A generator calling models through `llm`.
    pub fn new(pool: PgPool, llm: Arc<Llm>, settings: LoopSettings) -> Self {
        Generator { pool, llm, settings }
    }
}

impl JobHandler for Generator {
    type Payload = GenerationPayload;
    type Output = Value;
    type Error = GenerateError;

    async fn run(&self, job: Job<GenerationPayload>, ctx: JobContext) -> Finished<Value, GenerateError> {
        match self.iterate(&job, &ctx).await {
            Ok((result, details)) => Finished::new(Ok(result)).with_details(Some(details)),
            Err(e) => {
                tracing::warn!(job = job.meta.id, error = %e, "generation iteration failed");
                Finished::new(Err(e))
            }
        }
    }
}

/// The pipeline as an iteration reads it.
struct PipelineRow {
    state: String,
    workspace: Option<String>,
    created_by_token: Option<i64>,
}

/// A rough measure of the work for the `auto` preference.
fn complexity(tree: &Tree, prompt: &str) -> Complexity {
    let files = tree.entries.len() as u64;
    let lines = tree
        .entries
        .values()
        .map(|e| match e {
            kiln_artifacts::TreeEntry::File { data, .. } => {
                data.iter().filter(|&&b| b == b'\n').count() as u64
            }
            _ => 0,
        })
        .sum();
    Complexity {
        lines,
        files,
        ..Complexity::default()
    }
    .with_prompt(prompt)
}

fn messages_artifact(conv: &Conversation, system: &str) -> Result<Packed, GenerateError> {
    let body = json!({"system": system, "messages": conv.messages, "calls": conv.calls});
    let mut tree = Tree::default();
    tree.entries.insert(
        "messages.json".into(),
        kiln_artifacts::TreeEntry::File {
            data: serde_json::to_vec_pretty(&body).expect("messages serialise"),
            executable: false,
        },
    );
    let mut p = tree.pack(WORKSPACE_CAP)?;
    p.source = json!({"messages": true});
    Ok(p)
}

impl Generator {
    async fn iterate(
        &self,
        job: &Job<GenerationPayload>,
        ctx: &JobContext,
    ) -> Result<(Value, Value), GenerateError> {
        let p = &job.payload;
        let i = p.iteration;
        let pid = job
            .meta
            .pipeline_id
            .ok_or_else(|| GenerateError::Invalid("a generation job runs inside a generation pipeline: submit it with POST /v1/pipelines or `kiln submit generate`".into()))?;
        if let Some(done) = store::iterations(&self.pool, pid)
            .await?
            .into_iter()
            .find(|r| r.iteration == i)
        {
            tracing::info!(
                pipeline = pid,
                iteration = i,
                "iteration already recorded; no new call"
            );
            return Ok((done.record.clone(), done.record));
        }
        let row = sqlx::query(PIPELINE_SQL)
            .bind(pid)
            .fetch_optional(&self.pool)
            .await
            .map_err(GenerateError::db("read pipeline"))?
            .ok_or_else(|| GenerateError::Invalid(format!("pipeline {pid} is not a generation pipeline")))?;
        let pipe = PipelineRow {
            state: row.get("state"),
            workspace: row.get("workspace"),
            created_by_token: row.get("created_by_token"),
        };
        if pipe.state == "finished" {
            let r = json!({"pipeline_id": pid, "iteration": i, "skipped": "the pipeline is finished"});
            return Ok((r.clone(), r));
        }
        let start = store::tree(&self.pool, pipe.workspace.as_deref()).await?;
        let (base, feedback) = if i == 1 {
            (start.clone(), None)
        } else {
            let prev = store::iterations(&self.pool, pid)
                .await?
                .into_iter()
                .find(|r| r.iteration == i - 1 && r.state == "validated")
                .ok_or_else(|| {
                    GenerateError::Invalid(format!("iteration {} of pipeline {pid} is not validated", i - 1))
                })?;
            let base = store::tree(&self.pool, Some(&prev.workspace)).await?;
            let so_far = store::diff(&start, &base).await?;
            let fb = prompt::feedback(
                i - 1,
                prev.verdict.as_deref().unwrap_or("error"),
                prev.quality_score,
                prev.validation.as_ref().unwrap_or(&Value::Null),
                &so_far.unified,
                self.settings.context_bytes / 2,
            );
            (base, Some(fb))
        };

        let mut edit = EditDir::from_tree(&base, self.settings.max_file_bytes)?;
        let mut first = prompt::first_message(&p.prompt, &base, self.settings.context_bytes);
        if let Some(fb) = feedback {
            first.push('\n');
            first.push_str(&fb);
        }
        let ask = Ask {
            llm: &self.llm,
            tier: p.preference.tier(&complexity(&base, &p.prompt)),
            who: CallFor {
                pipeline_id: Some(pid),
                job_id: Some(job.meta.id),
                api_token_id: pipe.created_by_token,
            },
            budgets: self.settings.budgets(p.budget_usd),
            max_turns: self.settings.max_turns,
            max_tokens: self.settings.max_tokens,
            cancel: &ctx.cancel,
        };
        let conv = converse(&ask, first, &mut edit).await?;

        if let Some(refused) = &conv.budget {
            if edit.applied == 0 {
                // Nothing new to validate: the loop ends here, with what earlier iterations made.
                let ev = NewEvent {
                    pipeline_id: Some(pid),
                    job_id: Some(job.meta.id),
                    ..NewEvent::new(
                        types::BUDGET_EXCEEDED,
                        json!({"iteration": i, "scope": refused.scope, "limit_usd": refused.limit.dollars(),
                               "spent_usd": refused.spent.dollars(), "worst_case_usd": refused.worst_case.dollars()}),
                    )
                };
                finish_without(&self.pool, pid, "budget", Some(ev)).await?;
                let r = json!({"pipeline_id": pid, "iteration": i, "stopped": "budget", "refused": refused.to_string()});
                return Ok((r.clone(), r));
            }
        }
        if i == 1 && edit.applied == 0 && start.entries.is_empty() {
            finish_without(&self.pool, pid, "nothing", None).await?;
            let r = json!({"pipeline_id": pid, "iteration": i, "stopped": "nothing generated"});
            return Ok((r.clone(), r));
        }

        let packed = {
            let dir = &edit;
            dir.pack(WORKSPACE_CAP)?
        };
        let tree = Tree::from_tar_gz(&packed.data, WORKSPACE_CAP)?;
        let from_prev = store::diff(&base, &tree).await?;
        let from_start = store::diff(&start, &tree).await?;
        let messages = messages_artifact(&conv, prompt::SYSTEM)?;
        let wanted: Vec<_> = p.language.into_iter().collect();
        let languages: Vec<_> = language::select(&tree, &wanted)
            .iter()
            .map(|x| x.language)
            .collect();

        let record = json!({
            "pipeline_id": pid,
            "iteration": i,
            "workspace": packed.digest,
            "messages": messages.digest,
            "provider": conv.calls.last().map(|c| c.provider.clone()),
            "model": conv.calls.last().map(|c| c.model.clone()),
            "calls": conv.calls,
            "turns": conv.calls.len(),
            "edits": edit.applied,
            "tokens": store::tokens_json(&conv.usage),
            "cost_usd": conv.cost.dollars(),
            "latency_ms": conv.model_time.as_millis() as u64,
            "retries": conv.calls.iter().map(|c| c.retries).sum::<usize>(),
            "budget_stop": conv.budget.is_some(),
            "languages": languages,
            "diff_files": from_prev.files_changed,
            "diff_insertions": from_prev.insertions,
            "diff_deletions": from_prev.deletions,
            "diff_from_start_files": from_start.files_changed,
        });
        let mut details = record.clone();
        details["diff"] = json!(from_prev.unified);
        details["diff_from_start"] = json!(from_start.unified);

        let no_project = json!({"test": null, "lint": null, "security": null,
            "errors": {"workspace": "no project of a known language (python, javascript, go, rust) in the generated workspace"}});
        let mut tx = self.pool.begin().await.map_err(GenerateError::db("begin"))?;
        kiln_artifacts::store(&mut *tx, &packed).await?;
        kiln_artifacts::store(&mut *tx, &messages).await?;
        let inserted: Option<i32> = sqlx::query_scalar(INSERT_ITERATION_SQL)
            .bind(pid)
            .bind(i as i32)
            .bind(job.meta.id)
            .bind(&packed.digest)
            .bind(&messages.digest)
            .bind(sqlx::types::Json(&record))
            .bind(conv.budget.is_some())
            .bind(!languages.is_empty())
            .bind(sqlx::types::Json(&no_project))
            .fetch_optional(&mut *tx)
            .await
            .map_err(GenerateError::db("record iteration"))?;
        if inserted.is_none() {
            // Another attempt recorded it first (a lease lost mid-call): keep its record.
            drop(tx);
            let done = store::iterations(&self.pool, pid)
                .await?
                .into_iter()
                .find(|r| r.iteration == i)
                .ok_or_else(|| GenerateError::Invalid("iteration vanished".into()))?;
            return Ok((done.record.clone(), done.record));
        }
        let mut enqueued = None;
        if !languages.is_empty() {
            let opts = SubmitOptions {
                timeout: std::time::Duration::from_secs(self.settings.validation_timeout_secs),
                tags: vec![format!("generation:{pid}")],
                ..SubmitOptions::default()
            };
            enqueued = Some(
                kiln_pipeline::enqueue_validation(&mut tx, pid, &packed.digest, &languages, &opts, Some(i))
                    .await?,
            );
        }
        if let Some(refused) = &conv.budget {
            let ev = NewEvent {
                pipeline_id: Some(pid),
                job_id: Some(job.meta.id),
                ..NewEvent::new(
                    types::BUDGET_EXCEEDED,
                    json!({"iteration": i, "scope": refused.scope, "limit_usd": refused.limit.dollars(),
                           "spent_usd": refused.spent.dollars(), "worst_case_usd": refused.worst_case.dollars()}),
                )
            };
            events::emit(&mut *tx, &[ev]).await?;
        }
        tx.commit().await.map_err(GenerateError::db("commit iteration"))?;
        if let Some((jobs, enq)) = &enqueued {
            kiln_queue::count_committed(jobs, enq);
        }
        tracing::info!(
            pipeline = pid,
            iteration = i,
            workspace = %packed.digest,
            calls = conv.calls.len(),
            edits = edit.applied,
            cost_usd = conv.cost.dollars(),
            "iteration generated; validation enqueued"
        );
        Ok((record, details))
    }
}
