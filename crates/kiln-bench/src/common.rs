//! What every system shares: the execution tracker its handler reports to, the fresh
//! database per system, the burn-down wait and the idle pickup loop.

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool};
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Counts executions per job index and the first handler start of each, for all systems.
/// A run uses indices `0..burn_n` for its burn-down and `burn_n..burn_n + pickup` for its
/// pickups (set by [`Tracker::reset`]); the vectors are sized for the largest run.
pub struct Tracker {
    counts: Vec<AtomicU32>,
    started_ns: Vec<AtomicU64>,
    epoch: Instant,
    executed: AtomicU64,
    burn_n: AtomicUsize,
    pickup: AtomicUsize,
    notify: Notify,
}

static TRACKER: OnceLock<Tracker> = OnceLock::new();

/// Sizes the process-wide tracker for runs of at most `capacity` jobs (burn-down + pickup).
pub fn init_tracker(capacity: usize) {
    let _ = TRACKER.set(Tracker::new(capacity));
}

/// The process-wide tracker every handler reports to.
pub fn tracker() -> &'static Tracker {
    TRACKER.get().expect("tracker initialised")
}

impl Tracker {
    /// A tracker for runs of at most `capacity` jobs, set for none yet.
    pub fn new(capacity: usize) -> Self {
        Tracker {
            counts: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            started_ns: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            executed: AtomicU64::new(0),
            burn_n: AtomicUsize::new(0),
            pickup: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

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
        if i >= self.burn_n.load(Ordering::Relaxed) {
            self.notify.notify_one();
        }
    }

    /// Executions seen so far (all jobs, repeats included).
    pub fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }

    /// Distinct burn-down jobs started so far.
    fn burn_started(&self) -> usize {
        self.counts[..self.burn_n.load(Ordering::Relaxed)]
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count()
    }

    /// Clears everything before the next run: `burn_n` burn-down jobs, then `pickup` pickups.
    /// Panics if the run is larger than the tracker.
    pub fn reset(&self, burn_n: usize, pickup: usize) {
        assert!(
            burn_n + pickup <= self.counts.len(),
            "a run of {} jobs in a tracker of {}",
            burn_n + pickup,
            self.counts.len()
        );
        self.burn_n.store(burn_n, Ordering::Relaxed);
        self.pickup.store(pickup, Ordering::Relaxed);
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        for s in &self.started_ns {
            s.store(0, Ordering::Relaxed);
        }
        self.executed.store(0, Ordering::Relaxed);
    }

    /// (jobs run more than once, jobs never run) over the run's `burn_n + pickup` jobs.
    pub fn tally(&self) -> (u64, u64) {
        let mut dup = 0;
        let mut missing = 0;
        let total = self.burn_n.load(Ordering::Relaxed) + self.pickup.load(Ordering::Relaxed);
        for c in &self.counts[..total] {
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
    if count == 0 {
        return Ok(lat);
    }
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

/// One burn-down: `jobs` pre-inserted jobs burned down by `workers` workers, then `pickup`
/// idle pickups (0: none, as in the sweeps), giving up after `burn_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    pub jobs: usize,
    pub workers: usize,
    pub pickup: usize,
    pub burn_timeout: Duration,
}

/// What one run of one system measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub system: &'static str,
    pub jobs: usize,
    pub workers: usize,
    pub jobs_per_s: f64,
    pub burn_secs: f64,
    /// The burn-down did not finish within its limit (`jobs_per_s` is what got through).
    pub timed_out: bool,
    pub pickup_p50_ms: f64,
    pub pickup_p99_ms: f64,
    pub duplicates: u64,
    pub missing: u64,
    /// WAL written during the burn-down (`pg_current_wal_lsn` delta), all databases.
    pub wal_bytes: i64,
    pub settings: String,
}

impl Outcome {
    /// Builds the outcome from the burn-down time, WAL, latencies and the tracker's tally.
    pub fn finish(
        system: &'static str,
        spec: &RunSpec,
        burn: Option<Duration>,
        wal_bytes: i64,
        lat: &[f64],
        settings: String,
    ) -> Self {
        let (duplicates, missing) = tracker().tally();
        let (jobs_per_s, burn_secs) = match burn {
            Some(d) => (spec.jobs as f64 / d.as_secs_f64(), d.as_secs_f64()),
            // Timed out: report what got through in the limit.
            None => (
                tracker().burn_started() as f64 / spec.burn_timeout.as_secs_f64(),
                spec.burn_timeout.as_secs_f64(),
            ),
        };
        Outcome {
            system,
            jobs: spec.jobs,
            workers: spec.workers,
            jobs_per_s,
            burn_secs,
            timed_out: burn.is_none(),
            pickup_p50_ms: percentile(lat, 50.0),
            pickup_p99_ms: percentile(lat, 99.0),
            duplicates,
            missing,
            wal_bytes,
            settings,
        }
    }

    /// WAL bytes per burned-down job.
    pub fn wal_per_job(&self) -> f64 {
        self.wal_bytes as f64 / self.jobs.max(1) as f64
    }

    /// No job ran twice and, unless the burn-down timed out, none was left unrun.
    pub fn clean(&self) -> bool {
        self.duplicates == 0 && self.missing == 0 && !self.timed_out
    }
}

/// Where the server's WAL is now, after a `CHECKPOINT` so that every system's burn-down pays
/// its own full-page images alike (a checkpoint that fell inside one system's burn-down and not
/// another's would make their WAL incomparable). A refused CHECKPOINT (not superuser) is logged.
pub async fn wal_start(pool: &PgPool) -> Result<String> {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        tracing::warn!(error = %e, "CHECKPOINT refused: WAL per job may include another run's full-page images");
    }
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?)
}

/// Bytes of WAL written since `start` (from [`wal_start`]).
pub async fn wal_since(pool: &PgPool, start: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint")
            .bind(start)
            .fetch_one(pool)
            .await?,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_only_the_current_run() {
        let t = Tracker::new(10);
        t.reset(8, 2);
        for i in 0..10 {
            t.record(i);
        }
        // A smaller run next: 3 burn-down jobs and 2 pickups, indices 0..5.
        t.reset(3, 2);
        for i in [0, 1, 1, 3] {
            t.record(i);
        }
        // Index 1 ran twice; 2 and 4 never ran; 5..10 belong to no run.
        assert_eq!(t.tally(), (1, 2));
        assert_eq!(t.burn_started(), 2);
        assert_eq!(t.executed(), 4);
    }

    #[test]
    fn a_clean_outcome_has_no_duplicates_missing_or_timeout() {
        let o = Outcome {
            system: "kiln",
            jobs: 4,
            workers: 1,
            jobs_per_s: 1.0,
            burn_secs: 4.0,
            timed_out: false,
            pickup_p50_ms: f64::NAN,
            pickup_p99_ms: f64::NAN,
            duplicates: 0,
            missing: 0,
            wal_bytes: 1000,
            settings: String::new(),
        };
        assert!(o.clean());
        assert_eq!(o.wal_per_job(), 250.0);
        assert!(!Outcome {
            duplicates: 1,
            ..o.clone()
        }
        .clean());
        assert!(!Outcome {
            missing: 1,
            ..o.clone()
        }
        .clean());
        assert!(!Outcome { timed_out: true, ..o }.clean());
    }
}
