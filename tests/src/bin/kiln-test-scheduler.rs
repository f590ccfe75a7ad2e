//! A scheduler process for tests that kill leaders: the real `kiln_scheduler::Scheduler`.
//! Usage: kiln-test-scheduler DATABASE_URL SCHEDULER_ID

use kiln_scheduler::{Scheduler, SchedulerConfig};
use sqlx::postgres::PgPoolOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiln_testkit::init_logging();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 3,
        "usage: kiln-test-scheduler DATABASE_URL SCHEDULER_ID"
    );
    let pool = PgPoolOptions::new().max_connections(5).connect(&args[1]).await?;
    let scheduler = Scheduler::new(
        pool,
        SchedulerConfig {
            id: Some(args[2].clone()),
            ..SchedulerConfig::default()
        },
    );
    println!("ready {}", scheduler.id());
    scheduler
        .run(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            term.recv().await;
        })
        .await?;
    Ok(())
}
