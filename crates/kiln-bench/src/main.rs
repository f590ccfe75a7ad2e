//! `bench-queue`: Kiln's queue against apalis-postgres and graphile_worker on the same
//! Postgres server (a fresh database per system), and against the pgbench floor of Kiln's
//! own claim/complete SQL. See `scripts/bench-queue`.

mod apalis_sys;
mod common;
mod floor;
mod graphile_sys;
mod kiln_sys;

use anyhow::{Context, Result};
use clap::Parser;
use common::{init_tracker, tracker, Outcome, Server};
use sqlx::postgres::PgConnectOptions;
use std::io::Write;
use std::str::FromStr;

/// Burn-down and idle pickup of Kiln, apalis-postgres and graphile_worker, plus the floor.
#[derive(Parser, Debug, Clone)]
#[command(name = "bench-queue")]
pub struct Args {
    /// No-op jobs per burn-down (pre-inserted before timing starts).
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Worker instances per system.
    #[arg(short = 'k', long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs in the idle pickup test (one at a time).
    #[arg(long, default_value_t = 300)]
    pub pickup: usize,
    /// Print one JSON line on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// Systems to run, comma separated: kiln, apalis, graphile, floor.
    #[arg(long, default_value = "kiln,apalis,graphile,floor", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Give up a burn-down after this many seconds (reported as what got through).
    #[arg(long, default_value_t = 600)]
    pub burn_timeout: u64,
    /// Kiln: claim batch per worker.
    #[arg(long, default_value_t = 1000)]
    pub kiln_batch: usize,
    /// Kiln: jobs running at once per worker.
    #[arg(long, default_value_t = 1000)]
    pub kiln_concurrency: usize,
    /// Kiln: pool size per worker.
    #[arg(long, default_value_t = 8)]
    pub kiln_pool: u32,
    /// apalis-postgres: `Config::batch_size` (its README keeps the default, 10).
    #[arg(long, default_value_t = 10)]
    pub apalis_batch: usize,
    /// apalis-postgres: worker concurrency limit (0: none set, as in its README).
    #[arg(long, default_value_t = 0)]
    pub apalis_concurrency: usize,
    /// apalis-postgres: pool size per worker.
    #[arg(long, default_value_t = 8)]
    pub apalis_pool: u32,
    /// graphile_worker: concurrency per worker (its README uses 5).
    #[arg(long, default_value_t = 5)]
    pub graphile_concurrency: usize,
    /// graphile_worker: local queue size per worker (its default is 100).
    #[arg(long, default_value_t = 100)]
    pub graphile_local_queue: usize,
    /// graphile_worker: `complete_job_batch_delay` in ms (0: not set, one completion per job,
    /// the library's default).
    #[arg(long, default_value_t = 0)]
    pub graphile_complete_delay_ms: u64,
    /// graphile_worker: pool size per worker.
    #[arg(long, default_value_t = 8)]
    pub graphile_pool: u32,
    /// pgbench binary for the floor.
    #[arg(long, default_value = "pgbench")]
    pub pgbench: String,
}

impl Args {
    fn runs(&self, system: &str) -> bool {
        self.only.iter().any(|s| s == system)
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,graphile_worker=warn,apalis=warn".into()),
        )
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    // A private cluster unless DATABASE_URL names a server.
    let mut cluster = None;
    let mut _dir = None;
    let url = match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => url,
        None => {
            let dir = tempfile::Builder::new().prefix("kiln-bench-pg").tempdir()?;
            tracing::info!(dir = %dir.path().display(), "DATABASE_URL unset: starting a private Postgres");
            let c = kiln_pg::LocalCluster::start(dir.path()).context("start a private Postgres")?;
            let url = c.url();
            cluster = Some(c);
            _dir = Some(dir);
            url
        }
    };
    let result = runtime.block_on(bench(&args, &url));
    drop(runtime);
    if let Some(c) = cluster {
        if let Err(e) = c.remove() {
            tracing::warn!(error = %e, "removing the private Postgres failed");
        }
    }
    result
}

async fn bench(args: &Args, url: &str) -> Result<()> {
    let server = Server {
        admin: PgConnectOptions::from_str(url)?,
    };
    let (fsync, sync_commit, version) = server.durability().await?;
    tracing::info!(%fsync, synchronous_commit = %sync_commit, %version, "server");
    let (commit_p50, commit_p99) = server.commit_latency(200).await.context("commit latency")?;
    init_tracker(args.jobs, args.pickup);

    let mut outcomes: Vec<Outcome> = Vec::new();
    type Runner = for<'a> fn(&'a Server, &'a Args) -> futures::future::BoxFuture<'a, Result<Outcome>>;
    let systems: [(&str, Runner); 3] = [
        ("kiln", |s, a| Box::pin(kiln_sys::run(s, a))),
        ("apalis", |s, a| Box::pin(apalis_sys::run(s, a))),
        ("graphile", |s, a| Box::pin(graphile_sys::run(s, a))),
    ];
    for (name, run) in systems {
        if !args.runs(name) {
            continue;
        }
        tracker().reset();
        tracing::info!(
            system = name,
            jobs = args.jobs,
            workers = args.workers,
            "starting"
        );
        let o = run(&server, args)
            .await
            .with_context(|| format!("benchmark of {name}"))?;
        tracing::info!(
            system = o.system,
            jobs_per_s = o.jobs_per_s.round(),
            burn_s = o.burn_secs,
            p50_ms = o.pickup_p50_ms,
            p99_ms = o.pickup_p99_ms,
            duplicates = o.duplicates,
            missing = o.missing,
            executions = tracker().executed(),
            "finished"
        );
        outcomes.push(o);
    }
    let floor = if args.runs("floor") {
        tracing::info!("starting the pgbench floor");
        Some(floor::run(&server, url, args).await.context("floor")?)
    } else {
        None
    };

    let kiln = outcomes.iter().find(|o| o.system == "kiln");
    let kiln_vs_floor = match (kiln, &floor) {
        (Some(k), Some((f, _))) => Some(k.jobs_per_s / f),
        _ => None,
    };
    if args.json {
        let mut obj = serde_json::Map::new();
        for o in &outcomes {
            obj.insert(
                o.system.into(),
                serde_json::json!({
                    "jobs_per_s": round1(o.jobs_per_s),
                    "burn_down_s": round3(o.burn_secs),
                    "pickup_p50_ms": round3(o.pickup_p50_ms),
                    "pickup_p99_ms": round3(o.pickup_p99_ms),
                    "duplicates": o.duplicates,
                    "missing": o.missing,
                    "settings": o.settings,
                }),
            );
        }
        if let Some((f, how)) = &floor {
            obj.insert(
                "floor".into(),
                serde_json::json!({"jobs_per_s": round1(*f), "settings": how}),
            );
        }
        if let Some(r) = kiln_vs_floor {
            obj.insert("kiln_vs_floor".into(), serde_json::json!(round3(r)));
        }
        obj.insert(
            "postgres".into(),
            serde_json::json!({"version": version, "fsync": fsync, "synchronous_commit": sync_commit}),
        );
        obj.insert(
            "commit".into(),
            serde_json::json!({"p50_ms": round3(commit_p50), "p99_ms": round3(commit_p99)}),
        );
        obj.insert("jobs".into(), serde_json::json!(args.jobs));
        obj.insert("workers".into(), serde_json::json!(args.workers));
        println!("{}", serde_json::Value::Object(obj));
    }
    // The table goes to stdout, or to stderr next to the logs when stdout carries the JSON.
    let mut out: Box<dyn std::io::Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    {
        writeln!(
            out,
            "\nBurn-down of {} no-op jobs by {} workers; idle pickup of {} jobs one at a time.",
            args.jobs, args.workers, args.pickup
        )?;
        writeln!(
            out,
            "Postgres {version} with its default durability: fsync = {fsync}, synchronous_commit = {sync_commit}."
        )?;
        writeln!(
            out,
            "One durable one-row commit: p50 {commit_p50:.2} ms, p99 {commit_p99:.2} ms (an idle pickup needs two).\n"
        )?;
        writeln!(
            out,
            "{:<18} {:>12} {:>10} {:>15} {:>15} {:>11} {:>8}",
            "system", "jobs/s", "burn s", "pickup p50 ms", "pickup p99 ms", "duplicates", "missing"
        )?;
        for o in &outcomes {
            writeln!(
                out,
                "{:<18} {:>12.0} {:>10.2} {:>15.2} {:>15.2} {:>11} {:>8}",
                o.system,
                o.jobs_per_s,
                o.burn_secs,
                o.pickup_p50_ms,
                o.pickup_p99_ms,
                o.duplicates,
                o.missing
            )?;
        }
        if let Some((f, _)) = &floor {
            writeln!(out, "{:<18} {:>12.0}", "floor (pgbench)", f)?;
        }
        writeln!(out)?;
        if let Some(k) = kiln {
            for o in outcomes.iter().filter(|o| o.system != "kiln") {
                writeln!(out, "kiln / {:<16} {:.1}x", o.system, k.jobs_per_s / o.jobs_per_s)?;
            }
        }
        if let Some(r) = kiln_vs_floor {
            writeln!(out, "kiln / floor            {:.0} %", r * 100.0)?;
        }
        writeln!(out, "\nSettings:")?;
        for o in &outcomes {
            writeln!(out, "  {:<16} {}", o.system, o.settings)?;
        }
        if let Some((_, how)) = &floor {
            writeln!(out, "  {:<16} {}", "floor", how)?;
        }
    }
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
