//! `/v1/tokens` shapes: scopes, a stored token, a new token with its secret, requests.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// What a token may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    /// Read jobs, logs, diffs and queues.
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// Enqueue, cancel and retry jobs.
    #[serde(rename = "jobs:write")]
    JobsWrite,
    /// Everything, including queues, webhooks and tokens.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::JobsRead, Scope::JobsWrite, Scope::Admin];

    /// Its name in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}, expected one of: jobs:read, jobs:write, admin"))
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Token id (what revoking takes).
    pub id: i64,
    /// A label for humans.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last used at (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked at; a revoked token is refused.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    /// The stored token.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer secret; shown once, never stored.
    pub token: String,
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label for humans (1 to 128 characters).
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// What it may do (at least one).
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
}

/// Every token (secrets are never shown again).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// Newest first.
    pub tokens: Vec<TokenInfo>,
}
