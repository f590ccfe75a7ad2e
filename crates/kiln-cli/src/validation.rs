//! Building a worker process from the kind modules (`kiln worker`, `kiln up`, `kiln submit`).

use kiln_worker::{FleetContext, Services, Worker, WorkerConfig};
use sqlx::PgPool;

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
