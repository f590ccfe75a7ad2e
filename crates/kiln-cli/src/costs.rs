//! `kiln costs [--group-by G] [--since T] [--until T] [--json]`: what LLM calls cost, from the
//! ledger, through the API (the token's own calls unless it is an admin) or the database.

use chrono::{DateTime, Utc};
use kiln_api::routes::costs::{month_start, report};
use kiln_llm::{CostQuery, GroupBy};
use kiln_wire::costs::CostReport;

use crate::commands::Backend;

/// How to group a cost report.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Group {
    /// By provider.
    Provider,
    /// By `provider/model`.
    Model,
    /// By API token id (`none`: calls made without one).
    Token,
    /// By UTC day.
    Day,
}

impl From<Group> for GroupBy {
    fn from(g: Group) -> Self {
        match g {
            Group::Provider => GroupBy::Provider,
            Group::Model => GroupBy::Model,
            Group::Token => GroupBy::Token,
            Group::Day => GroupBy::Day,
        }
    }
}

/// Arguments of `kiln costs`.
#[derive(Debug, clap::Args)]
pub struct CostsArgs {
    /// How to group the calls.
    #[arg(long, value_enum, default_value = "model")]
    pub group_by: Group,
    /// From (inclusive, RFC 3339, e.g. 2026-11-01T00:00:00Z); default: the start of this month
    /// in UTC.
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// To (exclusive, RFC 3339); default: now.
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kiln costs`.
pub async fn run(backend: &Backend, args: CostsArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let since = args.since.unwrap_or_else(|| month_start(now));
    let until = args.until.unwrap_or(now);
    if since >= until {
        anyhow::bail!("--until ({until}) must be after --since ({since})");
    }
    let group_by = GroupBy::from(args.group_by);
    let r: CostReport = match backend {
        Backend::Db(pool) => {
            let q = CostQuery {
                group_by,
                since,
                until,
                api_token_id: None,
            };
            report(pool, q).await?
        }
        Backend::Api(api) => {
            let q = [
                ("group_by", group_by.as_str().to_owned()),
                ("since", since.to_rfc3339()),
                ("until", until.to_rfc3339()),
            ];
            api.costs(&q).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    print!("{}", table(&r));
    Ok(())
}

/// The report as an aligned text table with a total line.
fn table(r: &CostReport) -> String {
    let mut out = format!(
        "{:<32} {:>7} {:>12} {:>12} {:>12} {:>12} {:>14}\n",
        r.group_by, "calls", "input", "output", "cache_read", "cache_write", "cost_usd"
    );
    for g in r.groups.iter().chain(std::iter::once(&r.total)) {
        out.push_str(&format!(
            "{:<32} {:>7} {:>12} {:>12} {:>12} {:>12} {:>14.6}\n",
            g.key,
            g.calls,
            g.tokens.input,
            g.tokens.output,
            g.tokens.cache_read,
            g.tokens.cache_write,
            g.cost_usd
        ));
    }
    out
}
