//! The cost ledger: a row per answered call, budget checks before a call, and cost reports.

use crate::cost::Usd;
use crate::wire::Usage;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::str::FromStr;

const RECORD_SQL: &str = include_str!("sql/record_call.sql");
const SPENT_SQL: &str = include_str!("sql/spent.sql");
const COSTS_SQL: &str = include_str!("sql/costs.sql");

/// Who a call is made for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallFor {
    /// The pipeline the call belongs to.
    pub pipeline_id: Option<i64>,
    /// The job making the call.
    pub job_id: Option<i64>,
    /// The API token that submitted the work.
    pub api_token_id: Option<i64>,
}

/// Spending limits for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Per pipeline (default $10).
    pub pipeline: Usd,
    /// Per API token per calendar month in UTC (default $500).
    pub token_monthly: Usd,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            pipeline: Usd(10 * Usd::SCALE),
            token_monthly: Usd(500 * Usd::SCALE),
        }
    }
}

/// Which budget refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// The pipeline's `budget_usd`.
    Pipeline,
    /// The API token's monthly budget.
    ApiToken,
}

/// A call refused before it was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{scope:?} budget {limit} would be exceeded: spent {spent}, this call may cost up to {worst_case}")]
pub struct BudgetExceeded {
    /// The budget that refused.
    pub scope: BudgetScope,
    /// Already spent in that scope.
    pub spent: Usd,
    /// The limit.
    pub limit: Usd,
    /// The call's worst case.
    pub worst_case: Usd,
}

/// Budget check failures.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A budget refuses the call.
    #[error(transparent)]
    Exceeded(#[from] BudgetExceeded),
    /// The ledger could not be read.
    #[error("cost ledger: {0}")]
    Database(#[from] sqlx::Error),
}

/// Refuses a call whose worst case would take the pipeline or the token over its budget.
pub async fn check_budget(
    pool: &PgPool,
    who: CallFor,
    budgets: Budgets,
    worst_case: Usd,
) -> Result<(), BudgetError> {
    let (pipeline, token): (i64, i64) = sqlx::query_as(SPENT_SQL)
        .bind(who.pipeline_id)
        .bind(who.api_token_id)
        .fetch_one(pool)
        .await?;
    let over = |spent: i64, limit: Usd| spent.saturating_add(worst_case.0) > limit.0;
    if who.pipeline_id.is_some() && over(pipeline, budgets.pipeline) {
        return Err(BudgetExceeded {
            scope: BudgetScope::Pipeline,
            spent: Usd(pipeline),
            limit: budgets.pipeline,
            worst_case,
        }
        .into());
    }
    if who.api_token_id.is_some() && over(token, budgets.token_monthly) {
        return Err(BudgetExceeded {
            scope: BudgetScope::ApiToken,
            spent: Usd(token),
            limit: budgets.token_monthly,
            worst_case,
        }
        .into());
    }
    Ok(())
}

/// One answered call for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Reported usage.
    pub usage: Usage,
    /// Its exact cost.
    pub cost: Usd,
    /// Who it was for.
    pub who: CallFor,
}

/// Writes a ledger row; returns its id.
pub async fn record_call(pool: &PgPool, call: &CallRecord<'_>) -> Result<i64, sqlx::Error> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query_scalar(RECORD_SQL)
        .bind(call.provider)
        .bind(call.model)
        .bind(n(call.usage.input))
        .bind(n(call.usage.output))
        .bind(n(call.usage.cache_read))
        .bind(n(call.usage.cache_write))
        .bind(call.cost.0)
        .bind(call.who.pipeline_id)
        .bind(call.who.job_id)
        .bind(call.who.api_token_id)
        .fetch_one(pool)
        .await
}

/// How [`costs`] groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// By provider name.
    Provider,
    /// By `provider/model`.
    Model,
    /// By API token id (`none` for calls without one).
    Token,
    /// By UTC day, `YYYY-MM-DD`.
    Day,
}

/// An unknown `group_by`.
#[derive(Debug, thiserror::Error)]
#[error("group_by must be one of provider, model, token, day (got {0:?})")]
pub struct BadGroupBy(pub String);

impl FromStr for GroupBy {
    type Err = BadGroupBy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "provider" => Ok(GroupBy::Provider),
            "model" => Ok(GroupBy::Model),
            "token" => Ok(GroupBy::Token),
            "day" => Ok(GroupBy::Day),
            other => Err(BadGroupBy(other.to_string())),
        }
    }
}

impl GroupBy {
    /// The name `group_by` takes in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Provider => "provider",
            GroupBy::Model => "model",
            GroupBy::Token => "token",
            GroupBy::Day => "day",
        }
    }
}

/// One group of a cost report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostRow {
    /// The group's key.
    pub key: String,
    /// Calls in the group.
    pub calls: i64,
    /// Tokens by type.
    pub tokens: Usage,
    /// Exact cost in pico-USD.
    pub cost_pico: i64,
}

impl CostRow {
    /// The cost as a [`Usd`].
    pub fn cost(&self) -> Usd {
        Usd(self.cost_pico)
    }
}

/// Which calls a cost report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostQuery {
    /// How to group.
    pub group_by: GroupBy,
    /// From (inclusive).
    pub since: DateTime<Utc>,
    /// To (exclusive).
    pub until: DateTime<Utc>,
    /// Only the calls made for this API token (None: every call).
    pub api_token_id: Option<i64>,
}

/// Calls, tokens and cost in `[since, until)` by `group_by`, of one API token or all.
pub async fn costs(pool: &PgPool, q: CostQuery) -> Result<Vec<CostRow>, sqlx::Error> {
    type Row = (String, i64, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(COSTS_SQL)
        .bind(q.group_by.as_str())
        .bind(q.since)
        .bind(q.until)
        .bind(q.api_token_id)
        .fetch_all(pool)
        .await?;
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(
            |(key, calls, input, output, cache_read, cache_write, cost_pico)| CostRow {
                key,
                calls,
                tokens: Usage {
                    input: u(input),
                    output: u(output),
                    cache_read: u(cache_read),
                    cache_write: u(cache_write),
                },
                cost_pico,
            },
        )
        .collect())
}
