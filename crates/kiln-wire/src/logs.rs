//! `/v1/jobs/{id}/logs` shapes.

use kiln_queue::logs::{LogDrops, LogRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A page of log chunks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    /// Job id.
    pub job_id: i64,
    /// The chunks, in order.
    #[schema(value_type = Vec<crate::schema::LogChunkDoc>)]
    pub chunks: Vec<LogRecord>,
    /// Position of the last chunk returned (pass as `after`), or the one given.
    pub next: Option<String>,
    /// True when the job is final: no more chunks will come after `next`.
    pub done: bool,
    /// Per attempt, the output that went past the live-log cap: counted, not stored.
    #[serde(default)]
    #[schema(value_type = Vec<crate::schema::LogDropsDoc>)]
    pub dropped: Vec<LogDrops>,
}
