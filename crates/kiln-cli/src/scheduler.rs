//! `kiln scheduler`: upserts the schedules declared in workers.toml, then fires schedules
//! (leading or following) until SIGTERM/SIGINT.

use anyhow::Context;
use kiln_scheduler::{store, Scheduler, SchedulerConfig};
use sqlx::PgPool;
use std::path::PathBuf;

/// Flags of `kiln scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The fleet configuration (its `[[schedules]]` are created or updated at start; default:
    /// ./workers.toml if there is one, else the built-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the scheduler id (default host-pid).
    #[arg(long)]
    pub id: Option<String>,
    /// Serve this process's metrics at http://ADDR/metrics (e.g. 0.0.0.0:9100), for Prometheus.
    #[arg(long, env = "KILN_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Declares the file's schedules, then runs the scheduler until `shutdown`.
pub async fn run(
    pool: PgPool,
    args: &SchedulerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let fleet = crate::fleet::FleetFile::load_or_default(args.config.as_deref())?;
    declare(&pool, &fleet.schedules).await?;
    let config = SchedulerConfig {
        id: args.id.clone(),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::new(pool, config);
    tracing::info!(scheduler = scheduler.id(), "starting; SIGTERM or Ctrl-C stops it");
    scheduler.run(shutdown).await?;
    Ok(())
}

/// Creates or updates every schedule the file declares; names one that is refused.
async fn declare(pool: &PgPool, schedules: &[kiln_scheduler::ScheduleSpec]) -> anyhow::Result<()> {
    store::declare(pool, schedules)
        .await
        .context("declare the schedules of the fleet configuration")?;
    Ok(())
}
