//! Issue 14, the token holder's and the webhook sender's side: what one API token or one
//! delivery must not be able to do (attach jobs to pipelines, reopen another's pipeline, use
//! Kiln's own key prefixes, reuse a key for another request, tell unknown hooks from bad
//! signatures, replay old deliveries, create metric series, get unbounded answers, reach
//! private addresses through git), and the pruning that keeps tables bounded.

use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use kiln_api::tokens::{self, Scope};
use kiln_queue::lease::{self, Completion};
use kiln_queue::{AttemptDetails, AttemptOutcome};
use kiln_testkit::TestDb;
use kiln_tests::api::ApiServer;
use reqwest::Method;
use serde_json::{json, Value};

fn assert_error(status: u16, body: &Value, want_status: u16, want_field: &str) {
    assert_eq!(status, want_status, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no JSON error: {body}"
    );
    assert_eq!(body["field"].as_str(), Some(want_field), "{body}");
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn workspace_b64() -> String {
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/python");
    let p = kiln_artifacts::pack_dir(&fixture, kiln_artifacts::DEFAULT_MAX_BYTES).unwrap();
    base64::engine::general_purpose::STANDARD.encode(&p.data)
}

async fn submit_pipeline(api: &ApiServer, token: &str) -> (i64, Vec<i64>) {
    let (s, sub) = api
        .call(
            api.req(Method::POST, "/v1/pipelines/validate", Some(token))
                .json(&json!({"workspace_tar_gz_base64": workspace_b64()})),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    let jobs = sub["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_i64().unwrap())
        .collect();
    (sub["pipeline_id"].as_i64().unwrap(), jobs)
}

#[tokio::test]
async fn a_client_cannot_attach_a_job_to_a_pipeline() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (pipeline, _) = submit_pipeline(&api, &api.writer).await;
    let forged =
        json!({"kind": "test", "queue": "test", "pipeline_id": pipeline, "payload": {"forged": true}});

    let (s, b) = api
        .call(api.req(Method::POST, "/v1/jobs", Some(&api.writer)).json(&forged))
        .await;
    assert_error(s, &b, 422, "pipeline_id");
    let (s, b) = api
        .call(
            api.req(Method::POST, "/v1/jobs/batch", Some(&api.writer)).json(
                &json!({"jobs": [{"kind": "lint", "payload": kiln_tests::payload_for("lint")}, forged]}),
            ),
        )
        .await;
    assert_error(s, &b, 422, "jobs[1].pipeline_id");
    // Not through a webhook's template, nor a schedule's, either (even as admin).
    let (s, b) = api
        .post_admin(
            "/v1/hooks",
            json!({"name": "h", "secret": "0123456789abcdef", "job": forged}),
        )
        .await;
    assert_error(s, &b, 422, "job.pipeline_id");
    let (s, b) = api
        .post_admin(
            "/v1/schedules",
            json!({"name": "s", "cron": "0 * * * * *", "job": forged}),
        )
        .await;
    assert_error(s, &b, 422, "job.pipeline_id");

    let attached = count(
        &db,
        &format!("SELECT count(*) FROM kiln_jobs WHERE pipeline_id = {pipeline}"),
    )
    .await;
    assert_eq!(attached, 3, "only the pipeline's own three jobs");
    assert_eq!(count(&db, "SELECT count(*) FROM kiln_jobs").await, 3);
}

#[tokio::test]
async fn retrying_a_pipeline_job_needs_the_token_that_submitted_it() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let other = tokens::create(&db.pool, "another writer", &[Scope::JobsWrite])
        .await
        .unwrap()
        .token;
    let (pipeline, jobs) = submit_pipeline(&api, &api.writer).await;
    for j in &jobs {
        let (s, b) = api
            .call(api.req(Method::POST, &format!("/v1/jobs/{j}/cancel"), Some(&api.writer)))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (_, view) = api.get_admin(&format!("/v1/pipelines/{pipeline}")).await;
    assert_eq!(
        (view["state"].as_str(), view["verdict"].as_str()),
        (Some("finished"), Some("error")),
        "{view}"
    );

    // Another jobs:write token may not reopen it.
    let (s, b) = api
        .call(api.req(Method::POST, &format!("/v1/jobs/{}/retry", jobs[0]), Some(&other)))
        .await;
    assert_error(s, &b, 403, "id");
    let (_, view) = api.get_admin(&format!("/v1/pipelines/{pipeline}")).await;
    assert_eq!(
        (view["state"].as_str(), view["verdict"].as_str()),
        (Some("finished"), Some("error")),
        "{view}"
    );
    let state: String = sqlx::query_scalar("SELECT state::text FROM kiln_jobs WHERE id = $1")
        .bind(jobs[0])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "cancelled");

    // The submitting token may, and so may an admin.
    let (s, b) = api
        .call(api.req(
            Method::POST,
            &format!("/v1/jobs/{}/retry", jobs[0]),
            Some(&api.writer),
        ))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("available")), "{b}");
    let (_, view) = api.get_admin(&format!("/v1/pipelines/{pipeline}")).await;
    assert_eq!(view["state"], "running", "{view}");
    let (s, b) = api
        .post_admin(&format!("/v1/jobs/{}/retry", jobs[1]), json!(null))
        .await;
    assert_eq!(s, 200, "{b}");
    // A job outside any pipeline is anyone's (with jobs:write) to retry.
    let (_, own) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.writer))
                .json(&json!({"kind": "lint", "payload": kiln_tests::payload_for("lint")})),
        )
        .await;
    let id = own["id"].as_i64().unwrap();
    api.call(api.req(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(&api.writer)))
        .await;
    let (s, b) = api
        .call(api.req(Method::POST, &format!("/v1/jobs/{id}/retry"), Some(&other)))
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn reserved_key_prefixes_are_refused_by_field() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let cases = [
        (
            json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "unique_key": "hook:gh:d1"}),
            None,
            "unique_key",
        ),
        (
            json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "unique_key": "schedule:nightly:2026"}),
            None,
            "unique_key",
        ),
        (
            json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "idempotency_key": "hook:gh:d1"}),
            None,
            "idempotency_key",
        ),
        (
            json!({"kind": "test", "payload": kiln_tests::payload_for("test")}),
            Some("schedule:nightly:2026-01-01T00:00:00+00:00"),
            "Idempotency-Key",
        ),
        (
            json!({"kind": "test", "payload": kiln_tests::payload_for("test")}),
            Some("hook:gh:d1"),
            "Idempotency-Key",
        ),
    ];
    for (body, header, field) in cases {
        let mut r = api.req(Method::POST, "/v1/jobs", Some(&api.writer)).json(&body);
        if let Some(h) = header {
            r = r.header("Idempotency-Key", h);
        }
        let (s, b) = api.call(r).await;
        assert_error(s, &b, 422, field);
    }
    let (s, b) = api
        .call(
            api.req(Method::POST, "/v1/jobs/batch", Some(&api.writer))
                .json(&json!({"jobs": [{"kind": "lint", "payload": kiln_tests::payload_for("lint")}, {"kind": "lint", "payload": kiln_tests::payload_for("lint"), "unique_key": "schedule:x"}]})),
        )
        .await;
    assert_error(s, &b, 422, "jobs[1].unique_key");
    let (s, b) = api
        .post_admin(
            "/v1/hooks",
            json!({"name": "h", "secret": "0123456789abcdef", "job": {"kind": "test", "payload": kiln_tests::payload_for("test"), "unique_key": "schedule:x"}}),
        )
        .await;
    assert_error(s, &b, 422, "job.unique_key");
    let (s, b) = api
        .post_admin(
            "/v1/schedules",
            json!({"name": "s", "cron": "0 * * * * *", "job": {"kind": "test", "payload": kiln_tests::payload_for("test"), "unique_key": "hook:x:y"}}),
        )
        .await;
    assert_error(s, &b, 422, "job.unique_key");
    assert_eq!(count(&db, "SELECT count(*) FROM kiln_jobs").await, 0);
    // Keys that merely contain the words are the client's.
    let (s, b) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.writer))
                .header("Idempotency-Key", "my-hook:1")
                .json(&json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "unique_key": "webhook:1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_a_conflict() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let post = |key: &str, body: Value| {
        api.call(
            api.req(Method::POST, "/v1/jobs", Some(&api.writer))
                .header("Idempotency-Key", key)
                .json(&body),
        )
    };
    let (s, first) = post(
        "k-1",
        json!({"kind": "test", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["python"]}}),
    )
    .await;
    assert_eq!(s, 201, "{first}");
    let (s, again) = post(
        "k-1",
        json!({"kind": "test", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["python"]}}),
    )
    .await;
    assert_eq!(
        (s, &again["id"]),
        (200, &first["id"]),
        "the same request: the same job"
    );
    for other in [
        json!({"kind": "test", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["go"]}}),
        json!({"kind": "lint", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["python"]}}),
        json!({"kind": "test", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["python"]}, "priority": 5}),
        json!({"kind": "test", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["python"]}, "queue": "elsewhere"}),
    ] {
        let (s, b) = post("k-1", other.clone()).await;
        assert_error(s, &b, 409, "Idempotency-Key");
    }
    // The body's own key, and batches (each row by its own key).
    let (s, _) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.writer))
                .json(&json!({"kind": "test", "idempotency_key": "body-k", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["python"]}})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.writer))
                .json(&json!({"kind": "test", "idempotency_key": "body-k", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["go"]}})),
        )
        .await;
    assert_error(s, &b, 409, "idempotency_key");
    let batch = |n: i64| {
        api.call(
            api.req(Method::POST, "/v1/jobs/batch", Some(&api.writer))
                .header("Idempotency-Key", "b-1")
                .json(&json!({"jobs": [{"kind": "lint", "payload": kiln_tests::payload_for("lint")}, {"kind": "lint", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": [if n == 1 { "python" } else { "go" }]}}]})),
        )
    };
    let (s, b) = batch(1).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = batch(1).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = batch(2).await;
    assert_error(s, &b, 409, "jobs[1]");
    assert_eq!(count(&db, "SELECT count(*) FROM kiln_jobs").await, 4);
}

#[tokio::test]
async fn unknown_hooks_and_bad_signatures_get_the_same_answer() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let secret = "0123456789abcdef-real";
    let (s, _) = api
        .post_admin(
            "/v1/hooks",
            json!({"name": "ci", "secret": secret, "job": {"kind": "test", "payload": kiln_tests::payload_for("test")}}),
        )
        .await;
    assert_eq!(s, 201);
    let body = serde_json::to_vec(&json!({"repository": "a/b", "commit": "c", "ref": "main"})).unwrap();
    let send = |path: &str, sig: Option<String>| {
        let mut r = api
            .req(Method::POST, path, None)
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "d-1")
            .body(body.clone());
        if let Some(sig) = sig {
            r = r.header("X-Hub-Signature-256", sig);
        }
        let r = r.build().unwrap();
        let http = api.http.clone();
        async move {
            let res = http.execute(r).await.unwrap();
            let status = res.status().as_u16();
            let challenge = res
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, challenge, res.text().await.unwrap())
        }
    };
    for kind in ["github", "generic"] {
        let unknown = send(
            &format!("/v1/hooks/{kind}/nope"),
            Some(kiln_api::hooks::sign(secret, &body)),
        )
        .await;
        let unknown_unsigned = send(&format!("/v1/hooks/{kind}/nope"), None).await;
        let wrong = send(
            &format!("/v1/hooks/{kind}/ci"),
            Some(kiln_api::hooks::sign("0123456789abcdef-fake", &body)),
        )
        .await;
        let unsigned = send(&format!("/v1/hooks/{kind}/ci"), None).await;
        assert_eq!(unknown.0, 401, "{unknown:?}");
        for other in [&unknown_unsigned, &wrong, &unsigned] {
            assert_eq!(
                &unknown, other,
                "{kind}: one answer for an unknown hook and a bad signature"
            );
        }
    }
    assert_eq!(count(&db, "SELECT count(*) FROM kiln_jobs").await, 0);
}

#[tokio::test]
async fn signed_deliveries_older_than_five_minutes_are_refused() {
    use kiln_api::hooks::Signed;
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (s, b) = api
        .post_admin(
            "/v1/hooks",
            json!({"name": "sw", "secret": secret, "job": {"kind": "generation", "payload": {"prompt": "review {{commit}}"}}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let body = serde_json::to_vec(&json!({"commit": "abc"})).unwrap();
    let send = |id: &str, ts: i64, sig: String| {
        api.call(
            api.req(Method::POST, "/v1/hooks/generic/sw", None)
                .header("Content-Type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body.clone()),
        )
    };
    let now = Utc::now().timestamp();
    let (s, r) = send("msg-1", now, Signed::sign(secret, "msg-1", now, &body)).await;
    assert_eq!((s, r["status"].as_str()), (202, Some("enqueued")), "{r}");
    let (s, r) = send("msg-1", now, Signed::sign(secret, "msg-1", now, &body)).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("duplicate")), "{r}");
    let old = now - 6 * 60;
    let (s, r) = send("msg-2", old, Signed::sign(secret, "msg-2", old, &body)).await;
    assert_error(s, &r, 401, "webhook-timestamp");
    let ahead = now + 6 * 60;
    let (s, r) = send("msg-3", ahead, Signed::sign(secret, "msg-3", ahead, &body)).await;
    assert_error(s, &r, 401, "webhook-timestamp");
    // A fresh timestamp on an old signature does not verify.
    let (s, r) = send("msg-2", now, Signed::sign(secret, "msg-2", old, &body)).await;
    assert_error(s, &r, 401, "webhook-signature");
    assert_eq!(count(&db, "SELECT count(*) FROM kiln_jobs").await, 1);
}

#[tokio::test]
async fn metric_labels_come_from_fixed_sets() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    // A queue an operator configured keeps its name; made-up ones count as `other`.
    let (s, _) = api.post_admin("/v1/queues/configured-q/pause", json!(null)).await;
    assert_eq!(s, 200);
    for i in 0..20 {
        let (s, b) = api
            .call(
                api.req(Method::POST, "/v1/jobs", Some(&api.writer))
                    .json(&json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": format!("made-up-{i}")})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    for m in ["FOOBAR", "BREW", "X-PROBE-1"] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        api.call(api.req(method.clone(), "/v1/jobs", Some(&api.writer)))
            .await;
        api.call(api.req(method, "/no/such/path/7", None)).await;
    }
    // Wait for the exporter's first pass (it reads the known queues and the depth).
    let mut text = String::new();
    for _ in 0..60 {
        text = api.metrics().await;
        if text.contains("kiln_queue_depth{") && text.contains(r#"queue="configured-q""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(text.contains(r#"queue="configured-q""#), "{text}");
    let (s, b) = api
        .call(api.req(Method::POST, "/v1/jobs", Some(&api.writer)).json(
            &json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "made-up-late"}),
        ))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .call(api.req(Method::POST, "/v1/jobs", Some(&api.writer)).json(
            &json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "configured-q"}),
        ))
        .await;
    assert_eq!(s, 201, "{b}");
    let text = api.metrics().await;
    for forbidden in ["made-up-", "FOOBAR", "BREW", "X-PROBE", "/no/such"] {
        assert!(!text.contains(forbidden), "{forbidden} became a label:\n{text}");
    }
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(
        text.contains(r#"kiln_jobs_enqueued_total{kind="test",queue="other"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kiln_jobs_enqueued_total{kind="test",queue="configured-q"} 1"#),
        "{text}"
    );
}

fn completion(id: i64, details: AttemptDetails) -> Completion {
    Completion {
        id,
        attempt: 1,
        outcome: AttemptOutcome::Succeeded,
        result: None,
        error: None,
        started_at: Utc::now(),
        finished_at: Utc::now(),
        retry_at: None,
        details: Some(details.to_json()),
    }
}

#[tokio::test]
async fn answers_are_bounded_lists_by_payload_bytes_and_big_diffs_by_their_endpoint() {
    let db = TestDb::new().await;
    let api = ApiServer::start_with(
        &db.pool,
        kiln_api::ApiConfig {
            list_payload_bytes: 250 * 1024,
            ..Default::default()
        },
    )
    .await;
    let blob = "x".repeat(100 * 1024);
    for i in 0..5 {
        let (s, b) = api
            .call(api.req(Method::POST, "/v1/jobs", Some(&api.writer)).json(
                &json!({"kind": "generation", "queue": "big", "payload": {"prompt": format!("{i} {blob}")}}),
            ))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?queue=big&limit=50&cursor={c}"),
            None => "/v1/jobs?queue=big&limit=50".to_owned(),
        };
        let (s, page) = api.call(api.req(Method::GET, &path, Some(&api.reader))).await;
        assert_eq!(s, 200);
        let jobs = page["jobs"].as_array().unwrap();
        assert!(
            !jobs.is_empty() && jobs.len() <= 2,
            "a page holds at most 250 KiB of payloads: {}",
            jobs.len()
        );
        seen.extend(jobs.iter().map(|j| j["id"].as_i64().unwrap()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every job is reached through the cursor");

    // A big diff stays out of the job view and comes from its own endpoint.
    let id = seen[0];
    let claimed = lease::claim(&db.pool, "big", "w1", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let id = claimed.first().map_or(id, |c| c.id);
    let diff: String = (0..4000)
        .map(|i| format!("+line {i} of a large rewrite\n"))
        .collect();
    assert!(diff.len() > kiln_api::routes::jobs::INLINE_DIFF_BYTES);
    let details = AttemptDetails {
        diff: Some(diff.clone()),
        diff_files: Some(1),
        diff_insertions: Some(4000),
        diff_deletions: Some(0),
        ..AttemptDetails::default()
    };
    lease::complete(&db.pool, "w1", &[completion(id, details)])
        .await
        .unwrap();
    let (s, detail) = api
        .call(api.req(Method::GET, &format!("/v1/jobs/{id}"), Some(&api.reader)))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        detail["attempts"][0]["diff"],
        Value::Null,
        "{}",
        detail["attempts"][0]
    );
    assert_eq!(detail["attempts"][0]["diff_insertions"], 4000);
    assert_eq!(detail["omitted"], json!(["attempts[0].diff"]));
    let (s, d) = api
        .call(api.req(Method::GET, &format!("/v1/jobs/{id}/diff"), Some(&api.reader)))
        .await;
    assert_eq!(s, 200);
    assert_eq!(d["diff"].as_str(), Some(diff.as_str()));
}

#[tokio::test]
async fn old_pipelines_artifacts_and_deliveries_are_pruned() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (old, old_jobs) = submit_pipeline(&api, &api.writer).await;
    for j in &old_jobs {
        kiln_queue::admin::cancel(&db.pool, *j).await.unwrap();
    }
    kiln_pipeline::get(&db.pool, old).await.unwrap();
    let (recent, recent_jobs) = submit_pipeline(&api, &api.writer).await;
    for j in &recent_jobs {
        kiln_queue::admin::cancel(&db.pool, *j).await.unwrap();
    }
    kiln_pipeline::get(&db.pool, recent).await.unwrap();
    let (running, _) = submit_pipeline(&api, &api.writer).await;
    sqlx::query("UPDATE kiln_pipelines SET finished_at = now() - interval '8 days', created_at = now() - interval '8 days' WHERE id = $1")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE kiln_pipelines SET created_at = now() - interval '30 days' WHERE id = $1")
        .bind(running)
        .execute(&db.pool)
        .await
        .unwrap();
    // An artifact nobody refers to any more (its jobs were pruned by the queue), a day old.
    sqlx::query("INSERT INTO kiln_artifacts (digest, size_bytes, stored_bytes, files, data, created_at) VALUES ($1, 0, 0, 0, '', now() - interval '2 days')")
        .bind(format!("sha256:{}", "ab".repeat(32)))
        .execute(&db.pool)
        .await
        .unwrap();

    let pruned = kiln_pipeline::prune(&db.pool, &kiln_pipeline::PipelineRetention::default())
        .await
        .unwrap();
    assert_eq!(pruned.pipelines, 1);
    assert_eq!(
        pruned.artifacts, 1,
        "only the orphan: the pipelines' workspace is still referenced"
    );
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM kiln_pipelines ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![recent, running],
        "running and recently finished pipelines stay"
    );

    // Webhook deliveries by age.
    api.post_admin(
        "/v1/hooks",
        json!({"name": "h", "secret": "0123456789abcdef", "job": {"kind": "test", "payload": kiln_tests::payload_for("test")}}),
    )
    .await;
    sqlx::query(
        "INSERT INTO kiln_hook_deliveries (hook, delivery_id, event, received_at) VALUES \
         ('h', 'old', 'push', now() - interval '8 days'), ('h', 'new', 'push', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let n = kiln_api::hooks::prune_deliveries(&db.pool, Duration::from_secs(7 * 86_400))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT delivery_id FROM kiln_hook_deliveries")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["new".to_string()]);
}

#[tokio::test]
async fn git_sources_through_the_api_are_https_to_public_hosts_only() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let repo = tempfile::tempdir().unwrap();
    let cases = [
        (repo.path().to_str().unwrap().to_owned(), "git.source"),
        (format!("file://{}", repo.path().display()), "git.source"),
        ("http://example.com/r.git".to_owned(), "git.source"),
        ("ssh://git@example.com/r.git".to_owned(), "git.source"),
        ("git@example.com:o/r.git".to_owned(), "git.source"),
        ("ext::sh -c touch% /tmp/kiln-pwned".to_owned(), "git.source"),
        ("https://user:token@example.com/r.git".to_owned(), "git.source"),
        ("https://169.254.169.254/latest/meta-data".to_owned(), "git"),
        ("https://[fd00:ec2::254]/r".to_owned(), "git"),
        ("https://127.0.0.1:9/r.git".to_owned(), "git"),
        ("https://localhost:9/r.git".to_owned(), "git"),
        ("https://10.1.2.3/r.git".to_owned(), "git"),
    ];
    for (source, field) in cases {
        for token in [&api.writer, &api.admin] {
            let (s, b) = api
                .call(
                    api.req(Method::POST, "/v1/pipelines/validate", Some(token))
                        .json(&json!({"git": {"source": source}})),
                )
                .await;
            assert_error(s, &b, 422, field);
        }
    }
    assert_eq!(count(&db, "SELECT count(*) FROM kiln_pipelines").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM kiln_artifacts").await, 0);
}
