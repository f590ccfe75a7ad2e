//! `/v1/queues` shapes: counts by state and settings.

use kiln_queue::admin;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A queue's settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueSettingsView {
    /// Queue name.
    pub name: String,
    /// Paused fleet-wide.
    pub paused: bool,
    /// Fleet-wide cap.
    pub max_running: Option<i32>,
}

impl From<admin::QueueSettings> for QueueSettingsView {
    fn from(s: admin::QueueSettings) -> Self {
        QueueSettingsView {
            name: s.name,
            paused: s.paused,
            max_running: s.max_running,
        }
    }
}

/// A queue: its settings and how many jobs it holds in each state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// Queue name.
    pub name: String,
    /// No job is claimed while paused.
    pub paused: bool,
    /// Fleet-wide cap on running jobs.
    pub max_running: Option<i32>,
    /// Jobs by state (states with none are left out).
    pub counts: BTreeMap<String, i64>,
}

/// Every queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// Sorted by name.
    pub queues: Vec<QueueView>,
}

impl From<kiln_queue::views::QueueSummary> for QueueView {
    fn from(q: kiln_queue::views::QueueSummary) -> Self {
        QueueView {
            name: q.name,
            paused: q.paused,
            max_running: q.max_running,
            counts: q.counts,
        }
    }
}
