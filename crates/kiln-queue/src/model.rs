//! The job model: kinds, states, attempt outcomes and the rows Kiln reads back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

use crate::error::QueueError;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// How many values there are (array sizes indexed by `value as usize`).
            pub const COUNT: usize = $name::ALL.len();

            /// The name used in the database, the API and the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown value {other:?}, expected one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum! {
    /// What a job does; each kind has its own handler and payload type.
    JobKind {
        /// Produce code with an LLM.
        Generation = "generation",
        /// Run a workspace's tests.
        Test = "test",
        /// Run linters.
        Lint = "lint",
        /// Run security scanners.
        SecurityScan = "security-scan",
        /// Serve the app for a while.
        Preview = "preview",
        /// Deliver an event to a webhook or chat.
        Notification = "notification",
    }
}

text_enum! {
    /// Where a job is in its life. `Succeeded`, `Failed` and `Cancelled` are final.
    JobState {
        /// Waits for its parent jobs.
        Pending = "pending",
        /// Waits for its `run_at`.
        Scheduled = "scheduled",
        /// Ready to be claimed.
        Available = "available",
        /// Leased by a worker.
        Running = "running",
        /// Finished well.
        Succeeded = "succeeded",
        /// Failed an attempt; runs again after a backoff.
        Retryable = "retryable",
        /// Out of attempts (or failed for good): the dead-letter state, re-runnable by hand.
        Failed = "failed",
        /// Cancelled by request.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// How one attempt ended.
    AttemptOutcome {
        /// The handler returned success.
        Succeeded = "succeeded",
        /// The handler returned an error.
        Failed = "failed",
        /// The job ran past its timeout and was stopped.
        TimedOut = "timed_out",
        /// The worker vanished; the rescuer took the job back.
        Lost = "lost",
        /// Cancelled while running.
        Cancelled = "cancelled",
        /// The worker shut down and handed the job back without spending the attempt.
        Interrupted = "interrupted",
    }
}

impl JobState {
    /// True for `succeeded`, `failed` and `cancelled`.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

pub(crate) fn parse_column<T: FromStr>(column: &'static str, value: &str) -> Result<T, QueueError> {
    value.parse().map_err(|_| QueueError::Decode {
        column,
        value: value.to_owned(),
    })
}

/// A job as handed to a worker by a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// Queue it was claimed from.
    pub queue: String,
    /// What it does.
    pub kind: JobKind,
    /// Kind-specific input.
    pub payload: serde_json::Value,
    /// Higher runs first.
    pub priority: i16,
    /// This try's number, starting at 1.
    pub attempt: i32,
    /// Tries allowed in all.
    pub max_attempts: i32,
    /// Wall-clock limit of one attempt, in milliseconds.
    pub timeout_ms: i32,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// The pipeline this job belongs to, if any.
    pub pipeline_id: Option<i64>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When this attempt began.
    pub attempted_at: DateTime<Utc>,
    /// When it became runnable (its `run_at`): the wait-time histogram measures from here.
    pub run_at: DateTime<Utc>,
}

/// A job as stored, for inspection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id.
    pub id: i64,
    /// Queue name.
    pub queue: String,
    /// What it does.
    pub kind: JobKind,
    /// Where it is in its life.
    pub state: JobState,
    /// Kind-specific input.
    pub payload: serde_json::Value,
    /// Higher runs first.
    pub priority: i16,
    /// Not before this time.
    pub run_at: DateTime<Utc>,
    /// Tries made (or begun) so far.
    pub attempt: i32,
    /// Tries allowed.
    pub max_attempts: i32,
    /// Per-attempt wall-clock limit in milliseconds.
    pub timeout_ms: i32,
    /// Deduplication key while live.
    pub unique_key: Option<String>,
    /// Same-request key.
    pub idempotency_key: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Pipeline, if any.
    pub pipeline_id: Option<i64>,
    /// Parent jobs that must succeed first.
    pub depends_on: Vec<i64>,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Last attempt began at.
    pub attempted_at: Option<DateTime<Utc>>,
    /// Set exactly when the state is final.
    pub finalized_at: Option<DateTime<Utc>>,
    /// Worker holding the lease, while running.
    pub locked_by: Option<String>,
    /// Lease end, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Cancellation was asked at.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Typed result of the last successful attempt.
    pub result: Option<serde_json::Value>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
}

/// One try of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Row id.
    pub id: i64,
    /// The job.
    pub job_id: i64,
    /// Attempt number (an `interrupted` try shares its number with the next one).
    pub attempt: i32,
    /// Worker that ran it.
    pub worker_id: String,
    /// Began at.
    pub started_at: DateTime<Utc>,
    /// Ended at.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Error text, if any.
    pub error: Option<String>,
    /// Result recorded by this attempt.
    pub result: Option<serde_json::Value>,
    /// What the attempt's kind reported, as that kind shapes it (for validation: the sandbox
    /// report, [`AttemptDetails`]; empty when the kind reported nothing). Stored as the row's
    /// `details` JSON; shown flattened into the attempt, as the API always has, so a kind's
    /// keys must not reuse an attempt field's name.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AttemptRecord {
    /// The unified diff the attempt recorded, for kinds that change code (`details.diff`).
    pub fn diff(&self) -> Option<&str> {
        self.details.get("diff")?.as_str()
    }

    /// The details read as a sandbox report (validation's shape); `None` when they are not one.
    pub fn sandbox_details(&self) -> Option<AttemptDetails> {
        serde_json::from_value(serde_json::Value::Object(self.details.clone())).ok()
    }

    /// `(files, insertions, deletions)` of the attempt's diff, when recorded.
    pub fn diff_counts(&self) -> Option<(i64, i64, i64)> {
        let n = |k: &str| self.details.get(k).and_then(|v| v.as_i64());
        Some((n("diff_files")?, n("diff_insertions")?, n("diff_deletions")?))
    }
}

/// What a sandboxed attempt left behind: the details kinds that run a container (validation)
/// store on their attempts, as JSON with these fields (absent ones left out). A kind that
/// changes code puts its unified diff under `diff`, with `diff_files`, `diff_insertions` and
/// `diff_deletions`: the API's and CLI's diff views read those keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttemptDetails {
    /// Process exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Container that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Image it ran in (`sha256:…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Peak memory of the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<i64>,
    /// CPU time used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<i64>,
    /// First part of stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_head: Option<String>,
    /// Last part of stdout (when it did not fit in the head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_tail: Option<String>,
    /// First part of stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_head: Option<String>,
    /// Last part of stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// Unified diff of what the attempt changed in its workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Files the diff touches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_files: Option<i32>,
    /// Lines added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_insertions: Option<i32>,
    /// Lines removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_deletions: Option<i32>,
    /// Named phase durations in milliseconds (e.g. container start, run, readback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<serde_json::Value>,
}

impl AttemptDetails {
    /// These details as the JSON stored on the attempt (absent fields left out).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("attempt details serialise")
    }
}
