//! `/v1/costs`: what the LLM calls of generation jobs cost, from the ledger, grouped by
//! provider, model, API token or UTC day. An admin sees every call; any other reader with
//! `jobs:read` sees only the calls made for its own token.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use kiln_llm::{CostQuery, CostRow, GroupBy};
use kiln_wire::costs::{CostGroup, CostReport, TokenCounts};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::tags;
use crate::auth::{Auth, JobsRead};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::QueryParams;
use crate::AppState;

/// The routes of this group.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_costs))
}

/// Which calls to report and how to group them.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CostsQuery {
    /// `provider`, `model` (default), `token` or `day` (UTC).
    pub group_by: Option<String>,
    /// From (inclusive, RFC 3339); default: the start of the current month in UTC.
    pub since: Option<DateTime<Utc>>,
    /// To (exclusive, RFC 3339); default: now.
    pub until: Option<DateTime<Utc>>,
}

/// The first instant of `t`'s month in UTC.
pub fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// A ledger group as the API shows it.
fn group(r: CostRow) -> CostGroup {
    CostGroup {
        cost_usd: r.cost().dollars(),
        key: r.key,
        calls: r.calls,
        tokens: TokenCounts {
            input: r.tokens.input,
            output: r.tokens.output,
            cache_read: r.tokens.cache_read,
            cache_write: r.tokens.cache_write,
        },
        cost_pico_usd: r.cost_pico,
    }
}

/// Calls, tokens and exact cost of LLM calls in `[since, until)`, grouped.
#[utoipa::path(
    get, path = "/v1/costs", tag = tags::COSTS,
    params(CostsQuery),
    responses(
        (status = 200, body = CostReport),
        (status = 400, description = "A bad `group_by`, `since` or `until`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ),
    security(("bearer" = ["jobs:read"]))
)]
async fn get_costs(
    auth: Auth<JobsRead>,
    State(state): State<AppState>,
    QueryParams(q): QueryParams<CostsQuery>,
) -> ApiResult<Json<CostReport>> {
    let group_by: GroupBy = q
        .group_by
        .as_deref()
        .unwrap_or("model")
        .parse()
        .map_err(|e: kiln_llm::ledger::BadGroupBy| ApiError::bad_request("group_by", e.to_string()))?;
    let now = Utc::now();
    let since = q.since.unwrap_or_else(|| month_start(now));
    let until = q.until.unwrap_or(now);
    if since >= until {
        return Err(ApiError::bad_request(
            "until",
            format!("must be after since ({since}), got {until}"),
        ));
    }
    let query = CostQuery {
        group_by,
        since,
        until,
        api_token_id: (!auth.admin).then_some(auth.token_id),
    };
    Ok(Json(report(&state.pool, query).await?))
}

/// The cost report for `q`, as `GET /v1/costs` and `kiln costs` show it.
pub async fn report(pool: &sqlx::PgPool, q: CostQuery) -> Result<CostReport, sqlx::Error> {
    let groups: Vec<CostGroup> = kiln_llm::costs(pool, q).await?.into_iter().map(group).collect();
    Ok(CostReport {
        group_by: q.group_by.as_str().to_owned(),
        since: q.since,
        until: q.until,
        api_token_id: q.api_token_id,
        total: CostReport::total_of(&groups),
        groups,
    })
}
