//! The job-event outbox, the one list of kinds, and workers built from kind modules.

use chrono::Utc;
use kiln_queue::events::{self, types, EventFilter, NewEvent};
use kiln_queue::lease::{self, Completion};
use kiln_queue::{enqueue_many, AttemptOutcome, JobKind, Listener, NewJob, Signal};
use kiln_testkit::TestDb;
use kiln_tests::api::ApiServer;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn job(queue: &str) -> NewJob {
    NewJob::new(queue, JobKind::Test, json!({}))
}

fn done(id: i64, outcome: AttemptOutcome, retry: bool) -> Completion {
    Completion {
        id,
        attempt: 1,
        outcome,
        result: None,
        error: (outcome != AttemptOutcome::Succeeded).then(|| "boom".into()),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        retry_at: retry.then(Utc::now),
        details: None,
    }
}

async fn all_events(pool: &sqlx::PgPool, after: i64) -> Vec<events::Event> {
    events::list(
        pool,
        &EventFilter {
            after,
            limit: 1000,
            ..EventFilter::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batched_completion_writes_one_event_per_job_with_its_own_id() {
    let db = TestDb::new().await;
    let ids = enqueue_many(&db.pool, &[job("q"), job("q"), job("q"), job("q")])
        .await
        .unwrap();
    lease::claim(&db.pool, "q", "w1", 4, Duration::from_secs(30))
        .await
        .unwrap();
    let batch = [
        done(ids[0].id, AttemptOutcome::Succeeded, false),
        done(ids[1].id, AttemptOutcome::Failed, true),
        done(ids[2].id, AttemptOutcome::Failed, false),
        done(ids[3].id, AttemptOutcome::Cancelled, false),
    ];
    lease::complete(&db.pool, "w1", &batch).await.unwrap();
    let got = all_events(&db.pool, 0).await;
    let seen: Vec<(i64, &str)> = got
        .iter()
        .map(|e| (e.job_id.unwrap(), e.kind_of_event.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (ids[0].id, types::JOB_SUCCEEDED),
            (ids[1].id, types::JOB_RETRYABLE),
            (ids[2].id, types::JOB_FAILED),
            (ids[3].id, types::JOB_CANCELLED),
        ]
    );
    let event_ids: Vec<i64> = got.iter().map(|e| e.id).collect();
    assert_eq!(event_ids, vec![1, 2, 3, 4], "strictly increasing, one each");
    assert_eq!(got[1].data["attempt"], 1);
    assert!(got[1].data["retry_at"].is_string(), "{}", got[1].data);
    assert_eq!(got[0].queue.as_deref(), Some("q"));
    assert_eq!(got[0].kind.as_deref(), Some("test"));
    // A repeated completion changes nothing and writes no second event.
    lease::complete(&db.pool, "w1", &batch).await.unwrap();
    assert_eq!(all_events(&db.pool, 0).await.len(), 4);
    assert_eq!(events::last_id(&db.pool).await.unwrap(), 4);
}

#[tokio::test]
async fn cancel_rescue_and_pending_cancellations_write_events() {
    let db = TestDb::new().await;
    let ids = enqueue_many(&db.pool, &[job("q"), job("r")]).await.unwrap();
    let child = enqueue_many(&db.pool, &[job("q").after(ids[0].id)])
        .await
        .unwrap();
    kiln_queue::admin::cancel(&db.pool, ids[0].id).await.unwrap();
    lease::claim(&db.pool, "r", "w1", 1, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    kiln_queue::maintenance::rescue_expired(&db.pool, Duration::ZERO)
        .await
        .unwrap();
    kiln_queue::maintenance::resolve_pending(&db.pool).await.unwrap();
    let got: Vec<(i64, String)> = all_events(&db.pool, 0)
        .await
        .into_iter()
        .map(|e| (e.job_id.unwrap(), e.kind_of_event))
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[0].id, types::JOB_CANCELLED.to_owned()),
            (ids[1].id, types::JOB_RETRYABLE.to_owned()),
            (child[0].id, types::JOB_CANCELLED.to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_consumer_that_misses_every_notify_still_reads_every_event_by_id() {
    let db = TestDb::new().await;
    // No listener at all: the consumer only reads by id, in pages.
    let mut cursor = 0;
    let mut seen = Vec::new();
    for round in 0..3 {
        let jobs: Vec<NewJob> = (0..5).map(|_| job("q")).collect();
        let ids = enqueue_many(&db.pool, &jobs).await.unwrap();
        lease::claim(&db.pool, "q", "w1", 5, Duration::from_secs(30))
            .await
            .unwrap();
        let batch: Vec<Completion> = ids
            .iter()
            .map(|e| done(e.id, AttemptOutcome::Succeeded, false))
            .collect();
        lease::complete(&db.pool, "w1", &batch).await.unwrap();
        loop {
            let page = events::list(
                &db.pool,
                &EventFilter {
                    after: cursor,
                    limit: 2,
                    ..EventFilter::default()
                },
            )
            .await
            .unwrap();
            let Some(last) = page.last() else { break };
            cursor = last.id;
            seen.extend(page.iter().map(|e| e.id));
        }
        assert_eq!(seen.len(), 5 * (round + 1));
    }
    assert_eq!(seen, (1..=15).collect::<Vec<i64>>());
}

#[tokio::test]
async fn ids_follow_commit_order_so_a_reader_never_skips_a_late_commit() {
    let db = TestDb::new().await;
    // Transaction A reserves an id first and stays open; B writes after it.
    let mut a = db.pool.begin().await.unwrap();
    let a_ids = events::emit(&mut *a, &[NewEvent::new("test.a", json!({}))])
        .await
        .unwrap();
    let pool = db.pool.clone();
    let b = tokio::spawn(async move {
        let mut b = pool.begin().await.unwrap();
        let ids = events::emit(&mut *b, &[NewEvent::new("test.b", json!({}))])
            .await
            .unwrap();
        b.commit().await.unwrap();
        ids
    });
    // B cannot commit ahead of A: a reader sees neither while A is open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_finished(), "B must wait for A's id reservation to commit");
    assert!(all_events(&db.pool, 0).await.is_empty());
    a.commit().await.unwrap();
    let b_ids = b.await.unwrap();
    assert!(b_ids[0] > a_ids[0], "{b_ids:?} after {a_ids:?}");
    let got: Vec<String> = all_events(&db.pool, 0)
        .await
        .into_iter()
        .map(|e| e.kind_of_event)
        .collect();
    assert_eq!(got, ["test.a", "test.b"]);
}

#[tokio::test]
async fn events_of_a_rolled_back_transaction_never_appear() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    events::emit(&mut *tx, &[NewEvent::new("test.gone", json!({}))])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    events::emit(&db.pool, &[NewEvent::new("test.kept", json!({}))])
        .await
        .unwrap();
    let got = all_events(&db.pool, 0).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind_of_event, "test.kept");
    // The rolled-back reservation leaves no gap either: the counter rolled back with it.
    assert_eq!(got[0].id, 1);
}

#[tokio::test]
async fn the_listener_fans_out_one_connection_to_many_subscribers() {
    let db = TestDb::new().await;
    let stop = CancellationToken::new();
    let listener = Listener::start(db.pool.clone(), stop.clone());
    let mut a = listener.subscribe(events::CHANNEL);
    let mut b = listener.subscribe(events::CHANNEL);
    // Wait for the LISTEN to be in place (the first signal after connecting).
    let first = tokio::time::timeout(Duration::from_secs(10), a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, Signal::Reconnected);
    let _ = b.recv().await;
    let listening: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(listening, 1, "one LISTEN connection for every subscriber");
    events::emit(&db.pool, &[NewEvent::new("test.x", json!({}))])
        .await
        .unwrap();
    for rx in [&mut a, &mut b] {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Signal::Notified("1".into()));
    }
    stop.cancel();
}

#[tokio::test]
async fn the_database_constraint_and_the_api_schema_list_exactly_the_kinds() {
    let db = TestDb::new().await;
    let def: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'kiln_jobs_kind_known'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut in_db: Vec<String> = def.split('\'').skip(1).step_by(2).map(str::to_owned).collect();
    in_db.sort();
    let mut in_code: Vec<String> = JobKind::ALL.iter().map(|k| k.to_string()).collect();
    in_code.sort();
    assert_eq!(
        in_db, in_code,
        "migrations and kiln_queue::JobKind disagree: {def}"
    );
    let doc = serde_json::to_value(kiln_api::openapi()).unwrap();
    let mut in_api: Vec<String> = doc["components"]["schemas"]["JobKind"]["enum"]
        .as_array()
        .expect("JobKind enum in the OpenAPI document")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    in_api.sort();
    assert_eq!(in_api, in_code, "the API schema and kiln_queue::JobKind disagree");
    // The database refuses a kind outside the list.
    let err = sqlx::query("INSERT INTO kiln_jobs (queue, kind, state) VALUES ('q', 'compile', 'available')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kiln_jobs_kind_known"), "{err}");
}

#[tokio::test]
async fn every_kind_refuses_a_malformed_payload_at_enqueue_naming_the_field() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    for kind in JobKind::ALL {
        let (status, body) = api
            .post_admin(
                "/v1/jobs",
                json!({"kind": kind.as_str(), "payload": {"nonsense": true}}),
            )
            .await;
        assert_eq!(status, 422, "{kind}: {body}");
        assert!(
            body["field"].as_str().unwrap().starts_with("payload"),
            "{kind}: {body}"
        );
    }
    let (status, body) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "payload": {"workspace": "main"}}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("payload.workspace")),
        "{body}"
    );
    let (status, body) = api
        .post_admin(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "test", "payload": {"workspace": DIGEST}}, {"kind": "preview", "payload": {"workspace": DIGEST, "port": 0}}]}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("jobs[1].payload.port")),
        "{body}"
    );
    // Nothing of the refused batch was accepted; a good payload is.
    let (status, _) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "payload": {"workspace": DIGEST}}),
        )
        .await;
    assert_eq!(status, 201);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_events_api_pages_filters_and_streams_resuming_after_last_event_id() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let ids = enqueue_many(&db.pool, &[job("q"), job("q"), job("r")])
        .await
        .unwrap();
    lease::claim(&db.pool, "q", "w1", 2, Duration::from_secs(30))
        .await
        .unwrap();
    lease::claim(&db.pool, "r", "w1", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let batch: Vec<Completion> = ids
        .iter()
        .map(|e| done(e.id, AttemptOutcome::Succeeded, false))
        .collect();
    lease::complete(&db.pool, "w1", &batch).await.unwrap();

    let (s, page) = api.get_admin("/v1/events?limit=2").await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after"], 2);
    assert_eq!(page["last_id"], 3);
    assert_eq!(page["events"][0]["type"], "job.succeeded");
    let (_, page) = api.get_admin("/v1/events?after=2").await;
    assert_eq!(page["events"][0]["id"], 3);
    let (_, page) = api.get_admin("/v1/events?queue=r").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["job_id"], ids[2].id);
    let (_, page) = api.get_admin(&format!("/v1/events?job={}", ids[1].id)).await;
    assert_eq!(page["events"][0]["id"], 2);
    let (s, body) = api.get_admin("/v1/events?limit=5000").await;
    assert_eq!((s, body["field"].as_str()), (400, Some("limit")), "{body}");
    let (s, body) = api.get_admin("/v1/events?kind=compile").await;
    assert_eq!((s, body["field"].as_str()), (400, Some("kind")), "{body}");
    let (s, _) = api.call(api.req(reqwest::Method::GET, "/v1/events", None)).await;
    assert_eq!(s, 401);

    // The stream resumes exactly after Last-Event-ID, then follows new events.
    let res = api
        .req(reqwest::Method::GET, "/v1/events/stream", Some(&api.admin))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let more = enqueue_many(&db.pool, &[job("q")]).await.unwrap();
    lease::claim(&db.pool, "q", "w1", 1, Duration::from_secs(30))
        .await
        .unwrap();
    lease::complete(&db.pool, "w1", &[done(more[0].id, AttemptOutcome::Failed, false)])
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    use futures::StreamExt;
    let ids_in = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("id:").map(|v| v.trim().to_owned()))
            .collect()
    };
    while ids_in(&text).len() < 3 {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    let ids_seen = ids_in(&text);
    assert_eq!(ids_seen, ["2", "3", "4"], "{text}");
    assert!(text.contains("event: job.failed"), "{text}");
}

#[tokio::test]
async fn kiln_events_prints_the_outbox_one_object_per_line_with_filters() {
    let db = TestDb::new().await;
    let ids = enqueue_many(&db.pool, &[job("q"), job("r")]).await.unwrap();
    lease::claim(&db.pool, "q", "w1", 1, Duration::from_secs(30))
        .await
        .unwrap();
    lease::claim(&db.pool, "r", "w1", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let batch = [
        done(ids[0].id, AttemptOutcome::Succeeded, false),
        done(ids[1].id, AttemptOutcome::Failed, false),
    ];
    lease::complete(&db.pool, "w1", &batch).await.unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(kiln_tests::kiln_binary())
            .arg("events")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run kiln events");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object per line"))
            .collect::<Vec<_>>()
    };
    let all = run(&[]);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["type"], "job.succeeded");
    assert_eq!(all[1]["type"], "job.failed");
    let failed = run(&["--type", "job.failed"]);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["job_id"], ids[1].id);
    assert_eq!(run(&["--after", "1"]).len(), 1);
    assert_eq!(run(&["--queue", "q"])[0]["job_id"], ids[0].id);
    let bad = std::process::Command::new(kiln_tests::kiln_binary())
        .args(["events", "--kind", "compile"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--kind"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test]
async fn maintenance_prunes_events_older_than_their_retention_only() {
    // Issue 14 item 14: the outbox does not grow forever. Two cancellations write two
    // events; the first is made eight days old; the maintenance prune (as workers run it)
    // removes it and keeps the fresh one.
    let db = TestDb::new().await;
    let ids = enqueue_many(&db.pool, &[job("q"), job("q")]).await.unwrap();
    kiln_queue::admin::cancel(&db.pool, ids[0].id).await.unwrap();
    kiln_queue::admin::cancel(&db.pool, ids[1].id).await.unwrap();
    let before = all_events(&db.pool, 0).await;
    assert_eq!(before.len(), 2, "{before:?}");
    sqlx::query("UPDATE kiln_events SET at = now() - interval '8 days' WHERE last_id = $1")
        .bind(before[0].id)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    kiln_queue::maintenance::prune(&mut conn, &kiln_queue::maintenance::Retention::default(), 1000)
        .await
        .unwrap();
    let after: Vec<Option<i64>> = all_events(&db.pool, 0).await.iter().map(|e| e.job_id).collect();
    assert_eq!(after, vec![Some(ids[1].id)]);
}
