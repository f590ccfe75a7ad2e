//! Circuit breakers per provider/model, shared by the fleet through Postgres: open after
//! `failures` consecutive failures, half-open after `cooldown`, closed after `successes`
//! successes while half-open. Only failures that say the model is unavailable count (5xx,
//! 529, timeouts, dropped connections, malformed answers), not refusals or 429s.

use crate::metrics::llm_metrics;
use sqlx::PgPool;
use std::time::Duration;

const READ_SQL: &str = include_str!("sql/breaker_read.sql");
const ALLOW_SQL: &str = include_str!("sql/breaker_allow.sql");
const SUCCESS_SQL: &str = include_str!("sql/breaker_success.sql");
const FAILURE_SQL: &str = include_str!("sql/breaker_failure.sql");
const RELAXED_SQL: &str = include_str!("sql/relaxed.sql");

/// Breaker thresholds.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 5).
    pub failures: u32,
    /// Time open before a trial call is allowed (default 60 s).
    pub cooldown: Duration,
    /// Successes while half-open that close it (default 2).
    pub successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(60),
            successes: 2,
        }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cool-down passes.
    Open,
    /// Trial calls flow; a failure reopens, enough successes close.
    HalfOpen,
}

impl BreakerState {
    fn parse(s: &str) -> Self {
        match s {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// The fleet's breakers.
#[derive(Debug, Clone)]
pub struct Breakers {
    pool: PgPool,
    cfg: BreakerConfig,
}

impl Breakers {
    /// Breakers in `pool`'s database.
    pub fn new(pool: PgPool, cfg: BreakerConfig) -> Self {
        Breakers { pool, cfg }
    }

    /// The state a call to `provider/model` meets now (open → half-open once cooled down).
    pub async fn check(&self, provider: &str, model: &str) -> Result<BreakerState, sqlx::Error> {
        Ok(self.check_clean(provider, model).await?.0)
    }

    /// [`Breakers::check`], and whether the breaker is closed with no failures counted (then a
    /// success has nothing to record). The common case is one read, no write.
    pub async fn check_clean(
        &self,
        provider: &str,
        model: &str,
    ) -> Result<(BreakerState, bool), sqlx::Error> {
        let row: Option<(String, i32, bool)> = sqlx::query_as(READ_SQL)
            .bind(provider)
            .bind(model)
            .bind(self.cfg.cooldown.as_secs_f64())
            .fetch_optional(&self.pool)
            .await?;
        let s = match row {
            None => return Ok((self.observe(provider, model, "closed"), true)),
            Some((state, failures, false)) => {
                let clean = state == "closed" && failures == 0;
                return Ok((self.observe(provider, model, &state), clean));
            }
            Some((_, _, true)) => {
                let mut tx = self.relaxed().await?;
                let s: String = sqlx::query_scalar(ALLOW_SQL)
                    .bind(provider)
                    .bind(model)
                    .bind(self.cfg.cooldown.as_secs_f64())
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                s
            }
        };
        Ok((self.observe(provider, model, &s), false))
    }

    /// Records a success.
    pub async fn success(&self, provider: &str, model: &str) -> Result<BreakerState, sqlx::Error> {
        self.write(SUCCESS_SQL, provider, model, self.cfg.successes).await
    }

    /// Records a failure.
    pub async fn failure(&self, provider: &str, model: &str) -> Result<BreakerState, sqlx::Error> {
        self.write(FAILURE_SQL, provider, model, self.cfg.failures).await
    }

    async fn write(
        &self,
        sql: &'static str,
        provider: &str,
        model: &str,
        n: u32,
    ) -> Result<BreakerState, sqlx::Error> {
        let mut tx = self.relaxed().await?;
        let s: String = sqlx::query_scalar(sql)
            .bind(provider)
            .bind(model)
            .bind(n as i32)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(self.observe(provider, model, &s))
    }

    /// A transaction that does not wait for its commit to reach disk: a breaker transition lost
    /// to a crash is re-learnt from the next failures, and the wait cost ~10 ms per call here.
    async fn relaxed(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(RELAXED_SQL).execute(&mut *tx).await?;
        Ok(tx)
    }

    fn observe(&self, provider: &str, model: &str, s: &str) -> BreakerState {
        let state = BreakerState::parse(s);
        llm_metrics()
            .circuit_state
            .with_label_values(&[provider, model])
            .set(state.gauge());
        state
    }
}
