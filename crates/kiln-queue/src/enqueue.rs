//! Enqueue: one job or thousands in one statement, inside the caller's transaction if given one.

use serde::Serialize;
use sqlx::{Acquire, Connection, Postgres, Row};
use std::collections::HashMap;

use crate::error::{QueueError, Result};
use crate::spec::NewJob;

const ENQUEUE_SQL: &str = include_str!("sql/enqueue.sql");
const EXISTING_SQL: &str = include_str!("sql/existing_by_keys.sql");

/// What became of one requested job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The id of the job that now stands for the request.
    pub id: i64,
    /// `false` when an existing job was returned because of its unique or idempotency key.
    pub created: bool,
}

/// Enqueues one job. See [`enqueue_many`].
pub async fn enqueue<'a, A>(conn: A, job: &NewJob) -> Result<Enqueued>
where
    A: Acquire<'a, Database = Postgres>,
{
    let mut out = enqueue_many(conn, std::slice::from_ref(job)).await?;
    Ok(out.remove(0))
}

/// Enqueues `jobs` in one statement and returns one [`Enqueued`] per job, in order.
///
/// `conn` may be a pool, a connection or the caller's own transaction (then the jobs
/// become visible when it commits, and the caller counts them with [`count_committed`] after
/// its commit: `kiln_jobs_enqueued_total` counts only jobs that were committed). A job whose
/// idempotency key is known, or whose unique key is held by a live job, is not inserted: the
/// holder's id is returned instead, and the rest of the batch goes in.
pub async fn enqueue_many<'a, A>(conn: A, jobs: &[NewJob]) -> Result<Vec<Enqueued>>
where
    A: Acquire<'a, Database = Postgres>,
{
    validate(jobs)?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = conn.acquire().await.map_err(QueueError::db("enqueue"))?;
    insert(&mut conn, jobs).await
}

/// [`enqueue_many`] on a connection (or `&mut *transaction`). Not generic, so its future is
/// `Send` for any lifetime: call this from code that must be spawned (HTTP handlers, loops).
pub async fn enqueue_many_on(conn: &mut sqlx::PgConnection, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
    validate(jobs)?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    insert(conn, jobs).await
}

fn validate(jobs: &[NewJob]) -> Result<()> {
    for (i, job) in jobs.iter().enumerate() {
        job.validate()
            .map_err(|e| if jobs.len() > 1 { e.in_batch(i) } else { e })?;
    }
    Ok(())
}

/// Adds committed jobs to `kiln_jobs_enqueued_total`: `jobs` and `out` as given to and
/// returned by an enqueue inside a transaction, after that transaction committed. Only rows
/// really inserted count (a duplicate resolved to its holder was enqueued once).
pub fn count_committed(jobs: &[NewJob], out: &[Enqueued]) {
    crate::metrics::count_enqueued(
        out.iter()
            .zip(jobs)
            .filter(|(e, _)| e.created)
            .map(|(_, j)| (j.queue.as_str(), j.kind)),
    );
}

async fn insert(conn: &mut sqlx::PgConnection, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
    let n = jobs.len();
    let mut queue = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    let mut priority = Vec::with_capacity(n);
    let mut run_at = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut timeout_ms = Vec::with_capacity(n);
    let mut unique_key = Vec::with_capacity(n);
    let mut idempotency_key = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut pipeline_id = Vec::with_capacity(n);
    let mut depends_on = Vec::with_capacity(n);
    for job in jobs {
        queue.push(job.queue.as_str());
        kind.push(job.kind.as_str());
        payload.push(sqlx::types::Json(&job.payload));
        priority.push(job.priority);
        run_at.push(job.run_at);
        max_attempts.push(job.max_attempts);
        timeout_ms.push(job.timeout_ms);
        unique_key.push(job.unique_key.as_deref());
        idempotency_key.push(job.idempotency_key.as_deref());
        tags.push(sqlx::types::Json(&job.tags));
        pipeline_id.push(job.pipeline_id);
        depends_on.push(sqlx::types::Json(&job.depends_on));
    }

    let rows = sqlx::query(ENQUEUE_SQL)
        .bind(&queue)
        .bind(&kind)
        .bind(&payload)
        .bind(&priority)
        .bind(&run_at)
        .bind(&max_attempts)
        .bind(&timeout_ms)
        .bind(&unique_key)
        .bind(&idempotency_key)
        .bind(&tags)
        .bind(&pipeline_id)
        .bind(&depends_on)
        .fetch_all(&mut *conn)
        .await
        .map_err(QueueError::db("enqueue"))?;

    let mut out = Vec::with_capacity(n);
    let mut unresolved = Vec::new();
    // Within one batch, a later row with an earlier row's key resolves to that row.
    let mut batch_keys: HashMap<(bool, &str), i64> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let id: i64 = row.get("id");
        let created: bool = row.get("inserted");
        if created {
            let job = &jobs[i];
            if let Some(k) = &job.idempotency_key {
                batch_keys.entry((true, k)).or_insert(id);
            }
            if let Some(k) = &job.unique_key {
                batch_keys.entry((false, k)).or_insert(id);
            }
            out.push(Enqueued { id, created: true });
        } else {
            out.push(Enqueued {
                id: 0,
                created: false,
            });
            unresolved.push(i);
        }
    }
    // Outside a transaction the statement has committed: count now. Inside one, the caller
    // counts after its commit (a rollback enqueues nothing).
    if !conn.is_in_transaction() {
        count_committed(jobs, &out);
    }
    if unresolved.is_empty() {
        return Ok(out);
    }

    let idem: Vec<&str> = unresolved
        .iter()
        .filter_map(|&i| jobs[i].idempotency_key.as_deref())
        .collect();
    let uniq: Vec<&str> = unresolved
        .iter()
        .filter_map(|&i| jobs[i].unique_key.as_deref())
        .collect();
    let existing = sqlx::query(EXISTING_SQL)
        .bind(&idem)
        .bind(&uniq)
        .fetch_all(&mut *conn)
        .await
        .map_err(QueueError::db("enqueue: look up existing keys"))?;
    let mut by_idem = HashMap::new();
    let mut by_uniq = HashMap::new();
    for row in &existing {
        let id: i64 = row.get("id");
        if let Some(k) = row.get::<Option<String>, _>("idempotency_key") {
            by_idem.insert(k, id);
        }
        if let Some(k) = row.get::<Option<String>, _>("unique_key") {
            by_uniq.insert(k, id);
        }
    }
    for i in unresolved {
        let job = &jobs[i];
        let found = job
            .idempotency_key
            .as_deref()
            .and_then(|k| {
                batch_keys
                    .get(&(true, k))
                    .copied()
                    .or_else(|| by_idem.get(k).copied())
            })
            .or_else(|| {
                job.unique_key.as_deref().and_then(|k| {
                    batch_keys
                        .get(&(false, k))
                        .copied()
                        .or_else(|| by_uniq.get(k).copied())
                })
            });
        match found {
            Some(id) => out[i].id = id,
            // The holder finished (freeing a unique key) or was pruned between our insert
            // and the lookup: say so rather than invent an id.
            None => {
                return Err(QueueError::UniqueKeyTaken(
                    job.unique_key
                        .clone()
                        .or_else(|| job.idempotency_key.clone())
                        .unwrap_or_default(),
                ))
            }
        }
    }
    Ok(out)
}
