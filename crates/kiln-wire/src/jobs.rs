//! `/v1/jobs` shapes: enqueue (one or a batch), a job with its attempts, pages, operator replies.

use kiln_queue::{AttemptRecord, JobRecord, JobSpec, JobState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What became of a requested job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnqueuedJob {
    /// The job standing for the request.
    pub id: i64,
    /// False when an existing job was returned (same idempotency key, or a live job holds the
    /// unique key).
    pub created: bool,
}

/// A batch of jobs, enqueued all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The jobs (1 to 10,000).
    #[schema(value_type = Vec<crate::schema::JobSpecDoc>, min_items = 1, max_items = 10000)]
    pub jobs: Vec<JobSpec>,
}

/// The outcome of a batch, one entry per requested job, in order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One per requested job.
    pub jobs: Vec<EnqueuedJob>,
}

/// Largest attempt diff shown inline in `GET /v1/jobs/{id}`; larger ones are left out (their
/// counts stay) and read from `GET /v1/jobs/{id}/diff`.
pub const INLINE_DIFF_BYTES: usize = 64 * 1024;

/// A job with its attempts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    /// The job.
    #[schema(value_type = crate::schema::JobDoc)]
    pub job: JobRecord,
    /// Its attempts, oldest first.
    #[schema(value_type = Vec<crate::schema::AttemptDoc>)]
    pub attempts: Vec<AttemptRecord>,
    /// Fields left out because of their size (`attempts[1].diff`, over 64 KiB): read
    /// diffs from `GET /v1/jobs/{id}/diff` and logs from `GET /v1/jobs/{id}/logs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// Newest first. The page ends early (with a `next_cursor`) once the jobs' payloads and
    /// results add up to the API's cap (4 MiB by default); it always holds at least one job.
    #[schema(value_type = Vec<crate::schema::JobDoc>)]
    pub jobs: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A job's state after an operator action.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobStateReply {
    /// Job id.
    pub id: i64,
    /// Its state now (`running` while a cancelled job's worker stops it).
    #[schema(value_type = crate::schema::JobState)]
    pub state: JobState,
}

/// The diff of a job's latest attempt that recorded one (`kiln_queue::admin::JobDiff`).
pub use kiln_queue::admin::JobDiff;

impl From<kiln_queue::views::JobWithAttempts> for JobDetail {
    fn from(j: kiln_queue::views::JobWithAttempts) -> Self {
        JobDetail {
            job: j.job,
            attempts: j.attempts,
            omitted: j.omitted,
        }
    }
}

impl From<kiln_queue::Enqueued> for EnqueuedJob {
    fn from(e: kiln_queue::Enqueued) -> Self {
        EnqueuedJob {
            id: e.id,
            created: e.created,
        }
    }
}
