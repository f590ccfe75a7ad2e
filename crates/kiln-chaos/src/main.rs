//! `chaos`: a whole Kiln fleet under faults. A private Postgres, `kiln api`, worker processes
//! (half of them on a second Docker engine when one is given) and two schedulers; jobs enqueued
//! through the API while workers are SIGKILLed every 2–5 s, Postgres is restarted twice (fast,
//! then immediate), the second engine once, and the scheduler leader is killed. At the end every
//! accepted job must be final exactly once with consistent attempts, and nothing may be left
//! on either engine. Prints one table (or one JSON line with `--json`); exits 1 on any loss.
//!
//! "No-op" jobs are `lint` jobs on a workspace validated once at the start: the real worker
//! answers them from the validation cache, running no container. One job in
//! `--container-every` has a workspace never seen before and runs ruff in a container.

mod check;
mod engine;
mod faults;
mod fleet;
mod load;
mod report;

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The schedule the two schedulers fire (every 2 s) during the run.
const SCHEDULE: &str = "chaos-tick";

#[derive(Parser, Debug)]
#[command(
    name = "chaos",
    about = "Run a Kiln fleet under faults and check that no job is lost or run twice"
)]
struct Args {
    /// Jobs to enqueue through the API (the schedule's ticks come on top).
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Print one JSON object on one line instead of the table.
    #[arg(long)]
    json: bool,
    /// Worker processes (`kiln worker`), half of them on the second engine.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// One job in this many runs a container; the others are answered from the cache.
    #[arg(long, default_value_t = 50)]
    container_every: usize,
    /// Run without a second Docker engine (all workers on the local one; no engine restart).
    #[arg(long)]
    one_engine: bool,
    /// The `kiln` binary (default: the one next to this program).
    #[arg(long)]
    kiln: Option<PathBuf>,
    /// Accepted jobs the load keeps unfinished at most (default: jobs / 20, at least 100), so
    /// the load lasts the whole run and the faults land under it.
    #[arg(long)]
    backlog: Option<u64>,
    /// How long, after the load, every job has to become final before the run counts the
    /// rest as lost.
    #[arg(long, default_value_t = 600)]
    settle_secs: u64,
    /// Seconds Postgres stays down in each restart.
    #[arg(long, default_value_t = 3)]
    pg_down_secs: u64,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kiln_chaos=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            std::process::exit(2);
        }
    }
}

/// The default `kiln`: next to this binary (both are built into the same target directory).
fn kiln_next_to_me() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locate this program")?;
    let kiln = me.with_file_name("kiln");
    if !kiln.exists() {
        bail!(
            "no kiln binary at {} (build it: cargo build -p kiln-cli, or pass --kiln PATH)",
            kiln.display()
        );
    }
    Ok(kiln)
}

/// A link to (or copy of) `kiln` inside the run's directory: a build that replaces the
/// original mid-run (cargo relinks it) cannot take the binary away from a restart.
fn own_copy(kiln: &Path, dir: &Path) -> Result<PathBuf> {
    let mine = dir.join("kiln");
    if std::fs::hard_link(kiln, &mine).is_err() {
        std::fs::copy(kiln, &mine).with_context(|| format!("copy {}", kiln.display()))?;
    }
    Ok(mine)
}

fn fleet_file(workspace: &str) -> String {
    format!(
        r#"# The chaos run's fleet: short leases so a killed worker's jobs come back quickly.
images = ["python"]
warm_pool = 1
[worker]
lease = 10
heartbeat_every = 2
poll_every = 1
maintenance_every = 1
shutdown_grace = 20
[[worker.queues]]
name = "lint"
concurrency = 16
batch = 16

[[schedules]]
name = "{SCHEDULE}"
cron = "*/2 * * * * *"
[schedules.job]
kind = "lint"
queue = "lint"
max_attempts = 20
payload = {{ workspace = "{workspace}" }}
"#
    )
}

/// Stores a one-file Python workspace (the file's text made unique by `variant`).
async fn store_workspace(pool: &sqlx::PgPool, dir: &Path, variant: Option<usize>) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::from("def add(a, b):\n    return a + b\n");
    if let Some(v) = variant {
        text.push_str(&format!("\n\nVARIANT = {v}\n"));
    }
    std::fs::write(dir.join("app.py"), text)?;
    let packed = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES)?;
    kiln_artifacts::store(pool, &packed).await?;
    std::fs::remove_dir_all(dir)?;
    Ok(packed.digest)
}

/// Count of final jobs, sampled every 250 ms (a sample is skipped while Postgres is down).
struct Progress {
    finished: AtomicU64,
    samples: Mutex<Vec<(Instant, u64)>>,
}

async fn sample(pool: sqlx::PgPool, progress: Arc<Progress>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let n: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE finalized_at IS NOT NULL")
                .fetch_one(&pool)
                .await;
        if let Ok(n) = n {
            progress.finished.store(n as u64, Ordering::Release);
            progress
                .samples
                .lock()
                .expect("samples lock")
                .push((Instant::now(), n as u64));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run(args: Args) -> Result<bool> {
    if args.jobs == 0 || args.workers == 0 || args.container_every == 0 {
        bail!("--jobs, --workers and --container-every must be at least 1");
    }
    let kiln = match &args.kiln {
        Some(k) => k.clone(),
        None => kiln_next_to_me()?,
    };
    let tmp = tempfile::Builder::new().prefix("kiln-chaos-").tempdir()?;
    let kiln = own_copy(&kiln, tmp.path())?;
    let run_id = format!("chaos-{:08x}", rand::random::<u32>());
    tracing::info!(dir = %tmp.path().display(), run = %run_id, "starting a private Postgres");
    let pg_dir = tmp.path().join("pg");
    let cluster = tokio::task::spawn_blocking(move || kiln_pg::LocalCluster::start(&pg_dir)).await??;
    let mut pg_guard = engine::StopOnDrop::new(cluster.clone());
    let db_url = cluster.url();

    let second = if args.one_engine {
        None
    } else {
        tracing::info!("starting a second Docker engine");
        Some(Arc::new(engine::SecondHost::start().await?))
    };

    let config = tmp.path().join("workers.toml");
    let mut fleet = fleet::Fleet::new(kiln, tmp.path(), db_url.clone(), config.clone(), run_id.clone());
    fleet.run_kiln(&["migrate"])?;
    let token = fleet
        .run_kiln(&["tokens", "create", "--scope", "admin"])?
        .trim()
        .to_string();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&db_url)
        .await?;

    let cached = store_workspace(&pool, &tmp.path().join("ws-cached"), None).await?;
    let fresh_count = args.jobs.div_ceil(args.container_every);
    let mut fresh = Vec::with_capacity(fresh_count);
    for v in 0..fresh_count {
        fresh.push(store_workspace(&pool, &tmp.path().join("ws"), Some(v)).await?);
    }
    std::fs::write(&config, fleet_file(&cached))?;

    fleet.start_api().await?;
    for i in 0..args.workers {
        let engine = match &second {
            Some(e) if i % 2 == 1 => Some(e.docker_host()),
            _ => None,
        };
        fleet.add_worker(engine)?;
    }
    fleet.start_schedulers(2)?;
    let api_url = fleet.api_url.clone();
    let fleet = Arc::new(Mutex::new(fleet));

    // One job on the cached workspace first, so its result is in the cache before the load.
    let accepted = Arc::new(load::Accepted::default());
    let prime = load::Plan {
        jobs: 1,
        cached: cached.clone(),
        fresh: vec![cached.clone()],
        container_every: 1,
        max_attempts: 20,
    };
    load::enqueue(
        &api_url,
        &token,
        &format!("{run_id}-prime"),
        &prime,
        accepted.clone(),
        1,
        || 0,
    )
    .await?;
    wait_final(&pool, &accepted.ids(), Duration::from_secs(300))
        .await
        .context("the priming job")?;
    tracing::info!(
        jobs = args.jobs,
        workers = args.workers,
        "fleet up; load and faults start"
    );

    let progress = Arc::new(Progress {
        finished: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
    });
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(pool.clone(), progress.clone(), stop_sampling.clone()));
    let started = Instant::now();
    let faults = Arc::new(Mutex::new(Vec::new()));
    let load_done = Arc::new(AtomicBool::new(false));
    let injector = Arc::new(faults::Injector {
        fleet: fleet.clone(),
        cluster: cluster.clone(),
        engine: second.clone(),
        pool: pool.clone(),
        started,
        pg_down: Duration::from_secs(args.pg_down_secs),
    });
    let planned = (args.jobs + 1) as f64;
    let fault_task = {
        let (p, d) = (progress.clone(), load_done.clone());
        tokio::spawn(injector.run(
            move || p.finished.load(Ordering::Acquire) as f64 / planned,
            move || d.load(Ordering::Acquire),
            faults.clone(),
        ))
    };
    let plan = load::Plan {
        jobs: args.jobs,
        cached,
        fresh,
        container_every: args.container_every,
        max_attempts: 20,
    };
    let backlog = args.backlog.unwrap_or((args.jobs as u64 / 20).max(100));
    let p = progress.clone();
    load::enqueue(
        &api_url,
        &token,
        &run_id,
        &plan,
        accepted.clone(),
        backlog,
        move || p.finished.load(Ordering::Acquire),
    )
    .await?;
    load_done.store(true, Ordering::Release);
    fault_task.await??;
    fleet.lock().expect("fleet lock").stop_schedulers();
    let all = all_ids(&pool, &accepted.ids(), SCHEDULE).await?;
    let settled = wait_final(&pool, &all, Duration::from_secs(args.settle_secs)).await;
    let elapsed = started.elapsed();
    if let Err(e) = &settled {
        tracing::error!(error = %e, "not every job became final");
    }
    stop_sampling.store(true, Ordering::Release);
    let _ = sampler.await;

    // Containers of killed workers are reaped by the live ones; wait for that, then stop the
    // fleet (the draining workers remove their own) and look for anything left.
    let mut engines = vec![(
        "local".to_string(),
        bollard::Docker::connect_with_local_defaults()?,
    )];
    if let Some(e) = &second {
        engines.push(("second".to_string(), e.client().await));
    }
    let live = fleet.lock().expect("fleet lock").live_worker_ids();
    wait_reaped(&engines, &run_id, &live, Duration::from_secs(120)).await?;
    fleet.lock().expect("fleet lock").stop(Duration::from_secs(60));
    let mut left = Vec::new();
    for (name, docker) in &engines {
        for o in check::leftovers(docker, &run_id).await? {
            left.push(format!("{name}: {o}"));
        }
    }

    let ledger = check::ledger(&pool, &accepted.ids(), SCHEDULE).await?;
    let faults = faults.lock().expect("faults lock").clone();
    let samples = progress.samples.lock().expect("samples lock").clone();
    let mut summary = report::Summary::new(&ledger, &faults, &samples, left, elapsed, &plan);
    summary.second_engine_ready_s = second
        .as_ref()
        .map(|e| (e.ready_in.as_secs_f64() * 10.0).round() / 10.0);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        report::print_table(&summary, &faults);
    }
    drop(second);
    let clean = summary.clean() && settled.is_ok();
    if !clean {
        pg_guard.keep();
        drop(pg_guard);
        let kept = tmp.keep();
        eprintln!(
            "chaos: the run's logs are kept in {}, its Postgres data (stopped) in {}",
            kept.display(),
            cluster.data_dir().display()
        );
    }
    Ok(clean)
}

/// Every accepted id plus the ids of the jobs the schedule fired.
async fn all_ids(pool: &sqlx::PgPool, accepted: &[i64], schedule: &str) -> Result<Vec<i64>> {
    let mut ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM kiln_jobs WHERE $1 = ANY (tags)")
        .bind(format!("schedule:{schedule}"))
        .fetch_all(pool)
        .await?;
    ids.extend_from_slice(accepted);
    Ok(ids)
}

/// Waits until every job of `ids` is final.
async fn wait_final(pool: &sqlx::PgPool, ids: &[i64], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let open: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM unnest($1::bigint[]) a(id) \
             LEFT JOIN kiln_jobs j USING (id) WHERE j.finalized_at IS NULL",
        )
        .bind(ids)
        .fetch_one(pool)
        .await;
        match open {
            Ok(0) => return Ok(()),
            Ok(n) if Instant::now() > deadline => bail!("{n} jobs not final after {limit:?}"),
            Err(e) if Instant::now() > deadline => bail!("cannot read the jobs: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Waits until no engine holds an object of a worker of this run that is no longer running.
async fn wait_reaped(
    engines: &[(String, bollard::Docker)],
    run: &str,
    live: &[String],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let mut dead = 0;
        for (_, docker) in engines {
            for o in check::leftover_owners(docker, run).await? {
                if !live.contains(&o) {
                    dead += 1;
                }
            }
        }
        if dead == 0 || Instant::now() > deadline {
            if dead > 0 {
                tracing::warn!(dead, "objects of killed workers still on an engine");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
