//! The floor: Kiln's own claim and complete statements at Kiln's batch size, driven by
//! `pgbench -f` from 4 clients, with no Rust in between.
//!
//! Each pgbench transaction does what a Kiln worker does per batch, as two autocommit
//! statements like Kiln's: `claim.sql` (its text, with the parameters filled in; the
//! claimed rows are aggregated into arrays and kept with `\gset`) and then `complete.sql`
//! (its text) for exactly those ids, attempts and start times, with outcome `succeeded`.

use anyhow::{bail, Context, Result};
use std::time::Instant;

use crate::common::{pool, wal_since, wal_start, Server};
use crate::kiln_sys::{insert_jobs, QUEUE};
use crate::Args;

const CLAIM: &str = include_str!("../../kiln-queue/src/sql/claim.sql");
const COMPLETE: &str = include_str!("../../kiln-queue/src/sql/complete.sql");

/// Comment lines would confuse pgbench's statement splitting (they contain `;`).
fn strip_comments(sql: &str) -> String {
    sql.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces `$n` placeholders, highest number first (so `$1` never eats `$10`).
fn bind(sql: &str, params: &[(usize, String)]) -> String {
    let mut params = params.to_vec();
    params.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut out = sql.to_owned();
    for (n, v) in params {
        out = out.replace(&format!("${n}"), &v);
    }
    out
}

/// The pgbench script: claim (aggregated and `\gset`), then complete.
pub fn script(lease_secs: u32) -> Result<String> {
    let worker = "('pgbench-' || :client_id)".to_string();
    let claim = strip_comments(CLAIM);
    let at = claim
        .find("\nUPDATE kiln_jobs j")
        .context("claim.sql no longer ends in `UPDATE kiln_jobs j`; update the floor script")?;
    let (ctes, update) = claim.split_at(at);
    let claim = format!(
        "{ctes},\nclaimed AS ({update}\n)\nSELECT coalesce(array_agg(id ORDER BY id)::text, '{{}}') AS ids,\n       \
         coalesce(array_agg(attempt ORDER BY id)::text, '{{}}') AS attempts,\n       \
         coalesce(array_agg(attempted_at ORDER BY id)::text, '{{}}') AS started\nFROM claimed"
    );
    let claim = bind(
        &claim,
        &[
            (1, format!("'{QUEUE}'")),
            (2, ":batch".into()),
            (3, worker.clone()),
            (4, lease_secs.to_string()),
            // Kiln's workers claim only the kinds they have handlers for.
            (5, format!("'{{{}}}'", kiln_queue::JobKind::Test.as_str())),
        ],
    );
    let n = "ARRAY[cardinality(':ids'::bigint[])]";
    let complete = bind(
        &strip_comments(COMPLETE),
        &[
            (1, worker),
            (2, "':ids'".into()),
            (3, "':attempts'".into()),
            (4, format!("array_fill('succeeded'::text, {n})")),
            (5, format!("array_fill(NULL::jsonb, {n})")),
            (6, format!("array_fill(NULL::text, {n})")),
            (7, "':started'".into()),
            (8, format!("array_fill(now(), {n})")),
            (9, format!("array_fill(NULL::timestamptz, {n})")),
            (10, format!("array_fill(NULL::jsonb, {n})")),
        ],
    );
    if claim.contains('$') || complete.contains('$') {
        bail!("a placeholder was left unbound in the floor script");
    }
    Ok(format!(
        "{claim}\n\\gset\n{};\n",
        complete.trim_end().trim_end_matches(';')
    ))
}

/// Runs `pgbench -c 4 -j 2 -t per_client -D batch=<kiln batch> -f script` on `url` and
/// returns its wall time; `what` names the run in the logs.
pub(crate) async fn pgbench(
    args: &Args,
    url: &str,
    script: &std::path::Path,
    per_client: usize,
    what: &str,
) -> Result<std::time::Duration> {
    let start = Instant::now();
    let out = tokio::process::Command::new(&args.pgbench)
        .args(["-n", "-M", "simple", "-c", "4", "-j", "2"])
        .arg("-t")
        .arg(per_client.to_string())
        .arg("-D")
        .arg(format!("batch={}", args.kiln_batch))
        .arg("-f")
        .arg(script)
        .arg(url)
        .output()
        .await
        .context("run pgbench")?;
    let wall = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
    }
    for line in stdout
        .lines()
        .filter(|l| l.contains("tps") || l.contains("latency") || l.contains("failed"))
    {
        tracing::info!(pgbench = line.trim(), "{what}");
    }
    Ok(wall)
}

/// `url` with its database replaced by `db`.
pub(crate) fn url_with_db(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
    format!("{}{authority}/{db}{query}", &url[..scheme_end])
}

/// What the floor measured.
#[derive(Debug, Clone)]
pub struct Floor {
    pub jobs_per_s: f64,
    /// WAL written during the pgbench run, per job that succeeded.
    pub wal_bytes_per_job: f64,
    /// Jobs claimed more than once (attempt > 1).
    pub duplicates: u64,
    /// Jobs not succeeded when pgbench ended.
    pub missing: u64,
    pub settings: String,
}

/// Runs the floor on `args.jobs` jobs at Kiln's batch size.
pub async fn run(server: &Server, server_url: &str, args: &Args) -> Result<Floor> {
    let opts = server.fresh_db("kiln_bench_floor").await?;
    let setup = pool(&opts, 4).await?;
    kiln_queue::migrate(&setup).await?;
    insert_jobs(&setup, 0, args.jobs).await?;
    let clients = 4usize;
    let per_client = args.jobs.div_ceil(clients * args.kiln_batch).max(1);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kiln-floor.sql");
    std::fs::write(&path, script(30)?)?;
    tracing::debug!(script = %std::fs::read_to_string(&path)?, "floor script");
    let url = url_with_db(server_url, "kiln_bench_floor");
    let wal = wal_start(&setup).await?;
    let wall = pgbench(args, &url, &path, per_client, "floor").await?;
    let wal_bytes = wal_since(&setup, &wal).await?;
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'")
        .fetch_one(&setup)
        .await?;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_attempts")
        .fetch_one(&setup)
        .await?;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE state <> 'succeeded'")
        .fetch_one(&setup)
        .await?;
    tracing::info!(
        succeeded = done,
        attempt_rows = attempts,
        not_succeeded = left,
        secs = wall.as_secs_f64(),
        "floor done"
    );
    if attempts != done {
        bail!("floor: {done} jobs succeeded but {attempts} attempt rows were written");
    }
    let reclaimed: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE attempt > 1")
        .fetch_one(&setup)
        .await?;
    setup.close().await;
    let settings = format!(
        "pgbench -c 4 -j 2 -t {per_client}, claim.sql + complete.sql at batch {} ({} jobs in {:.2} s)",
        args.kiln_batch,
        done,
        wall.as_secs_f64()
    );
    Ok(Floor {
        jobs_per_s: done as f64 / wall.as_secs_f64(),
        wal_bytes_per_job: wal_bytes as f64 / done.max(1) as f64,
        duplicates: reclaimed as u64,
        missing: left as u64,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_binds_every_placeholder() {
        let s = script(30).unwrap();
        assert!(s.contains("\\gset"));
        assert!(s.contains("FOR UPDATE SKIP LOCKED"));
        assert!(s.contains("INSERT INTO kiln_attempts"));
    }

    #[test]
    fn url_database_is_replaced() {
        assert_eq!(
            url_with_db("postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(
            url_with_db("postgres://127.0.0.1:5", "x"),
            "postgres://127.0.0.1:5/x"
        );
    }
}
