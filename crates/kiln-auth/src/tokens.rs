//! API tokens: random 32 bytes shown once as `kiln_<base64url>`, stored as their SHA-256, with
//! scopes. Library functions here are what `kiln tokens …` and the `/v1/tokens` routes call.

use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, Row};

pub use kiln_wire::tokens::{NewToken, Scope, TokenInfo};

const INSERT_SQL: &str = include_str!("sql/token_insert.sql");
const LOOKUP_SQL: &str = include_str!("sql/token_lookup.sql");
const LOOKUP_PLAIN_SQL: &str = include_str!("sql/token_lookup_plain.sql");
const LIST_SQL: &str = include_str!("sql/token_list.sql");
const REVOKE_SQL: &str = include_str!("sql/token_revoke.sql");

/// The prefix of every token, so that leaked ones are easy to find with secret scanners.
pub const TOKEN_PREFIX: &str = "kiln_";

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
