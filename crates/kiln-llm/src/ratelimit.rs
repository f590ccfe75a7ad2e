//! Fleet-wide rate limits per provider (requests and tokens per minute) as token buckets:
//! an atomic Lua script in Redis when configured, Postgres otherwise. Redis is never the
//! truth: when it fails, the same acquisition is made in Postgres, and a call is made only
//! after exactly one grant, so a Redis outage neither loses nor doubles a call.

use crate::metrics::llm_metrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SEED_SQL: &str = include_str!("sql/rate_seed.sql");
const TAKE_SQL: &str = include_str!("sql/rate_take.sql");
const SCRIPT: &str = include_str!("rate_bucket.lua");

/// How long Redis is skipped after it failed.
const REDIS_BACKOFF: Duration = Duration::from_secs(5);

/// A provider's limits per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u32>,
}

/// Rate-limit failures.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The Postgres bucket could not be read or written.
    #[error("rate-limit bucket in Postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// The Redis URL is not usable.
    #[error("REDIS_URL: {0}")]
    Redis(String),
}

/// Where the last grant came from (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The Lua script in Redis.
    Redis,
    /// The Postgres buckets.
    Postgres,
}

/// The fleet's limiter.
pub struct RateLimiter {
    pool: PgPool,
    redis: Option<ConnectionManager>,
    script: redis::Script,
    redis_down_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("redis", &self.redis.is_some())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter on Postgres only.
    pub fn postgres(pool: PgPool) -> Self {
        RateLimiter {
            pool,
            redis: None,
            script: redis::Script::new(SCRIPT),
            redis_down_until: Mutex::new(None),
        }
    }

    /// A limiter on Redis at `url` with Postgres as the fallback. A Redis that does not answer
    /// now is not an error: grants come from Postgres until it does.
    pub async fn with_redis(pool: PgPool, url: &str) -> Result<Self, RateLimitError> {
        let client = redis::Client::open(url).map_err(|e| RateLimitError::Redis(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let mut limiter = Self::postgres(pool);
        let conn = match ConnectionManager::new_with_config(client.clone(), cfg.clone()).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable at start; rate limits in Postgres until it answers");
                *limiter.redis_down_until.lock().expect("not poisoned") =
                    Some(Instant::now() + REDIS_BACKOFF);
                ConnectionManager::new_lazy_with_config(client, cfg)
                    .map_err(|e| RateLimitError::Redis(e.to_string()))?
            }
        };
        limiter.redis = Some(conn);
        Ok(limiter)
    }

    /// `with_redis` when `REDIS_URL` is set, else Postgres only.
    pub async fn from_env(pool: PgPool) -> Result<Self, RateLimitError> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Self::with_redis(pool, &url).await,
            _ => Ok(Self::postgres(pool)),
        }
    }

    /// Waits until the provider's buckets grant one request and `tokens` tokens.
    pub async fn acquire(
        &self,
        provider: &str,
        limits: Limits,
        tokens: u64,
    ) -> Result<Backend, RateLimitError> {
        let mut waited = Duration::ZERO;
        loop {
            let (backend, wait) = self.try_acquire(provider, limits, tokens).await?;
            match wait {
                None => {
                    if !waited.is_zero() {
                        let m = llm_metrics();
                        m.rate_limit_waits.with_label_values(&[provider]).inc();
                        m.rate_limit_wait_seconds
                            .with_label_values(&[provider])
                            .inc_by(waited.as_secs_f64());
                    }
                    return Ok(backend);
                }
                Some(d) => {
                    // Re-check at least every second: other workers' grants change the wait.
                    let d = d.clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tokio::time::sleep(d).await;
                    waited += d;
                }
            }
        }
    }

    /// One attempt: `None` granted, `Some(wait)` not yet.
    pub async fn try_acquire(
        &self,
        provider: &str,
        limits: Limits,
        tokens: u64,
    ) -> Result<(Backend, Option<Duration>), RateLimitError> {
        let mut buckets: Vec<(&str, f64, f64)> = Vec::new();
        if let Some(rpm) = limits.requests_per_minute {
            buckets.push(("requests", rpm as f64, 1.0));
        }
        if let Some(tpm) = limits.tokens_per_minute {
            // A request larger than a minute's tokens waits for a full bucket, not forever.
            buckets.push(("tokens", tpm as f64, (tokens as f64).min(tpm as f64)));
        }
        if buckets.is_empty() {
            return Ok((Backend::Postgres, None));
        }
        if let Some(wait) = self.try_redis(provider, &buckets).await {
            return Ok((Backend::Redis, wait));
        }
        Ok((Backend::Postgres, self.try_postgres(provider, &buckets).await?))
    }

    /// The Redis attempt; `None` when Redis is absent or failed (then Postgres decides).
    async fn try_redis(&self, provider: &str, buckets: &[(&str, f64, f64)]) -> Option<Option<Duration>> {
        let conn = self.redis.as_ref()?;
        if let Some(until) = *self.redis_down_until.lock().expect("not poisoned") {
            if Instant::now() < until {
                return None;
            }
        }
        let mut inv = self.script.prepare_invoke();
        for (kind, cap, need) in buckets {
            inv.key(format!("kiln:llm:rate:{provider}:{kind}"));
            inv.arg(*cap).arg(*need);
        }
        let mut conn = conn.clone();
        let res: Result<String, _> =
            tokio::time::timeout(Duration::from_secs(1), inv.invoke_async(&mut conn))
                .await
                .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
        match res {
            Ok(s) => {
                *self.redis_down_until.lock().expect("not poisoned") = None;
                let wait: f64 = s.parse().unwrap_or(0.0);
                Some((wait > 0.0).then(|| Duration::from_secs_f64(wait)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "Redis rate limiter failed; using Postgres");
                *self.redis_down_until.lock().expect("not poisoned") = Some(Instant::now() + REDIS_BACKOFF);
                None
            }
        }
    }

    async fn try_postgres(
        &self,
        provider: &str,
        buckets: &[(&str, f64, f64)],
    ) -> Result<Option<Duration>, sqlx::Error> {
        let kinds: Vec<&str> = buckets.iter().map(|b| b.0).collect();
        let caps: Vec<f64> = buckets.iter().map(|b| b.1).collect();
        let needs: Vec<f64> = buckets.iter().map(|b| b.2).collect();
        for _ in 0..2 {
            let (wait, found, _, _): (f64, i32, i64, i64) = sqlx::query_as(TAKE_SQL)
                .bind(provider)
                .bind(&kinds)
                .bind(&caps)
                .bind(&needs)
                .bind(buckets.len() as i32)
                .fetch_one(&self.pool)
                .await?;
            if found as usize == buckets.len() {
                return Ok((wait > 0.0).then(|| Duration::from_secs_f64(wait)));
            }
            // First use of these buckets: create them full, then take.
            sqlx::query(SEED_SQL)
                .bind(provider)
                .bind(&kinds)
                .bind(&caps)
                .execute(&self.pool)
                .await?;
        }
        Err(sqlx::Error::RowNotFound)
    }
}
