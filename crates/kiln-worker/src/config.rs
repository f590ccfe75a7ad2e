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
    /// Workspace quota of this queue's sandboxed jobs, in bytes (the sandbox's default,
    /// 1 GiB, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_quota_bytes: Option<u64>,
    /// Workspace quota of this queue's sandboxed jobs, in files, directories and links (the
    /// sandbox's default, 100,000, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_quota_files: Option<u64>,
}

/// Smallest and largest workspace quota in bytes a queue may set (the quota's tmpfs pages
/// count in the job's memory cgroup, so it stays within what a host can hold).
pub const WORKSPACE_QUOTA_BYTES: std::ops::RangeInclusive<u64> = (1 << 20)..=(256 << 30);
/// Smallest and largest workspace quota in files a queue may set.
pub const WORKSPACE_QUOTA_FILES: std::ops::RangeInclusive<u64> = 16..=100_000_000;
/// Smallest and largest per-attempt live-log cap (room for Kiln's own "cap reached" line).
pub const LIVE_LOG_CAP_BYTES: std::ops::RangeInclusive<u64> = (4 << 10)..=(1 << 30);
/// The default per-attempt live-log cap: 8 MiB.
pub const DEFAULT_LIVE_LOG_CAP_BYTES: u64 = kiln_queue::logs::DEFAULT_LIVE_LOG_CAP;

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
            workspace_quota_bytes: None,
            workspace_quota_files: None,
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
    /// Sets the workspace quota of this queue's sandboxed jobs (bytes, files).
    pub fn workspace_quota(mut self, bytes: u64, files: u64) -> Self {
        self.workspace_quota_bytes = Some(bytes);
        self.workspace_quota_files = Some(files);
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
    /// Bytes of live log stored per attempt; what goes past is counted, not stored.
    pub live_log_cap_bytes: u64,
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
            live_log_cap_bytes: DEFAULT_LIVE_LOG_CAP_BYTES,
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
            if let Some(b) = q
                .workspace_quota_bytes
                .filter(|b| !WORKSPACE_QUOTA_BYTES.contains(b))
            {
                return Err(format!(
                    "queues[{i}].workspace_quota_bytes: {b} is outside {}..={}",
                    WORKSPACE_QUOTA_BYTES.start(),
                    WORKSPACE_QUOTA_BYTES.end()
                ));
            }
            if let Some(f) = q
                .workspace_quota_files
                .filter(|f| !WORKSPACE_QUOTA_FILES.contains(f))
            {
                return Err(format!(
                    "queues[{i}].workspace_quota_files: {f} is outside {}..={}",
                    WORKSPACE_QUOTA_FILES.start(),
                    WORKSPACE_QUOTA_FILES.end()
                ));
            }
        }
        if !LIVE_LOG_CAP_BYTES.contains(&self.live_log_cap_bytes) {
            return Err(format!(
                "live_log_cap_bytes: {} is outside {}..={}",
                self.live_log_cap_bytes,
                LIVE_LOG_CAP_BYTES.start(),
                LIVE_LOG_CAP_BYTES.end()
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> WorkerConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn queue_quotas_and_the_live_log_cap_are_read_and_default() {
        let c = parse(
            "live_log_cap_bytes = 65536\n[[queues]]\nname = \"small\"\nworkspace_quota_bytes = 16777216\nworkspace_quota_files = 500\n[[queues]]\nname = \"test\"\n",
        );
        assert_eq!(c.live_log_cap_bytes, 65536);
        assert_eq!(
            (
                c.queues[0].workspace_quota_bytes,
                c.queues[0].workspace_quota_files
            ),
            (Some(16 << 20), Some(500))
        );
        assert_eq!(
            (
                c.queues[1].workspace_quota_bytes,
                c.queues[1].workspace_quota_files
            ),
            (None, None)
        );
        assert!(c.validate().is_ok());
        assert_eq!(parse("").live_log_cap_bytes, 8 << 20);
    }

    #[test]
    fn bad_quotas_and_caps_are_named_by_key() {
        let err = |text: &str| parse(text).validate().unwrap_err();
        let e = err("[[queues]]\nname = \"a\"\n[[queues]]\nname = \"b\"\nworkspace_quota_bytes = 10\n");
        assert!(
            e.starts_with("queues[1].workspace_quota_bytes: 10 is outside"),
            "{e}"
        );
        let e = err("[[queues]]\nname = \"a\"\nworkspace_quota_files = 0\n");
        assert!(
            e.starts_with("queues[0].workspace_quota_files: 0 is outside"),
            "{e}"
        );
        let e = err("live_log_cap_bytes = 100\n[[queues]]\nname = \"a\"\n");
        assert!(e.starts_with("live_log_cap_bytes: 100 is outside"), "{e}");
        let e = toml::from_str::<WorkerConfig>("[[queues]]\nname = \"a\"\nworkspace_quota = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workspace_quota"), "{e}");
    }
}
