//! How a worker process runs: which queues, how many jobs at once, lease and timing.

use kiln_queue::{maintenance::Retention, JobKind, RetryPolicy};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// One queue served by this worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue name.
    pub name: String,
    /// Jobs of this queue this worker runs at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Most jobs taken in one claim.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_concurrency() -> usize {
    8
}
fn default_batch() -> usize {
    100
}

impl QueueConfig {
    /// `name` with default concurrency and batch size.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            concurrency: default_concurrency(),
            batch: default_batch(),
        }
    }
    /// Sets how many jobs run at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// Sets the claim batch size.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }
}

/// Settings of one worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Unique id; defaults to `host-pid-random`.
    pub id: Option<String>,
    /// The kinds this worker runs (every kind its build knows when unset). Any queue may
    /// carry any kind: the worker claims only these kinds from its queues.
    pub kinds: Option<Vec<JobKind>>,
    /// Queues and their concurrency (one queue per served kind, named after it, when empty).
    pub queues: Vec<QueueConfig>,
    /// A claimed job is this worker's for this long unless heartbeats extend it.
    #[serde(with = "secs")]
    pub lease: Duration,
    /// How often leases are extended (and cancellations polled).
    #[serde(with = "secs")]
    pub heartbeat_every: Duration,
    /// Fallback poll when no notification arrives.
    #[serde(with = "secs")]
    pub poll_every: Duration,
    /// How often this worker rescues expired leases and promotes due jobs.
    #[serde(with = "secs")]
    pub maintenance_every: Duration,
    /// Delay before a rescued job runs again.
    #[serde(with = "secs")]
    pub rescue_delay: Duration,
    /// On shutdown, running jobs get this long to finish before being handed back.
    #[serde(with = "secs")]
    pub shutdown_grace: Duration,
    /// Most completions written in one statement.
    pub completion_batch: usize,
    /// Backoff per kind (`generation`, `test`, …); kinds not named use `default_retry`.
    pub retry: HashMap<JobKind, RetryPolicy>,
    /// Backoff for kinds without their own.
    pub default_retry: RetryPolicy,
    /// How long finished jobs are kept.
    pub retention: Retention,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            kinds: None,
            queues: Vec::new(),
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(5),
            poll_every: Duration::from_secs(1),
            maintenance_every: Duration::from_secs(2),
            rescue_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
            completion_batch: 2000,
            retry: HashMap::new(),
            default_retry: RetryPolicy::default(),
            retention: Retention::default(),
        }
    }
}

impl WorkerConfig {
    /// The retry policy for `kind`.
    pub fn retry_policy(&self, kind: JobKind) -> &RetryPolicy {
        self.retry.get(&kind).unwrap_or(&self.default_retry)
    }

    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.queues.is_empty() {
            return Err("queues: name at least one queue to serve".into());
        }
        self.validate_settings()
    }

    /// Checks everything but the presence of queues (a fleet file may leave them to the
    /// registry's default: one queue per served kind).
    pub fn validate_settings(&self) -> Result<(), String> {
        if self.kinds.as_ref().is_some_and(|k| k.is_empty()) {
            return Err("kinds: name at least one kind, or leave it out to serve every kind".into());
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.concurrency == 0 || q.batch == 0 {
                return Err(format!("queues[{i}]: concurrency and batch must be at least 1"));
            }
        }
        if self.heartbeat_every >= self.lease {
            return Err("heartbeat_every: must be shorter than lease".into());
        }
        Ok(())
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}
