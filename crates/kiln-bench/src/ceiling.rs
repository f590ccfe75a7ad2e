//! The ceiling: the least a durable SKIP LOCKED queue can do per job on this machine — a
//! minimal table (id, queue, state, run_at, attempt, lease owner, payload; one partial index
//! for the claim), a claim of Kiln's batch size with `FOR UPDATE SKIP LOCKED` that bumps the
//! attempt and writes the owner, and a completion that marks the rows done and inserts one
//! attempt row per job — driven by the same pgbench as the floor. No events, no leases' expiry
//! index, no guards beyond the owner: what Kiln's floor is measured against.

use anyhow::{bail, Result};

use crate::common::{pool, wal_since, wal_start, Server};
use crate::floor::{pgbench, url_with_db, Floor};
use crate::Args;

const SCHEMA: &str = "
CREATE TABLE ceiling_jobs (
    id       bigserial PRIMARY KEY,
    queue    text NOT NULL,
    state    smallint NOT NULL DEFAULT 0,  -- 0 available, 1 running, 2 done
    run_at   timestamptz NOT NULL DEFAULT now(),
    attempt  integer NOT NULL DEFAULT 0,
    owner    text,
    payload  jsonb NOT NULL
);
CREATE INDEX ceiling_jobs_fetch ON ceiling_jobs (queue, run_at, id) WHERE state = 0;
CREATE TABLE ceiling_attempts (
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL,
    owner       text NOT NULL,
    finished_at timestamptz NOT NULL
);
CREATE INDEX ceiling_attempts_job ON ceiling_attempts (job_id);
";

/// The pgbench script: claim (ids aggregated and `\gset`), then complete, two autocommit
/// statements like Kiln's.
pub fn script() -> String {
    "WITH next AS (
    SELECT id FROM ceiling_jobs WHERE queue = 'bench' AND state = 0 AND run_at <= now()
    ORDER BY run_at, id LIMIT :batch FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE ceiling_jobs j SET state = 1, attempt = j.attempt + 1, owner = 'c' || :client_id
    WHERE j.id = ANY (ARRAY(SELECT id FROM next))
    RETURNING j.id
)
SELECT coalesce(array_agg(id)::text, '{}') AS ids FROM claimed
\\gset
WITH done AS (
    UPDATE ceiling_jobs SET state = 2, owner = NULL
    WHERE id = ANY (':ids'::bigint[]) AND owner = 'c' || :client_id
    RETURNING id, attempt
)
INSERT INTO ceiling_attempts SELECT id, attempt, 'c' || :client_id, now() FROM done;
"
    .to_owned()
}

/// Runs the ceiling on `args.jobs` jobs at Kiln's batch size.
pub async fn run(server: &Server, server_url: &str, args: &Args) -> Result<Floor> {
    let opts = server.fresh_db("kiln_bench_ceiling").await?;
    let setup = pool(&opts, 4).await?;
    sqlx::raw_sql(SCHEMA).execute(&setup).await?;
    sqlx::query(
        "INSERT INTO ceiling_jobs (queue, payload)
         SELECT 'bench', jsonb_build_object('i', i) FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(args.jobs as i64)
    .execute(&setup)
    .await?;
    sqlx::query("VACUUM ANALYZE ceiling_jobs").execute(&setup).await?;
    let per_client = args.jobs.div_ceil(4 * args.kiln_batch).max(1);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ceiling.sql");
    std::fs::write(&path, script())?;
    let url = url_with_db(server_url, "kiln_bench_ceiling");
    let wal = wal_start(&setup).await?;
    let wall = pgbench(args, &url, &path, per_client, "ceiling").await?;
    let wal_bytes = wal_since(&setup, &wal).await?;
    let (done, attempts, left, twice): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ceiling_jobs WHERE state = 2),
                (SELECT count(*) FROM ceiling_attempts),
                (SELECT count(*) FROM ceiling_jobs WHERE state <> 2),
                (SELECT count(*) FROM ceiling_jobs WHERE attempt > 1)",
    )
    .fetch_one(&setup)
    .await?;
    setup.close().await;
    if attempts != done {
        bail!("ceiling: {done} jobs done but {attempts} attempt rows were written");
    }
    tracing::info!(done, not_done = left, secs = wall.as_secs_f64(), "ceiling done");
    Ok(Floor {
        jobs_per_s: done as f64 / wall.as_secs_f64(),
        wal_bytes_per_job: wal_bytes as f64 / done.max(1) as f64,
        duplicates: twice as u64,
        missing: left as u64,
        settings: format!(
            "pgbench -c 4 -j 2 -t {per_client}, minimal SKIP LOCKED claim + complete with attempt rows at batch {} ({done} jobs in {:.2} s)",
            args.kiln_batch,
            wall.as_secs_f64()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_claims_with_skip_locked_and_writes_attempts() {
        let s = script();
        assert!(s.contains("FOR UPDATE SKIP LOCKED"));
        assert!(s.contains("\\gset"));
        assert!(s.contains("INSERT INTO ceiling_attempts"));
    }
}
