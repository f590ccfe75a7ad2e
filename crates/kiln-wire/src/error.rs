//! The JSON body of every API error.

use serde::{Deserialize, Serialize};

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for humans.
    pub error: String,
    /// The offending field (`jobs[3].priority`, a query parameter or header name), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
