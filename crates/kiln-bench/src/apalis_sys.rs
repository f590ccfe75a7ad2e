//! apalis-postgres 1.0.0 used directly, as its README shows: `PostgresStorage` with a
//! `Config` (queue; batch size left at its default, 10, unless `--apalis-batch`) and
//! `with_pubsub()`, an apalis `WorkerBuilder` (no concurrency limit unless
//! `--apalis-concurrency`), K workers, each on its own runtime thread (an apalis worker future
//! is not always `tokio::spawn`-able).

use anyhow::{anyhow, Result};
use apalis::prelude::*;
use apalis_postgres::{Config, PgTask, PostgresStorage};
use futures::FutureExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::common::{pickup, pool, tracker, wait_burn_down, Outcome, Server};
use crate::Args;

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

pub async fn run(server: &Server, args: &Args) -> Result<Outcome> {
    let opts = server.fresh_db("kiln_bench_apalis").await?;
    let setup = pool(&opts, 4).await?;
    PostgresStorage::setup(&setup).await?;
    let t = Instant::now();
    let mut i = 0;
    while i < args.jobs {
        let end = (i + 5000).min(args.jobs);
        push(&setup, (i..end).map(|i| task(i as u64)).collect()).await?;
        i = end;
    }
    tracing::info!(
        jobs = args.jobs,
        secs = t.elapsed().as_secs_f64(),
        "apalis-postgres: jobs inserted"
    );
    let settings = format!(
        "{} workers (own current-thread runtime each), PostgresStorage batch_size {}, with_pubsub, {}, pool {} each",
        args.workers,
        args.apalis_batch,
        match args.apalis_concurrency {
            0 => "no concurrency limit set (README)".to_string(),
            c => format!("concurrency {c}"),
        },
        args.apalis_pool
    );

    let stop = CancellationToken::new();
    let mut threads = Vec::new();
    let start = Instant::now();
    for w in 0..args.workers {
        let opts = opts.clone();
        let stop = stop.clone();
        let (batch, conc, max) = (args.apalis_batch, args.apalis_concurrency, args.apalis_pool);
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
    let limit = Duration::from_secs(args.burn_timeout);
    let burn = wait_burn_down(
        &setup,
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'bench' AND status NOT IN ('Done', 'Failed', 'Killed')",
        args.jobs,
        start,
        limit,
    )
    .await?;
    tracing::info!(secs = ?burn.map(|d| d.as_secs_f64()), "apalis-postgres: burn-down done");

    let lat = pickup(args.jobs, args.pickup, |i| {
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
        args.jobs,
        burn,
        limit,
        &lat,
        settings,
    ))
}
