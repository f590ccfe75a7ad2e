//! The load: jobs enqueued through the API in batches, each batch under an idempotency key
//! and retried until the API answers, so a batch whose reply was lost (the API or Postgres
//! restarting under it) is accepted exactly once. A job is "accepted" when its id came back.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Jobs per API batch.
const BATCH: usize = 250;
/// How long one batch is retried before the run gives up.
const BATCH_PATIENCE: Duration = Duration::from_secs(300);

/// What to enqueue.
pub struct Plan {
    /// Jobs in all.
    pub jobs: usize,
    /// The workspace whose result is cached: a job on it runs no container.
    pub cached: String,
    /// Workspaces never validated before: a job on one runs a container (one per workspace).
    pub fresh: Vec<String>,
    /// Job `i` runs a container when `i % container_every == 0`.
    pub container_every: usize,
    /// Attempts per job (faults spend attempts: a killed worker's job comes back `lost`).
    pub max_attempts: u32,
}

impl Plan {
    fn job(&self, i: usize) -> Value {
        let workspace = if i.is_multiple_of(self.container_every) {
            &self.fresh[(i / self.container_every) % self.fresh.len()]
        } else {
            &self.cached
        };
        json!({
            "kind": "lint",
            "queue": "lint",
            "payload": {"workspace": workspace},
            "max_attempts": self.max_attempts,
            "tags": ["chaos"],
        })
    }
}

/// Shared state of the enqueuer: accepted ids, and whether it has finished.
#[derive(Default)]
pub struct Accepted {
    ids: Mutex<Vec<i64>>,
    count: AtomicU64,
    /// Batches that needed more than one request.
    pub retried_batches: AtomicU64,
}

impl Accepted {
    /// Number of jobs accepted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Every accepted id.
    pub fn ids(&self) -> Vec<i64> {
        self.ids.lock().expect("ids lock").clone()
    }
}

/// Enqueues the plan through `POST /v1/jobs/batch`, keeping at most `backlog` accepted jobs
/// unfinished (`finished()` reads the count of final ones), so the load lasts the whole run.
pub async fn enqueue(
    api_url: &str,
    token: &str,
    run: &str,
    plan: &Plan,
    accepted: Arc<Accepted>,
    backlog: u64,
    finished: impl Fn() -> u64,
) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut i = 0;
    let mut batch_no = 0;
    while i < plan.jobs {
        while accepted.count().saturating_sub(finished()) > backlog {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = BATCH.min(plan.jobs - i);
        let jobs: Vec<Value> = (i..i + n).map(|k| plan.job(k)).collect();
        let key = format!("{run}-batch-{batch_no}");
        let ids = send_batch(&client, api_url, token, &key, &json!({ "jobs": jobs }), &accepted).await?;
        if ids.len() != n {
            bail!("batch {batch_no}: {n} jobs sent, {} ids back", ids.len());
        }
        accepted.ids.lock().expect("ids lock").extend(&ids);
        accepted.count.fetch_add(n as u64, Ordering::AcqRel);
        i += n;
        batch_no += 1;
    }
    Ok(())
}

/// Posts one batch until the API accepts it; a refusal (4xx) ends the run.
async fn send_batch(
    client: &reqwest::Client,
    api_url: &str,
    token: &str,
    key: &str,
    body: &Value,
    accepted: &Accepted,
) -> Result<Vec<i64>> {
    let started = Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let sent = client
            .post(format!("{api_url}/v1/jobs/batch"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.context("the batch reply is not JSON")?;
                if tries > 1 {
                    accepted.retried_batches.fetch_add(1, Ordering::Relaxed);
                }
                return v["jobs"]
                    .as_array()
                    .context("the batch reply has no jobs")?
                    .iter()
                    .map(|j| j["id"].as_i64().context("a job without an id"))
                    .collect();
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                let status = r.status();
                bail!(
                    "the API refused batch {key}: {status} {}",
                    r.text().await.unwrap_or_default()
                );
            }
            Ok(r) => format!("{}", r.status()),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > BATCH_PATIENCE {
            bail!("batch {key} not accepted within {BATCH_PATIENCE:?}: {why}");
        }
        tracing::debug!(key, tries, why, "batch not accepted yet; sending it again");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(tries.min(10)))).await;
    }
}
