//! Kiln's LLM provider layer.
//!
//! [`LlmConfig`] is the `[llm]` section of `workers.toml`. [`Llm::complete`] sends one
//! [`ChatRequest`] along a route's chain of models: for each model it consults the fleet's
//! circuit breaker, checks the budgets with the call's worst case, waits for the fleet-wide
//! rate limit, then calls the provider ([`ProviderClient`]: OpenAI-compatible or Anthropic)
//! with retries by the provider's rules, and on success records the exact cost in the ledger.
//! Transient failures that outlast the retries, and refusals, fail over to the next model.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_llm::{CallFor, ChatRequest, Complexity, Llm, LlmConfig, Message, Options, Preference, RouteOf};
//! let cfg = LlmConfig::from_workers_toml(&std::fs::read_to_string("workers.toml")?)?;
//! let llm = Llm::new(cfg, pool, Options::default()).await?;
//! let tier = Preference::Auto.tier(&Complexity::default().with_prompt("add a REST endpoint"));
//! let req = ChatRequest { messages: vec![Message::user("hello")], max_tokens: 1024, tools: true, ..Default::default() };
//! let done = llm.complete(tier, &req, CallFor::default(), Default::default()).await?;
//! println!("{} tokens out, {}", done.usage.output, done.cost);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod anthropic;
pub mod breaker;
pub mod client;
pub mod config;
pub mod cost;
pub mod error;
mod http;
pub mod ledger;
mod llm;
pub mod metrics;
pub mod openai;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod secret;
pub mod wire;

pub use breaker::{BreakerConfig, BreakerState, Breakers};
pub use client::ProviderClient;
pub use config::{Api, ConfigError, LlmConfig, ModelConfig, ProviderConfig};
pub use cost::{Prices, Usd};
pub use error::ProviderError;
pub use ledger::{
    check_budget, costs, record_call, BudgetExceeded, BudgetScope, Budgets, CallFor, CostQuery, CostRow,
    GroupBy,
};
pub use llm::{Completion, FailedTry, Llm, LlmError, Options};
pub use ratelimit::{Backend, Limits, RateLimiter};
pub use retry::RetryPolicy;
pub use route::{Complexity, Preference, RouteOf, Tier};
pub use secret::ApiKey;
pub use wire::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall, ToolResult, Usage};
