//! A scheduler process: contends for leadership (a session advisory lock held on a dedicated
//! connection, so a killed leader's lock goes with its connection), and while leading fires
//! due ticks, sleeping until the next one. Followers retry the lock every `lock_retry`.

use chrono::Utc;
use sqlx::{Connection, PgConnection, PgPool};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::error::{Result, SchedulerError};
use crate::fire;
use crate::presence::{self, Coverage};

/// The advisory lock the leading scheduler holds (a key derived from this name).
pub const LOCK_NAME: &str = "kiln.scheduler.leader";

/// Settings of one scheduler process.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Unique id; defaults to `host-pid`.
    pub id: Option<String>,
    /// How often a follower tries to take the lead.
    pub lock_retry: Duration,
    /// How often this process records that it is alive.
    pub heartbeat_every: Duration,
    /// A scheduler that stopped heartbeating counts as running this long after its last
    /// heartbeat (a tick then is late, and fired; later ones were missed, and are not).
    pub presence_slack: Duration,
    /// The leader re-reads the schedules at least this often (new and changed ones).
    pub reload_every: Duration,
    /// Most ticks of one schedule handled in one pass.
    pub max_ticks_per_pass: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            id: None,
            lock_retry: Duration::from_secs(1),
            heartbeat_every: Duration::from_secs(1),
            presence_slack: Duration::from_secs(3),
            reload_every: Duration::from_secs(1),
            max_ticks_per_pass: 1000,
        }
    }
}

/// A scheduler process (leader or follower).
pub struct Scheduler {
    pool: PgPool,
    config: SchedulerConfig,
    id: String,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

impl Scheduler {
    /// A scheduler on `pool`.
    pub fn new(pool: PgPool, config: SchedulerConfig) -> Self {
        let id = config
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        Self { pool, config, id }
    }

    /// This scheduler's id (in `kiln_schedulers` and the logs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` completes: leads when it can, follows otherwise. On the way out
    /// the lock is released (a follower takes over within `lock_retry`).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let started = presence::register(&self.pool, &self.id, &hostname(), std::process::id()).await?;
        tracing::info!(scheduler = %self.id, "scheduler started; contending for the lead");
        let stop = CancellationToken::new();
        let beat = tokio::spawn(heartbeat_loop(
            self.pool.clone(),
            self.id.clone(),
            self.config.heartbeat_every,
            stop.clone(),
        ));
        let exporter = kiln_metrics::DepthExporter::spawn_for_process(
            &self.pool,
            kiln_metrics::ExporterConfig::default(),
            stop.clone(),
        );
        let mut lead = Lead {
            conn: None,
            leading: false,
        };
        tokio::pin!(shutdown);
        loop {
            let wait = match self.step(&mut lead, started).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(scheduler = %self.id, error = %e, "scheduler pass failed; retrying");
                    if lead.leading && lead.check().await.is_err() {
                        self.lose(&mut lead, "its lock connection failed").await;
                    }
                    self.config.lock_retry
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => break,
            }
        }
        if lead.leading {
            if let Some(mut c) = lead.conn.take() {
                let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                    .bind(LOCK_NAME)
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
            }
            tracing::info!(scheduler = %self.id, "stopped leading (shutdown)");
        }
        stop.cancel();
        let _ = beat.await;
        if let Some(e) = exporter {
            let _ = e.await;
        }
        if let Err(e) = presence::stopped(&self.pool, &self.id).await {
            tracing::warn!(error = %e, "could not record the scheduler's stop");
        }
        tracing::info!(scheduler = %self.id, "scheduler stopped");
        Ok(())
    }

    /// One round: take the lead if free, and if leading fire what is due. Returns how long
    /// to wait before the next round.
    async fn step(&self, lead: &mut Lead, started: chrono::DateTime<Utc>) -> Result<Duration> {
        if !lead.leading {
            if !lead.try_acquire(&self.pool).await? {
                return Ok(self.config.lock_retry);
            }
            tracing::info!(scheduler = %self.id, "became the scheduler leader: firing ticks");
            if let Err(e) = presence::set_leading(&self.pool, &self.id, true).await {
                tracing::warn!(error = %e, "could not record leadership");
            }
        } else if let Err(e) = lead.check().await {
            tracing::debug!(error = %e, "lock connection check failed");
            self.lose(lead, "its lock connection failed").await;
            return Ok(self.config.lock_retry);
        }
        let due = fire::load(&self.pool).await?;
        let now = Utc::now();
        let since = fire::oldest(&due).unwrap_or(now);
        let coverage = Coverage::load(&self.pool, since, self.config.presence_slack, started).await?;
        let next = fire::pass(&self.pool, due, &coverage, now, self.config.max_ticks_per_pass).await?;
        let until_next = next
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(self.config.reload_every);
        Ok(until_next.min(self.config.reload_every))
    }

    async fn lose(&self, lead: &mut Lead, why: &str) {
        lead.leading = false;
        lead.conn = None;
        tracing::warn!(scheduler = %self.id, "lost the scheduler lead: {why}; following");
        let _ = presence::set_leading(&self.pool, &self.id, false).await;
    }
}

/// The leader lock and its connection.
struct Lead {
    conn: Option<PgConnection>,
    leading: bool,
}

impl Lead {
    async fn try_acquire(&mut self, pool: &PgPool) -> Result<bool> {
        if self.conn.is_none() {
            let conn = pool
                .acquire()
                .await
                .map_err(SchedulerError::db("connect for the leader lock"))?;
            self.conn = Some(conn.detach());
        }
        let conn = self.conn.as_mut().expect("connected above");
        let got = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(LOCK_NAME)
            .fetch_one(&mut *conn)
            .await;
        match got {
            Ok(got) => {
                self.leading = got;
                Ok(got)
            }
            Err(e) => {
                self.conn = None;
                Err(SchedulerError::db("take the leader lock")(e))
            }
        }
    }

    /// The lock lives as long as its session: a working connection means we still hold it.
    async fn check(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or(SchedulerError::Database {
            op: "check the leader lock",
            source: sqlx::Error::PoolClosed,
        })?;
        conn.ping()
            .await
            .map_err(SchedulerError::db("check the leader lock"))
    }
}

async fn heartbeat_loop(pool: PgPool, id: String, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = presence::heartbeat(&pool, &id).await {
            tracing::warn!(scheduler = %id, error = %e, "scheduler heartbeat failed");
        }
    }
}
