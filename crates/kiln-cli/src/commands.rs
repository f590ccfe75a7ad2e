//! The client commands — `kiln enqueue`, `kiln jobs …`, `kiln queues …` — over either
//! backend: the HTTP API when `--api` / `KILN_API_URL` is set, else the database directly.

use anyhow::Context;
use kiln_queue::logs::LogRecord;
use kiln_queue::views::{self, ListParams};
use kiln_queue::{admin, JobRecord, JobSpec};
use kiln_wire::jobs::JobDiff;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use crate::client::ApiClient;

/// Where the commands go.
pub enum Backend {
    /// The database, directly.
    Db(PgPool),
    /// The HTTP API.
    Api(ApiClient),
}

/// `kiln enqueue`.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// The job as JSON (the fields of `JobSpec`), e.g. '{"kind": "test", "priority": 5}', or
    /// a JSON array of jobs, enqueued all or none.
    pub job: String,
    /// Repeats with the same key return the same job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `kiln jobs …`.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List(ListArgs),
    /// Print a job and its attempts as JSON.
    Show { id: i64 },
    /// Print a job's logs; --follow tails them until the job is final.
    Logs {
        id: i64,
        #[arg(long, short)]
        follow: bool,
    },
    /// Print the diff of the job's latest attempt that recorded one.
    Diff { id: i64 },
    /// Cancel a job (a running one is stopped by its worker).
    Cancel { id: i64 },
    /// Run a finished job again.
    Retry { id: i64 },
}

/// Filters of `kiln jobs list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only these states, comma-separated.
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Page size (1 to 500).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// The cursor printed after the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `kiln queues …`.
#[derive(Debug, clap::Subcommand)]
pub enum QueuesCommand {
    /// Jobs per queue and state.
    List,
    /// Stop claiming from a queue across the fleet.
    Pause { name: String },
    /// Resume a paused queue.
    Resume { name: String },
}

/// `kiln enqueue`: prints `{"id": …, "created": …}` (one line per job for an array).
pub async fn enqueue(backend: &Backend, args: EnqueueArgs) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_str(&args.job).context("the job argument is not JSON")?;
    if let serde_json::Value::Array(items) = value {
        let out: Vec<kiln_wire::jobs::EnqueuedJob> = match backend {
            Backend::Api(c) => c.enqueue_batch(&items).await?.jobs,
            Backend::Db(pool) => {
                let mut specs: Vec<JobSpec> = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    specs.push(serde_json::from_value(item).with_context(|| format!("job [{i}]"))?);
                }
                let jobs = kiln_kinds::new_jobs(specs).map_err(|e| anyhow::anyhow!("{e}"))?;
                kiln_queue::enqueue_many(pool, &jobs)
                    .await?
                    .into_iter()
                    .map(kiln_wire::jobs::EnqueuedJob::from)
                    .collect()
            }
        };
        for e in out {
            println!("{}", serde_json::to_string(&e)?);
        }
        return Ok(());
    }
    let out = match backend {
        Backend::Api(c) => c.enqueue(&value, args.idempotency_key.as_deref()).await?,
        Backend::Db(pool) => {
            let spec: JobSpec = serde_json::from_value(value).context("the job argument")?;
            let mut job = kiln_kinds::new_job(spec).map_err(|e| anyhow::anyhow!("the job argument: {e}"))?;
            if let Some(k) = args.idempotency_key {
                job.idempotency_key = Some(k);
            }
            kiln_queue::enqueue(pool, &job).await?.into()
        }
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// The `kiln jobs list` flag standing for a listing field.
fn flag_of(field: &str) -> &str {
    match field {
        "created_after" => "since",
        "created_before" => "until",
        f => f,
    }
}

async fn list(backend: &Backend, a: ListArgs) -> anyhow::Result<()> {
    let (jobs, next): (Vec<JobRecord>, Option<String>) = match backend {
        Backend::Api(c) => {
            let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
            for (k, v) in [
                ("queue", &a.queue),
                ("kind", &a.kind),
                ("state", &a.state),
                ("tag", &a.tag),
                ("created_after", &a.since),
                ("created_before", &a.until),
                ("cursor", &a.cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v.clone()));
                }
            }
            let page = c.list(&q).await?;
            (page.jobs, page.next_cursor)
        }
        Backend::Db(pool) => {
            let req = ListParams {
                queue: a.queue,
                kind: a.kind,
                state: a.state,
                tag: a.tag,
                created_after: a.since,
                created_before: a.until,
                pipeline_id: None,
                limit: Some(a.limit),
                cursor: a.cursor,
            }
            .parse()
            .map_err(|e| anyhow::anyhow!("--{}: {}", flag_of(&e.field), e.message))?;
            let jobs = kiln_queue::list::list_jobs(pool, &req.filter, req.before, req.limit).await?;
            let next = (jobs.len() as i64 == req.limit)
                .then(|| jobs.last().map(|j| j.id.to_string()))
                .flatten();
            (jobs, next)
        }
    };
    println!(
        "{:>10}  {:<16} {:<14} {:<10} {:>7}  CREATED",
        "ID", "QUEUE", "KIND", "STATE", "ATTEMPT"
    );
    for j in &jobs {
        println!(
            "{:>10}  {:<16} {:<14} {:<10} {:>3}/{:<3}  {}",
            j.id,
            j.queue,
            j.kind.as_str(),
            j.state.as_str(),
            j.attempt,
            j.max_attempts,
            j.created_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    if let Some(n) = next {
        eprintln!("more: --cursor {n}");
    }
    Ok(())
}

fn print_chunk(c: &LogRecord) {
    // The bytes exactly as the job wrote them.
    let bytes = c.bytes();
    let out = if c.stream == "stderr" {
        let mut e = std::io::stderr().lock();
        e.write_all(&bytes)
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&bytes).and_then(|_| o.flush())
    };
    let _ = out;
}

/// Says on stderr how much output of each attempt went past the live-log cap.
fn print_drops(drops: &[kiln_queue::logs::LogDrops]) {
    for d in drops {
        eprintln!(
            "kiln: attempt {}: {} bytes of output ({} chunks) past the live-log cap of {} bytes were counted, not stored",
            d.attempt, d.dropped_bytes, d.dropped_chunks, d.cap_bytes
        );
    }
}

async fn logs(backend: &Backend, id: i64, follow: bool) -> anyhow::Result<()> {
    match backend {
        Backend::Api(c) if follow => {
            let (state, drops) = c.follow_logs(id, print_chunk).await?;
            print_drops(&drops);
            eprintln!("job {id} is {state}");
        }
        Backend::Api(c) => {
            let mut after: Option<String> = None;
            loop {
                let page = c.logs(id, after.as_deref()).await?;
                page.chunks.iter().for_each(print_chunk);
                if page.chunks.is_empty() {
                    print_drops(&page.dropped);
                    break;
                }
                after = page.next;
            }
        }
        Backend::Db(pool) => {
            let mut after = None;
            loop {
                let job = admin::get_job(pool, id).await?;
                loop {
                    let chunks = kiln_queue::logs::read(pool, id, after, 500).await?;
                    chunks.iter().for_each(print_chunk);
                    match chunks.last() {
                        Some(c) => after = Some((c.attempt, c.seq)),
                        None => break,
                    }
                }
                if !follow || job.state.is_final() {
                    print_drops(&kiln_queue::logs::drops(pool, id).await?);
                    if follow {
                        eprintln!("job {id} is {}", job.state);
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}

async fn diff(backend: &Backend, id: i64) -> anyhow::Result<()> {
    let d: JobDiff = match backend {
        Backend::Api(c) => c.diff(id).await?,
        Backend::Db(pool) => admin::latest_diff(pool, id).await?,
    };
    match (d.attempt, d.diff) {
        (Some(attempt), Some(text)) => {
            eprintln!(
                "attempt {attempt}: {} files, +{} -{}",
                d.files.unwrap_or(0),
                d.insertions.unwrap_or(0),
                d.deletions.unwrap_or(0)
            );
            print!("{text}");
        }
        _ => eprintln!("job {id} has no diff"),
    }
    Ok(())
}

/// `kiln jobs …`.
pub async fn jobs(backend: &Backend, cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List(a) => list(backend, a).await?,
        JobsCommand::Show { id } => {
            let detail = match backend {
                Backend::Api(c) => c.job(id).await?,
                Backend::Db(pool) => views::job_with_attempts(pool, id, None).await?.into(),
            };
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        JobsCommand::Logs { id, follow } => logs(backend, id, follow).await?,
        JobsCommand::Diff { id } => diff(backend, id).await?,
        JobsCommand::Cancel { id } => {
            let state = match backend {
                Backend::Api(c) => c.cancel(id).await?.state,
                Backend::Db(pool) => admin::cancel(pool, id).await?,
            };
            println!("{state}");
        }
        JobsCommand::Retry { id } => {
            match backend {
                Backend::Api(c) => {
                    c.retry(id).await?;
                }
                Backend::Db(pool) => admin::retry(pool, id).await?,
            }
            println!("available");
        }
    }
    Ok(())
}

/// `kiln queues …`.
pub async fn queues(backend: &Backend, cmd: QueuesCommand) -> anyhow::Result<()> {
    match cmd {
        QueuesCommand::List => {
            let rows: Vec<(String, bool, BTreeMap<String, i64>)> = match backend {
                Backend::Api(c) => c
                    .queues()
                    .await?
                    .queues
                    .into_iter()
                    .map(|q| (q.name, q.paused, q.counts))
                    .collect(),
                Backend::Db(pool) => views::queues(pool)
                    .await?
                    .into_iter()
                    .map(|q| (q.name, q.paused, q.counts))
                    .collect(),
            };
            for (name, paused, counts) in rows {
                let paused = if paused { " (paused)" } else { "" };
                let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{s}={n}")).collect();
                println!("{name:<24} {}{paused}", counts.join(" "));
            }
        }
        QueuesCommand::Pause { name } | QueuesCommand::Resume { name } if name.is_empty() => {
            anyhow::bail!("the queue name is empty")
        }
        QueuesCommand::Pause { name } => {
            let s = match backend {
                Backend::Api(c) => c.set_paused(&name, true).await?.paused,
                Backend::Db(pool) => admin::pause(pool, &name).await?.paused,
            };
            println!("{name}: {}", if s { "paused" } else { "running" });
        }
        QueuesCommand::Resume { name } => {
            let s = match backend {
                Backend::Api(c) => c.set_paused(&name, false).await?.paused,
                Backend::Db(pool) => admin::resume(pool, &name).await?.paused,
            };
            println!("{name}: {}", if s { "paused" } else { "running" });
        }
    }
    Ok(())
}
