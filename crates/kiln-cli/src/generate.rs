//! `kiln submit generate [DIR | --git URL [--ref R]] --prompt TEXT`: start a generation
//! pipeline (generate → validate → regenerate) and, with `--wait`, print a progress line per
//! iteration on stderr and the outcome. Embedded by default: when no live worker serves the
//! generation and validation queues, one runs in this process with the `[llm]` section of
//! `--config` (or `./workers.toml`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use kiln_generate::{submit_generation, GenerateRequest, Start};
use kiln_kinds::generation::Preference;
use kiln_kinds::Language;
use kiln_pipeline::{PipelineView, Source, SubmitOptions};
use kiln_queue::JobKind;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::validation;

/// `kiln submit generate` arguments.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The starting workspace directory; without DIR or --git the model starts from nothing.
    #[arg(conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Start from a git repository (URL or local path), checked out by Kiln.
    #[arg(long)]
    pub git: Option<String>,
    /// The git ref to check out with --git; HEAD by default.
    #[arg(long = "ref", requires = "git")]
    pub git_ref: Option<String>,
    /// What the model should do.
    #[arg(long)]
    pub prompt: String,
    /// The project's language (python, javascript/node, go, rust) when the workspace does not tell.
    #[arg(long)]
    pub language: Option<String>,
    /// Iterations of generate → validate allowed (1-10, default 5).
    #[arg(long)]
    pub max_iterations: Option<u32>,
    /// The pipeline's budget in USD (default from [llm.generation], $10).
    #[arg(long)]
    pub budget_usd: Option<f64>,
    /// fast, balanced (default), quality or auto.
    #[arg(long)]
    pub preference: Option<String>,
    /// The fleet file whose [llm] section configures the providers (default ./workers.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Wait for the outcome, printing a line per iteration on stderr.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object (with --wait: pipeline_id, verdict, stop_reason, iterations,
    /// quality_score, tokens, cost_usd, test, lint, security, diff).
    #[arg(long)]
    pub json: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub wait_timeout: u64,
    /// Leave the embedded Postgres running when this command ends.
    #[arg(long)]
    pub keep_postgres: bool,
}

/// The flags checked, naming the flag at fault.
struct Checked {
    language: Option<Language>,
    preference: Preference,
}

fn check(args: &GenerateArgs) -> anyhow::Result<Checked> {
    if args.prompt.trim().is_empty() {
        bail!("--prompt: must not be empty");
    }
    let language = match &args.language {
        Some(l) => Some(
            l.parse::<Language>()
                .map_err(|e| anyhow::anyhow!("--language: {e}"))?,
        ),
        None => None,
    };
    let preference = match &args.preference {
        Some(p) => p
            .parse::<Preference>()
            .map_err(|e| anyhow::anyhow!("--preference: {e}"))?,
        None => Preference::default(),
    };
    if let Some(n) = args.max_iterations.filter(|n| !(1..=10).contains(n)) {
        bail!("--max-iterations: must be between 1 and 10, got {n}");
    }
    if let Some(b) = args
        .budget_usd
        .filter(|b| !(b.is_finite() && *b > 0.0 && *b <= 10_000.0))
    {
        bail!("--budget-usd: must be above 0 and at most 10000, got {b}");
    }
    if let Some(dir) = &args.dir {
        if !dir.is_dir() {
            bail!("DIR: {} is not a directory", dir.display());
        }
    }
    Ok(Checked { language, preference })
}

/// Runs `kiln submit generate`.
pub async fn run(
    args: GenerateArgs,
    api_url: &Option<String>,
    token: &Option<String>,
    database_url: &Option<String>,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let checked = check(&args)?;
    if api_url.as_deref().is_some_and(|u| !u.is_empty()) {
        match crate::backend(api_url, token, database_url, data_dir).await? {
            crate::commands::Backend::Api(client) => return run_api(&client, &args).await,
            crate::commands::Backend::Db(_) => unreachable!("--api is set"),
        }
    }
    let fleet = crate::fleet::FleetFile::load_or_default(args.config.as_deref()).context("--config")?;
    let start = match (&args.dir, &args.git) {
        (Some(dir), _) => Start::Source(Source::Dir(dir.clone())),
        (None, Some(g)) => Start::Source(Source::Git {
            source: g.clone(),
            git_ref: args.git_ref.clone(),
        }),
        (None, None) => Start::Empty,
    };
    let req = GenerateRequest {
        prompt: args.prompt.clone(),
        start,
        language: checked.language,
        max_iterations: args.max_iterations,
        budget_usd: args.budget_usd,
        preference: checked.preference,
    };
    let (pool, started) = crate::db::connect_owned(database_url, data_dir).await?;
    let interrupted = CancellationToken::new();
    let signal = interrupted.clone();
    let watcher = tokio::spawn(async move {
        crate::shutdown_signal().await;
        signal.cancel();
    });
    let result = submit_and_wait(&pool, req, &args, &fleet.sections, interrupted).await;
    watcher.abort();
    pool.close().await;
    started.release(args.keep_postgres).await;
    result
}

async fn submit_and_wait(
    pool: &PgPool,
    req: GenerateRequest,
    args: &GenerateArgs,
    sections: &toml::Table,
    interrupted: CancellationToken,
) -> anyhow::Result<()> {
    kiln_queue::migrate(pool).await.context("migrate")?;
    let opts = SubmitOptions {
        git_access: kiln_artifacts::GitAccess::Local,
        ..SubmitOptions::default()
    };
    let submitted = submit_generation(pool, req, &opts)
        .await
        .map_err(|e| match e.client_field() {
            Some(f) if f == "git" => anyhow::anyhow!("--git/--ref: {e}"),
            Some(f) if f == "workspace" => anyhow::anyhow!("DIR: {e}"),
            Some(f) => anyhow::anyhow!("--{}: {e}", f.replace('_', "-")),
            None => anyhow::Error::new(e),
        })?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&submitted)?);
        } else {
            println!(
                "generation pipeline {} submitted (job {})",
                submitted.pipeline_id, submitted.job
            );
        }
        return Ok(());
    }
    let id = submitted.pipeline_id;
    let limit = Duration::from_secs(args.wait_timeout);
    let stop = CancellationToken::new();
    let progress = tokio::spawn(progress(pool.clone(), id, stop.clone()));
    let view = with_worker(pool, id, sections, limit, interrupted).await;
    stop.cancel();
    let _ = progress.await;
    let view = view?;
    if args.json {
        println!("{}", serde_json::to_string(&view.summary())?);
    } else {
        print_human(&view.summary());
    }
    Ok(())
}

/// Prints a line on stderr per validated iteration, following the event outbox.
async fn progress(pool: PgPool, id: i64, stop: CancellationToken) {
    let mut after = 0;
    loop {
        let filter = kiln_queue::events::EventFilter {
            after,
            limit: 100,
            pipeline_id: Some(id),
            types: Some(vec![kiln_queue::events::types::GENERATION_ITERATION.into()]),
            ..Default::default()
        };
        // Read once more after `stop`: the last iteration's event commits with the pipeline's end.
        let last = stop.is_cancelled();
        if let Ok(events) = kiln_queue::events::list(&pool, &filter).await {
            for e in events {
                after = e.id;
                eprintln!("{}", progress_line(&e.data));
            }
        }
        if last {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

fn progress_line(d: &serde_json::Value) -> String {
    format!(
        "iteration {}: {} (quality {}), {} tokens in / {} out, ${}",
        d["iteration"],
        d["verdict"].as_str().unwrap_or("?"),
        d["quality_score"]
            .as_i64()
            .map(|q| format!("{q}/10"))
            .unwrap_or_else(|| "-".into()),
        d["tokens"]["input"],
        d["tokens"]["output"],
        d["cost_usd"].as_f64().unwrap_or(0.0)
    )
}

/// Waits for the pipeline, running the loop's kinds in this process when no live worker
/// serves them.
async fn with_worker(
    pool: &PgPool,
    id: i64,
    sections: &toml::Table,
    limit: Duration,
    interrupted: CancellationToken,
) -> anyhow::Result<PipelineView> {
    let until_done = |pool: PgPool| async move {
        tokio::select! {
            view = kiln_pipeline::wait(&pool, None, id, limit) => Ok(view?),
            _ = interrupted.cancelled() => bail!("interrupted: pipeline {id} is not finished (its jobs stay queued)"),
        }
    };
    let mut kinds = vec![JobKind::Generation];
    kinds.extend(kiln_validate::KINDS);
    let missing = validation::unserved(pool, &kinds).await?;
    if missing.is_empty() {
        return until_done(pool.clone()).await;
    }
    tracing::info!(pipeline = id, kinds = ?missing, "no live worker serves these kinds: running one in this process");
    if missing.iter().any(|k| *k != JobKind::Generation) {
        validation::build_images(None).await?;
    }
    validation::with_local_worker(
        pool,
        "kiln-generate-",
        &missing,
        sections,
        until_done(pool.clone()),
    )
    .await
}

fn print_human(s: &serde_json::Value) {
    println!(
        "pipeline {}: {}{} after {} iteration(s) (quality {}), {} tokens in / {} out, ${}",
        s["pipeline_id"],
        s["verdict"].as_str().unwrap_or("?"),
        s["stop_reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        s["iterations"],
        s["quality_score"]
            .as_i64()
            .map(|q| format!("{q}/10"))
            .unwrap_or_else(|| "-".into()),
        s["tokens"]["input"],
        s["tokens"]["output"],
        s["cost_usd"].as_f64().unwrap_or(0.0)
    );
    if let Some(d) = s["diff"].as_str().filter(|d| !d.is_empty()) {
        println!("{d}");
    }
}

/// `kiln submit generate --api URL`: pack DIR here and POST the request to `/v1/pipelines`;
/// with `--wait`, long-poll `/v1/pipelines/{id}/wait`, printing each new iteration.
async fn run_api(client: &crate::client::ApiClient, args: &GenerateArgs) -> anyhow::Result<()> {
    let mut req = serde_json::json!({"kind": "generation", "prompt": args.prompt});
    if let Some(l) = &args.language {
        req["language"] = l.clone().into();
    }
    if let Some(n) = args.max_iterations {
        req["max_iterations"] = n.into();
    }
    if let Some(b) = args.budget_usd {
        req["budget_usd"] = b.into();
    }
    if let Some(p) = &args.preference {
        req["preference"] = p.clone().into();
    }
    match (&args.dir, &args.git) {
        (Some(dir), _) => req["workspace_tar_gz_base64"] = validation::pack_for_api(dir).await?.into(),
        (None, Some(g)) => req["git"] = serde_json::json!({"source": g, "ref": args.git_ref}),
        (None, None) => {}
    }
    let submitted = client.submit_pipeline(&req).await?;
    let id = submitted["pipeline_id"]
        .as_i64()
        .context("the API answered without a pipeline_id")?;
    if !args.wait {
        println!("{}", serde_json::to_string(&submitted)?);
        return Ok(());
    }
    let limit = Duration::from_secs(args.wait_timeout);
    let start = std::time::Instant::now();
    let mut printed = 0usize;
    loop {
        let left = limit.saturating_sub(start.elapsed()).as_secs().max(1);
        let reply = client.wait_pipeline(id, left.min(5)).await?;
        let its = reply["iterations"].as_array().cloned().unwrap_or_default();
        for it in its.iter().filter(|i| i["state"] == "validated").skip(printed) {
            printed += 1;
            let d = serde_json::json!({"iteration": it["iteration"], "verdict": it["verdict"],
                "quality_score": it["quality_score"], "tokens": it["record"]["tokens"], "cost_usd": it["record"]["cost_usd"]});
            eprintln!("{}", progress_line(&d));
        }
        if reply["state"] == "finished" {
            if args.json {
                println!("{}", serde_json::to_string(&reply["summary"])?);
            } else {
                print_human(&reply["summary"]);
            }
            return Ok(());
        }
        if start.elapsed() >= limit {
            bail!(
                "--wait-timeout: pipeline {id} not finished after {}s",
                args.wait_timeout
            );
        }
    }
}
