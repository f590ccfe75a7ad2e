//! `kiln events [--follow] [--type T] …`: the job-event outbox, one JSON object per line,
//! through the API or the database.

use std::time::Duration;

use kiln_queue::events::{self, Event, EventFilter};
use kiln_queue::{JobKind, Listener};
use tokio_util::sync::CancellationToken;

use crate::commands::Backend;

/// Arguments of `kiln events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Keep printing events as they are written (Ctrl-C stops).
    #[arg(long, short)]
    pub follow: bool,
    /// Only events of this type (`job.failed`, `pipeline.finished`, …).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only this job's events.
    #[arg(long)]
    pub job: Option<i64>,
    /// Only this pipeline's events.
    #[arg(long)]
    pub pipeline: Option<i64>,
    /// Only this queue's events.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind's events.
    #[arg(long)]
    pub kind: Option<JobKind>,
    /// Start after this event id (default: the oldest kept; with --follow and no --after, only
    /// new events).
    #[arg(long)]
    pub after: Option<i64>,
    /// Most events printed per read.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
}

/// Runs `kiln events`.
pub async fn run(backend: &Backend, args: EventsArgs) -> anyhow::Result<()> {
    let mut filter = EventFilter {
        after: args.after.unwrap_or(0),
        limit: args.limit,
        types: args.event_type.clone().map(|t| vec![t]),
        job_id: args.job,
        pipeline_id: args.pipeline,
        queue: args.queue.clone(),
        kind: args.kind.map(|k| k.to_string()),
    };
    if args.after.is_none() && args.follow {
        filter.after = last_api_id(backend).await?;
    }
    let stop = CancellationToken::new();
    let mut wake = match backend {
        Backend::Db(pool) => Some(Listener::start(pool.clone(), stop.clone()).subscribe(events::CHANNEL)),
        Backend::Api(_) => None,
    };
    loop {
        let page = read(backend, &filter).await?;
        for e in &page {
            println!("{}", serde_json::to_string(e)?);
            filter.after = e.id;
        }
        if page.len() as i64 == filter.limit {
            continue;
        }
        if !args.follow {
            break;
        }
        let nap = tokio::time::sleep(Duration::from_millis(500));
        tokio::select! {
            _ = nap => {}
            _ = async { match wake.as_mut() { Some(rx) => { let _ = rx.recv().await; } None => std::future::pending().await } } => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    stop.cancel();
    Ok(())
}

async fn read(backend: &Backend, filter: &EventFilter) -> anyhow::Result<Vec<Event>> {
    Ok(match backend {
        Backend::Db(pool) => events::list(pool, filter).await?,
        Backend::Api(c) => {
            let mut query = vec![
                ("after", filter.after.to_string()),
                ("limit", filter.limit.to_string()),
            ];
            let opt = [
                ("type", filter.types.as_ref().and_then(|t| t.first().cloned())),
                ("job", filter.job_id.map(|v| v.to_string())),
                ("pipeline", filter.pipeline_id.map(|v| v.to_string())),
                ("queue", filter.queue.clone()),
                ("kind", filter.kind.clone()),
            ];
            query.extend(opt.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            c.events(&query).await?.events
        }
    })
}

/// The newest event id, as the API reports it next to a page.
async fn last_api_id(backend: &Backend) -> anyhow::Result<i64> {
    match backend {
        Backend::Api(c) => Ok(c.events(&[("limit", "1".to_owned())]).await?.last_id),
        Backend::Db(pool) => Ok(events::last_id(pool).await?),
    }
}
