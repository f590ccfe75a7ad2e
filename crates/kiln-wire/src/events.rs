//! `/v1/events` shapes.

use kiln_queue::events::Event;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A page of events, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The events.
    #[schema(value_type = Vec<crate::schema::EventDoc>)]
    pub events: Vec<Event>,
    /// Pass as `after` for the next page: the last id returned, or the `after` given.
    pub next_after: i64,
    /// The newest event id written so far (where a reader wanting only new events starts).
    pub last_id: i64,
}
