//! apalis-postgres 1.0.0 used directly, as its README shows: `PostgresStorage` with a
//! `Config` (queue; batch size left at its default, 10, unless `--apalis-batch`) and
//! `with_pubsub()`, an apalis `WorkerBuilder` (no concurrency limit unless
//! `--apalis-concurrency`), K workers, each on its own runtime thread (an apalis worker future
//! is not always `tokio::spawn`-able).
//!
//! Its tunable options are `Config::batch_size`, the worker's `concurrency` layer and the pool
//! handed to it. apalis-postgres 1.0.0 has no buffer option: the channel between the worker
//! and its persistence (locks and acks) is sized by apalis-core at 4 × `batch_size`.

use anyhow::{anyhow, Result};
use apalis::prelude::*;
use apalis_postgres::{Config, PgTask, PostgresStorage};
use futures::FutureExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::common::{pickup, pool, tracker, wait_burn_down, wal_since, wal_start, Outcome, RunSpec, Server};

const QUEUE: &str = "bench";

fn task(i: u64) -> PgTask {
    TaskBuilder::new(serde_json::to_vec(&i).expect("u64 encodes")).build()
}

async fn push(pool: &sqlx::PgPool, tasks: Vec<PgTask>) -> Result<()> {
    let mut tx = pool.begin().await?;
    apalis_postgres::queries::push_tasks(&mut *tx, QUEUE, tasks).await?;
    tx.commit().await?;
    Ok(())
}

async fn handle(i: u64) -> Result<(), BoxDynError> {
    tracker().record(i);
    Ok(())
}

/// apalis-postgres's own options for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApalisSettings {
    /// `Config::batch_size` (its README keeps the default, 10).
    pub batch: usize,
    /// The worker's `concurrency` limit (0: none set, as in its README).
    pub concurrency: usize,
    /// Pool size per worker.
    pub pool: u32,
}

impl ApalisSettings {
    /// The settings as sweep axis values, in [`AXES`] order.
    pub fn point(&self) -> Vec<u64> {
        vec![self.batch as u64, self.concurrency as u64, self.pool as u64]
    }

    /// The settings a sweep point names (in [`AXES`] order).
    pub fn from_point(p: &[u64]) -> Self {
        ApalisSettings {
            batch: p[0] as usize,
            concurrency: p[1] as usize,
            pool: p[2] as u32,
        }
    }
}

/// The options `--peers tuned` sweeps, in order, and the values it tries.
pub const AXES: [(&str, &[u64]); 3] = [
    ("batch_size", &[10, 100, 500, 1000, 2000]),
    ("concurrency", &[0, 50, 200, 500, 2000]),
    ("pool", &[4, 8, 16]),
];

/// Burns down `spec.jobs` jobs with `spec.workers` apalis workers, then `spec.pickup` pickups.
pub async fn run(server: &Server, spec: &RunSpec, s: &ApalisSettings) -> Result<Outcome> {
    let opts = server.fresh_db("kiln_bench_apalis").await?;
    let setup = pool(&opts, 4).await?;
    PostgresStorage::setup(&setup).await?;
    let t = Instant::now();
    let mut i = 0;
    while i < spec.jobs {
        let end = (i + 5000).min(spec.jobs);
        push(&setup, (i..end).map(|i| task(i as u64)).collect()).await?;
        i = end;
    }
    tracing::info!(
        jobs = spec.jobs,
        secs = t.elapsed().as_secs_f64(),
        "apalis-postgres: jobs inserted"
    );
    let settings = format!(
        "{} workers (own current-thread runtime each), PostgresStorage batch_size {}, with_pubsub, {}, pool {} each",
        spec.workers,
        s.batch,
        match s.concurrency {
            0 => "no concurrency limit set (README)".to_string(),
            c => format!("concurrency {c}"),
        },
        s.pool
    );

    let stop = CancellationToken::new();
    let mut threads = Vec::new();
    let wal = wal_start(&setup).await?;
    let start = Instant::now();
    for w in 0..spec.workers {
        let opts = opts.clone();
        let stop = stop.clone();
        let (batch, conc, max) = (s.batch, s.concurrency, s.pool);
        threads.push(std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let p = pool(&opts, max).await?;
                let config = Config::default().queue(QUEUE).batch_size(batch);
                let backend = PostgresStorage::<u64>::new(&p).with_config(config).with_pubsub();
                let builder = WorkerBuilder::new(format!("bench-apalis-{w}")).backend(backend);
                let run = if conc > 0 {
                    builder.concurrency(conc).build(handle).run().boxed_local()
                } else {
                    builder.build(handle).run().boxed_local()
                };
                tokio::select! {
                    r = run => r.map_err(|e| anyhow!("apalis worker {w}: {e}")),
                    _ = stop.cancelled() => Ok(()),
                }
            })
        }));
    }
    let burn = wait_burn_down(
        &setup,
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'bench' AND status NOT IN ('Done', 'Failed', 'Killed')",
        spec.jobs,
        start,
        spec.burn_timeout,
    )
    .await?;
    let wal_bytes = wal_since(&setup, &wal).await?;
    tracing::info!(secs = ?burn.map(|d| d.as_secs_f64()), wal_bytes, "apalis-postgres: burn-down done");

    let lat = pickup(spec.jobs, spec.pickup, |i| {
        let setup = setup.clone();
        async move { push(&setup, vec![task(i)]).await }
    })
    .await?;

    stop.cancel();
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "apalis worker ended with an error"),
                Err(_) => tracing::warn!("apalis worker thread panicked"),
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(30), joined)
        .await
        .is_err()
    {
        tracing::warn!("apalis workers did not stop within 30 s");
    }
    setup.close().await;
    Ok(Outcome::finish(
        "apalis_postgres",
        spec,
        burn,
        wal_bytes,
        &lat,
        settings,
    ))
}
