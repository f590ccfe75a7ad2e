//! A worker process for tests that kill or restart things: runs the recording handler.
//! Usage: kiln-test-worker DATABASE_URL QUEUE CONCURRENCY WORKER_ID

use kiln_tests::{fast_config, recording_worker};
use sqlx::postgres::PgPoolOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber_init();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: kiln-test-worker DATABASE_URL QUEUE CONCURRENCY WORKER_ID"
    );
    let pool = PgPoolOptions::new().max_connections(10).connect(&args[1]).await?;
    let mut config = fast_config(&args[2], args[3].parse()?);
    config.id = Some(args[4].clone());
    let worker = recording_worker(&pool, config);
    println!("ready {}", worker.id());
    worker
        .run(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            term.recv().await;
        })
        .await?;
    Ok(())
}

fn tracing_subscriber_init() {
    kiln_testkit::init_logging();
}
