//! Kiln: K in-process `kiln_worker::Worker`s over Kiln's own schema.

use anyhow::Result;
use kiln_queue::{ClaimedJob, JobKind, NewJob};
use kiln_worker::{JobContext, JobError, QueueConfig, Worker, WorkerConfig};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::common::{join_workers, pickup, pool, tracker, wait_burn_down, Outcome, Server};
use crate::Args;

pub const QUEUE: &str = "bench";

/// Inserts jobs `from..to` of the bench queue with `enqueue_many`, 5,000 per statement.
pub async fn insert_jobs(pool: &sqlx::PgPool, from: usize, to: usize) -> Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + 5000).min(to);
        let jobs: Vec<NewJob> = (i..end)
            .map(|i| NewJob::new(QUEUE, JobKind::Test, json!({ "i": i })))
            .collect();
        kiln_queue::enqueue_many(pool, &jobs).await?;
        i = end;
    }
    Ok(())
}

async fn handle(job: ClaimedJob, _ctx: JobContext) -> Result<serde_json::Value, JobError> {
    let i = job
        .payload
        .get("i")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| JobError::permanent("payload without i"))?;
    tracker().record(i);
    Ok(serde_json::Value::Null)
}

pub async fn run(server: &Server, args: &Args) -> Result<Outcome> {
    let opts = server.fresh_db("kiln_bench_kiln").await?;
    let setup = pool(&kiln_queue::session_options(opts.clone()), 4).await?;
    kiln_queue::migrate(&setup).await?;
    let t = Instant::now();
    insert_jobs(&setup, 0, args.jobs).await?;
    tracing::info!(
        jobs = args.jobs,
        secs = t.elapsed().as_secs_f64(),
        "kiln: jobs inserted"
    );
    let settings = format!(
        "{} Worker instances, concurrency {}, batch {}, completion_batch 2000, pool {} each",
        args.workers, args.kiln_concurrency, args.kiln_batch, args.kiln_pool
    );

    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    let start = Instant::now();
    for w in 0..args.workers {
        let p = pool(&kiln_queue::session_options(opts.clone()), args.kiln_pool).await?;
        let config = WorkerConfig {
            id: Some(format!("bench-kiln-{w}")),
            queues: vec![QueueConfig::new(QUEUE)
                .concurrency(args.kiln_concurrency)
                .batch(args.kiln_batch)],
            ..WorkerConfig::default()
        };
        let worker = Worker::builder(p, config)
            .handler(JobKind::Test, handle)
            .build()?;
        let stop = stop.clone();
        handles.push(tokio::spawn(
            async move { worker.run(stop.cancelled_owned()).await },
        ));
    }
    let limit = Duration::from_secs(args.burn_timeout);
    let burn = wait_burn_down(
        &setup,
        "SELECT count(*) FROM kiln_jobs WHERE state IN ('available', 'scheduled', 'retryable', 'running')",
        args.jobs,
        start,
        limit,
    )
    .await?;
    tracing::info!(secs = ?burn.map(|d| d.as_secs_f64()), "kiln: burn-down done");

    let lat = pickup(args.jobs, args.pickup, |i| {
        let setup = setup.clone();
        async move {
            kiln_queue::enqueue(&setup, &NewJob::new(QUEUE, JobKind::Test, json!({ "i": i }))).await?;
            Ok(())
        }
    })
    .await?;

    stop.cancel();
    join_workers("kiln", handles).await;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_attempts")
        .fetch_one(&setup)
        .await?;
    tracing::info!(attempt_rows = attempts, "kiln: attempt rows written");
    setup.close().await;
    Ok(Outcome::finish("kiln", args.jobs, burn, limit, &lat, settings))
}
