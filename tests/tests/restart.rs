//! Postgres restarted under running workers.

use kiln_queue::{enqueue_many, JobKind, NewJob};
use kiln_tests::{create_executions_table, wait_for_count, worker_process};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_postgres_restart_without_losing_jobs() {
    // A private cluster: restarting the shared one would disturb other tests.
    let dir = tempfile::tempdir().unwrap();
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&cluster.url())
        .await
        .unwrap();
    kiln_queue::migrate(&pool).await.unwrap();
    create_executions_table(&pool).await;
    let jobs: Vec<NewJob> = (0..400)
        .map(|_| NewJob::new("restart", JobKind::Test, json!({"sleep_ms": 20})))
        .collect();
    enqueue_many(&pool, &jobs).await.unwrap();
    let mut workers = Vec::new();
    for i in 0..2 {
        workers.push(worker_process(&cluster.url(), "restart", &format!("rider-{i}")));
    }
    // Stop the server in the middle of the run.
    wait_for_count(
        &pool,
        "SELECT least(count(*), 50) FROM kiln_jobs WHERE state = 'succeeded'",
        50,
        Duration::from_secs(30),
    )
    .await;
    cluster.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    // More work arrives after the restart too.
    let late: Vec<NewJob> = (0..100)
        .map(|_| NewJob::new("restart", JobKind::Lint, json!({})))
        .collect();
    let mut enqueued = false;
    for _ in 0..50 {
        if enqueue_many(&pool, &late).await.is_ok() {
            enqueued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(enqueued, "the pool reconnects after the restart");
    wait_for_count(
        &pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'",
        500,
        Duration::from_secs(90),
    )
    .await;
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM test_executions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(distinct, 500, "no job lost");
    for mut w in workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    pool.close().await;
    cluster.remove().unwrap();
}

#[test]
fn a_cluster_starts_once_a_killed_previous_server_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    cluster.stop().unwrap();
    // Stand in for a server killed a moment ago that has not gone yet: a live process named in
    // the data directory's lock file (reaped when it ends, so it really goes).
    // Owned by the server's user: a process Postgres may not signal counts as gone.
    let mut ghost = std::process::Command::new("sleep");
    ghost.arg("3");
    let uid_of = |args: &[&str]| -> u32 {
        let out = std::process::Command::new("id").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    if uid_of(&["-u"]) == 0 {
        // As root, the server runs as `postgres`.
        std::os::unix::process::CommandExt::uid(&mut ghost, uid_of(&["-u", "postgres"]));
    }
    let mut ghost = ghost.spawn().unwrap();
    let pid_file = dir.path().join("pgdata/postmaster.pid");
    std::fs::write(&pid_file, format!("{}\n", ghost.id())).unwrap();
    let reaper = std::thread::spawn(move || ghost.wait().unwrap());
    let cluster = kiln_pg::LocalCluster::start(dir.path()).expect("started once the ghost went");
    reaper.join().unwrap();
    let log = std::fs::read_to_string(dir.path().join("postgres.log")).unwrap();
    assert!(
        log.contains("lock file \"postmaster.pid\" already exists"),
        "the first start was refused while the ghost lived: {log}"
    );
    assert!(cluster.is_running());
    cluster.remove().unwrap();
}

/// Attempts of each job running right now, and the most seen at once.
#[derive(Default)]
struct Running {
    now: HashMap<i64, usize>,
    most: usize,
}

/// Counts a running attempt until dropped (a stopped job's future is dropped).
struct RunGuard(Arc<Mutex<Running>>, i64);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut r = self.0.lock().unwrap();
        *r.now.entry(self.1).or_default() -= 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_lease_fences_jobs_and_each_reruns_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&cluster.url())
        .await
        .unwrap();
    kiln_queue::migrate(&pool).await.unwrap();
    let jobs: Vec<NewJob> = (0..4)
        .map(|_| NewJob::new("outage", JobKind::Test, json!({})))
        .collect();
    enqueue_many(&pool, &jobs).await.unwrap();
    let running = Arc::new(Mutex::new(Running::default()));
    let seen = running.clone();
    // lease 3 s, heartbeat 0.5 s; each attempt takes 5 s.
    let worker = kiln_worker::Worker::builder(pool.clone(), kiln_tests::fast_config("outage", 4))
        .handler(
            JobKind::Test,
            move |job: kiln_queue::ClaimedJob, _ctx: kiln_worker::JobContext| {
                let running = seen.clone();
                async move {
                    {
                        let mut r = running.lock().unwrap();
                        let n = r.now.entry(job.id).or_default();
                        *n += 1;
                        let n = *n;
                        r.most = r.most.max(n);
                    }
                    let _guard = RunGuard(running, job.id);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(json!({"ran": job.attempt}))
                }
            },
        )
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    wait_for_count(
        &pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'running'",
        4,
        Duration::from_secs(20),
    )
    .await;
    // Postgres away for twice the lease while every job runs.
    cluster.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    wait_for_count(
        &pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'",
        4,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        running.lock().unwrap().most,
        1,
        "a job ran twice at the same time"
    );
    let lost: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE outcome = 'lost') FROM kiln_attempts GROUP BY job_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(lost.len(), 4);
    assert!(lost.iter().all(|n| *n <= 1), "lost attempts per job: {lost:?}");
    stop.cancel();
    handle.await.unwrap().unwrap();
    pool.close().await;
    cluster.stop().unwrap();
}
