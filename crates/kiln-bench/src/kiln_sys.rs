//! Kiln: K in-process `kiln_worker::Worker`s over Kiln's own schema.

use anyhow::Result;
use kiln_queue::{ClaimedJob, JobKind, NewJob};
use kiln_worker::{JobContext, JobError, QueueConfig, Worker, WorkerConfig};
use serde_json::json;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{
    join_workers, pickup, pool, tracker, wait_burn_down, wal_since, wal_start, Outcome, RunSpec, Server,
};

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

/// Kiln's own options for a run.
#[derive(Debug, Clone, Copy)]
pub struct KilnSettings {
    /// Claim batch per worker.
    pub batch: usize,
    /// Jobs running at once per worker.
    pub concurrency: usize,
    /// Pool size per worker.
    pub pool: u32,
}

/// Burns down `spec.jobs` jobs with `spec.workers` Kiln workers, then `spec.pickup` pickups.
pub async fn run(server: &Server, spec: &RunSpec, s: &KilnSettings) -> Result<Outcome> {
    let opts = server.fresh_db("kiln_bench_kiln").await?;
    let setup = pool(&kiln_queue::session_options(opts.clone()), 4).await?;
    kiln_queue::migrate(&setup).await?;
    let t = Instant::now();
    insert_jobs(&setup, 0, spec.jobs).await?;
    tracing::info!(
        jobs = spec.jobs,
        secs = t.elapsed().as_secs_f64(),
        "kiln: jobs inserted"
    );
    let settings = format!(
        "{} Worker instances sharing one listener, concurrency {}, batch {}, completion_batch 2000, pool {} each",
        spec.workers, s.concurrency, s.batch, s.pool
    );

    let stop = CancellationToken::new();
    // One LISTEN per process, shared by its workers (as `kiln up` does): a notification wakes
    // one fetcher, not all of them.
    let listener = kiln_queue::Listener::start(setup.clone(), stop.clone());
    let mut handles = Vec::new();
    let wal = wal_start(&setup).await?;
    let start = Instant::now();
    for w in 0..spec.workers {
        let p = pool(&kiln_queue::session_options(opts.clone()), s.pool).await?;
        let config = WorkerConfig {
            id: Some(format!("bench-kiln-{w}")),
            queues: vec![QueueConfig::new(QUEUE).concurrency(s.concurrency).batch(s.batch)],
            ..WorkerConfig::default()
        };
        let worker = Worker::builder(p, config)
            .handler(JobKind::Test, handle)
            .listener(listener.clone())
            .build()?;
        let stop = stop.clone();
        handles.push(tokio::spawn(
            async move { worker.run(stop.cancelled_owned()).await },
        ));
    }
    let burn = wait_burn_down(
        &setup,
        "SELECT count(*) FROM kiln_jobs WHERE state IN ('available', 'scheduled', 'retryable', 'running')",
        spec.jobs,
        start,
        spec.burn_timeout,
    )
    .await?;
    let wal_bytes = wal_since(&setup, &wal).await?;
    tracing::info!(secs = ?burn.map(|d| d.as_secs_f64()), wal_bytes, "kiln: burn-down done");

    let lat = pickup(spec.jobs, spec.pickup, |i| {
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
    Ok(Outcome::finish("kiln", spec, burn, wal_bytes, &lat, settings))
}
