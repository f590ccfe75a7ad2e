//! One call along a route: breaker → budget → rate limit → provider (with retries) → ledger,
//! failing over to the next model of the chain.

use crate::breaker::{BreakerConfig, BreakerState, Breakers};
use crate::client::ProviderClient;
use crate::config::{LlmConfig, Target};
use crate::cost::Usd;
use crate::error::ProviderError;
use crate::ledger::{self, BudgetError, BudgetExceeded, Budgets, CallFor, CallRecord};
use crate::metrics::llm_metrics;
use crate::ratelimit::{Limits, RateLimitError, RateLimiter};
use crate::retry::RetryPolicy;
use crate::route::Tier;
use crate::secret::MissingKey;
use crate::wire::{ChatRequest, ChatResponse, Usage};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Settings of an [`Llm`] beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Retry tries and backoff.
    pub retry: RetryPolicy,
    /// Breaker thresholds.
    pub breaker: BreakerConfig,
    /// Redis for the rate limits (`None`: Postgres only). `Llm::from_env` reads `REDIS_URL`.
    pub redis_url: Option<String>,
}

/// One failed try on the way to an answer (or to giving up).
#[derive(Debug, Clone, PartialEq)]
pub struct FailedTry {
    /// `provider/model`.
    pub target: String,
    /// What happened; `None` when the breaker was open and no call was made.
    pub error: Option<ProviderError>,
}

/// A call that was answered.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The answer.
    pub response: ChatResponse,
    /// The provider that answered.
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// Reported usage (zeros when the provider reported none).
    pub usage: Usage,
    /// Exact cost of this call.
    pub cost: Usd,
    /// Wall time of the answering HTTP call.
    pub latency: Duration,
    /// The failed tries before it (retries and failovers).
    pub failed: Vec<FailedTry>,
    /// The ledger row.
    pub ledger_id: i64,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The route names no usable model.
    #[error("no model is configured for the {0} route")]
    NoRoute(&'static str),
    /// A budget refused the call before it was made.
    #[error(transparent)]
    Budget(#[from] BudgetExceeded),
    /// Every model of the chain failed or refused.
    #[error("every model failed: {}", summary(.0))]
    Exhausted(Vec<FailedTry>),
    /// A provider's key variable is not set.
    #[error(transparent)]
    MissingKey(#[from] MissingKey),
    /// The Redis URL is not usable.
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    /// The ledger or breaker tables could not be used.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

fn summary(tries: &[FailedTry]) -> String {
    tries
        .iter()
        .map(|t| match &t.error {
            Some(e) => format!("{}: {e}", t.target),
            None => format!("{}: circuit open", t.target),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl LlmError {
    /// Whether a later attempt of the whole job may succeed (everything was transient).
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Exhausted(tries) => tries
                .iter()
                .any(|t| t.error.as_ref().is_none_or(ProviderError::is_retryable)),
            LlmError::Database(_) | LlmError::RateLimit(_) => true,
            _ => false,
        }
    }
}

/// The provider layer of one process.
#[derive(Debug)]
pub struct Llm {
    config: LlmConfig,
    clients: HashMap<String, ProviderClient>,
    pool: PgPool,
    limiter: RateLimiter,
    breakers: Breakers,
    retry: RetryPolicy,
}

impl Llm {
    /// Builds clients for every provider (reading their keys) on `pool`.
    pub async fn new(config: LlmConfig, pool: PgPool, opts: Options) -> Result<Self, LlmError> {
        let mut clients = HashMap::new();
        for p in &config.providers {
            clients.insert(p.name.clone(), ProviderClient::new(p)?);
        }
        let limiter = match &opts.redis_url {
            Some(url) => RateLimiter::with_redis(pool.clone(), url).await?,
            None => RateLimiter::postgres(pool.clone()),
        };
        Ok(Llm {
            config,
            clients,
            breakers: Breakers::new(pool.clone(), opts.breaker),
            pool,
            limiter,
            retry: RetryPolicy {
                tries: opts.retry.tries.max(1),
                ..opts.retry
            },
        })
    }

    /// [`Llm::new`] with `REDIS_URL` from the environment.
    pub async fn from_env(config: LlmConfig, pool: PgPool, mut opts: Options) -> Result<Self, LlmError> {
        opts.redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
        Self::new(config, pool, opts).await
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The fleet's breakers.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Sends `req` along the tier's chain until a model answers.
    pub async fn complete(
        &self,
        tier: Tier,
        req: &ChatRequest,
        who: CallFor,
        budgets: Budgets,
    ) -> Result<Completion, LlmError> {
        let chain = self.config.chain(tier);
        if chain.is_empty() {
            return Err(LlmError::NoRoute(tier.as_str()));
        }
        let mut failed = Vec::new();
        for target in chain {
            if let Some(done) = self.try_target(target, req, who, budgets, &mut failed).await? {
                return Ok(done);
            }
        }
        Err(LlmError::Exhausted(failed))
    }

    /// Tries one model; `Ok(None)` means fail over.
    async fn try_target(
        &self,
        t: Target<'_>,
        req: &ChatRequest,
        who: CallFor,
        budgets: Budgets,
        failed: &mut Vec<FailedTry>,
    ) -> Result<Option<Completion>, LlmError> {
        let (provider, model) = (t.provider.name.as_str(), t.model.name.as_str());
        let label = format!("{provider}/{model}");
        let prices = t.model.prices();
        let input_estimate = req.estimated_input_tokens();
        let client = &self.clients[provider];
        let limits = Limits {
            requests_per_minute: t.provider.requests_per_minute,
            tokens_per_minute: t.provider.tokens_per_minute,
        };
        let m = llm_metrics();
        for attempt in 0..self.retry.tries {
            let (state, clean) = self.breakers.check_clean(provider, model).await?;
            if state == BreakerState::Open {
                m.requests
                    .with_label_values(&[provider, model, "circuit_open"])
                    .inc();
                failed.push(FailedTry {
                    target: label,
                    error: None,
                });
                return Ok(None);
            }
            let worst = prices.worst_case(input_estimate, req.max_tokens as u64);
            match ledger::check_budget(&self.pool, who, budgets, worst).await {
                Ok(()) => {}
                Err(BudgetError::Exceeded(e)) => return Err(e.into()),
                Err(BudgetError::Database(e)) => return Err(e.into()),
            }
            self.limiter
                .acquire(provider, limits, input_estimate + req.max_tokens as u64)
                .await?;
            let started = Instant::now();
            let result = client.send(model, req, req.tools && t.model.tools).await;
            let latency = started.elapsed();
            m.request_seconds
                .with_label_values(&[provider, model])
                .observe(latency.as_secs_f64());
            match result {
                Ok(response) => {
                    m.requests.with_label_values(&[provider, model, "ok"]).inc();
                    if !clean {
                        self.breakers.success(provider, model).await?;
                    }
                    let usage = response.usage.unwrap_or_default();
                    let cost = prices.cost(&usage);
                    let ledger_id = ledger::record_call(
                        &self.pool,
                        &CallRecord {
                            provider,
                            model,
                            usage,
                            cost,
                            who,
                        },
                    )
                    .await?;
                    for (kind, n) in [
                        ("input", usage.input),
                        ("output", usage.output),
                        ("cache_read", usage.cache_read),
                        ("cache_write", usage.cache_write),
                    ] {
                        m.tokens.with_label_values(&[provider, model, kind]).inc_by(n);
                    }
                    m.cost_usd
                        .with_label_values(&[provider, model])
                        .inc_by(cost.dollars());
                    return Ok(Some(Completion {
                        response,
                        provider: provider.to_string(),
                        model: model.to_string(),
                        usage,
                        cost,
                        latency,
                        failed: std::mem::take(failed),
                        ledger_id,
                    }));
                }
                Err(e) => {
                    m.requests
                        .with_label_values(&[provider, model, e.outcome()])
                        .inc();
                    tracing::warn!(provider, model, attempt, error = %e, "LLM call failed");
                    let counts_against_breaker =
                        e.is_retryable() && !matches!(e, ProviderError::RateLimited { .. });
                    if counts_against_breaker {
                        self.breakers.failure(provider, model).await?;
                    }
                    let wait = match &e {
                        _ if !e.is_retryable() => None,
                        ProviderError::RateLimited {
                            retry_after: Some(d), ..
                        } => (*d <= self.retry.cap).then_some(*d),
                        _ => Some(self.retry.backoff(attempt)),
                    };
                    failed.push(FailedTry {
                        target: label.clone(),
                        error: Some(e),
                    });
                    match wait {
                        Some(d) if attempt + 1 < self.retry.tries => tokio::time::sleep(d).await,
                        _ => return Ok(None),
                    }
                }
            }
        }
        Ok(None)
    }
}
