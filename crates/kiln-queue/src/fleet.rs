//! The fleet's identity: which database a worker belongs to, as a label its containers carry.

use sqlx::PgExecutor;

use crate::error::{QueueError, Result};

const FLEET_ID_SQL: &str = include_str!("sql/fleet_id.sql");

/// The identity of the fleet this database serves: `<system identifier>/<database name>`.
///
/// Every worker on the same database computes the same value, and workers on another
/// database (of this or another cluster) a different one; a database copied from a template
/// is a fleet of its own. The reaper judges only its own fleet's objects by the registry.
pub async fn fleet_id<'e>(db: impl PgExecutor<'e>) -> Result<String> {
    sqlx::query_scalar::<_, String>(FLEET_ID_SQL)
        .fetch_one(db)
        .await
        .map_err(|source| QueueError::Database {
            op: "fleet_id",
            source,
        })
}
