//! `kiln up`: everything on one machine. The configuration and the host's programs are
//! checked before anything starts; the embedded Postgres it started is stopped when it ends
//! (Ctrl-C, SIGTERM or an error) unless `--keep-postgres`.

use anyhow::Context;
use sqlx::PgPool;
use std::path::Path;
use tokio_util::sync::CancellationToken;

use crate::{db, fleet, run_worker, scheduler, serve, shutdown_signal, UpArgs};

/// Runs `kiln up` until SIGTERM/Ctrl-C or an error.
pub async fn run(args: UpArgs, database_url: &Option<String>, data_dir: &Path) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });

    // Checked before anything starts: the configuration, the Postgres programs, the programs
    // the missing images need.
    let fleet = fleet::FleetFile::load_or_default(args.worker.config.as_deref())?;
    if db::embedded(database_url) {
        kiln_pg::check_host()?;
    }
    let builds: Vec<kiln_images::BuildOptions> = if args.no_images {
        Vec::new()
    } else {
        let images_dir = kiln_images::default_images_dir();
        fleet
            .images
            .iter()
            .map(|name| kiln_images::BuildOptions {
                images_dir: images_dir.clone(),
                only: Some(name.clone()),
                force: false,
            })
            .collect()
    };
    let checks = builds.clone();
    tokio::task::spawn_blocking(move || checks.iter().try_for_each(kiln_images::check)).await??;
    let listener = serve::bind(&args.api).await?;

    tokio::select! {
        built = tokio::task::spawn_blocking(move || builds.iter().try_for_each(|b| kiln_images::build(b).map(|_| ()))) => built??,
        _ = shutdown.cancelled() => anyhow::bail!("interrupted while building the job images"),
    }
    let (pool, started) = db::connect_owned(database_url, data_dir).await?;
    let result = serve(pool.clone(), listener, &args, data_dir, shutdown).await;
    pool.close().await;
    started.release(args.keep_postgres).await;
    result
}

/// Migrates, then runs the API, a worker and a scheduler until `shutdown` (or one fails).
async fn serve(
    pool: PgPool,
    listener: tokio::net::TcpListener,
    args: &UpArgs,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if shutdown.is_cancelled() {
        return Ok(());
    }
    kiln_queue::migrate(&pool).await.context("migrate")?;
    let sched = scheduler::SchedulerArgs {
        config: args.worker.config.clone(),
        id: None,
        // `kiln up` serves every role's metrics on its API's /metrics.
        metrics_listen: None,
    };
    let mut api_args = args.api.clone();
    if api_args.fleet_config.is_none() {
        api_args.fleet_config = args.worker.config.clone();
    }
    // One LISTEN connection for the whole process: API, worker and settler share it.
    let pg_listener = kiln_queue::Listener::start(pool.clone(), shutdown.clone());
    let api = serve::run_api(
        pool.clone(),
        Some(pg_listener.clone()),
        listener,
        &api_args,
        data_dir,
        shutdown.clone(),
    );
    let worker = run_worker(
        pool.clone(),
        Some(pg_listener),
        &args.worker,
        shutdown.clone().cancelled_owned(),
    );
    let scheduler = scheduler::run(pool, &sched, shutdown.clone().cancelled_owned());
    let stop_all = |r: anyhow::Result<()>| {
        // Whichever part ends first (an error, or the API after a signal) stops the others.
        shutdown.cancel();
        r
    };
    let (api, worker, scheduler) = tokio::join!(
        async { stop_all(api.await) },
        async { stop_all(worker.await) },
        async { stop_all(scheduler.await) }
    );
    api?;
    worker?;
    scheduler?;
    Ok(())
}
