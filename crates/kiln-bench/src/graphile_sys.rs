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

use crate::common::{join_workers, pickup, pool, tracker, wait_burn_down, Outcome, Server};
use crate::Args;

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

pub async fn run(server: &Server, args: &Args) -> Result<Outcome> {
    let opts = server.fresh_db("kiln_bench_graphile").await?;
    let setup = pool(&opts, 4).await?;
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let p = pool(&opts, args.graphile_pool).await?;
        let stop = stop.clone();
        let mut options = WorkerOptions::default()
            .concurrency(args.graphile_concurrency)
            .schema(SCHEMA)
            .define_job::<BenchJob>()
            .pg_pool(p)
            .local_queue(LocalQueueConfig::default().with_size(args.graphile_local_queue));
        if args.graphile_complete_delay_ms > 0 {
            options =
                options.complete_job_batch_delay(Duration::from_millis(args.graphile_complete_delay_ms));
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
    let spec = JobSpec::default();
    let mut i = 0;
    while i < args.jobs {
        let end = (i + 5000).min(args.jobs);
        let batch: Vec<(BenchJob, &JobSpec)> = (i..end).map(|i| (BenchJob { i: i as u64 }, &spec)).collect();
        utils.add_jobs::<BenchJob>(&batch).await?;
        i = end;
    }
    tracing::info!(
        jobs = args.jobs,
        secs = t.elapsed().as_secs_f64(),
        "graphile_worker: jobs inserted"
    );
    let settings = format!(
        "{} workers, concurrency {}, local_queue size {}, {}, pool {} each",
        args.workers,
        args.graphile_concurrency,
        args.graphile_local_queue,
        match args.graphile_complete_delay_ms {
            0 => "one completion per job (default)".to_string(),
            ms => format!("complete_job_batch_delay {ms} ms"),
        },
        args.graphile_pool
    );

    let start = Instant::now();
    let mut handles = Vec::new();
    for worker in workers {
        handles.push(tokio::spawn(async move { worker.run().await }));
    }
    let limit = Duration::from_secs(args.burn_timeout);
    let burn = wait_burn_down(
        &setup,
        "SELECT count(*) FROM graphile_worker._private_jobs",
        args.jobs,
        start,
        limit,
    )
    .await?;
    tracing::info!(secs = ?burn.map(|d| d.as_secs_f64()), "graphile_worker: burn-down done");

    let lat = pickup(args.jobs, args.pickup, |i| {
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
        args.jobs,
        burn,
        limit,
        &lat,
        settings,
    ))
}
