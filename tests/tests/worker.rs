//! The worker runtime end to end: real Postgres, real apalis workers, real processes.

use kiln_queue::{admin, enqueue, enqueue_many, AttemptOutcome, JobKind, JobState, NewJob};
use kiln_testkit::TestDb;
use kiln_tests::{
    create_executions_table, enqueue_ids, fast_config, recording_worker, wait_for_count, worker_process,
};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn spawn_worker(
    db: &TestDb,
    config: kiln_worker::WorkerConfig,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let worker = spawn(recording_worker(&db.pool, config), stop);
    tokio::spawn(async move { worker.await.unwrap().expect("worker runs") })
}

/// Runs `worker` until `stop` fires.
fn spawn(
    worker: kiln_worker::Worker,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), kiln_worker::WorkerError>> {
    tokio::spawn(worker.run(stop.clone().cancelled_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_run_20000_jobs_exactly_once() {
    let db = TestDb::with_pool_size(60).await;
    create_executions_table(&db.pool).await;
    let jobs: Vec<NewJob> = (0..20_000)
        .map(|i| NewJob::new("burn", JobKind::Test, json!({"i": i})))
        .collect();
    for chunk in jobs.chunks(5000) {
        enqueue_many(&db.pool, chunk).await.unwrap();
    }
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let mut config = fast_config("burn", 32);
            config.id = Some(format!("burner-{i}"));
            config.lease = std::time::Duration::from_secs(30);
            spawn_worker(&db, config, &stop)
        })
        .collect();
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'",
        20_000,
        Duration::from_secs(240),
    )
    .await;
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let stats: (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT job_id), count(DISTINCT worker_id) FROM test_executions",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stats.0, 20_000, "every job executed exactly once");
    assert_eq!(stats.1, 20_000);
    assert!(stats.2 > 1, "work was spread over workers, got {}", stats.2);
    let attempts: (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE outcome = 'succeeded') FROM kiln_attempts")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, (20_000, 20_000), "one attempt row per job, no more");
    let bad: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE attempt <> 1 OR finalized_at IS NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(bad, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_job_stops_within_two_seconds() {
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    let stop = CancellationToken::new();
    let worker = spawn_worker(&db, fast_config("slow", 2), &stop);
    let e = enqueue(
        &db.pool,
        &NewJob::new("slow", JobKind::Preview, json!({"sleep_ms": 60_000})),
    )
    .await
    .unwrap();
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM test_executions",
        1,
        Duration::from_secs(10),
    )
    .await;
    let asked = Instant::now();
    assert_eq!(admin::cancel(&db.pool, e.id).await.unwrap(), JobState::Running);
    loop {
        let job = admin::get_job(&db.pool, e.id).await.unwrap();
        if job.state == JobState::Cancelled {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "still {} after 2 s",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = admin::attempts(&db.pool, e.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Cancelled);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_failures_and_panics_are_recorded_and_retried() {
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    let mut config = fast_config("edge", 4);
    config.default_retry = kiln_queue::RetryPolicy {
        base_secs: 0.05,
        factor: 1.0,
        max_secs: 0.05,
        jitter: 0.0,
    };
    let stop = CancellationToken::new();
    let worker = spawn_worker(&db, config, &stop);
    let slow = NewJob::new("edge", JobKind::Test, json!({"sleep_ms": 5_000}))
        .timeout(Duration::from_secs(1))
        .max_attempts(2);
    let flaky = NewJob::new("edge", JobKind::Lint, json!({"fail": "tool crashed"})).max_attempts(3);
    let fatal = NewJob::new(
        "edge",
        JobKind::Lint,
        json!({"fail": "bad payload", "permanent": true}),
    );
    let panics = NewJob::new("edge", JobKind::Test, json!({"panic": true})).max_attempts(1);
    let ids: Vec<i64> = enqueue_ids(&db.pool, &[slow, flaky, fatal, panics]).await;
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'failed'",
        4,
        Duration::from_secs(20),
    )
    .await;
    let outcomes = |id| {
        let pool = db.pool.clone();
        async move {
            admin::attempts(&pool, id)
                .await
                .unwrap()
                .iter()
                .map(|a| a.outcome)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(outcomes(ids[0]).await, vec![AttemptOutcome::TimedOut; 2]);
    assert_eq!(outcomes(ids[1]).await, vec![AttemptOutcome::Failed; 3]);
    assert_eq!(
        outcomes(ids[2]).await,
        vec![AttemptOutcome::Failed],
        "a permanent error is not retried"
    );
    let panicked = admin::get_job(&db.pool, ids[3]).await.unwrap();
    assert_eq!(
        panicked.last_error.as_deref(),
        Some("handler panicked: handler asked to panic")
    );
    let last = admin::get_job(&db.pool, ids[1]).await.unwrap();
    assert_eq!(last.last_error.as_deref(), Some("tool crashed"));
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_as_it_starts_still_stops() {
    // A shutdown that arrives before apalis has started its workers (Ctrl-C at start-up, or
    // `kiln up` failing to bind its port) must not be lost.
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    for round in 0..5 {
        let stop = CancellationToken::new();
        stop.cancel();
        let worker = spawn_worker(&db, fast_config("stopped-early", 2), &stop);
        tokio::time::timeout(Duration::from_secs(20), worker)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the worker never stopped"))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_running_jobs_without_spending_an_attempt() {
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    let jobs: Vec<NewJob> = (0..6)
        .map(|_| NewJob::new("graceful", JobKind::Test, json!({"sleep_ms": 30_000})))
        .collect();
    let ids: Vec<i64> = enqueue_ids(&db.pool, &jobs).await;
    let mut config = fast_config("graceful", 2);
    config.shutdown_grace = Duration::from_millis(500);
    let stop = CancellationToken::new();
    let worker = spawn_worker(&db, config, &stop);
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM test_executions",
        2,
        Duration::from_secs(10),
    )
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("shutdown within grace")
        .unwrap();
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT state::text, attempt FROM kiln_jobs WHERE id = ANY($1) ORDER BY id")
            .bind(&ids)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        rows.iter().all(|(s, a)| s == "available" && *a == 0),
        "all handed back unspent: {rows:?}"
    );
    let interrupted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln_attempts WHERE outcome = 'interrupted'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        interrupted, 2,
        "the two started jobs are on record as interrupted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_jobs_are_rescued_and_finished_elsewhere() {
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    let jobs: Vec<NewJob> = (0..4)
        .map(|_| NewJob::new("kill", JobKind::Test, json!({"sleep_ms": 1_500})))
        .collect();
    let ids: Vec<i64> = enqueue_ids(&db.pool, &jobs).await;
    let mut victim = worker_process(&db.url, "kill", "victim");
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM test_executions WHERE worker_id = 'victim'",
        4,
        Duration::from_secs(15),
    )
    .await;
    victim.kill().expect("SIGKILL the worker");
    victim.wait().unwrap();
    let mut survivor = worker_process(&db.url, "kill", "survivor");
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'",
        4,
        Duration::from_secs(30),
    )
    .await;
    for id in ids {
        let attempts = admin::attempts(&db.pool, id).await.unwrap();
        let seen: Vec<(AttemptOutcome, &str)> = attempts
            .iter()
            .map(|a| (a.outcome, a.worker_id.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (AttemptOutcome::Lost, "victim"),
                (AttemptOutcome::Succeeded, "survivor")
            ]
        );
    }
    survivor.kill().unwrap();
    survivor.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claims_only_the_kinds_it_can_run() {
    let db = TestDb::new().await;
    let lint = enqueue(&db.pool, &NewJob::new("mixed", JobKind::Lint, json!({})))
        .await
        .unwrap();
    let test = enqueue(&db.pool, &NewJob::new("mixed", JobKind::Test, json!({})))
        .await
        .unwrap();
    let worker = kiln_worker::Worker::builder(db.pool.clone(), fast_config("mixed", 2))
        .handler(JobKind::Test, |_job, _ctx| async { Ok(json!({"ran": true})) })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'",
        1,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(
        admin::get_job(&db.pool, test.id).await.unwrap().state,
        JobState::Succeeded
    );
    let waiting = admin::get_job(&db.pool, lint.id).await.unwrap();
    assert_eq!(
        (waiting.state, waiting.attempt),
        (JobState::Available, 0),
        "left for a worker that runs lint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_drains_on_sigterm() {
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    let quick: Vec<NewJob> = (0..2)
        .map(|_| NewJob::new("term", JobKind::Test, json!({"sleep_ms": 300})))
        .collect();
    let quick_ids: Vec<i64> = enqueue_ids(&db.pool, &quick).await;
    let mut child = worker_process(&db.url, "term", "terminated");
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM test_executions",
        2,
        Duration::from_secs(15),
    )
    .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "worker exits cleanly on SIGTERM: {exited}");
    // Jobs running at SIGTERM finished within the grace period, recorded once each.
    for id in quick_ids {
        let job = admin::get_job(&db.pool, id).await.unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Succeeded, 1));
    }
    let stopped: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT stopped_at FROM kiln_workers WHERE id = 'terminated'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(stopped.is_some(), "the registry marks the worker stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_back_by_an_unavailable_worker_says_why_on_its_attempt() {
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    let job = NewJob::new(
        "unavailable",
        JobKind::Test,
        json!({"unavailable_once": "docker engine at unix:///gone.sock unreachable"}),
    );
    let ids = enqueue_ids(&db.pool, &[job]).await;
    let stop = CancellationToken::new();
    let worker = spawn_worker(&db, fast_config("unavailable", 1), &stop);
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'",
        1,
        Duration::from_secs(30),
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    let attempts = admin::attempts(&db.pool, ids[0]).await.unwrap();
    let outcomes: Vec<AttemptOutcome> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![AttemptOutcome::Interrupted, AttemptOutcome::Succeeded]
    );
    let why = attempts[0].error.as_deref().unwrap_or_default();
    assert!(
        why.contains("worker unavailable: docker engine at unix:///gone.sock unreachable")
            && why.contains("without spending an attempt")
            && !why.contains("shut down"),
        "{why}"
    );
    assert_eq!(admin::get_job(&db.pool, ids[0]).await.unwrap().attempt, 1);
}

async fn no_op(
    _job: kiln_queue::ClaimedJob,
    _ctx: kiln_worker::JobContext,
) -> Result<serde_json::Value, kiln_worker::JobError> {
    Ok(serde_json::Value::Null)
}

/// A worker whose backlog drains vacuums the jobs table at once (a fleet-wide lock, at most
/// every 30 s), not at its next maintenance pass: the first claims after a burn-down no longer
/// walk its dead index entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backlog_is_vacuumed_before_the_next_maintenance_pass() {
    let db = TestDb::with_pool_size(20).await;
    let jobs: Vec<NewJob> = (0..12_000)
        .map(|i| NewJob::new("drain", JobKind::Test, json!({"i": i})))
        .collect();
    for chunk in jobs.chunks(6_000) {
        enqueue_many(&db.pool, chunk).await.unwrap();
    }
    let mut config = fast_config("drain", 500);
    config.queues = vec![kiln_worker::QueueConfig::new("drain").concurrency(500).batch(500)];
    config.lease = Duration::from_secs(30);
    // No maintenance pass within the test: only the drain can start a vacuum.
    config.maintenance_every = Duration::from_secs(3_600);
    let worker = kiln_worker::Worker::builder(db.pool.clone(), config)
        .handler(JobKind::Test, no_op)
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let handle = spawn(worker, &stop);
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'succeeded'",
        12_000,
        Duration::from_secs(180),
    )
    .await;
    // One vacuum (the next may come 30 s later at the earliest), long before the pass.
    wait_for_count(
        &db.pool,
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'kiln_jobs'::regclass",
        1,
        Duration::from_secs(20),
    )
    .await;
    stop.cancel();
    handle.await.unwrap().expect("worker runs");
}

/// A worker started while its database is down (restarting, or not up yet) waits for it and
/// registers once it answers, instead of exiting (the chaos run: a worker restarted during a
/// Postgres restart exited and left its warm container on the engine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_the_database_is_down_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kiln_pg::LocalCluster::start(dir.path()).unwrap();
    let admin = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    kiln_queue::migrate(&admin).await.unwrap();
    admin.close().await;
    cluster.stop().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&cluster.url())
        .unwrap();
    let mut config = fast_config("down", 4);
    config.id = Some("waits-for-the-database".into());
    let worker = kiln_worker::Worker::builder(pool, config)
        .handler(JobKind::Test, no_op)
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let handle = spawn(worker, &stop);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !handle.is_finished(),
        "the worker gave up while the database was down"
    );
    cluster.restart().unwrap();
    let admin = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    wait_for_count(
        &admin,
        "SELECT count(*) FROM kiln_workers WHERE id = 'waits-for-the-database' AND stopped_at IS NULL",
        1,
        Duration::from_secs(30),
    )
    .await;
    stop.cancel();
    handle.await.unwrap().expect("the worker ran and stopped cleanly");
    admin.close().await;
    cluster.remove().unwrap();
}
