//! API tokens: random 32 bytes shown once as `kiln_<base64url>`, stored as their SHA-256, with
//! scopes. Library functions here are what `kiln tokens …` and the `/v1/tokens` routes call.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, Row};
use std::fmt;
use std::str::FromStr;

const INSERT_SQL: &str = include_str!("sql/token_insert.sql");
const LOOKUP_SQL: &str = include_str!("sql/token_lookup.sql");
const LOOKUP_PLAIN_SQL: &str = include_str!("sql/token_lookup_plain.sql");
const LIST_SQL: &str = include_str!("sql/token_list.sql");
const REVOKE_SQL: &str = include_str!("sql/token_revoke.sql");

/// The prefix of every token, so that leaked ones are easy to find with secret scanners.
pub const TOKEN_PREFIX: &str = "kiln_";

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

/// Errors of the token store.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A database call failed.
    #[error("token store: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored scope is not one Kiln knows (schema drift).
    #[error("stored scope {0:?} is unknown")]
    BadScope(String),
}

/// The SHA-256 of a presented token: what is stored and looked up.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_scopes(raw: Vec<String>) -> Result<Vec<Scope>, TokenError> {
    raw.into_iter()
        .map(|s| s.parse().map_err(|_| TokenError::BadScope(s)))
        .collect()
}

fn info_from_row(r: &sqlx::postgres::PgRow) -> Result<TokenInfo, TokenError> {
    Ok(TokenInfo {
        id: r.get("id"),
        name: r.get("name"),
        scopes: parse_scopes(r.get("scopes"))?,
        created_at: r.get("created_at"),
        last_used_at: r.get("last_used_at"),
        revoked_at: r.get("revoked_at"),
    })
}

/// Creates a token named `name` with `scopes` and returns it with its secret.
pub async fn create<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    scopes: &[Scope],
) -> Result<NewToken, TokenError> {
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let mut scope_names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    scope_names.sort_unstable();
    scope_names.dedup();
    let row = sqlx::query(INSERT_SQL)
        .bind(name)
        .bind(&hash_token(&token)[..])
        .bind(&scope_names)
        .fetch_one(db)
        .await?;
    Ok(NewToken {
        info: info_from_row(&row)?,
        token,
    })
}

/// The id and scopes of the live token with this hash, if any.
pub async fn lookup(db: &sqlx::PgPool, hash: &[u8; 32]) -> Result<Option<(i64, Vec<Scope>)>, TokenError> {
    let mut row = sqlx::query(LOOKUP_SQL).bind(&hash[..]).fetch_optional(db).await?;
    if row.is_none() {
        row = sqlx::query(LOOKUP_PLAIN_SQL)
            .bind(&hash[..])
            .fetch_optional(db)
            .await?;
    }
    row.map(|r| Ok((r.get("id"), parse_scopes(r.get("scopes"))?)))
        .transpose()
}

/// Every token, newest first.
pub async fn list<'e>(db: impl PgExecutor<'e>) -> Result<Vec<TokenInfo>, TokenError> {
    let rows = sqlx::query(LIST_SQL).fetch_all(db).await?;
    rows.iter().map(info_from_row).collect()
}

/// Revokes token `id`; returns its hash, or `None` when there is no such token.
pub async fn revoke<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<Option<[u8; 32]>, TokenError> {
    let row = sqlx::query(REVOKE_SQL).bind(id).fetch_optional(db).await?;
    Ok(row.and_then(|r| r.get::<Vec<u8>, _>("token_hash").try_into().ok()))
}

/// True when `token` is live and carries `admin` (used to reuse `<data-dir>/admin-token`).
pub async fn is_live_admin(db: &sqlx::PgPool, token: &str) -> Result<bool, TokenError> {
    Ok(lookup(db, &hash_token(token))
        .await?
        .is_some_and(|(_, scopes)| scopes.contains(&Scope::Admin)))
}
