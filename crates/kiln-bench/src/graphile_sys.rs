//! graphile_worker 0.14 as its README shows (concurrency 5) with its local queue enabled:
//! K `Worker`s, each with `local_queue(...)`; `--graphile-*` flags tune concurrency, the local
//! queue size and batched completions (`complete_job_batch_delay`, off by default).

use anyhow::Result;
use graphile_worker::{
    IntoTaskHandlerResult, JobSpec, LocalQueueConfig, TaskHandler, WorkerContext, WorkerOptions,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::common::{
    join_workers, pickup, pool, tracker, wait_burn_down, wal_since, wal_start, Outcome, RunSpec, Server,
};

const SCHEMA: &str = "graphile_worker";

#[derive(Clone, Serialize, Deserialize)]
struct BenchJob {
    i: u64,
}

impl TaskHandler for BenchJob {
    const IDENTIFIER: &'static str = "bench";

    async fn run(self, _ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        tracker().record(self.i);
        Ok::<(), String>(())
    }
}

/// graphile_worker's own options for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphileSettings {
    /// Concurrency per worker (its README uses 5).
    pub concurrency: usize,
    /// `LocalQueueConfig::with_size` per worker (its default is 100).
    pub local_queue: usize,
    /// `complete_job_batch_delay` in ms (0: not set, one completion per job, the default).
    pub complete_delay_ms: u64,
    /// Pool size per worker.
    pub pool: u32,
}

impl GraphileSettings {
    /// The swept settings as axis values, in [`AXES`] order.
    pub fn point(&self) -> Vec<u64> {
        vec![
            self.concurrency as u64,
            self.local_queue as u64,
            self.complete_delay_ms,
        ]
    }

    /// These settings with the swept ones a sweep point names (in [`AXES`] order).
    pub fn with_point(self, p: &[u64]) -> Self {
        GraphileSettings {
            concurrency: p[0] as usize,
            local_queue: p[1] as usize,
            complete_delay_ms: p[2],
            ..self
        }
    }
}

/// The options `--peers tuned` sweeps, in order, and the values it tries.
pub const AXES: [(&str, &[u64]); 3] = [
    ("concurrency", &[5, 25, 50, 100, 200]),
    ("local_queue_size", &[100, 500, 1000, 2000]),
    ("complete_job_batch_delay_ms", &[0, 1, 5, 20]),
];

/// Burns down `spec.jobs` jobs with `spec.workers` graphile workers, then `spec.pickup` pickups.
pub async fn run(server: &Server, spec: &RunSpec, s: &GraphileSettings) -> Result<Outcome> {
    let opts = server.fresh_db("kiln_bench_graphile").await?;
    let setup = pool(&opts, 4).await?;
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..spec.workers {
        let p = pool(&opts, s.pool).await?;
        let stop = stop.clone();
        let mut options = WorkerOptions::default()
            .concurrency(s.concurrency)
            .schema(SCHEMA)
            .define_job::<BenchJob>()
            .pg_pool(p)
            .local_queue(LocalQueueConfig::default().with_size(s.local_queue));
        if s.complete_delay_ms > 0 {
            options = options.complete_job_batch_delay(Duration::from_millis(s.complete_delay_ms));
        }
        let worker = options
            .listen_os_shutdown_signals(false)
            .shutdown_signal(async move { stop.cancelled().await })
            .init()
            .await?;
        workers.push(worker);
    }
    let utils = workers[0].create_utils();
    let t = Instant::now();
    let job_spec = JobSpec::default();
    let mut i = 0;
    while i < spec.jobs {
        let end = (i + 5000).min(spec.jobs);
        let batch: Vec<(BenchJob, &JobSpec)> =
            (i..end).map(|i| (BenchJob { i: i as u64 }, &job_spec)).collect();
        utils.add_jobs::<BenchJob>(&batch).await?;
        i = end;
    }
    tracing::info!(
        jobs = spec.jobs,
        secs = t.elapsed().as_secs_f64(),
        "graphile_worker: jobs inserted"
    );
    let settings = format!(
        "{} workers, concurrency {}, local_queue size {}, {}, pool {} each",
        spec.workers,
        s.concurrency,
        s.local_queue,
        match s.complete_delay_ms {
            0 => "one completion per job (default)".to_string(),
            ms => format!("complete_job_batch_delay {ms} ms"),
        },
        s.pool
    );

    let wal = wal_start(&setup).await?;
    let start = Instant::now();
    let mut handles = Vec::new();
    for worker in workers {
        handles.push(tokio::spawn(async move { worker.run().await }));
    }
    let burn = wait_burn_down(
        &setup,
        "SELECT count(*) FROM graphile_worker._private_jobs",
        spec.jobs,
        start,
        spec.burn_timeout,
    )
    .await?;
    let wal_bytes = wal_since(&setup, &wal).await?;
    tracing::info!(secs = ?burn.map(|d| d.as_secs_f64()), wal_bytes, "graphile_worker: burn-down done");

    let lat = pickup(spec.jobs, spec.pickup, |i| {
        let utils = utils.clone();
        async move {
            utils.add_job(BenchJob { i }, JobSpec::default()).await?;
            Ok(())
        }
    })
    .await?;

    stop.cancel();
    join_workers("graphile", handles).await;
    setup.close().await;
    Ok(Outcome::finish(
        "graphile_worker",
        spec,
        burn,
        wal_bytes,
        &lat,
        settings,
    ))
}
