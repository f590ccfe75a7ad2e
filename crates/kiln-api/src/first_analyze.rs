//! The first ANALYZE of a fresh `kiln_jobs`. Until a table has statistics the planner guesses
//! its size, and the enqueue statement slows as the table grows: measured on a fresh cluster
//! with 64 concurrent single enqueues, 2,050/s falling to 650/s within 20 s (≈ 22,000 rows),
//! back to 5,640/s right after `ANALYZE kiln_jobs`. Autovacuum would get there only after its
//! naptime (a minute by default), so the API checks every few seconds, runs one ANALYZE once
//! the table has some thousand rows, and stops.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NEVER_ANALYZED_SQL: &str = include_str!("sql/never_analyzed.sql");
/// Rows inserted before the first ANALYZE is worth running.
pub const MIN_ROWS: i64 = 2_000;

/// Watches until `kiln_jobs` has statistics (or `shutdown`), analyzing it once if needed.
pub fn start(pool: sqlx::PgPool, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            match sqlx::query_scalar::<_, bool>(NEVER_ANALYZED_SQL)
                .bind(MIN_ROWS)
                .fetch_one(&pool)
                .await
            {
                Ok(true) => {
                    tracing::info!("kiln_jobs has rows but no statistics yet: analyzing it");
                    match sqlx::query("ANALYZE kiln_jobs").execute(&pool).await {
                        Ok(_) => return,
                        Err(e) => tracing::warn!(error = %e, "ANALYZE kiln_jobs failed"),
                    }
                }
                Ok(false) => {
                    let analyzed: Option<bool> = sqlx::query_scalar(
                        "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL \
                         FROM pg_stat_user_tables WHERE relid = 'kiln_jobs'::regclass",
                    )
                    .fetch_optional(&pool)
                    .await
                    .ok()
                    .flatten();
                    if analyzed == Some(true) {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "first-analyze check failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}
