//! Storing and loading artifacts in Postgres (`kiln_artifacts`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, Row};

use crate::error::ArtifactError;
use crate::pack::Packed;
use crate::tree::Tree;

const STORE_SQL: &str = include_str!("sql/store.sql");
const LOAD_SQL: &str = include_str!("sql/load.sql");
const INFO_SQL: &str = include_str!("sql/info.sql");
const PRUNE_SQL: &str = include_str!("sql/prune.sql");

/// Stores `packed` unless its digest is already stored; returns true when a row was added.
pub async fn store<'e>(db: impl PgExecutor<'e>, packed: &Packed) -> Result<bool, ArtifactError> {
    let row = sqlx::query(STORE_SQL)
        .bind(&packed.digest)
        .bind(packed.size_bytes as i64)
        .bind(packed.data.len() as i64)
        .bind(packed.files as i32)
        .bind(&packed.data)
        .bind(sqlx::types::Json(&packed.source))
        .fetch_optional(db)
        .await
        .map_err(ArtifactError::db("store"))?;
    Ok(row.is_some())
}

/// Loads artifact `digest` as a tree, refusing more than `cap` bytes of tar.
pub async fn load<'e>(db: impl PgExecutor<'e>, digest: &str, cap: u64) -> Result<Tree, ArtifactError> {
    let row = sqlx::query(LOAD_SQL)
        .bind(digest)
        .fetch_optional(db)
        .await
        .map_err(ArtifactError::db("load"))?
        .ok_or_else(|| ArtifactError::NotFound(digest.to_string()))?;
    let data: Vec<u8> = row.get("data");
    Tree::from_tar_gz(&data, cap)
}

/// The stored bytes of artifact `digest`: its canonical tar, gzip-compressed, as served for
/// download.
pub async fn raw<'e>(db: impl PgExecutor<'e>, digest: &str) -> Result<Vec<u8>, ArtifactError> {
    let row = sqlx::query(LOAD_SQL)
        .bind(digest)
        .fetch_optional(db)
        .await
        .map_err(ArtifactError::db("load"))?
        .ok_or_else(|| ArtifactError::NotFound(digest.to_string()))?;
    Ok(row.get("data"))
}

/// What is known about a stored artifact.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactInfo {
    /// Its digest.
    pub digest: String,
    /// Bytes of the canonical tar.
    pub size_bytes: i64,
    /// Bytes stored (compressed).
    pub stored_bytes: i64,
    /// Entries.
    pub files: i32,
    /// How it was produced.
    pub source: serde_json::Value,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
}

/// Reads an artifact's metadata (not its bytes).
pub async fn info<'e>(db: impl PgExecutor<'e>, digest: &str) -> Result<ArtifactInfo, ArtifactError> {
    let r = sqlx::query(INFO_SQL)
        .bind(digest)
        .fetch_optional(db)
        .await
        .map_err(ArtifactError::db("info"))?
        .ok_or_else(|| ArtifactError::NotFound(digest.to_string()))?;
    Ok(ArtifactInfo {
        digest: r.get("digest"),
        size_bytes: r.get("size_bytes"),
        stored_bytes: r.get("stored_bytes"),
        files: r.get("files"),
        source: r.get::<sqlx::types::Json<serde_json::Value>, _>("source").0,
        created_at: r.get("created_at"),
    })
}

/// Deletes artifacts older than `min_age` that no pipeline or job refers to; returns how many.
pub async fn prune_unreferenced<'e>(
    db: impl PgExecutor<'e>,
    min_age: std::time::Duration,
) -> Result<u64, ArtifactError> {
    let rows = sqlx::query(PRUNE_SQL)
        .bind(min_age.as_secs_f64())
        .fetch_all(db)
        .await
        .map_err(ArtifactError::db("prune"))?;
    Ok(rows.len() as u64)
}
