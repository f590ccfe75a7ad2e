//! The database of a `kiln` command: `DATABASE_URL`, or the embedded cluster, which the
//! command that started it stops when it ends ([`Started::release`]).

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::path::Path;

/// The embedded cluster this process started, if it started one (not one it attached to).
#[derive(Debug, Default)]
pub struct Started(Option<kiln_pg::LocalCluster>);

impl Started {
    /// Stops the cluster this process started (fast shutdown: sessions end, data is kept),
    /// unless `keep`; close the pools first.
    pub async fn release(self, keep: bool) {
        let Some(cluster) = self.0 else { return };
        if keep {
            tracing::info!(
                port = cluster.port(),
                "leaving the embedded Postgres running (--keep-postgres)"
            );
            return;
        }
        match tokio::task::spawn_blocking(move || cluster.stop()).await {
            Ok(Ok(())) => tracing::info!("stopped the embedded Postgres this command started"),
            Ok(Err(e)) => tracing::warn!(error = %e, "stopping the embedded Postgres failed"),
            Err(e) => tracing::warn!(error = %e, "stopping the embedded Postgres failed"),
        }
    }
}

/// True when no `DATABASE_URL` is given, so the embedded cluster is used.
pub fn embedded(url: &Option<String>) -> bool {
    url.as_deref().is_none_or(str::is_empty)
}

/// Connects to `url`, or starts (or attaches to) the embedded cluster under `data_dir`;
/// returns the cluster too when this call started it.
pub async fn connect_owned(url: &Option<String>, data_dir: &Path) -> anyhow::Result<(PgPool, Started)> {
    let mut started = Started::default();
    let url = match url.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        None => {
            let dir = data_dir.join("postgres");
            let cluster = tokio::task::spawn_blocking(move || kiln_pg::LocalCluster::start(&dir)).await??;
            tracing::info!(url = %redact(&cluster.url()), "using the embedded Postgres");
            let url = cluster.url();
            if cluster.started() {
                started = Started(Some(cluster));
            }
            url
        }
    };
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .with_context(|| format!("parse the database URL {}", redact(&url)))?;
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(kiln_queue::session_options(options))
        .await
        .with_context(|| format!("connect to {}", redact(&url)));
    match pool {
        Ok(pool) => Ok((pool, started)),
        Err(e) => {
            started.release(false).await;
            Err(e)
        }
    }
}

/// Fails, saying to run `kiln migrate`, when the database lacks migrations this `kiln` has.
pub async fn require_schema(pool: &PgPool) -> anyhow::Result<()> {
    let latest = kiln_queue::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .context("read the schema version")?;
    let applied: Option<i64> = if migrated {
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .context("read the schema version")?
    } else {
        None
    };
    match applied {
        None => anyhow::bail!("this database has no Kiln schema: run `kiln migrate` first"),
        Some(v) if v < latest => anyhow::bail!(
            "this database's schema is at migration {v}, this kiln needs {latest}: run `kiln migrate` first"
        ),
        Some(_) => Ok(()),
    }
}

/// The URL without its user and password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://…@{}", &url[..s], &url[a + 1..]),
        _ => url.to_owned(),
    }
}
