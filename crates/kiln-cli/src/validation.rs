//! The validation side of `kiln worker` / `kiln up`: the test, lint and security-scan
//! handlers on the local Docker engine, and the pipeline settler.

use std::time::Duration;

use anyhow::Context;
use kiln_queue::JobKind;
use kiln_sandbox::{LiveWorkers, Sandbox};
use kiln_validate::{Images, Validator};
use kiln_worker::{Worker, WorkerConfig};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The reaper's view of the worker registry: ids of live workers, None when unreadable (then
/// only this host's dead processes are judged).
fn registry(pool: PgPool) -> LiveWorkers {
    std::sync::Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query_scalar::<_, String>(include_str!("sql/live_workers.sql"))
                .fetch_all(&pool)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "reaper: worker registry unreadable"))
                .ok()
        })
    })
}

/// What runs next to a worker that serves validation queues.
pub struct Services {
    sandbox: Sandbox,
    stop: CancellationToken,
    settler: JoinHandle<()>,
}

impl Services {
    /// Stops the settler, waits for container removals and shuts the sandbox down.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.settler.await;
        self.sandbox.removals_done().await;
        self.sandbox.shutdown().await;
    }
}

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

/// Builds the worker for `config`; when it serves a `test`, `lint` or `security-scan`
/// queue, registers the validation handlers (connecting to Docker) and starts a settler.
/// `warm` containers per image in `warm_images` are kept started for them.
pub async fn build_worker(
    pool: PgPool,
    mut config: WorkerConfig,
    warm: usize,
    warm_images: &[String],
) -> anyhow::Result<(Worker, Option<Services>)> {
    let serves_validation = config
        .queues
        .iter()
        .any(|q| kiln_validate::KINDS.iter().any(|k| k.as_str() == q.name));
    if !serves_validation {
        return Ok((Worker::builder(pool, config).build()?, None));
    }
    let id = config.id.clone().unwrap_or_else(|| worker_id(""));
    config.id = Some(id.clone());
    let images = Images::from_dir(&kiln_images::default_images_dir()).context("job image tags")?;
    let sandbox = Sandbox::connect(&id)
        .await
        .context("connect to the Docker engine")?;
    sandbox.start_reaper(Duration::from_secs(60), Some(registry(pool.clone())));
    if warm > 0 {
        let tags: Vec<String> = warm_images
            .iter()
            .filter_map(|n| images.tag(n).ok().map(str::to_string))
            .collect();
        tracing::info!(per_image = warm, images = ?tags, "starting the warm pool");
        sandbox.start_pool(&tags, warm);
    }
    let validator = Validator::new(pool.clone(), sandbox.clone(), images);
    let worker = validator
        .register(Worker::builder(pool.clone(), config))
        .build()?;
    tracing::info!(worker = %id, kinds = ?[JobKind::Test, JobKind::Lint, JobKind::SecurityScan].map(|k| k.as_str()), "validation handlers registered");
    let stop = CancellationToken::new();
    let settler = tokio::spawn(kiln_pipeline::settler(pool, Duration::from_secs(2), stop.clone()));
    Ok((
        worker,
        Some(Services {
            sandbox,
            stop,
            settler,
        }),
    ))
}
