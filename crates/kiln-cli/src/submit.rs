//! `kiln submit validate DIR`: pack a directory (or check out a git source), enqueue a
//! validation pipeline and, with `--wait`, print its verdict. With no API configured it runs
//! against the embedded default (or `DATABASE_URL`) and the local Docker engine; when no live
//! worker serves the validation queues it runs one in this process for the wait.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use kiln_pipeline::{PipelineView, Source, SubmitOptions};
use kiln_validate::Language;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::validation;

/// What to submit.
#[derive(Debug, clap::Subcommand)]
pub enum SubmitCommand {
    /// Run test, lint and security-scan on a workspace and (with --wait) report the verdict.
    Validate(ValidateArgs),
    /// Generate code with a model, validate it and feed the failures back until it passes or
    /// a limit is reached.
    Generate(crate::generate::GenerateArgs),
}

/// `kiln submit validate` arguments.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The workspace directory (only the files git would track, when it is a git work tree).
    #[arg(required_unless_present = "git", conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Validate a git repository (URL or local path) instead of DIR, checked out by Kiln.
    #[arg(long)]
    pub git: Option<String>,
    /// The git ref (branch, tag or commit) to check out with --git; HEAD by default.
    #[arg(long = "ref", requires = "git")]
    pub git_ref: Option<String>,
    /// Languages to run (python, javascript/node, go, rust); repeat or comma-separate.
    /// Detected from the workspace when absent.
    #[arg(long = "language", short = 'l', value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Wait for the verdict.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object (with --wait: pipeline_id, verdict, quality_score, test, lint, security).
    #[arg(long)]
    pub json: bool,
    /// Per-job timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Per-attempt timeout of the test job in seconds, when it should differ from --timeout.
    #[arg(long)]
    pub test_timeout: Option<u64>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub wait_timeout: u64,
    /// Leave the embedded Postgres running when this command ends (by default the cluster it
    /// started is stopped on exit, Ctrl-C, SIGTERM or an error).
    #[arg(long)]
    pub keep_postgres: bool,
}

/// Runs `kiln submit …`.
/// With `--api` (or KILN_API_URL) the workspace is packed here and sent to the API, which
/// needs a live worker fleet to run the jobs; otherwise it goes straight to the database.
pub async fn run(
    cmd: SubmitCommand,
    api_url: &Option<String>,
    token: &Option<String>,
    database_url: &Option<String>,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let args = match cmd {
        SubmitCommand::Validate(args) => args,
        SubmitCommand::Generate(args) => {
            return crate::generate::run(args, api_url, token, database_url, data_dir).await
        }
    };
    if api_url.as_deref().is_some_and(|u| !u.is_empty()) {
        match crate::backend(api_url, token, database_url, data_dir).await? {
            crate::commands::Backend::Api(client) => return run_api(&client, &args).await,
            crate::commands::Backend::Db(_) => unreachable!("--api is set"),
        }
    }
    let mut languages = Vec::new();
    for l in &args.languages {
        languages.push(
            l.parse::<Language>()
                .map_err(|e| anyhow::anyhow!("--language: {e}"))?,
        );
    }
    if args.timeout == 0 || args.timeout > 86_400 {
        bail!(
            "--timeout: must be between 1 and 86400 seconds, got {}",
            args.timeout
        );
    }
    if let Some(t) = args.test_timeout.filter(|t| *t == 0 || *t > 86_400) {
        bail!("--test-timeout: must be between 1 and 86400 seconds, got {t}");
    }
    let source = match (&args.dir, &args.git) {
        (Some(dir), _) => {
            if !dir.is_dir() {
                bail!("DIR: {} is not a directory", dir.display());
            }
            Source::Dir(dir.clone())
        }
        (None, Some(g)) => Source::Git {
            source: g.clone(),
            git_ref: args.git_ref.clone(),
        },
        (None, None) => bail!("give a DIR or --git SOURCE"),
    };
    let (pool, started) = crate::db::connect_owned(database_url, data_dir).await?;
    let interrupted = CancellationToken::new();
    let signal = interrupted.clone();
    let watcher = tokio::spawn(async move {
        crate::shutdown_signal().await;
        signal.cancel();
    });
    let result = submit_and_wait(&pool, source, &args, languages, interrupted).await;
    watcher.abort();
    pool.close().await;
    started.release(args.keep_postgres).await;
    result
}

/// Submits the pipeline to the database and, with `--wait`, prints its verdict.
async fn submit_and_wait(
    pool: &PgPool,
    source: Source,
    args: &ValidateArgs,
    languages: Vec<Language>,
    interrupted: CancellationToken,
) -> anyhow::Result<()> {
    kiln_queue::migrate(pool).await.context("migrate")?;
    let opts = SubmitOptions {
        languages,
        timeout: Duration::from_secs(args.timeout),
        test_timeout: args.test_timeout.map(Duration::from_secs),
        // The user's own machine: local paths and their own git setup are theirs to use.
        git_access: kiln_artifacts::GitAccess::Local,
        ..SubmitOptions::default()
    };
    let submitted = kiln_pipeline::submit(pool, source, &opts)
        .await
        .map_err(|e| match &e {
            kiln_pipeline::PipelineError::Validate(kiln_validate::ValidateError::NoLanguage) => {
                anyhow::anyhow!("DIR: {e}")
            }
            kiln_pipeline::PipelineError::Artifact(kiln_artifacts::ArtifactError::TooLarge { .. }) => {
                anyhow::anyhow!("DIR: {e}")
            }
            kiln_pipeline::PipelineError::Artifact(kiln_artifacts::ArtifactError::Git(_)) => {
                anyhow::anyhow!("--git/--ref: {e}")
            }
            _ => anyhow::Error::new(e),
        })?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&submitted)?);
        } else {
            println!(
                "pipeline {} submitted (workspace {}, {}; jobs {:?})",
                submitted.pipeline_id,
                submitted.workspace,
                submitted
                    .languages
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                submitted.jobs
            );
        }
        return Ok(());
    }
    let view = wait_with_worker(
        pool,
        submitted.pipeline_id,
        &submitted.languages,
        Duration::from_secs(args.wait_timeout),
        interrupted,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&view.summary())?);
    } else {
        print_human(&view);
    }
    Ok(())
}

/// Waits for the pipeline, riding out database outages (a restart of Postgres): a lost
/// connection is retried every second until `limit`, other errors end the wait.
async fn wait_through_outages(pool: &PgPool, id: i64, limit: Duration) -> anyhow::Result<PipelineView> {
    let start = tokio::time::Instant::now();
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match kiln_pipeline::wait(pool, None, id, left).await {
            Ok(view) => return Ok(view),
            Err(e) if is_outage(&e) && !left.is_zero() => {
                if down_since.is_none() {
                    tracing::warn!(pipeline = id, error = %e, "lost the database; waiting for it to come back");
                    down_since = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// True when `e` comes from losing the database (connection refused or closed, the server
/// shutting down or starting), not from a query it refused.
fn is_outage(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(sqlx) = c.downcast_ref::<sqlx::Error>() {
            return match sqlx {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed => true,
                // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now;
                // class 08: connection exceptions.
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
                _ => false,
            };
        }
        cause = c.source();
    }
    false
}

/// `kiln submit validate --api URL`: pack DIR here (or name the git source), POST it to
/// `/v1/pipelines/validate` and with `--wait` long-poll `/v1/pipelines/{id}/wait`.
async fn run_api(client: &crate::client::ApiClient, args: &ValidateArgs) -> anyhow::Result<()> {
    use kiln_wire::pipelines::{GitSource, ValidateRequest};
    for l in &args.languages {
        l.parse::<Language>()
            .map_err(|e| anyhow::anyhow!("--language: {e}"))?;
    }
    let mut req = ValidateRequest {
        languages: args.languages.clone(),
        timeout_secs: Some(args.timeout),
        test_timeout_secs: args.test_timeout,
        ..ValidateRequest::default()
    };
    match (&args.dir, &args.git) {
        (Some(dir), _) => req.workspace_tar_gz_base64 = Some(validation::pack_for_api(dir).await?),
        (None, Some(g)) => {
            req.git = Some(GitSource {
                source: g.clone(),
                git_ref: args.git_ref.clone(),
            })
        }
        (None, None) => bail!("give a DIR or --git SOURCE"),
    }
    let submitted = client.submit_validation(&req).await?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&submitted)?);
        } else {
            println!(
                "pipeline {} submitted (workspace {}, {}; jobs {:?})",
                submitted.pipeline_id,
                submitted.workspace,
                submitted.languages.join(", "),
                submitted.jobs
            );
        }
        return Ok(());
    }
    let limit = Duration::from_secs(args.wait_timeout);
    let start = std::time::Instant::now();
    let reply = loop {
        let left = limit.saturating_sub(start.elapsed()).as_secs().max(1);
        let reply = client
            .wait_pipeline(
                submitted.pipeline_id,
                left.min(kiln_wire::pipelines::MAX_WAIT_SECS.min(60)),
            )
            .await?;
        if reply["state"] == "finished" {
            break reply;
        }
        if start.elapsed() >= limit {
            bail!(
                "--wait-timeout: pipeline {} not finished after {}s (is a worker serving the test, lint and security-scan queues?)",
                submitted.pipeline_id,
                args.wait_timeout
            );
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&reply["summary"])?);
    } else {
        let languages: Vec<&str> = reply["languages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .collect();
        print_summary(&reply["summary"], &languages.join(", "));
    }
    Ok(())
}

/// Waits for the pipeline, running an in-process worker for the queues no live worker
/// serves; on `interrupted` (Ctrl-C, SIGTERM) the worker hands its jobs back and it fails.
async fn wait_with_worker(
    pool: &PgPool,
    id: i64,
    languages: &[Language],
    limit: Duration,
    interrupted: CancellationToken,
) -> anyhow::Result<PipelineView> {
    let until_done = |pool: PgPool| async move {
        tokio::select! {
            view = wait_through_outages(&pool, id, limit) => view,
            _ = interrupted.cancelled() => bail!("interrupted: pipeline {id} is not finished (its jobs stay queued)"),
        }
    };
    let missing = validation::unserved(pool, &kiln_validate::KINDS).await?;
    if missing.is_empty() {
        tracing::info!(pipeline = id, "live workers serve the validation queues; waiting");
        return until_done(pool.clone()).await;
    }
    tracing::info!(pipeline = id, queues = ?missing, "no live worker serves these queues: running one in this process");
    let mut needed: Vec<String> = vec!["python".into()];
    needed.extend(languages.iter().map(|l| l.image().to_string()));
    needed.dedup();
    validation::build_images(Some(needed)).await?;
    validation::with_local_worker(
        pool,
        "kiln-submit-",
        &missing,
        &toml::Table::new(),
        until_done(pool.clone()),
    )
    .await
}

fn print_human(view: &PipelineView) {
    print_summary(&view.summary(), &view.languages.join(", "));
}

/// Prints a `--json` summary object for humans.
fn print_summary(s: &serde_json::Value, languages: &str) {
    println!(
        "pipeline {}: {} (quality {}/10) — {languages}",
        s["pipeline_id"],
        s["verdict"].as_str().unwrap_or("?"),
        s["quality_score"]
            .as_i64()
            .map(|q| q.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    let t = &s["test"];
    if t.is_object() {
        let cov = t["coverage_percent"]
            .as_f64()
            .map(|c| format!(", coverage {c}%"))
            .unwrap_or_default();
        println!(
            "tests: {} passed, {} failed, {} skipped, {} errors{cov}",
            t["passed"], t["failed"], t["skipped"], t["errors"]
        );
        for c in t["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "failed" || c["status"] == "error")
        {
            let msg = c["message"].as_str().unwrap_or("").lines().next().unwrap_or("");
            println!(
                "  {} {}: {msg}",
                c["status"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or("")
            );
        }
    }
    for (title, key) in [("lint", "lint"), ("security", "security")] {
        let f = s[key]["findings"].as_array();
        println!("{title}: {} findings", f.map(|f| f.len()).unwrap_or(0));
        for x in f.into_iter().flatten() {
            println!(
                "  [{}] {}:{} {} {}: {}",
                x["severity"].as_str().unwrap_or(""),
                x["file"].as_str().unwrap_or(""),
                x["line"],
                x["tool"].as_str().unwrap_or(""),
                x["rule"].as_str().unwrap_or(""),
                x["message"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(e) = s.get("errors") {
        println!("errors: {e}");
    }
}
