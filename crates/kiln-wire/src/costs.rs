//! `/v1/costs` shapes: what the LLM calls cost, grouped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Tokens by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCounts {
    /// Input (prompt) tokens, cache reads and writes excluded.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write: u64,
}

/// One group of a cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostGroup {
    /// The group's key: a provider, `provider/model`, an API token id (`none` for calls made
    /// without one) or a UTC day `YYYY-MM-DD`.
    pub key: String,
    /// Calls answered.
    pub calls: i64,
    /// Tokens the providers reported.
    pub tokens: TokenCounts,
    /// Exact cost in pico-USD (10^-12 USD): reported usage × configured prices.
    pub cost_pico_usd: i64,
    /// The same cost in USD (rounded to a float).
    pub cost_usd: f64,
}

/// A cost report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostReport {
    /// `provider`, `model`, `token` or `day`.
    pub group_by: String,
    /// From (inclusive).
    pub since: DateTime<Utc>,
    /// To (exclusive).
    pub until: DateTime<Utc>,
    /// Only this API token's calls, when the reader is not an admin.
    pub api_token_id: Option<i64>,
    /// The groups, sorted by key.
    pub groups: Vec<CostGroup>,
    /// All groups together (key `total`).
    pub total: CostGroup,
}

impl CostReport {
    /// Sums `groups` into a `total` group.
    pub fn total_of(groups: &[CostGroup]) -> CostGroup {
        let mut t = CostGroup {
            key: "total".into(),
            calls: 0,
            tokens: TokenCounts::default(),
            cost_pico_usd: 0,
            cost_usd: 0.0,
        };
        for g in groups {
            t.calls += g.calls;
            t.tokens.input += g.tokens.input;
            t.tokens.output += g.tokens.output;
            t.tokens.cache_read += g.tokens.cache_read;
            t.tokens.cache_write += g.tokens.cache_write;
            t.cost_pico_usd = t.cost_pico_usd.saturating_add(g.cost_pico_usd);
        }
        t.cost_usd = t.cost_pico_usd as f64 / 1e12;
        t
    }
}
