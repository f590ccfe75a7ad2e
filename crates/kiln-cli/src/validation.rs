//! Building a worker process from the kind modules (`kiln worker`, `kiln up`, `kiln submit`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use kiln_queue::JobKind;
use kiln_worker::{FleetContext, QueueConfig, Services, Worker, WorkerConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// A worker id for this process: host, pid and a random suffix.
pub fn worker_id(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{host}-{}-{:04x}", std::process::id(), nanos % 65_536)
}

/// Builds the worker for `config` from the registry of kind modules: it serves `config.kinds`
/// (every kind when unset) from `config.queues` (one queue per kind when none are listed);
/// each module with a served kind registers its handlers and services.
pub async fn build_worker(
    pool: PgPool,
    config: WorkerConfig,
    sections: &toml::Table,
    fleet: FleetContext,
) -> anyhow::Result<(Worker, Services)> {
    Ok(crate::kinds::registry()
        .build_worker(pool, config, sections, fleet)
        .await?)
}

/// Of `kinds`, those whose queue no live worker serves (a heartbeat in the last 30 s).
pub async fn unserved(pool: &PgPool, kinds: &[JobKind]) -> anyhow::Result<Vec<JobKind>> {
    let served: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT unnest(queues) FROM kiln_workers \
         WHERE stopped_at IS NULL AND last_heartbeat_at > now() - interval '30 seconds'",
    )
    .fetch_all(pool)
    .await
    .context("read the worker registry")?;
    Ok(kinds
        .iter()
        .copied()
        .filter(|k| !served.iter().any(|q| q == k.as_str()))
        .collect())
}

/// Builds the job images named in `only` (each one; every image when `None`), unless current.
pub async fn build_images(only: Option<Vec<String>>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let names: Vec<Option<String>> = match only {
            Some(names) => names.into_iter().map(Some).collect(),
            None => vec![None],
        };
        for only in names {
            kiln_images::build(&kiln_images::BuildOptions {
                images_dir: kiln_images::default_images_dir(),
                only,
                force: false,
            })?;
        }
        Ok(())
    })
    .await?
}

/// Runs `until` while an in-process worker (id `prefix…`, one slot per kind, built from
/// `sections`) serves `kinds`; stops the worker afterwards, handing back what it held.
pub async fn with_local_worker<T>(
    pool: &PgPool,
    prefix: &str,
    kinds: &[JobKind],
    sections: &toml::Table,
    until: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let config = WorkerConfig {
        id: Some(worker_id(prefix)),
        kinds: Some(kinds.to_vec()),
        queues: kinds
            .iter()
            .map(|k| QueueConfig::new(k.as_str()).concurrency(1).batch(1))
            .collect(),
        poll_every: Duration::from_millis(500),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let fleet = FleetContext {
        listener: kiln_queue::Listener::start(pool.clone(), stop.clone()),
        images: Vec::new(),
        warm_pool: 0,
    };
    let (worker, services) = build_worker(pool.clone(), config, sections, fleet).await?;
    let s = stop.clone();
    let handle = tokio::spawn(async move { worker.run(s.cancelled_owned()).await });
    let out = until.await;
    stop.cancel();
    handle.await.context("worker task")??;
    services.shutdown().await;
    out
}

/// `dir` packed here, as the API's `workspace_tar_gz_base64`.
pub async fn pack_for_api(dir: &Path) -> anyhow::Result<String> {
    use base64::Engine;
    if !dir.is_dir() {
        bail!("DIR: {} is not a directory", dir.display());
    }
    let d = dir.to_path_buf();
    let packed =
        tokio::task::spawn_blocking(move || kiln_artifacts::pack_dir(&d, kiln_artifacts::DEFAULT_MAX_BYTES))
            .await?
            .map_err(|e| anyhow::anyhow!("DIR: {e}"))?;
    tracing::info!(dir = %dir.display(), bytes = packed.data.len(), files = packed.files, "workspace packed for the API");
    Ok(base64::engine::general_purpose::STANDARD.encode(&packed.data))
}
