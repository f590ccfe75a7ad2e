//! What every system shares: the execution tracker its handler reports to, the fresh
//! database per system, the burn-down wait and the idle pickup loop.

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool};
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Counts executions per job index and the first handler start of each, for all systems.
pub struct Tracker {
    counts: Vec<AtomicU32>,
    started_ns: Vec<AtomicU64>,
    epoch: Instant,
    executed: AtomicU64,
    burn_n: usize,
    notify: Notify,
}

static TRACKER: OnceLock<Tracker> = OnceLock::new();

/// Sizes the tracker: `burn_n` burn-down jobs, then `pickup` pickup jobs.
pub fn init_tracker(burn_n: usize, pickup: usize) {
    let total = burn_n + pickup;
    let _ = TRACKER.set(Tracker {
        counts: (0..total).map(|_| AtomicU32::new(0)).collect(),
        started_ns: (0..total).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
        executed: AtomicU64::new(0),
        burn_n,
        notify: Notify::new(),
    });
}

/// The process-wide tracker every handler reports to.
pub fn tracker() -> &'static Tracker {
    TRACKER.get().expect("tracker initialised")
}

impl Tracker {
    /// Nanoseconds since the tracker was made (never 0).
    pub fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Called first thing by every system's handler with the job's index.
    pub fn record(&self, i: u64) {
        let i = i as usize;
        let Some(count) = self.counts.get(i) else {
            tracing::error!(index = i, "handler saw a job index out of range");
            return;
        };
        count.fetch_add(1, Ordering::Relaxed);
        let _ = self.started_ns[i].compare_exchange(0, self.now_ns(), Ordering::AcqRel, Ordering::Relaxed);
        self.executed.fetch_add(1, Ordering::Relaxed);
        if i >= self.burn_n {
            self.notify.notify_one();
        }
    }

    /// Executions seen so far (all jobs, repeats included).
    pub fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }

    /// Distinct burn-down jobs started so far.
    fn burn_started(&self) -> usize {
        self.counts[..self.burn_n]
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count()
    }

    /// Clears everything before the next system runs.
    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        for s in &self.started_ns {
            s.store(0, Ordering::Relaxed);
        }
        self.executed.store(0, Ordering::Relaxed);
    }

    /// (jobs run more than once, jobs never run) over all `burn_n + pickup` jobs.
    pub fn tally(&self) -> (u64, u64) {
        let mut dup = 0;
        let mut missing = 0;
        for c in &self.counts {
            match c.load(Ordering::Relaxed) {
                0 => missing += 1,
                1 => {}
                _ => dup += 1,
            }
        }
        (dup, missing)
    }
}

/// The Postgres server every system runs on.
pub struct Server {
    pub admin: PgConnectOptions,
}

impl Server {
    /// Drops and recreates database `name`; returns options pointing at it.
    pub async fn fresh_db(&self, name: &str) -> Result<PgConnectOptions> {
        let mut conn = sqlx::PgConnection::connect_with(&self.admin)
            .await
            .context("connect to the server")?;
        // `name` is one of this program's fixed database names.
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(self.admin.clone().database(name))
    }

    /// `SHOW fsync`, `SHOW synchronous_commit`, server version.
    pub async fn durability(&self) -> Result<(String, String, String)> {
        let mut conn = sqlx::PgConnection::connect_with(&self.admin).await?;
        let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&mut conn).await?;
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut conn)
            .await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok((fsync, sync, version))
    }

    /// p50 and p99 in ms of `n` one-row INSERT commits, one at a time: the cost of one durable
    /// commit here. An idle pickup needs two (the enqueue's and the claim's), whatever the queue.
    pub async fn commit_latency(&self, n: usize) -> Result<(f64, f64)> {
        let opts = self.fresh_db("kiln_bench_commit").await?;
        let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
        sqlx::query("CREATE TABLE t (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
            .execute(&mut conn)
            .await?;
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = std::time::Instant::now();
            sqlx::query("INSERT INTO t DEFAULT VALUES")
                .execute(&mut conn)
                .await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        conn.close().await?;
        Ok((percentile(&lat, 50.0), percentile(&lat, 99.0)))
    }
}

/// A pool of at most `max` connections on `opts`.
pub async fn pool(opts: &PgConnectOptions, max: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts.clone())
        .await?)
}

/// Waits until every burn-down job has started in a handler, then polls `remaining_sql`
/// (a count of jobs not yet finished in the database) every 20 ms until it reads 0.
/// Returns the time since `start`, or None if `limit` passed first.
pub async fn wait_burn_down(
    pool: &PgPool,
    remaining_sql: &'static str,
    n: usize,
    start: Instant,
    limit: Duration,
) -> Result<Option<Duration>> {
    let t = tracker();
    let mut last_log = Instant::now();
    loop {
        if start.elapsed() > limit {
            return Ok(None);
        }
        let started = t.burn_started();
        if started >= n {
            let remaining: i64 = sqlx::query_scalar(remaining_sql).fetch_one(pool).await?;
            if remaining == 0 {
                return Ok(Some(start.elapsed()));
            }
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            last_log = Instant::now();
            tracing::info!(
                started,
                of = n,
                elapsed_s = start.elapsed().as_secs_f64(),
                "burning down"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Idle pickup: enqueues job `n + j` for j in 0..count, one at a time, each after the
/// previous one's handler started; returns the enqueue→handler-start latencies in ms
/// (a job not started within 10 s is left out and shows up as missing).
pub async fn pickup<F, Fut>(n: usize, count: usize, mut enqueue: F) -> Result<Vec<f64>>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let t = tracker();
    let mut lat = Vec::with_capacity(count);
    // Let the workers go idle (drain, complete, park on their wake-ups).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for j in 0..count {
        let id = n + j;
        let t0 = t.now_ns();
        enqueue(id as u64).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = t.started_ns[id].load(Ordering::Acquire);
            if s != 0 {
                lat.push((s.saturating_sub(t0)) as f64 / 1e6);
                break;
            }
            if tokio::time::timeout_at(deadline, t.notify.notified())
                .await
                .is_err()
            {
                tracing::warn!(job = id, "pickup job not started within 10 s");
                break;
            }
        }
        // Idle gap so the next job finds the workers waiting again.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(lat)
}

/// The p-th percentile (0..=100) of `v`, nearest rank.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// What one system measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub system: &'static str,
    pub jobs_per_s: f64,
    pub burn_secs: f64,
    pub pickup_p50_ms: f64,
    pub pickup_p99_ms: f64,
    pub duplicates: u64,
    pub missing: u64,
    pub settings: String,
}

impl Outcome {
    /// Builds the outcome from the burn-down time, latencies and the tracker's tally.
    pub fn finish(
        system: &'static str,
        n: usize,
        burn: Option<Duration>,
        limit: Duration,
        lat: &[f64],
        settings: String,
    ) -> Self {
        let (duplicates, missing) = tracker().tally();
        let (jobs_per_s, burn_secs) = match burn {
            Some(d) => (n as f64 / d.as_secs_f64(), d.as_secs_f64()),
            // Timed out: report what got through in the limit.
            None => (
                tracker().burn_started() as f64 / limit.as_secs_f64(),
                limit.as_secs_f64(),
            ),
        };
        Outcome {
            system,
            jobs_per_s,
            burn_secs,
            pickup_p50_ms: percentile(lat, 50.0),
            pickup_p99_ms: percentile(lat, 99.0),
            duplicates,
            missing,
            settings,
        }
    }
}

/// Waits up to 30 s for each of a system's worker tasks after it was told to stop, logging
/// those that failed or hung (the figures are already taken; this only reports).
pub async fn join_workers<E: std::fmt::Display>(
    system: &str,
    handles: Vec<tokio::task::JoinHandle<std::result::Result<(), E>>>,
) {
    for h in handles {
        match tokio::time::timeout(Duration::from_secs(30), h).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(system, error = %e, "worker ended with an error"),
            Ok(Err(e)) => tracing::warn!(system, error = %e, "worker task failed"),
            Err(_) => tracing::warn!(system, "worker did not stop within 30 s"),
        }
    }
}
