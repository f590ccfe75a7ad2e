//! `bench-queue`: Kiln's queue against apalis-postgres and graphile_worker on the same
//! Postgres server (a fresh database per system), and against the pgbench floor of Kiln's
//! own claim/complete SQL. See `scripts/bench-queue`.

mod apalis_sys;
mod ceiling;
mod common;
mod floor;
mod graphile_sys;
mod kiln_sys;
mod report;
mod sweep;

use anyhow::{bail, Context, Result};
use apalis_sys::ApalisSettings;
use clap::{Parser, ValueEnum};
use common::{init_tracker, tracker, Outcome, RunSpec, Server};
use graphile_sys::GraphileSettings;
use kiln_sys::KilnSettings;
use report::{Report, Tuned};
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::time::Duration;
use sweep::Axis;

/// Which settings the peers run at.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// Their README settings (the `--apalis-*` / `--graphile-*` flags) only.
    Readme,
    /// Their README settings, then a short sweep of their own options and the winner at full N.
    Tuned,
}

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
    /// Systems to run, comma separated: kiln, apalis, graphile, floor, ceiling (a minimal
    /// SKIP LOCKED claim + complete from pgbench: what this machine allows at all).
    #[arg(
        long,
        default_value = "kiln,apalis,graphile,floor,ceiling",
        value_delimiter = ','
    )]
    pub only: Vec<String>,
    /// Give up a burn-down after this many seconds (reported as what got through).
    #[arg(long, default_value_t = 600)]
    pub burn_timeout: u64,
    /// `readme`: peers at their README settings. `tuned`: also sweep each peer's own options
    /// (graphile_worker: concurrency, local queue size, completion batch delay; apalis-postgres:
    /// batch size, concurrency, pool) on --sweep-jobs jobs, print the winner, and run it at -n.
    #[arg(long, value_enum, default_value_t = Peers::Readme)]
    pub peers: Peers,
    /// Also burn down --sweep-jobs jobs with each of --sweep-workers workers, for every system
    /// (peers at their tuned settings under --peers tuned, else at their README settings).
    #[arg(long)]
    pub workers_sweep: bool,
    /// Worker counts for --workers-sweep.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    pub sweep_workers: Vec<usize>,
    /// Jobs per burn-down in the option sweep and the workers sweep (no pickup test there).
    #[arg(long, default_value_t = 20_000)]
    pub sweep_jobs: usize,
    /// Give up a sweep burn-down after this many seconds (that point cannot win).
    #[arg(long, default_value_t = 60)]
    pub sweep_timeout: u64,
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

impl Args {
    fn kiln(&self) -> KilnSettings {
        KilnSettings {
            batch: self.kiln_batch,
            concurrency: self.kiln_concurrency,
            pool: self.kiln_pool,
        }
    }

    fn apalis(&self) -> ApalisSettings {
        ApalisSettings {
            batch: self.apalis_batch,
            concurrency: self.apalis_concurrency,
            pool: self.apalis_pool,
        }
    }

    fn graphile(&self) -> GraphileSettings {
        GraphileSettings {
            concurrency: self.graphile_concurrency,
            local_queue: self.graphile_local_queue,
            complete_delay_ms: self.graphile_complete_delay_ms,
            pool: self.graphile_pool,
        }
    }

    /// The full run: -n jobs, -k workers, the pickup test.
    fn full(&self) -> RunSpec {
        RunSpec {
            jobs: self.jobs,
            workers: self.workers,
            pickup: self.pickup,
            burn_timeout: Duration::from_secs(self.burn_timeout),
        }
    }

    /// A sweep run: --sweep-jobs jobs, `workers` workers, no pickup test.
    fn sweep(&self, workers: usize) -> RunSpec {
        RunSpec {
            jobs: self.sweep_jobs,
            workers,
            pickup: 0,
            burn_timeout: Duration::from_secs(self.sweep_timeout),
        }
    }
}

/// The settings one system runs at.
#[derive(Debug, Clone, Copy)]
enum System {
    Kiln(KilnSettings),
    Apalis(ApalisSettings),
    Graphile(GraphileSettings),
}

/// Resets the tracker for `spec` and runs `system` once.
async fn measure(server: &Server, spec: &RunSpec, system: System) -> Result<Outcome> {
    tracker().reset(spec.jobs, spec.pickup);
    let o = match system {
        System::Kiln(s) => kiln_sys::run(server, spec, &s).await,
        System::Apalis(s) => apalis_sys::run(server, spec, &s).await,
        System::Graphile(s) => graphile_sys::run(server, spec, &s).await,
    }
    .with_context(|| format!("benchmark of {system:?}"))?;
    tracing::info!(
        system = o.system,
        jobs = o.jobs,
        workers = o.workers,
        jobs_per_s = o.jobs_per_s.round(),
        burn_s = o.burn_secs,
        wal_bytes_per_job = o.wal_per_job().round(),
        p50_ms = o.pickup_p50_ms,
        p99_ms = o.pickup_p99_ms,
        duplicates = o.duplicates,
        missing = o.missing,
        timed_out = o.timed_out,
        executions = tracker().executed(),
        "finished"
    );
    Ok(o)
}

/// Sweeps one peer's `axes` from `start` on --sweep-jobs jobs, then runs the winner at full N.
async fn tune(
    server: &Server,
    args: &Args,
    name: &'static str,
    axes: &[(&'static str, &'static [u64])],
    start: &[u64],
    system: impl Fn(&[u64]) -> System,
) -> Result<Tuned> {
    let axes: Vec<Axis> = axes.iter().map(|&(name, values)| Axis { name, values }).collect();
    let spec = args.sweep(args.workers);
    let runs = std::cell::RefCell::new(Vec::new());
    let result = sweep::coordinate_descent(&axes, start, |p| {
        let sys = system(&p);
        let (runs, axes) = (&runs, &axes);
        async move {
            tracing::info!(system = name, point = %report::describe_point(axes, &p), "sweep point");
            let o = measure(server, &spec, sys).await?;
            let r = (o.jobs_per_s, o.clean());
            runs.borrow_mut().push(o);
            anyhow::Ok(r)
        }
    })
    .await?;
    let runs = runs.into_inner();
    let Some(best) = result.best.clone() else {
        bail!("{name}: no point of the sweep burned down cleanly");
    };
    tracing::info!(system = name, winner = %report::describe_point(&axes, &best.point), "sweep done; running the winner at full N");
    let mut outcome = measure(server, &args.full(), system(&best.point)).await?;
    outcome.system = match name {
        "apalis_postgres" => "apalis_postgres_tuned",
        _ => "graphile_worker_tuned",
    };
    Ok(Tuned {
        system: name,
        axes,
        sweep: result,
        runs,
        outcome,
    })
}

/// The settings `--peers tuned` starts each sweep from: the best found by hand for issue 10
/// (graphile_worker: concurrency 50, local queue 1,000, 5 ms completion batches;
/// apalis-postgres: batch 500, concurrency 500), pools as the flags give them.
fn tuned_starts(args: &Args) -> (GraphileSettings, ApalisSettings) {
    (
        GraphileSettings {
            concurrency: 50,
            local_queue: 1000,
            complete_delay_ms: 5,
            pool: args.graphile_pool,
        },
        ApalisSettings {
            batch: 500,
            concurrency: 500,
            pool: args.apalis_pool,
        },
    )
}

async fn bench(args: &Args, url: &str) -> Result<()> {
    let server = Server {
        admin: PgConnectOptions::from_str(url)?,
    };
    let (fsync, sync_commit, version) = server.durability().await?;
    tracing::info!(%fsync, synchronous_commit = %sync_commit, %version, "server");
    let (commit_p50, commit_p99) = server.commit_latency(200).await.context("commit latency")?;
    init_tracker(args.jobs.max(args.sweep_jobs) + args.pickup);

    let mut report = Report {
        jobs: args.jobs,
        workers: args.workers,
        pickup: args.pickup,
        sweep_jobs: args.sweep_jobs,
        postgres: report::Postgres {
            version,
            fsync,
            synchronous_commit: sync_commit,
            commit_p50_ms: commit_p50,
            commit_p99_ms: commit_p99,
        },
        outcomes: Vec::new(),
        tuned: Vec::new(),
        scaling: Vec::new(),
        floor: None,
        ceiling: None,
    };
    let mut systems = Vec::new();
    if args.runs("kiln") {
        report
            .outcomes
            .push(measure(&server, &args.full(), System::Kiln(args.kiln())).await?);
    }
    if args.runs("apalis") {
        report
            .outcomes
            .push(measure(&server, &args.full(), System::Apalis(args.apalis())).await?);
    }
    if args.runs("graphile") {
        report
            .outcomes
            .push(measure(&server, &args.full(), System::Graphile(args.graphile())).await?);
    }
    let (mut graphile, mut apalis) = (args.graphile(), args.apalis());
    if args.peers == Peers::Tuned {
        let (g0, a0) = tuned_starts(args);
        if args.runs("apalis") {
            let t = tune(
                &server,
                args,
                "apalis_postgres",
                &apalis_sys::AXES,
                &a0.point(),
                |p| System::Apalis(ApalisSettings::from_point(p)),
            )
            .await?;
            apalis = ApalisSettings::from_point(&t.sweep.best.as_ref().expect("tuned").point);
            report.tuned.push(t);
        }
        if args.runs("graphile") {
            let t = tune(
                &server,
                args,
                "graphile_worker",
                &graphile_sys::AXES,
                &g0.point(),
                |p| System::Graphile(g0.with_point(p)),
            )
            .await?;
            graphile = g0.with_point(&t.sweep.best.as_ref().expect("tuned").point);
            report.tuned.push(t);
        }
    }
    if args.runs("kiln") {
        systems.push(System::Kiln(args.kiln()));
    }
    if args.runs("apalis") {
        systems.push(System::Apalis(apalis));
    }
    if args.runs("graphile") {
        systems.push(System::Graphile(graphile));
    }
    if args.workers_sweep {
        for &system in &systems {
            for &k in &args.sweep_workers {
                report
                    .scaling
                    .push(measure(&server, &args.sweep(k), system).await?);
            }
        }
    }
    if args.runs("floor") {
        tracing::info!("starting the pgbench floor");
        report.floor = Some(floor::run(&server, url, args).await.context("floor")?);
    }
    if args.runs("ceiling") {
        tracing::info!("starting the pgbench ceiling");
        report.ceiling = Some(ceiling::run(&server, url, args).await.context("ceiling")?);
    }

    if args.json {
        println!("{}", report.json());
        report.print(&mut std::io::stderr())?;
    } else {
        report.print(&mut std::io::stdout())?;
    }
    let violations = report.violations();
    if !violations.is_empty() {
        bail!("duplicates, missing jobs or timeouts: {}", violations.join("; "));
    }
    Ok(())
}
