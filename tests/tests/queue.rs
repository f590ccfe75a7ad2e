//! The queue's SQL contract against a real Postgres: enqueue, keys, claim, complete, rescue.

use chrono::Utc;
use kiln_queue::lease::{self, Completion};
use kiln_queue::logs;
use kiln_queue::{
    admin, enqueue, enqueue_many, maintenance, AttemptDetails, AttemptOutcome, JobKind, JobState, NewJob,
    QueueError,
};
use kiln_testkit::TestDb;
use serde_json::json;
use std::time::Duration;

fn job(queue: &str) -> NewJob {
    NewJob::new(queue, JobKind::Test, json!({"n": 1}))
}

#[tokio::test]
async fn enqueue_sets_the_initial_state() {
    let db = TestDb::new().await;
    let now = enqueue(&db.pool, &job("q")).await.unwrap();
    let later = enqueue(
        &db.pool,
        &job("q").run_at(Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    let child = enqueue(&db.pool, &job("q").after(now.id)).await.unwrap();
    assert!(now.created && later.created && child.created);
    assert_eq!(
        admin::get_job(&db.pool, now.id).await.unwrap().state,
        JobState::Available
    );
    assert_eq!(
        admin::get_job(&db.pool, later.id).await.unwrap().state,
        JobState::Scheduled
    );
    assert_eq!(
        admin::get_job(&db.pool, child.id).await.unwrap().state,
        JobState::Pending
    );
}

#[tokio::test]
async fn a_batch_of_thousands_is_one_statement_and_keeps_order() {
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..5000)
        .map(|i| NewJob::new("bulk", JobKind::Lint, json!({"i": i})))
        .collect();
    let out = enqueue_many(&db.pool, &jobs).await.unwrap();
    assert_eq!(out.len(), 5000);
    assert!(out.iter().all(|e| e.created));
    for (i, e) in out.iter().enumerate().step_by(977) {
        assert_eq!(
            admin::get_job(&db.pool, e.id).await.unwrap().payload,
            json!({"i": i})
        );
    }
}

#[tokio::test]
async fn enqueue_joins_the_callers_transaction() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    let e = enqueue(&mut *tx, &job("tx")).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(matches!(
        admin::get_job(&db.pool, e.id).await,
        Err(QueueError::NotFound(_))
    ));

    let mut tx = db.pool.begin().await.unwrap();
    let e = enqueue(&mut *tx, &job("tx")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        admin::get_job(&db.pool, e.id).await.unwrap().state,
        JobState::Available
    );
}

#[tokio::test]
async fn idempotency_keys_return_the_same_job() {
    let db = TestDb::new().await;
    let a = enqueue(&db.pool, &job("q").idempotency_key("req-1"))
        .await
        .unwrap();
    let b = enqueue(&db.pool, &job("q").idempotency_key("req-1"))
        .await
        .unwrap();
    assert!(a.created);
    assert!(!b.created);
    assert_eq!(a.id, b.id);
    // Even after the job finished, the same request maps to the same job.
    admin::cancel(&db.pool, a.id).await.unwrap();
    let c = enqueue(&db.pool, &job("q").idempotency_key("req-1"))
        .await
        .unwrap();
    assert_eq!(c.id, a.id);
    // Inside one batch, the second use of a key resolves to the first.
    let batch = enqueue_many(
        &db.pool,
        &[
            job("q").idempotency_key("req-2"),
            job("q").idempotency_key("req-2"),
        ],
    )
    .await
    .unwrap();
    assert!(batch[0].created && !batch[1].created);
    assert_eq!(batch[0].id, batch[1].id);
}

#[tokio::test]
async fn unique_keys_hold_under_16_concurrent_enqueuers() {
    let db = TestDb::with_pool_size(32).await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for round in 0..25 {
                // Each round, all 16 enqueuers race for the same 4 keys, in batches mixed with keyless jobs.
                let batch: Vec<NewJob> = (0..4)
                    .map(|k| job("uniq").unique_key(format!("r{round}-k{k}")))
                    .chain(std::iter::once(job("uniq").tag(format!("t{t}"))))
                    .collect();
                ids.push(enqueue_many(&pool, &batch).await.unwrap());
            }
            ids
        }));
    }
    let mut per_key = std::collections::HashMap::new();
    for t in tasks {
        for (round, out) in t.await.unwrap().into_iter().enumerate() {
            for (k, e) in out.iter().take(4).enumerate() {
                per_key.entry((round, k)).or_insert_with(Vec::new).push(*e);
            }
        }
    }
    for (key, results) in per_key {
        let created = results.iter().filter(|e| e.created).count();
        assert_eq!(created, 1, "key {key:?} created {created} times");
        let id = results.iter().find(|e| e.created).unwrap().id;
        assert!(
            results.iter().all(|e| e.id == id),
            "key {key:?} answered different ids"
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE unique_key IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 25 * 4);
    let keyless: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE unique_key IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        keyless,
        16 * 25,
        "a duplicate key must not reject the rest of its batch"
    );
}

#[tokio::test]
async fn a_finished_job_frees_its_unique_key() {
    let db = TestDb::new().await;
    let a = enqueue(&db.pool, &job("q").unique_key("k")).await.unwrap();
    admin::cancel(&db.pool, a.id).await.unwrap();
    let b = enqueue(&db.pool, &job("q").unique_key("k")).await.unwrap();
    assert!(b.created);
    assert_ne!(a.id, b.id);
}

#[tokio::test]
async fn bad_input_is_refused_by_field_and_nothing_is_written() {
    let db = TestDb::new().await;
    let big = json!({"blob": "x".repeat(1024 * 1024)});
    let cases = [
        (NewJob::new("q", JobKind::Test, big), "jobs[1].payload"),
        (job("q").priority(101), "jobs[1].priority"),
        (job("q").max_attempts(0), "jobs[1].max_attempts"),
        (job("Q!"), "jobs[1].queue"),
    ];
    for (bad, field) in cases {
        let err = enqueue_many(&db.pool, &[job("q"), bad]).await.unwrap_err();
        match err {
            QueueError::Invalid(v) => assert_eq!(v.field, field),
            other => panic!("expected a validation error, got {other}"),
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "a refused batch writes nothing");
}

/// The table's CHECK on `queue` (no regular expression since migration 0020: Postgres runs
/// every CHECK on every UPDATE), Rust's `valid_queue_name` and the documented pattern
/// `^[a-z0-9][a-z0-9_.-]{0,63}$` accept exactly the same names.
#[tokio::test]
async fn the_queue_check_accepts_exactly_the_documented_names() {
    let db = TestDb::new().await;
    let names = [
        "q".to_string(),
        "0".into(),
        "a-b_c.d".into(),
        "a".repeat(64),
        "a".repeat(65),
        String::new(),
        "-q".into(),
        "_q".into(),
        ".q".into(),
        "Q".into(),
        "q Q".into(),
        "q\n".into(),
        "q/x".into(),
        "é".into(),
        "qé".into(),
        "q%".into(),
        "9.9-9_9".into(),
    ];
    for name in names {
        let pattern: bool = sqlx::query_scalar("SELECT $1 ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'")
            .bind(&name)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let stored =
            sqlx::query("INSERT INTO kiln_jobs (queue, kind, state) VALUES ($1, 'test', 'available')")
                .bind(&name)
                .execute(&db.pool)
                .await;
        match &stored {
            Err(sqlx::Error::Database(e)) => {
                assert_eq!(e.constraint(), Some("kiln_jobs_queue_check"), "{name:?}: {e}")
            }
            Err(e) => panic!("{name:?}: {e}"),
            Ok(_) => {}
        }
        assert_eq!(
            stored.is_ok(),
            pattern,
            "the table and the pattern disagree on {name:?}"
        );
        assert_eq!(
            kiln_queue::spec::valid_queue_name(&name),
            pattern,
            "Rust and the pattern disagree on {name:?}"
        );
    }
    let def: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'kiln_jobs_queue_check'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        !def.contains('~'),
        "the hot path's CHECK runs no regular expression: {def}"
    );
}

#[tokio::test]
async fn claims_follow_priority_and_skip_locked_rows() {
    let db = TestDb::new().await;
    let low = enqueue(&db.pool, &job("p").priority(-5)).await.unwrap();
    let high = enqueue(&db.pool, &job("p").priority(50)).await.unwrap();
    let mid = enqueue(&db.pool, &job("p")).await.unwrap();
    let lease_for = Duration::from_secs(30);
    let first = lease::claim(&db.pool, "p", "w1", 1, lease_for).await.unwrap();
    let rest = lease::claim(&db.pool, "p", "w2", 10, lease_for).await.unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), vec![high.id]);
    assert_eq!(
        rest.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![mid.id, low.id]
    );
    assert!(lease::claim(&db.pool, "p", "w3", 10, lease_for)
        .await
        .unwrap()
        .is_empty());
    let rec = admin::get_job(&db.pool, high.id).await.unwrap();
    assert_eq!(
        (rec.state, rec.attempt, rec.locked_by.as_deref()),
        (JobState::Running, 1, Some("w1"))
    );
}

fn completion(id: i64, attempt: i32, outcome: AttemptOutcome, retry_in: Option<i64>) -> Completion {
    let now = Utc::now();
    Completion {
        id,
        attempt,
        outcome,
        result: (outcome == AttemptOutcome::Succeeded).then(|| json!({"ok": true})),
        error: (outcome != AttemptOutcome::Succeeded).then(|| "boom".to_string()),
        started_at: now,
        finished_at: now,
        retry_at: retry_in.map(|s| now + chrono::Duration::seconds(s)),
        details: None,
    }
}

#[tokio::test]
async fn sandbox_details_land_in_the_attempt_row() {
    let db = TestDb::new().await;
    let ids = enqueue_many(&db.pool, &[job("d"), job("d")]).await.unwrap();
    lease::claim(&db.pool, "d", "w1", 2, Duration::from_secs(30))
        .await
        .unwrap();
    let details = AttemptDetails {
        exit_code: Some(3),
        container_id: Some("c0ffee".into()),
        image_digest: Some("sha256:abc".into()),
        peak_memory_bytes: Some(1 << 20),
        cpu_time_ms: Some(42),
        stdout_head: Some("out".into()),
        stderr_tail: Some("err".into()),
        diff: Some("--- a/x\n+++ b/x\n".into()),
        diff_files: Some(1),
        diff_insertions: Some(2),
        diff_deletions: Some(0),
        timings: Some(json!({"start_ms": 12, "run_ms": 300})),
        ..AttemptDetails::default()
    };
    let mut with = completion(ids[0].id, 1, AttemptOutcome::Failed, None);
    with.details = Some(details.to_json());
    let without = completion(ids[1].id, 1, AttemptOutcome::Succeeded, None);
    let done = lease::complete(&db.pool, "w1", &[with, without]).await.unwrap();
    assert_eq!(done.len(), 2);
    let first = admin::attempts(&db.pool, ids[0].id).await.unwrap();
    assert_eq!(
        serde_json::Value::Object(first[0].details.clone()),
        details.to_json()
    );
    assert_eq!(first[0].diff(), details.diff.as_deref());
    assert_eq!(first[0].diff_counts(), Some((1, 2, 0)));
    assert_eq!(first[0].error.as_deref(), Some("boom"));
    let second = admin::attempts(&db.pool, ids[1].id).await.unwrap();
    assert!(second[0].details.is_empty());
}

#[tokio::test]
async fn completion_is_idempotent_and_guarded_by_worker_and_attempt() {
    let db = TestDb::new().await;
    let e = enqueue(&db.pool, &job("c")).await.unwrap();
    let claimed = lease::claim(&db.pool, "c", "w1", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed[0].attempt, 1);
    // The wrong worker or attempt changes nothing.
    assert!(lease::complete(
        &db.pool,
        "w2",
        &[completion(e.id, 1, AttemptOutcome::Succeeded, None)]
    )
    .await
    .unwrap()
    .is_empty());
    assert!(lease::complete(
        &db.pool,
        "w1",
        &[completion(e.id, 2, AttemptOutcome::Succeeded, None)]
    )
    .await
    .unwrap()
    .is_empty());
    let done = lease::complete(
        &db.pool,
        "w1",
        &[completion(e.id, 1, AttemptOutcome::Succeeded, None)],
    )
    .await
    .unwrap();
    assert_eq!(done, vec![(e.id, JobState::Succeeded)]);
    // Repeating it writes no second attempt.
    assert!(lease::complete(
        &db.pool,
        "w1",
        &[completion(e.id, 1, AttemptOutcome::Succeeded, None)]
    )
    .await
    .unwrap()
    .is_empty());
    let rec = admin::get_job(&db.pool, e.id).await.unwrap();
    assert_eq!(rec.state, JobState::Succeeded);
    assert!(rec.finalized_at.is_some());
    assert_eq!(rec.result, Some(json!({"ok": true})));
    assert_eq!(admin::attempts(&db.pool, e.id).await.unwrap().len(), 1);
}

/// The completion reads its jobs without a row lock, so its UPDATE must re-check every guard
/// on the newest version of a row another transaction changed meanwhile: a rescue committed
/// while the completion waits wins (no attempt row, no event from the completion), and a
/// heartbeat does not stop the completion of the job it extended.
#[tokio::test]
async fn a_rescue_committed_while_a_completion_waits_wins() {
    let db = TestDb::new().await;
    let ids = enqueue_many(&db.pool, &[job("race"), job("race")]).await.unwrap();
    let (a, b) = (ids[0].id, ids[1].id);
    lease::claim(&db.pool, "race", "w1", 2, Duration::from_secs(30))
        .await
        .unwrap();
    let mut other = db.pool.begin().await.unwrap();
    // What rescue does to `a` and a heartbeat to `b`, left uncommitted.
    sqlx::query(
        "UPDATE kiln_jobs SET state = 'retryable', locked_by = NULL, lease_expires_at = NULL, \
         run_at = now() WHERE id = $1",
    )
    .bind(a)
    .execute(&mut *other)
    .await
    .unwrap();
    sqlx::query("UPDATE kiln_jobs SET lease_expires_at = now() + interval '60 s' WHERE id = $1")
        .bind(b)
        .execute(&mut *other)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let completing = tokio::spawn(async move {
        lease::complete(
            &pool,
            "w1",
            &[
                completion(a, 1, AttemptOutcome::Succeeded, None),
                completion(b, 1, AttemptOutcome::Succeeded, None),
            ],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !completing.is_finished(),
        "the completion waits for the rows' locks"
    );
    other.commit().await.unwrap();
    let done = completing.await.unwrap().unwrap();
    assert_eq!(done, vec![(b, JobState::Succeeded)]);
    assert_eq!(
        admin::get_job(&db.pool, a).await.unwrap().state,
        JobState::Retryable
    );
    assert!(admin::attempts(&db.pool, a).await.unwrap().is_empty());
    assert_eq!(admin::attempts(&db.pool, b).await.unwrap().len(), 1);
    let events: Vec<i64> = sqlx::query_scalar("SELECT j FROM kiln_events, unnest(job_ids) AS j ORDER BY j")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, vec![b]);
}

#[tokio::test]
async fn failures_back_off_then_dead_letter_then_retry_by_hand() {
    let db = TestDb::new().await;
    let e = enqueue(&db.pool, &job("f").max_attempts(2)).await.unwrap();
    let lease_for = Duration::from_secs(30);
    lease::claim(&db.pool, "f", "w", 1, lease_for).await.unwrap();
    let s = lease::complete(
        &db.pool,
        "w",
        &[completion(e.id, 1, AttemptOutcome::Failed, Some(3600))],
    )
    .await
    .unwrap();
    assert_eq!(s, vec![(e.id, JobState::Retryable)]);
    let rec = admin::get_job(&db.pool, e.id).await.unwrap();
    assert!(
        rec.run_at > Utc::now() + chrono::Duration::minutes(59),
        "backoff moves run_at"
    );
    assert!(rec.finalized_at.is_none());
    assert!(
        lease::claim(&db.pool, "f", "w", 1, lease_for)
            .await
            .unwrap()
            .is_empty(),
        "not before its backoff"
    );
    sqlx::query("UPDATE kiln_jobs SET run_at = now() WHERE id = $1")
        .bind(e.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let again = lease::claim(&db.pool, "f", "w", 1, lease_for).await.unwrap();
    assert_eq!(again[0].attempt, 2);
    let s = lease::complete(
        &db.pool,
        "w",
        &[completion(e.id, 2, AttemptOutcome::Failed, Some(1))],
    )
    .await
    .unwrap();
    assert_eq!(s, vec![(e.id, JobState::Failed)], "out of attempts: dead letter");
    assert!(admin::get_job(&db.pool, e.id)
        .await
        .unwrap()
        .finalized_at
        .is_some());

    admin::retry(&db.pool, e.id).await.unwrap();
    let rec = admin::get_job(&db.pool, e.id).await.unwrap();
    assert_eq!((rec.state, rec.max_attempts), (JobState::Available, 3));
    assert!(rec.finalized_at.is_none());
    let third = lease::claim(&db.pool, "f", "w", 1, lease_for).await.unwrap();
    assert_eq!(third[0].attempt, 3);
    // A permanent failure (no retry_at) fails at once.
    let s = lease::complete(
        &db.pool,
        "w",
        &[completion(e.id, 3, AttemptOutcome::Failed, None)],
    )
    .await
    .unwrap();
    assert_eq!(s, vec![(e.id, JobState::Failed)]);
    let outcomes: Vec<_> = admin::attempts(&db.pool, e.id)
        .await
        .unwrap()
        .iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, vec![AttemptOutcome::Failed; 3]);
}

#[tokio::test]
async fn expired_leases_are_rescued_with_a_lost_attempt() {
    let db = TestDb::new().await;
    let a = enqueue(&db.pool, &job("r")).await.unwrap();
    let b = enqueue(&db.pool, &job("r").max_attempts(1)).await.unwrap();
    lease::claim(&db.pool, "r", "dead-worker", 10, Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rescued = maintenance::rescue_expired(&db.pool, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 2);
    assert_eq!(
        admin::get_job(&db.pool, a.id).await.unwrap().state,
        JobState::Retryable
    );
    assert_eq!(
        admin::get_job(&db.pool, b.id).await.unwrap().state,
        JobState::Failed,
        "no attempts left"
    );
    let att = admin::attempts(&db.pool, a.id).await.unwrap();
    assert_eq!(
        (att.len(), att[0].outcome, att[0].worker_id.as_str()),
        (1, AttemptOutcome::Lost, "dead-worker")
    );
    // The late completion of the dead worker is ignored.
    assert!(lease::complete(
        &db.pool,
        "dead-worker",
        &[completion(a.id, 1, AttemptOutcome::Succeeded, None)]
    )
    .await
    .unwrap()
    .is_empty());
    let again = lease::claim(&db.pool, "r", "w2", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(),
        vec![(a.id, 2)]
    );
}

#[tokio::test]
async fn a_rescued_job_with_a_cancel_request_ends_cancelled() {
    let db = TestDb::new().await;
    let a = enqueue(&db.pool, &job("rc")).await.unwrap();
    lease::claim(&db.pool, "rc", "dead-worker", 10, Duration::from_millis(100))
        .await
        .unwrap();
    // Cancel asked while running (the worker never saw it), then the lease expires.
    admin::cancel(&db.pool, a.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rescued = maintenance::rescue_expired(&db.pool, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    let j = admin::get_job(&db.pool, a.id).await.unwrap();
    assert_eq!(j.state, JobState::Cancelled, "not retried");
    let att = admin::attempts(&db.pool, a.id).await.unwrap();
    assert_eq!((att.len(), att[0].outcome), (1, AttemptOutcome::Cancelled));
    assert!(lease::claim(&db.pool, "rc", "w2", 10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn pause_resume_and_fleet_wide_cap() {
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..10).map(|_| job("capped")).collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let lease_for = Duration::from_secs(30);
    admin::pause(&db.pool, "capped").await.unwrap();
    assert!(lease::claim(&db.pool, "capped", "w", 10, lease_for)
        .await
        .unwrap()
        .is_empty());
    admin::resume(&db.pool, "capped").await.unwrap();
    admin::configure_queue(&db.pool, "capped", None, Some(3), true)
        .await
        .unwrap();
    assert_eq!(
        lease::claim(&db.pool, "capped", "w1", 10, lease_for)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        lease::claim(&db.pool, "capped", "w2", 10, lease_for)
            .await
            .unwrap()
            .len(),
        0
    );
    let counts = admin::queue_counts(&db.pool).await.unwrap();
    let running = counts
        .iter()
        .find(|c| c.state == Some(JobState::Running))
        .unwrap();
    assert_eq!((running.count, running.max_running), (3, Some(3)));
}

#[tokio::test]
async fn cancel_not_running_is_immediate_and_final() {
    let db = TestDb::new().await;
    let e = enqueue(&db.pool, &job("x")).await.unwrap();
    assert_eq!(admin::cancel(&db.pool, e.id).await.unwrap(), JobState::Cancelled);
    let rec = admin::get_job(&db.pool, e.id).await.unwrap();
    assert!(rec.finalized_at.is_some());
    assert!(matches!(
        admin::cancel(&db.pool, e.id).await,
        Err(QueueError::WrongState { .. })
    ));
    assert!(lease::claim(&db.pool, "x", "w", 10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn children_wait_for_parents_and_die_with_them() {
    let db = TestDb::new().await;
    let parent = enqueue(&db.pool, &job("d")).await.unwrap();
    let child = enqueue(&db.pool, &job("d").after(parent.id)).await.unwrap();
    let doomed_parent = enqueue(&db.pool, &job("d")).await.unwrap();
    let doomed = enqueue(&db.pool, &job("d").after(doomed_parent.id))
        .await
        .unwrap();
    let lease_for = Duration::from_secs(30);
    let claimed = lease::claim(&db.pool, "d", "w", 10, lease_for).await.unwrap();
    assert_eq!(claimed.len(), 2, "children are not claimable yet");
    lease::complete(
        &db.pool,
        "w",
        &[completion(parent.id, 1, AttemptOutcome::Succeeded, None)],
    )
    .await
    .unwrap();
    assert_eq!(
        admin::get_job(&db.pool, child.id).await.unwrap().state,
        JobState::Available,
        "released on completion"
    );
    lease::complete(
        &db.pool,
        "w",
        &[completion(doomed_parent.id, 1, AttemptOutcome::Failed, None)],
    )
    .await
    .unwrap();
    maintenance::resolve_pending(&db.pool).await.unwrap();
    assert_eq!(
        admin::get_job(&db.pool, doomed.id).await.unwrap().state,
        JobState::Cancelled
    );
}

#[tokio::test]
async fn pruning_deletes_old_finished_jobs_only() {
    let db = TestDb::new().await;
    let old = enqueue(&db.pool, &job("z")).await.unwrap();
    let fresh = enqueue(&db.pool, &job("z")).await.unwrap();
    let live = enqueue(&db.pool, &job("z")).await.unwrap();
    // `old` ran: it has an attempt and logs, which must go with it.
    lease::claim(&db.pool, "z", "w1", 1, Duration::from_secs(30))
        .await
        .unwrap();
    lease::complete(
        &db.pool,
        "w1",
        &[completion(old.id, 1, AttemptOutcome::Succeeded, None)],
    )
    .await
    .unwrap();
    let chunk = logs::LogChunk {
        seq: 0,
        stream: "stdout".into(),
        data: "x".into(),
    };
    logs::append(&db.pool, old.id, 1, &[chunk]).await.unwrap();
    admin::cancel(&db.pool, fresh.id).await.unwrap();
    sqlx::query("UPDATE kiln_jobs SET finalized_at = now() - interval '30 days' WHERE id = $1")
        .bind(old.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let n = maintenance::prune(&mut conn, &maintenance::Retention::default(), 1000)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(admin::get_job(&db.pool, old.id).await.is_err());
    assert!(admin::attempts(&db.pool, old.id).await.unwrap().is_empty());
    assert!(logs::read(&db.pool, old.id, None, 10).await.unwrap().is_empty());
    assert!(admin::get_job(&db.pool, fresh.id).await.is_ok());
    assert!(admin::get_job(&db.pool, live.id).await.is_ok());
}

#[tokio::test]
async fn a_fleet_wide_cap_holds_under_concurrent_claimers() {
    let db = TestDb::with_pool_size(24).await;
    let jobs: Vec<NewJob> = (0..100).map(|_| job("capped")).collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    admin::configure_queue(&db.pool, "capped", None, Some(5), true)
        .await
        .unwrap();
    let claims: Vec<_> = (0..16)
        .map(|i| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                lease::claim(&pool, "capped", &format!("w{i}"), 10, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .len()
            })
        })
        .collect();
    let mut total = 0;
    for c in claims {
        total += c.await.unwrap();
    }
    assert_eq!(
        total, 5,
        "16 racing claimers together got {total} jobs under a cap of 5"
    );
}

#[tokio::test]
async fn log_chunks_append_once_and_read_back_in_order() {
    let db = TestDb::new().await;
    let e = enqueue(&db.pool, &job("l")).await.unwrap();
    let chunk = |seq: i32, stream: &str, data: &str| logs::LogChunk {
        seq,
        stream: stream.into(),
        data: data.into(),
    };
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(logs::LOGS_CHANNEL).await.unwrap();
    let first = [chunk(0, "stdout", "a"), chunk(1, "stderr", "b")];
    assert_eq!(logs::append(&db.pool, e.id, 1, &first).await.unwrap(), 2);
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.payload(), e.id.to_string());
    // A re-sent chunk is ignored; a later attempt starts its own sequence.
    assert_eq!(
        logs::append(
            &db.pool,
            e.id,
            1,
            &[chunk(1, "stderr", "b"), chunk(2, "stdout", "c")]
        )
        .await
        .unwrap(),
        1
    );
    logs::append(&db.pool, e.id, 2, &[chunk(0, "stdout", "d")])
        .await
        .unwrap();
    let all = logs::read(&db.pool, e.id, None, 100).await.unwrap();
    let seen: Vec<_> = all.iter().map(|r| (r.attempt, r.seq, r.data.as_str())).collect();
    assert_eq!(seen, vec![(1, 0, "a"), (1, 1, "b"), (1, 2, "c"), (2, 0, "d")]);
    let tail = logs::read(&db.pool, e.id, Some((1, 1)), 2).await.unwrap();
    assert_eq!(
        tail.iter().map(|r| r.data.as_str()).collect::<Vec<_>>(),
        vec!["c", "d"]
    );
    let bad = logs::append(&db.pool, e.id, 1, &[chunk(9, "stdin", "x")]).await;
    assert!(bad.is_err(), "an unknown stream is refused");
}

#[tokio::test]
async fn a_table_full_of_dead_rows_is_vacuumed_by_one_worker_at_a_time() {
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..12_000).map(|_| job("v")).collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    // Nothing dead yet: nothing to do.
    assert!(
        !maintenance::vacuum_if_needed(&mut conn, 10_000, 0.2, Duration::ZERO)
            .await
            .unwrap()
    );
    lease::claim(&db.pool, "v", "w1", 12_000, Duration::from_secs(30))
        .await
        .unwrap();
    // Another session holding the vacuum lock keeps this one out.
    let mut other = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('kiln.vacuum', 0))")
        .execute(&mut *other)
        .await
        .unwrap();
    wait_for_dead_tuples(&mut conn, 10_000).await;
    assert!(
        !maintenance::vacuum_if_needed(&mut conn, 10_000, 0.2, Duration::ZERO)
            .await
            .unwrap()
    );
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(
        maintenance::vacuum_if_needed(&mut conn, 10_000, 0.2, Duration::ZERO)
            .await
            .unwrap()
    );
    assert!(
        dead_tuples(&mut conn).await < 1_000,
        "the vacuum removed the dead row versions"
    );
    // The lock was released: the next pass may vacuum again (and finds nothing to do).
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('kiln.vacuum', 0))")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(locked);
}

/// A table vacuumed moments ago is not vacuumed again, whoever did it: several workers seeing
/// one drain, or statistics arriving a second late, vacuumed twice in a row.
#[tokio::test]
async fn a_table_vacuumed_moments_ago_is_not_vacuumed_again() {
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..12_000).map(|_| job("v")).collect();
    enqueue_many(&db.pool, &jobs).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql("VACUUM kiln_jobs")
        .execute(&mut *conn)
        .await
        .unwrap();
    lease::claim(&db.pool, "v", "w1", 12_000, Duration::from_secs(30))
        .await
        .unwrap();
    wait_for_dead_tuples(&mut conn, 10_000).await;
    assert!(
        !maintenance::vacuum_if_needed(&mut conn, 10_000, 0.2, Duration::from_secs(30))
            .await
            .unwrap(),
        "vacuumed again within 30 s of the last vacuum"
    );
    assert!(
        maintenance::vacuum_if_needed(&mut conn, 10_000, 0.2, Duration::ZERO)
            .await
            .unwrap()
    );
}

/// Waits until the statistics show at least `n` dead row versions in `kiln_jobs` (they reach
/// the server within a second or so of the commit).
async fn wait_for_dead_tuples(conn: &mut sqlx::PgConnection, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while dead_tuples(conn).await < n {
        assert!(
            std::time::Instant::now() < deadline,
            "dead tuples never showed in the statistics"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn dead_tuples(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'kiln_jobs'::regclass")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn kiln_sessions_run_without_jit() {
    let db = TestDb::new().await;
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&db.pool).await.unwrap();
    assert_eq!(
        jit, "off",
        "a 10,000-job enqueue spent 700 ms compiling with JIT on"
    );
}

/// Attempt rows are written once per job run, so each index on them is paid on the hot path:
/// one key, (job_id, id), serves every read (a job's attempts in order, pruning by job).
#[tokio::test]
async fn attempts_carry_one_index_and_are_read_by_it() {
    let db = TestDb::new().await;
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE tablename = 'kiln_attempts'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        indexes,
        vec![
            "CREATE UNIQUE INDEX kiln_attempts_pkey ON public.kiln_attempts USING btree (job_id, id)"
                .to_owned()
        ]
    );
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN (COSTS OFF) SELECT id FROM kiln_attempts WHERE job_id = 7 ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(plan.iter().any(|l| l.contains("kiln_attempts_pkey")), "{plan:?}");
}
