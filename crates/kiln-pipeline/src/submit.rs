//! Submitting a validation pipeline: store the workspace once, create the pipeline row and
//! enqueue its three jobs, all in one transaction.

use std::path::PathBuf;
use std::time::Duration;

use kiln_artifacts::{CheckoutOptions, GitAccess, Packed, Tree};
use kiln_queue::Enqueued;
use kiln_queue::{JobKind, NewJob};
use kiln_validate::{language, Language, ValidateError, ValidationPayload, KINDS};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::error::PipelineError;

const INSERT_SQL: &str = include_str!("sql/insert.sql");

/// Where the workspace comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An already packed artifact.
    Packed(Packed),
    /// A gzip-compressed tar as uploaded (re-packed canonically, so equal trees share a digest).
    TarGz(Vec<u8>),
    /// A directory on this machine (only what git would track, when it is a work tree).
    Dir(PathBuf),
    /// A git repository (URL or local path) at a ref (`HEAD` when None), checked out by Kiln.
    Git {
        /// URL or path.
        source: String,
        /// Branch, tag or commit.
        git_ref: Option<String>,
    },
}

/// How the pipeline's jobs are enqueued.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Languages to run; detected from the workspace when empty.
    pub languages: Vec<Language>,
    /// Per-attempt timeout of each job (default 120 s).
    pub timeout: Duration,
    /// Per-attempt timeout of the test job, when it should differ from `timeout`.
    pub test_timeout: Option<Duration>,
    /// Tries per job (default 3; only retryable failures are retried).
    pub max_attempts: i32,
    /// Job priority.
    pub priority: i16,
    /// Tags on the pipeline and its jobs.
    pub tags: Vec<String>,
    /// Workspace cap in bytes (default 50 MiB).
    pub max_workspace_bytes: u64,
    /// The API token submitting it (None from the CLI or a library call): only that token
    /// (or an admin) may reopen the pipeline by retrying one of its jobs through the API.
    pub created_by_token: Option<i64>,
    /// What a [`Source::Git`] may be and reach: by default a remote `https://` URL under the
    /// strict destination policy; the CLI sets [`GitAccess::Local`].
    pub git_access: GitAccess,
    /// Deadline of a git checkout (default 120 s).
    pub git_timeout: Duration,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            languages: Vec::new(),
            timeout: Duration::from_secs(120),
            test_timeout: None,
            max_attempts: 3,
            priority: 0,
            tags: Vec::new(),
            max_workspace_bytes: kiln_artifacts::DEFAULT_MAX_BYTES,
            created_by_token: None,
            git_access: GitAccess::remote(kiln_artifacts::DestinationPolicy::default()),
            git_timeout: Duration::from_secs(120),
        }
    }
}

/// What a submission created.
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    /// The pipeline.
    pub pipeline_id: i64,
    /// The workspace artifact's digest.
    pub workspace: String,
    /// Languages that will run.
    pub languages: Vec<Language>,
    /// The test, lint and security-scan job ids.
    pub jobs: Vec<i64>,
}

/// Enqueues the `test`, `lint` and `security-scan` jobs of one validation of `workspace` in
/// pipeline `pipeline` on the caller's transaction; returns the jobs and what the queue
/// answered (call `kiln_queue::count_committed` with them after the commit). With an
/// `iteration` (generation pipelines), the jobs carry the tag `iteration:N` and the
/// idempotency key `pipeline:P:iteration:N:KIND`, so enqueueing it twice enqueues once.
pub async fn enqueue_validation(
    tx: &mut PgConnection,
    pipeline: i64,
    workspace: &str,
    languages: &[Language],
    opts: &SubmitOptions,
    iteration: Option<u32>,
) -> Result<(Vec<NewJob>, Vec<Enqueued>), PipelineError> {
    let payload = serde_json::to_value(ValidationPayload {
        workspace: workspace.to_owned(),
        languages: languages.to_vec(),
        honour_suppressions: false,
    })
    .expect("payload serialises");
    let jobs: Vec<NewJob> = KINDS
        .iter()
        .map(|&kind: &JobKind| {
            let mut job = NewJob::new(kind.as_str(), kind, payload.clone())
                .pipeline(pipeline)
                .timeout(match kind {
                    JobKind::Test => opts.test_timeout.unwrap_or(opts.timeout),
                    _ => opts.timeout,
                })
                .max_attempts(opts.max_attempts)
                .priority(opts.priority)
                .tag(format!("pipeline:{pipeline}"));
            if let Some(n) = iteration {
                job = job
                    .tag(format!("iteration:{n}"))
                    .idempotency_key(format!("pipeline:{pipeline}:iteration:{n}:{}", kind.as_str()));
            }
            for t in &opts.tags {
                job = job.tag(t.clone());
            }
            job
        })
        .collect();
    let enqueued = kiln_queue::enqueue_many_on(&mut *tx, &jobs).await?;
    Ok((jobs, enqueued))
}

/// Packs a source into a workspace artifact (not stored yet), within `opts`' cap, git
/// access and deadline.
pub async fn prepare(source: Source, opts: &SubmitOptions) -> Result<Packed, PipelineError> {
    let cap = opts.max_workspace_bytes;
    Ok(match source {
        Source::Packed(p) => p,
        Source::TarGz(bytes) => tokio::task::spawn_blocking(move || {
            let mut p = Tree::from_tar_gz(&bytes, cap)?.pack(cap)?;
            p.source = serde_json::json!({"upload": true});
            Ok::<_, kiln_artifacts::ArtifactError>(p)
        })
        .await
        .expect("packing task")?,
        Source::Dir(dir) => tokio::task::spawn_blocking(move || kiln_artifacts::pack_dir(&dir, cap))
            .await
            .expect("packing task")?,
        Source::Git { source, git_ref } => {
            let mut git = CheckoutOptions::new(opts.git_access.clone(), cap);
            git.timeout = opts.git_timeout;
            tokio::task::spawn_blocking(move || {
                kiln_artifacts::git::checkout_with(&source, git_ref.as_deref(), &git)
            })
            .await
            .expect("checkout task")?
        }
    })
}

/// Packs (if needed) and stores the workspace, checks that it holds a language to validate,
/// and creates the pipeline with its three jobs. Nothing is written when the workspace is
/// refused (too large, no recognised language).
pub async fn submit(pool: &PgPool, source: Source, opts: &SubmitOptions) -> Result<Submitted, PipelineError> {
    let cap = opts.max_workspace_bytes;
    let packed = prepare(source, opts).await?;
    let tree = Tree::from_tar_gz(&packed.data, cap)?;
    let projects = language::select(&tree, &opts.languages);
    if projects.is_empty() {
        return Err(ValidateError::NoLanguage.into());
    }
    let languages: Vec<Language> = projects.iter().map(|p| p.language).collect();
    let lang_names: Vec<&str> = languages.iter().map(|l| l.as_str()).collect();

    let mut tx = pool.begin().await.map_err(PipelineError::db("begin"))?;
    kiln_artifacts::store(&mut *tx, &packed).await?;
    let id: i64 = sqlx::query_scalar(INSERT_SQL)
        .bind(&packed.digest)
        .bind(&lang_names)
        .bind(&opts.tags)
        .bind(opts.created_by_token)
        .fetch_one(&mut *tx)
        .await
        .map_err(PipelineError::db("insert pipeline"))?;
    let (jobs, enqueued) = enqueue_validation(&mut tx, id, &packed.digest, &languages, opts, None).await?;
    tx.commit().await.map_err(PipelineError::db("commit"))?;
    kiln_queue::count_committed(&jobs, &enqueued);
    let jobs: Vec<i64> = enqueued.iter().map(|e| e.id).collect();
    tracing::info!(pipeline = id, workspace = %packed.digest, languages = ?lang_names, ?jobs, "validation pipeline submitted");
    Ok(Submitted {
        pipeline_id: id,
        workspace: packed.digest,
        languages,
        jobs,
    })
}
