//! The HTTP API end to end: the real server on loopback over a real Postgres, driven with
//! reqwest. Every endpoint, every auth case, every bad-input class, idempotency, batches,
//! pagination, live logs over SSE and webhook signatures.

use chrono::Utc;
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use kiln_queue::lease::{self, Completion};
use kiln_queue::logs::LogChunk;
use kiln_queue::{AttemptDetails, AttemptOutcome};
use kiln_testkit::TestDb;
use kiln_tests::api::ApiServer;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn job_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM kiln_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_field: Option<&str>) {
    assert_eq!(status, want_status, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no JSON error: {body}"
    );
    if let Some(f) = want_field {
        assert_eq!(body["field"].as_str(), Some(f), "{body}");
    }
}

#[tokio::test]
async fn every_endpoint_checks_its_token_and_scope() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (_, created) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "payload": kiln_tests::payload_for("test")}),
        )
        .await;
    let id = created["id"].as_i64().unwrap();
    let (s, _) = api
        .post_admin(
            "/v1/hooks",
            json!({"name": "h1", "secret": "0123456789abcdef", "job": {"kind": "test", "payload": kiln_tests::payload_for("test")}}),
        )
        .await;
    assert_eq!(s, 201);

    // (method, path, body, the single-scope token that must pass, or None for admin only)
    let read = Some("read");
    let write = Some("write");
    let cases: Vec<(Method, String, Option<Value>, Option<&str>)> = vec![
        (
            Method::POST,
            "/v1/jobs".into(),
            Some(json!({"kind": "lint", "payload": kiln_tests::payload_for("lint")})),
            write,
        ),
        (
            Method::POST,
            "/v1/jobs/batch".into(),
            Some(json!({"jobs": [{"kind": "lint", "payload": kiln_tests::payload_for("lint")}]})),
            write,
        ),
        (Method::GET, "/v1/jobs".into(), None, read),
        (Method::GET, format!("/v1/jobs/{id}"), None, read),
        (Method::GET, format!("/v1/jobs/{id}/logs"), None, read),
        (Method::GET, format!("/v1/jobs/{id}/diff"), None, read),
        (Method::GET, format!("/v1/jobs/{id}/artifacts"), None, read),
        (Method::POST, format!("/v1/jobs/{id}/cancel"), None, write),
        (Method::POST, format!("/v1/jobs/{id}/retry"), None, write),
        (Method::GET, "/v1/queues".into(), None, read),
        (Method::GET, "/v1/costs".into(), None, read),
        (Method::POST, "/v1/queues/test/pause".into(), None, None),
        (Method::POST, "/v1/queues/test/resume".into(), None, None),
        (Method::GET, "/v1/hooks".into(), None, None),
        (
            Method::POST,
            "/v1/hooks".into(),
            Some(
                json!({"name": "h2", "secret": "0123456789abcdef", "job": {"kind": "lint", "payload": kiln_tests::payload_for("lint")}}),
            ),
            None,
        ),
        (Method::GET, "/v1/hooks/h1".into(), None, None),
        (
            Method::PATCH,
            "/v1/hooks/h1".into(),
            Some(json!({"events": ["push"]})),
            None,
        ),
        (Method::GET, "/v1/tokens".into(), None, None),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"name": "x", "scopes": ["jobs:read"]})),
            None,
        ),
        (Method::DELETE, "/v1/hooks/h2".into(), None, None),
    ];
    for (method, path, body, scope) in &cases {
        let build = |token: Option<&str>| {
            let r = api.req(method.clone(), path, token);
            match body {
                Some(b) => r.json(b),
                None => r,
            }
        };
        let what = format!("{method} {path}");
        let (s, b) = api.call(build(None)).await;
        assert_error(s, &b, 401, Some("Authorization"));
        let (s, b) = api.call(build(Some("kiln_not-a-real-token"))).await;
        assert_error(s, &b, 401, Some("Authorization"));
        let (s, b) = api
            .call(
                api.req(method.clone(), path, None)
                    .header("Authorization", "Basic dXNlcjpwYXNz"),
            )
            .await;
        assert_error(s, &b, 401, Some("Authorization"));
        // A token without the scope: the other single-scope token (or both, for admin routes).
        let wrong: Vec<&str> = match scope {
            Some("read") => vec![&api.writer],
            Some("write") => vec![&api.reader],
            _ => vec![&api.reader, &api.writer],
        };
        for t in wrong {
            let (s, b) = api.call(build(Some(t))).await;
            assert_error(s, &b, 403, Some("Authorization"));
        }
        let right = match scope {
            Some("read") => &api.reader,
            Some("write") => &api.writer,
            _ => &api.admin,
        };
        let (s, b) = api.call(build(Some(right))).await;
        assert!(
            (200..300).contains(&s) || s == 409,
            "{what} with the right scope: {s} {b}"
        );
        // admin may do everything
        if scope.is_some() {
            let (s, b) = api.call(build(Some(&api.admin))).await;
            assert!(s != 401 && s != 403, "{what} as admin: {s} {b}");
        }
    }

    // A revoked token is refused at once.
    let (s, t) = api
        .post_admin(
            "/v1/tokens",
            json!({"name": "short-lived", "scopes": ["jobs:read"]}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let secret = t["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kiln_"));
    let (s, _) = api.call(api.req(Method::GET, "/v1/jobs", Some(&secret))).await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call(api.req(
            Method::DELETE,
            &format!("/v1/tokens/{}", t["id"]),
            Some(&api.admin),
        ))
        .await;
    assert_eq!(s, 204);
    let (s, b) = api.call(api.req(Method::GET, "/v1/jobs", Some(&secret))).await;
    assert_error(s, &b, 401, Some("Authorization"));
    let (s, b) = api
        .call(api.req(Method::DELETE, "/v1/tokens/999999", Some(&api.admin)))
        .await;
    assert_error(s, &b, 404, None);
    // Tokens are stored hashed: the secret appears nowhere in the table.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kiln_api_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'",
    )
    .bind(&secret[5..20])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    let (s, list) = api.get_admin("/v1/tokens").await;
    assert_eq!(s, 200);
    assert!(
        list.to_string().find(&secret).is_none(),
        "a listed token shows its secret"
    );
    assert!(list["tokens"].as_array().unwrap().len() >= 5);
}

#[tokio::test]
async fn create_read_and_idempotency_key() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let body = json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "priority": 7, "tags": ["ci"], "queue": "q1"});
    let (s, first) = api.post_admin("/v1/jobs", body.clone()).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["created"], true);
    let id = first["id"].as_i64().unwrap();

    let (s, detail) = api.get_admin(&format!("/v1/jobs/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(detail["job"]["priority"], 7);
    assert_eq!(detail["job"]["queue"], "q1");
    assert_eq!(detail["job"]["state"], "available");
    assert_eq!(detail["job"]["payload"], kiln_tests::payload_for("test"));
    assert_eq!(detail["attempts"], json!([]));

    let with_key = || {
        api.req(Method::POST, "/v1/jobs", Some(&api.writer))
            .header("Idempotency-Key", "req-1")
            .json(&json!({"kind": "lint", "payload": kiln_tests::payload_for("lint")}))
    };
    let (s, a) = api.call(with_key()).await;
    assert_eq!(s, 201, "{a}");
    let (s, b) = api.call(with_key()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["created"], false);
    // The header and the body's own key must agree.
    let (s, e) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.writer))
                .header("Idempotency-Key", "req-2")
                .json(&json!({"kind": "lint", "payload": kiln_tests::payload_for("lint"), "idempotency_key": "other"})),
        )
        .await;
    assert_error(s, &e, 422, Some("Idempotency-Key"));
    assert_eq!(job_count(&db).await, 2);

    let (s, e) = api.get_admin("/v1/jobs/987654321").await;
    assert_error(s, &e, 404, None);
}

#[tokio::test]
async fn bad_input_is_refused_by_field_and_nothing_is_written() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let raw = |path: &str, body: &str| {
        api.req(Method::POST, path, Some(&api.admin))
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "#.into(), 400, "body"),
        ("/v1/jobs", "not json".into(), 400, "body"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "prio": 1}"#.into(), 422, "prio"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "priority": "high"}"#.into(), 422, "priority"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "tags": "ci"}"#.into(), 422, "tags"),
        ("/v1/jobs", r#"{"kind": "compile"}"#.into(), 422, "kind"),
        ("/v1/jobs", r#"{"payload": {}}"#.into(), 422, "kind"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "priority": 101}"#.into(), 422, "priority"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "max_attempts": 0}"#.into(), 422, "max_attempts"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "timeout_secs": 1e9}"#.into(), 422, "timeout_secs"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "run_at": "soon"}"#.into(), 422, "run_at"),
        ("/v1/jobs", r#"{"kind": "test", "payload": {"workspace": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, "queue": "No Spaces"}"#.into(), 422, "queue"),
        ("/v1/jobs", r#"{"kind": "test", "payload": [1]}"#.into(), 422, "payload"),
        ("/v1/jobs", r#"[1, 2]"#.into(), 422, "body"),
        (
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "test", "payload": kiln_tests::payload_for("test")}, {"kind": "test", "payload": kiln_tests::payload_for("test")}, {"kind": "test", "payload": kiln_tests::payload_for("test")}, {"kind": "test", "payload": kiln_tests::payload_for("test"), "priority": 500}]})
                .to_string(),
            422,
            "jobs[3].priority",
        ),
        (
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "test", "payload": kiln_tests::payload_for("test")}, {"kind": "test", "payload": kiln_tests::payload_for("test"), "prio": 1}]}).to_string(),
            422,
            "jobs[1].prio",
        ),
        (
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "test", "payload": kiln_tests::payload_for("test")}, {"kind": "nope"}]}).to_string(),
            422,
            "jobs[1].kind",
        ),
        ("/v1/jobs/batch", json!({"jobs": []}).to_string(), 422, "jobs"),
        ("/v1/jobs/batch", json!({"job": []}).to_string(), 422, "job"),
        ("/v1/tokens", json!({"name": "x", "scopes": ["root"]}).to_string(), 422, "scopes[0]"),
        ("/v1/tokens", json!({"name": "x", "scopes": []}).to_string(), 422, "scopes"),
        (
            "/v1/hooks",
            json!({"name": "h", "secret": "short", "job": {"kind": "test", "payload": kiln_tests::payload_for("test")}}).to_string(),
            422,
            "secret",
        ),
        (
            "/v1/hooks",
            json!({"name": "h", "secret": "0123456789abcdef", "job": {"kind": "bogus"}}).to_string(),
            422,
            "job.kind",
        ),
        (
            "/v1/hooks",
            json!({"name": "h", "secret": "0123456789abcdef", "job": {"kind": "test", "payload": kiln_tests::payload_for("test")}, "events": ["issues"]})
                .to_string(),
            422,
            "events[0]",
        ),
    ];
    for (path, body, status, field) in &cases {
        let (s, b) = api.call(raw(path, body)).await;
        assert_error(s, &b, *status, Some(field));
    }

    // Over the cap: 413, for single and batch.
    let big = format!(
        r#"{{"kind": "test", "payload": {{"x": "{}"}}}}"#,
        "a".repeat(1024 * 1024 + 10)
    );
    let (s, b) = api.call(raw("/v1/jobs", &big)).await;
    assert_error(s, &b, 413, Some("body"));
    let small = ApiServer::start_with(
        &db.pool,
        kiln_api::ApiConfig {
            batch_body_limit: 4096,
            ..Default::default()
        },
    )
    .await;
    let jobs: Vec<Value> = (0..1000)
        .map(|_| json!({"kind": "test", "payload": kiln_tests::payload_for("test")}))
        .collect();
    let (s, b) = small
        .call(
            small
                .req(Method::POST, "/v1/jobs/batch", Some(&small.admin))
                .json(&json!({ "jobs": jobs })),
        )
        .await;
    assert_error(s, &b, 413, Some("body"));
    // A chunked body without Content-Length is capped too.
    let stream =
        futures::stream::iter((0..300).map(|_| Ok::<_, std::io::Error>(bytes_of(&"x".repeat(4096)))));
    let (s, b) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.admin))
                .header("Content-Type", "application/json")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await;
    assert_error(s, &b, 413, Some("body"));

    // Not JSON at all.
    let (s, b) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.admin))
                .header("Content-Type", "text/plain")
                .body(r#"{"kind": "test", "payload": kiln_tests::payload_for("test")}"#),
        )
        .await;
    assert_error(s, &b, 415, Some("Content-Type"));

    // Bad path and query parameters.
    for (path, field) in [
        ("/v1/jobs/abc", "id"),
        ("/v1/jobs?limit=0", "limit"),
        ("/v1/jobs?limit=ten", "limit"),
        ("/v1/jobs?state=done", "state"),
        ("/v1/jobs?kind=compile", "kind"),
        ("/v1/jobs?created_after=yesterday", "created_after"),
        ("/v1/jobs?cursor=-5", "cursor"),
        ("/v1/jobs?colour=red", "colour"),
        ("/v1/jobs/1/logs?after=x", "after"),
        ("/v1/queues/Bad%20Name/pause", "name"),
    ] {
        let method = if path.ends_with("pause") {
            Method::POST
        } else {
            Method::GET
        };
        let (s, b) = api.call(api.req(method, path, Some(&api.admin))).await;
        assert_error(s, &b, 400, Some(field));
    }
    // Bad header.
    let (s, b) = api
        .call(
            api.req(Method::POST, "/v1/jobs", Some(&api.admin))
                .header("Idempotency-Key", "")
                .json(&json!({"kind": "test", "payload": kiln_tests::payload_for("test")})),
        )
        .await;
    assert_error(s, &b, 400, Some("Idempotency-Key"));

    // Unknown routes and methods answer JSON too.
    let (s, b) = api.get_admin("/v1/nothing-here").await;
    assert_error(s, &b, 404, None);
    let (s, b) = api
        .call(api.req(Method::DELETE, "/v1/jobs", Some(&api.admin)))
        .await;
    assert_error(s, &b, 405, None);

    assert_eq!(job_count(&db).await, 0, "a refused request left jobs behind");
    let hooks: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_hooks")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(hooks, 0);
}

fn bytes_of(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[tokio::test]
async fn batches_pagination_and_filters() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    // The largest batch goes in whole; one more job is refused.
    let jobs: Vec<Value> = (0..10_000)
        .map(|i| json!({"kind": if i % 2 == 0 { "test" } else { "lint" }, "queue": "bulk", "payload": {"workspace": kiln_tests::WORKSPACE}, "tags": [format!("i{i}")]}))
        .collect();
    let (s, out) = api.post_admin("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!(s, 201);
    assert_eq!(out["jobs"].as_array().unwrap().len(), 10_000);
    let too_many: Vec<Value> = (0..10_001)
        .map(|_| json!({"kind": "test", "payload": kiln_tests::payload_for("test")}))
        .collect();
    let (s, b) = api
        .post_admin("/v1/jobs/batch", json!({ "jobs": too_many }))
        .await;
    assert_error(s, &b, 422, Some("jobs"));
    assert_eq!(job_count(&db).await, 10_000);

    // Idempotent batch: a repeat returns the same ids.
    let batch = json!({"jobs": [{"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "idem"}, {"kind": "lint", "payload": kiln_tests::payload_for("lint"), "queue": "idem"}]});
    let send = || {
        api.req(Method::POST, "/v1/jobs/batch", Some(&api.writer))
            .header("Idempotency-Key", "batch-7")
            .json(&batch)
    };
    let (s1, a) = api.call(send()).await;
    let (s2, b) = api.call(send()).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a["jobs"][0]["id"], b["jobs"][0]["id"]);
    assert_eq!(a["jobs"][1]["id"], b["jobs"][1]["id"]);
    assert_eq!(b["jobs"][1]["created"], false);

    // Mixed jobs to filter.
    let before = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut mixed = Vec::new();
    for i in 0..25 {
        mixed.push(json!({
            "kind": (["test", "lint", "preview"][i % 3]),
            "payload": kiln_tests::payload_for(["test", "lint", "preview"][i % 3]),
            "queue": if i < 15 { "alpha" } else { "beta" },
            "tags": if i % 5 == 0 { json!(["nightly"]) } else { json!([]) },
        }));
    }
    let (s, made) = api.post_admin("/v1/jobs/batch", json!({ "jobs": mixed })).await;
    assert_eq!(s, 201);
    let ids: Vec<i64> = made["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    let cancel = ids[3];
    api.post_admin(&format!("/v1/jobs/{cancel}/cancel"), json!(null))
        .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/jobs?queue=alpha&limit=4&cursor={c}"),
            None => "/v1/jobs?queue=alpha&limit=4".into(),
        };
        let (s, page) = api.call(api.req(Method::GET, &q, Some(&api.reader))).await;
        assert_eq!(s, 200, "{page}");
        for j in page["jobs"].as_array().unwrap() {
            assert_eq!(j["queue"], "alpha");
            seen.push(j["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut want: Vec<i64> = ids[..15].to_vec();
    want.reverse();
    assert_eq!(seen, want, "pages are newest first, without gaps or repeats");

    let count = |q: &'static str| {
        let api = &api;
        async move {
            let (s, page) = api.get_admin(q).await;
            assert_eq!(s, 200, "{q}: {page}");
            page["jobs"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("/v1/jobs?queue=beta&limit=500").await, 10);
    assert_eq!(count("/v1/jobs?queue=alpha&kind=preview&limit=500").await, 5);
    assert_eq!(count("/v1/jobs?tag=nightly&limit=500").await, 5);
    assert_eq!(count("/v1/jobs?state=cancelled").await, 1);
    assert_eq!(
        count("/v1/jobs?queue=alpha&state=available,cancelled&limit=500").await,
        15
    );
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (s, page) = api
        .call(
            api.req(Method::GET, "/v1/jobs", Some(&api.admin))
                .query(&[("created_after", since.as_str()), ("limit", "500")]),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 25);
    let (_, page) = api
        .call(
            api.req(Method::GET, "/v1/jobs", Some(&api.admin))
                .query(&[("created_before", since.as_str()), ("queue", "idem")]),
        )
        .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_single_enqueues_share_statements_but_keep_their_own_answers() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let req = api
            .req(Method::POST, "/v1/jobs", Some(&api.writer))
            .json(&json!({"kind": "test", "queue": "c", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": [(["python", "go", "rust", "javascript"][(i / 4) % 4])]}, "unique_key": if (i / 4) % 25 == 0 { Some("shared-u") } else { None }}));
        // Every fourth request repeats its three neighbours' request and idempotency key;
        // four such groups also share one unique key.
        let req = req.header("Idempotency-Key", format!("k-{}", i / 4));
        tasks.push(tokio::spawn(async move {
            let res = req.send().await.unwrap();
            let s = res.status().as_u16();
            (s, res.json::<Value>().await.unwrap())
        }));
    }
    let mut by_key: std::collections::HashMap<usize, Vec<i64>> = Default::default();
    let mut created = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (s, b) = t.await.unwrap();
        assert!(s == 200 || s == 201, "{s} {b}");
        if b["created"] == true {
            created += 1;
        }
        by_key.entry(i / 4).or_default().push(b["id"].as_i64().unwrap());
    }
    for (k, ids) in &by_key {
        assert!(ids.iter().all(|id| *id == ids[0]), "key {k} got ids {ids:?}");
    }
    let shared: Vec<i64> = [0, 25, 50, 75].iter().map(|k| by_key[k][0]).collect();
    assert!(
        shared.iter().all(|id| *id == shared[0]),
        "one live job holds the unique key: {shared:?}"
    );
    assert_eq!(created, 97);
    assert_eq!(job_count(&db).await, 97);
}

fn completion(id: i64, outcome: AttemptOutcome, details: Option<AttemptDetails>) -> Completion {
    Completion {
        id,
        attempt: 1,
        outcome,
        result: None,
        error: (outcome != AttemptOutcome::Succeeded).then(|| "boom".to_owned()),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        retry_at: None,
        details: details.map(|d| d.to_json()),
    }
}

#[tokio::test]
async fn cancel_retry_diff_and_queues() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (_, a) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "ops"}),
        )
        .await;
    let (_, b) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "ops"}),
        )
        .await;
    let (a, b) = (a["id"].as_i64().unwrap(), b["id"].as_i64().unwrap());

    let (s, r) = api.post_admin(&format!("/v1/jobs/{a}/cancel"), json!(null)).await;
    assert_eq!((s, r["state"].as_str()), (200, Some("cancelled")), "{r}");
    let (s, r) = api.post_admin(&format!("/v1/jobs/{a}/cancel"), json!(null)).await;
    assert_error(s, &r, 409, None);
    let (s, r) = api.post_admin(&format!("/v1/jobs/{a}/retry"), json!(null)).await;
    assert_eq!((s, r["state"].as_str()), (200, Some("available")), "{r}");
    let (s, r) = api.post_admin(&format!("/v1/jobs/{a}/retry"), json!(null)).await;
    assert_error(s, &r, 409, None);
    let (s, r) = api.post_admin("/v1/jobs/424242/cancel", json!(null)).await;
    assert_error(s, &r, 404, None);

    // A finished attempt with a diff, written through the real completion path.
    let claimed = lease::claim(&db.pool, "ops", "w1", 2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let (s, d) = api.get_admin(&format!("/v1/jobs/{b}/diff")).await;
    assert_eq!(s, 200);
    assert_eq!(d["diff"], Value::Null);
    let details = AttemptDetails {
        diff: Some("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n".into()),
        diff_files: Some(1),
        diff_insertions: Some(1),
        diff_deletions: Some(1),
        exit_code: Some(0),
        ..AttemptDetails::default()
    };
    lease::complete(
        &db.pool,
        "w1",
        &[
            completion(b, AttemptOutcome::Succeeded, Some(details)),
            completion(a, AttemptOutcome::Failed, None),
        ],
    )
    .await
    .unwrap();
    let (s, d) = api.get_admin(&format!("/v1/jobs/{b}/diff")).await;
    assert_eq!(s, 200);
    assert_eq!(d["attempt"], 1);
    assert_eq!(d["files"], 1);
    assert!(d["diff"].as_str().unwrap().contains("+b"));
    let (_, detail) = api.get_admin(&format!("/v1/jobs/{b}")).await;
    assert_eq!(detail["job"]["state"], "succeeded");
    assert_eq!(detail["attempts"][0]["outcome"], "succeeded");
    assert_eq!(detail["attempts"][0]["exit_code"], 0);
    let (s, d) = api.get_admin("/v1/jobs/999999/diff").await;
    assert_error(s, &d, 404, None);

    // Queues: counts by state, pause and resume.
    api.post_admin(
        "/v1/jobs",
        json!({"kind": "lint", "payload": kiln_tests::payload_for("lint"), "queue": "ops"}),
    )
    .await;
    let (s, q) = api.get_admin("/v1/queues").await;
    assert_eq!(s, 200);
    let ops = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "ops")
        .unwrap()
        .clone();
    assert_eq!(
        ops["counts"],
        json!({"available": 1, "failed": 1, "succeeded": 1}),
        "{ops}"
    );
    assert_eq!(ops["paused"], false);
    let (s, p) = api.post_admin("/v1/queues/ops/pause", json!(null)).await;
    assert_eq!((s, p["paused"].as_bool()), (200, Some(true)));
    let (_, q) = api.get_admin("/v1/queues").await;
    assert!(q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "ops" && q["paused"] == true));
    assert!(lease::claim(&db.pool, "ops", "w1", 5, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    let (s, p) = api.post_admin("/v1/queues/ops/resume", json!(null)).await;
    assert_eq!((s, p["paused"].as_bool()), (200, Some(false)));
    assert_eq!(
        lease::claim(&db.pool, "ops", "w1", 5, Duration::from_secs(30))
            .await
            .unwrap()
            .len(),
        1
    );
    // A new queue can be paused before it has jobs.
    let (s, _) = api.post_admin("/v1/queues/later/pause", json!(null)).await;
    assert_eq!(s, 200);
    let (_, q) = api.get_admin("/v1/queues").await;
    assert!(q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "later" && q["counts"] == json!({})));
}

/// Reads server-sent events from `res` until `end`, returning the `log` data and the end data.
async fn read_sse(res: reqwest::Response, mut on_log: impl FnMut(Value)) -> Value {
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            let line = line.trim_end();
            if line.is_empty() {
                match event.as_str() {
                    "log" => on_log(serde_json::from_str(&data).unwrap()),
                    "end" => return serde_json::from_str(&data).unwrap(),
                    _ => {}
                }
                event.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }
    panic!("the stream closed without an end event");
}

#[tokio::test]
async fn logs_keep_nul_and_invalid_utf8_and_say_what_went_past_the_cap() {
    use base64::Engine as _;
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (_, j) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "queue": "raw", "payload": kiln_tests::payload_for("test")}),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    let raw: &[u8] = b"nul\0here \xff\xfe end\n";
    let first = LogChunk {
        seq: 0,
        stream: "stdout".into(),
        data: raw.to_vec(),
    };
    kiln_queue::logs::append(&db.pool, id, 1, &[first, chunk(1, "plain\0\n")])
        .await
        .expect("NUL and invalid UTF-8 are stored");
    let drops = kiln_queue::logs::LogDrops {
        attempt: 1,
        dropped_bytes: 1234,
        dropped_chunks: 5,
        cap_bytes: 8 << 20,
    };
    kiln_queue::logs::record_drops(&db.pool, id, drops).await.unwrap();
    let (s, page) = api.get_admin(&format!("/v1/jobs/{id}/logs")).await;
    assert_eq!(s, 200);
    let c = &page["chunks"];
    assert_eq!(c[0]["data"], "nul\u{0}here \u{fffd}\u{fffd} end\n");
    let exact = base64::engine::general_purpose::STANDARD
        .decode(
            c[0]["data_base64"]
                .as_str()
                .expect("exact bytes of invalid UTF-8"),
        )
        .unwrap();
    assert_eq!(exact, raw);
    assert_eq!(c[1]["data"], "plain\u{0}\n");
    assert!(c[1].get("data_base64").is_none(), "{}", c[1]);
    assert_eq!(
        page["dropped"],
        json!([{"attempt": 1, "dropped_bytes": 1234, "dropped_chunks": 5, "cap_bytes": 8 << 20}])
    );
    let stored = kiln_queue::logs::read(&db.pool, id, None, 10).await.unwrap();
    assert_eq!(stored[0].bytes(), raw);
    assert_eq!(stored[1].bytes(), b"plain\0\n");
}

fn chunk(seq: i32, data: &str) -> LogChunk {
    LogChunk {
        seq,
        stream: if seq % 2 == 0 { "stdout" } else { "stderr" }.into(),
        data: data.into(),
    }
}

#[tokio::test]
async fn logs_as_json_pages_and_live_over_sse() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (_, j) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "logs"}),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    lease::claim(&db.pool, "logs", "w1", 1, Duration::from_secs(60))
        .await
        .unwrap();
    kiln_queue::logs::append(&db.pool, id, 1, &[chunk(0, "line 0\n"), chunk(1, "line 1\n")])
        .await
        .unwrap();

    let res = api
        .req(
            Method::GET,
            &format!("/v1/jobs/{id}/logs/stream"),
            Some(&api.reader),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(read_sse(res, move |v| {
        let _ = tx.send(v);
    }));
    // The two stored chunks come first, then chunks appended while the stream is open.
    for want in ["line 0\n", "line 1\n"] {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got["data"], want);
    }
    for seq in 2..6 {
        kiln_queue::logs::append(&db.pool, id, 1, &[chunk(seq, &format!("line {seq}\n"))])
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a chunk appended while streaming arrives")
            .unwrap();
        assert_eq!(got["data"], format!("line {seq}\n"));
        assert_eq!(got["seq"], seq);
    }
    assert!(!reader.is_finished(), "the stream ended while the job runs");
    // The job finishes: the last chunk is delivered, then the stream ends.
    kiln_queue::logs::append(&db.pool, id, 1, &[chunk(6, "bye\n")])
        .await
        .unwrap();
    lease::complete(&db.pool, "w1", &[completion(id, AttemptOutcome::Succeeded, None)])
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream ends once the job is final")
        .unwrap();
    assert_eq!(end["state"], "succeeded");
    let last = rx.recv().await.unwrap();
    assert_eq!(last["data"], "bye\n");

    // Resuming with Last-Event-ID sends only what follows.
    let res = api
        .req(
            Method::GET,
            &format!("/v1/jobs/{id}/logs/stream"),
            Some(&api.reader),
        )
        .header("Last-Event-ID", "1:4")
        .send()
        .await
        .unwrap();
    let mut resumed = Vec::new();
    let end = read_sse(res, |v| resumed.push(v["seq"].as_i64().unwrap())).await;
    assert_eq!(resumed, vec![5, 6]);
    assert_eq!(end["state"], "succeeded");

    // JSON pages.
    let (s, page) = api.get_admin(&format!("/v1/jobs/{id}/logs?limit=3")).await;
    assert_eq!(s, 200);
    assert_eq!(page["chunks"].as_array().unwrap().len(), 3);
    assert_eq!(page["next"], "1:2");
    assert_eq!(page["done"], false);
    let (_, page) = api.get_admin(&format!("/v1/jobs/{id}/logs?after=1:2")).await;
    let data: Vec<&str> = page["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["line 3\n", "line 4\n", "line 5\n", "bye\n"]);
    assert_eq!(page["done"], true);
    let (s, e) = api.get_admin("/v1/jobs/777777/logs/stream").await;
    assert_error(s, &e, 404, None);
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2_hmac::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn webhooks_verify_signatures_and_ignore_replays() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let secret = "s3cret-s3cret-s3cret";
    let (s, h) = api
        .post_admin(
            "/v1/hooks",
            json!({
                "name": "ci",
                "secret": secret,
                "job": {
                    "kind": "generation",
                    "queue": "hooks",
                    "payload": {"prompt": "review {{repository}}@{{commit}} on {{ref}} ({{event}})"},
                    "unique_key": "ci:{{repository}}@{{commit}}",
                    "tags": ["hook:{{hook}}"]
                }
            }),
        )
        .await;
    assert_eq!(s, 201, "{h}");
    assert!(h.get("secret").is_none(), "the secret is echoed back");
    let (s, e) = api
        .post_admin(
            "/v1/hooks",
            json!({"name": "ci", "secret": secret, "job": {"kind": "test", "payload": kiln_tests::payload_for("test")}}),
        )
        .await;
    assert_error(s, &e, 409, Some("name"));

    let push = json!({
        "ref": "refs/heads/main",
        "after": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        "repository": {"full_name": "acme/widgets"},
    });
    let body = serde_json::to_vec(&push).unwrap();
    let deliver = |sig: Option<String>, delivery: &str, event: &str, body: Vec<u8>| {
        let mut r = api
            .req(Method::POST, "/v1/hooks/github/ci", None)
            .header("Content-Type", "application/json")
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .body(body);
        if let Some(sig) = sig {
            r = r.header("X-Hub-Signature-256", sig);
        }
        api.call(r)
    };
    // Missing and bad signatures enqueue nothing.
    let (s, e) = deliver(None, "d-1", "push", body.clone()).await;
    assert_error(s, &e, 401, Some("X-Hub-Signature-256"));
    let (s, e) = deliver(
        Some(sign("wrong-secret-wrong", &body)),
        "d-1",
        "push",
        body.clone(),
    )
    .await;
    assert_error(s, &e, 401, Some("X-Hub-Signature-256"));
    let (s, e) = deliver(Some("sha256=zz".into()), "d-1", "push", body.clone()).await;
    assert_error(s, &e, 401, Some("X-Hub-Signature-256"));
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let (s, e) = deliver(Some(sign(secret, &body)), "d-1", "push", tampered).await;
    assert_error(s, &e, 401, Some("X-Hub-Signature-256"));
    assert_eq!(job_count(&db).await, 0);

    // A good one enqueues the template for that repository and commit.
    let (s, r) = deliver(Some(sign(secret, &body)), "d-1", "push", body.clone()).await;
    assert_eq!((s, r["status"].as_str()), (202, Some("enqueued")), "{r}");
    let job_id = r["job_id"].as_i64().unwrap();
    let (_, detail) = api.get_admin(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(
        detail["job"]["payload"]["prompt"],
        "review acme/widgets@4b825dc642cb6eb9a060e54bf8d69288fbee4904 on refs/heads/main (push)"
    );
    assert_eq!(detail["job"]["tags"], json!(["hook:ci"]));
    assert_eq!(detail["job"]["queue"], "hooks");

    // The same delivery again: no second job.
    let (s, r) = deliver(Some(sign(secret, &body)), "d-1", "push", body.clone()).await;
    assert_eq!(
        (s, r["status"].as_str(), r["job_id"].as_i64()),
        (200, Some("duplicate"), Some(job_id))
    );
    assert_eq!(job_count(&db).await, 1);

    // Concurrent twins of a new delivery make exactly one job.
    let pr = json!({
        "action": "synchronize",
        "repository": {"full_name": "acme/widgets"},
        "pull_request": {"head": {"sha": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ref": "feature"}},
    });
    let pr_body = serde_json::to_vec(&pr).unwrap();
    let twins = futures::future::join_all((0..5).map(|_| {
        deliver(
            Some(sign(secret, &pr_body)),
            "d-2",
            "pull_request",
            pr_body.clone(),
        )
    }))
    .await;
    let enqueued = twins.iter().filter(|(_, r)| r["status"] == "enqueued").count();
    assert_eq!(enqueued, 1, "{twins:?}");
    assert!(twins.iter().all(|(_, r)| r["job_id"] == twins[0].1["job_id"]));
    assert_eq!(job_count(&db).await, 2);

    // Events and actions it does not react to, pings, and a deleted branch: nothing enqueued.
    let closed =
        serde_json::to_vec(&json!({"action": "closed", "repository": {"full_name": "a/b"}})).unwrap();
    let (s, r) = deliver(Some(sign(secret, &closed)), "d-3", "pull_request", closed).await;
    assert_eq!((s, r["status"].as_str()), (202, Some("ignored")), "{r}");
    let issue = b"{}".to_vec();
    let (s, r) = deliver(Some(sign(secret, &issue)), "d-4", "issues", issue.clone()).await;
    assert_eq!((s, r["status"].as_str()), (202, Some("ignored")), "{r}");
    let (s, r) = deliver(Some(sign(secret, &issue)), "d-5", "ping", issue.clone()).await;
    assert_eq!((s, r["status"].as_str()), (200, Some("pong")), "{r}");
    let deleted = serde_json::to_vec(&json!({"ref": "refs/heads/x", "after": "0000000000000000000000000000000000000000", "deleted": true, "repository": {"full_name": "a/b"}})).unwrap();
    let (s, r) = deliver(Some(sign(secret, &deleted)), "d-6", "push", deleted).await;
    assert_eq!((s, r["status"].as_str()), (202, Some("ignored")), "{r}");
    let incomplete = serde_json::to_vec(&json!({"ref": "refs/heads/x", "after": "abc"})).unwrap();
    let (s, e) = deliver(Some(sign(secret, &incomplete)), "d-7", "push", incomplete).await;
    assert_error(s, &e, 422, Some("repository.full_name"));
    let (s, e) = api
        .call(
            api.req(Method::POST, "/v1/hooks/github/nope", None)
                .header("X-Hub-Signature-256", sign(secret, &body))
                .body(body.clone()),
        )
        .await;
    assert_error(s, &e, 401, Some("X-Hub-Signature-256"));
    assert_eq!(job_count(&db).await, 2);

    // Generic hook: same signing; the body's own fields fill the template; replays ignored.
    let generic =
        serde_json::to_vec(&json!({"repository": "acme/api", "commit": "cafe", "ref": "main"})).unwrap();
    let send_generic = |sig: Option<String>, delivery: Option<&str>| {
        let mut r = api
            .req(Method::POST, "/v1/hooks/generic/ci", None)
            .header("Content-Type", "application/json")
            .body(generic.clone());
        if let Some(sig) = sig {
            r = r.header("X-Hub-Signature-256", sig);
        }
        if let Some(d) = delivery {
            r = r.header("X-Kiln-Delivery", d);
        }
        api.call(r)
    };
    let (s, e) = send_generic(None, None).await;
    assert_error(s, &e, 401, Some("X-Hub-Signature-256"));
    let (s, e) = send_generic(Some(sign("nope-nope-nope-nope", &generic)), None).await;
    assert_error(s, &e, 401, Some("X-Hub-Signature-256"));
    let (s, r) = send_generic(Some(sign(secret, &generic)), None).await;
    assert_eq!((s, r["status"].as_str()), (202, Some("enqueued")), "{r}");
    let (_, detail) = api.get_admin(&format!("/v1/jobs/{}", r["job_id"])).await;
    assert_eq!(
        detail["job"]["payload"]["prompt"],
        "review acme/api@cafe on main (generic)"
    );
    let (s, r) = send_generic(Some(sign(secret, &generic)), None).await;
    assert_eq!(
        (s, r["status"].as_str()),
        (200, Some("duplicate")),
        "a replayed body"
    );
    let (s, r) = send_generic(Some(sign(secret, &generic)), Some("g-2")).await;
    assert_eq!(
        r["status"], "duplicate",
        "{s} {r}: same unique key, the live job stands"
    );
    assert_eq!(job_count(&db).await, 3);

    // CRUD.
    let (s, list) = api.get_admin("/v1/hooks").await;
    assert_eq!(s, 200);
    assert_eq!(list["hooks"].as_array().unwrap().len(), 1);
    let (s, u) = api
        .call(
            api.req(Method::PATCH, "/v1/hooks/ci", Some(&api.admin))
                .json(&json!({"events": ["push"], "secret": "another-secret-value"})),
        )
        .await;
    assert_eq!((s, u["events"].clone()), (200, json!(["push"])), "{u}");
    let (s, r) = deliver(Some(sign(secret, &body)), "d-8", "push", body.clone()).await;
    assert_error(s, &r, 401, None);
    let (s, _) = api
        .call(api.req(Method::DELETE, "/v1/hooks/ci", Some(&api.admin)))
        .await;
    assert_eq!(s, 204);
    let (s, e) = api.get_admin("/v1/hooks/ci").await;
    assert_error(s, &e, 404, None);

    let metrics = api.metrics().await;
    for want in [
        r#"kiln_webhook_deliveries_total{result="enqueued",source="github"}"#,
        r#"kiln_webhook_deliveries_total{result="duplicate",source="github"}"#,
        r#"kiln_webhook_deliveries_total{result="bad_signature",source="github"}"#,
        r#"kiln_webhook_deliveries_total{result="missing_signature",source="generic"}"#,
    ] {
        assert!(metrics.contains(want), "{want} missing from /metrics");
    }
}

#[tokio::test]
async fn health_metrics_and_openapi_document() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (s, h) = api.call(api.req(Method::GET, "/healthz", None)).await;
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    let (s, r) = api.call(api.req(Method::GET, "/readyz", None)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["checks"], json!({"database": "ok", "docker": "ok"}));
    // The isolation in force, without authentication and without internal detail.
    let iso = &r["isolation"];
    assert!(matches!(iso["seccomp"].as_str(), Some("engine" | "kiln")), "{r}");
    assert_eq!(iso["core_dumps"], json!(false), "{r}");
    assert_eq!(iso["network"], json!("none"), "{r}");
    assert!(
        iso.get("server_version").is_none() && iso.get("warnings").is_none(),
        "{r}"
    );

    api.post_admin(
        "/v1/jobs",
        json!({"kind": "test", "payload": kiln_tests::payload_for("test")}),
    )
    .await;
    let text = api.metrics().await;
    assert!(
        text.contains(r#"kiln_http_requests_total{method="POST",route="/v1/jobs",status="201"}"#),
        "{text}"
    );
    assert!(text.contains(r#"kiln_http_request_seconds_count{method="POST",route="/v1/jobs"}"#));
    // An API-only process exports queue depth too (it is the only Kiln process here). No
    // worker serves the job's queue and none is configured: it counts as `other`.
    let series = r#"kiln_queue_depth{queue="other",state="available"} 1"#.to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = api.metrics().await;
        if text.lines().any(|l| l == series) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never exported:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    let (s, doc) = api.call(api.req(Method::GET, "/openapi.json", None)).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let want = [
        ("/v1/jobs", &["get", "post"][..]),
        ("/v1/jobs/batch", &["post"]),
        ("/v1/jobs/{id}", &["get"]),
        ("/v1/jobs/{id}/logs", &["get"]),
        ("/v1/jobs/{id}/logs/stream", &["get"]),
        ("/v1/jobs/{id}/diff", &["get"]),
        ("/v1/jobs/{id}/artifacts", &["get"]),
        ("/v1/artifacts/{digest}", &["get"]),
        ("/v1/jobs/{id}/cancel", &["post"]),
        ("/v1/jobs/{id}/retry", &["post"]),
        ("/v1/queues", &["get"]),
        ("/v1/queues/{name}/pause", &["post"]),
        ("/v1/queues/{name}/resume", &["post"]),
        ("/v1/hooks", &["get", "post"]),
        ("/v1/hooks/{hook}", &["get", "patch", "delete"]),
        ("/v1/hooks/github/{hook}", &["post"]),
        ("/v1/hooks/generic/{hook}", &["post"]),
        ("/v1/tokens", &["get", "post"]),
        ("/v1/tokens/{id}", &["delete"]),
        ("/v1/schedules", &["get", "post"]),
        ("/v1/schedules/{name}", &["get", "patch", "delete"]),
        ("/v1/pipelines", &["post"]),
        ("/v1/pipelines/validate", &["post"]),
        ("/v1/pipelines/{id}", &["get"]),
        ("/v1/pipelines/{id}/wait", &["get"]),
        ("/v1/pipelines/{id}/workspace", &["get"]),
        ("/v1/costs", &["get"]),
        ("/v1/events", &["get"]),
        ("/v1/events/stream", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ];
    for (path, methods) in want {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} is not documented");
        }
    }
    assert_eq!(
        paths.len(),
        want.len(),
        "documented paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["JobSpec"].is_object());
}

#[tokio::test]
async fn api_enqueues_still_wake_workers() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(kiln_queue::admin::JOBS_CHANNEL).await.unwrap();
    let (s, _) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "wake-single"}),
        )
        .await;
    assert_eq!(s, 201);
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "wake-single");
    let (s, _) = api
        .post_admin(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "test", "payload": kiln_tests::payload_for("test"), "queue": "wake-batch"}]}),
        )
        .await;
    assert_eq!(s, 201);
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "wake-batch");
    // Other enqueuers keep the trigger's notification.
    kiln_queue::enqueue(
        &db.pool,
        &kiln_queue::NewJob::new("wake-direct", kiln_queue::JobKind::Lint, json!({})),
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), "wake-direct");
}

#[tokio::test]
async fn a_jobs_workspace_artifact_is_listed_and_downloadable() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python");
    let packed = kiln_artifacts::pack_dir(&dir, 50 << 20).unwrap();
    kiln_artifacts::store(&db.pool, &packed).await.unwrap();
    let (s, job) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "test", "queue": "test", "payload": {"workspace": packed.digest}}),
        )
        .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let (s, list) = api.get_admin(&format!("/v1/jobs/{id}/artifacts")).await;
    assert_eq!(s, 200, "{list}");
    let a = &list["artifacts"][0];
    assert_eq!(
        (a["role"].as_str(), a["digest"].as_str()),
        (Some("workspace"), Some(packed.digest.as_str()))
    );
    assert_eq!(a["files"].as_i64(), Some(packed.files as i64));
    // The download is exactly what was stored: the canonical tar.gz.
    let res = api
        .req(Method::GET, a["download"].as_str().unwrap(), Some(&api.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "application/gzip");
    assert_eq!(res.bytes().await.unwrap().to_vec(), packed.data);
    // A job with no workspace lists none; bad and unknown digests; no token.
    let (_, other) = api
        .post_admin(
            "/v1/jobs",
            json!({"kind": "notification", "payload": kiln_tests::payload_for("notification")}),
        )
        .await;
    let (s, none) = api
        .get_admin(&format!("/v1/jobs/{}/artifacts", other["id"].as_i64().unwrap()))
        .await;
    assert_eq!((s, none["artifacts"].as_array().unwrap().len()), (200, 0));
    let (s, e) = api.get_admin("/v1/artifacts/sha256:xyz").await;
    assert_error(s, &e, 400, Some("digest"));
    let (s, e) = api
        .get_admin(&format!("/v1/artifacts/sha256:{}", "0".repeat(64)))
        .await;
    assert_error(s, &e, 404, None);
    let (s, e) = api.get_admin("/v1/jobs/999999/artifacts").await;
    assert_error(s, &e, 404, None);
    let (s, e) = api
        .call(api.req(Method::GET, &format!("/v1/artifacts/{}", packed.digest), None))
        .await;
    assert_error(s, &e, 401, None);
}

#[tokio::test]
async fn schedules_crud_auth_and_refusals_by_field() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let spec = json!({
        "name": "nightly-lint",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "job": {"kind": "lint", "payload": {"workspace": kiln_tests::WORKSPACE, "languages": ["python"]}},
    });
    let req = |m: Method, path: &str, tok: Option<&str>| api.req(m, path, tok);

    // Writing needs admin: no token 401, jobs:read and jobs:write 403.
    let (s, b) = api
        .call(req(Method::POST, "/v1/schedules", None).json(&spec))
        .await;
    assert_error(s, &b, 401, None);
    for tok in [&api.reader, &api.writer] {
        let (s, b) = api
            .call(req(Method::POST, "/v1/schedules", Some(tok)).json(&spec))
            .await;
        assert_error(s, &b, 403, None);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_schedules")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "a refused create wrote a row");

    let (s, created) = api.post_admin("/v1/schedules", spec.clone()).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["name"], "nightly-lint");
    assert_eq!(created["cron"], "0 3 * * *");
    assert_eq!(created["timezone"], "Europe/Paris");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["source"], "api");
    assert_eq!(created["job"]["kind"], "lint");
    assert_eq!(
        created["job"]["payload"],
        json!({"workspace": kiln_tests::WORKSPACE, "languages": ["python"]})
    );
    let next: chrono::DateTime<Utc> = serde_json::from_value(created["next_tick"].clone()).unwrap();
    assert!(next > Utc::now());

    // Same name again: 409 naming `name`.
    let (s, b) = api.post_admin("/v1/schedules", spec.clone()).await;
    assert_error(s, &b, 409, Some("name"));

    // Bad input, by field; nothing written.
    let bad = [
        (
            json!({"name": "b1", "cron": "every day", "job": {"kind": "lint", "payload": kiln_tests::payload_for("lint")}}),
            "cron",
        ),
        (
            json!({"name": "b2", "cron": "61 * * * *", "job": {"kind": "lint", "payload": kiln_tests::payload_for("lint")}}),
            "cron",
        ),
        (
            json!({"name": "b3", "cron": "@daily", "timezone": "Mars/Olympus", "job": {"kind": "lint", "payload": kiln_tests::payload_for("lint")}}),
            "timezone",
        ),
        (
            json!({"name": "b4", "cron": "@daily", "job": {"kind": "bake"}}),
            "job.kind",
        ),
        (
            json!({"name": "b5", "cron": "@daily", "job": {"kind": "lint", "payload": kiln_tests::payload_for("lint")}, "color": "red"}),
            "color",
        ),
        (
            json!({"name": "b6", "job": {"kind": "lint", "payload": kiln_tests::payload_for("lint")}}),
            "cron",
        ),
    ];
    for (body, field) in bad {
        let (s, b) = api.post_admin("/v1/schedules", body.clone()).await;
        assert!(s == 400 || s == 422, "{body}: {s} {b}");
        assert_error(s, &b, s, Some(field));
    }
    let (s, list) = api
        .call(req(Method::GET, "/v1/schedules", Some(&api.reader)))
        .await;
    assert_eq!(s, 200, "{list}");
    let names: Vec<&str> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly-lint"]);
    let (s, b) = api.call(req(Method::GET, "/v1/schedules", None)).await;
    assert_error(s, &b, 401, None);

    // Read by name (jobs:read suffices); unknown name 404.
    let (s, one) = api
        .call(req(Method::GET, "/v1/schedules/nightly-lint", Some(&api.reader)))
        .await;
    assert_eq!((s, one["cron"].as_str()), (200, Some("0 3 * * *")), "{one}");
    let (s, b) = api.get_admin("/v1/schedules/nope").await;
    assert_error(s, &b, 404, None);

    // Patch: switch off, change the expression; a bad expression is refused naming `cron`
    // and leaves the schedule as it was.
    let patch = |name: &str, body: Value, tok: &str| {
        api.req(Method::PATCH, &format!("/v1/schedules/{name}"), Some(tok))
            .json(&body)
    };
    let (s, b) = api
        .call(patch("nightly-lint", json!({"enabled": false}), &api.writer))
        .await;
    assert_error(s, &b, 403, None);
    let (s, off) = api
        .call(patch("nightly-lint", json!({"enabled": false}), &api.admin))
        .await;
    assert_eq!(s, 200, "{off}");
    assert_eq!(off["enabled"], false);
    assert!(off["next_tick"].is_null(), "{off}");
    let (s, b) = api
        .call(patch("nightly-lint", json!({"cron": "0 99 * * *"}), &api.admin))
        .await;
    assert_error(s, &b, 422, Some("cron"));
    let (s, b) = api
        .call(patch("nightly-lint", json!({"name": "other"}), &api.admin))
        .await;
    assert_error(s, &b, 422, Some("name"));
    let (s, on) = api
        .call(patch(
            "nightly-lint",
            json!({"enabled": true, "cron": "*/5 * * * *"}),
            &api.admin,
        ))
        .await;
    assert_eq!(s, 200, "{on}");
    assert_eq!(
        (on["enabled"].as_bool(), on["cron"].as_str()),
        (Some(true), Some("*/5 * * * *"))
    );
    assert_eq!(on["timezone"], "Europe/Paris");
    let stored: String = sqlx::query_scalar("SELECT cron FROM kiln_schedules WHERE name = 'nightly-lint'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, "*/5 * * * *");
    let (s, b) = api
        .call(patch("nope", json!({"enabled": true}), &api.admin))
        .await;
    assert_error(s, &b, 404, None);

    // Delete: admin only, then 404.
    let del = |tok: &str| api.req(Method::DELETE, "/v1/schedules/nightly-lint", Some(tok));
    let (s, b) = api.call(del(&api.reader)).await;
    assert_error(s, &b, 403, None);
    let (s, _) = api.call(del(&api.admin)).await;
    assert_eq!(s, 204);
    let (s, b) = api.call(del(&api.admin)).await;
    assert_error(s, &b, 404, None);
    let (_, list) = api.get_admin("/v1/schedules").await;
    assert_eq!(list["schedules"], json!([]));
}

fn packed_b64(dir: &std::path::Path) -> (String, String) {
    use base64::Engine;
    let p = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES).expect("pack");
    (
        base64::engine::general_purpose::STANDARD.encode(&p.data),
        p.digest,
    )
}

#[tokio::test]
async fn pipelines_are_submitted_read_and_refused_by_field() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let (b64, digest) = packed_b64(&kiln_tests::validation::fixture("python"));
    let body = json!({"workspace_tar_gz_base64": b64, "timeout_secs": 90, "tags": ["ci"]});
    let post =
        |tok: Option<&str>, body: &Value| api.req(Method::POST, "/v1/pipelines/validate", tok).json(body);

    // Scopes: jobs:write submits, jobs:read does not.
    let (s, b) = api.call(post(None, &body)).await;
    assert_error(s, &b, 401, None);
    let (s, b) = api.call(post(Some(&api.reader), &body)).await;
    assert_error(s, &b, 403, None);

    // Refusals by field; nothing written.
    let no_lang = tempfile::tempdir().unwrap();
    std::fs::write(no_lang.path().join("README.txt"), "just words\n").unwrap();
    let (no_lang_b64, _) = packed_b64(no_lang.path());
    let bad = [
        (json!({"languages": ["python"]}), 422, "workspace_tar_gz_base64"),
        (
            json!({"workspace_tar_gz_base64": b64, "git": {"source": "https://example.com/r.git"}}),
            422,
            "git",
        ),
        (
            json!({"workspace_tar_gz_base64": "not base64!!"}),
            422,
            "workspace_tar_gz_base64",
        ),
        (
            json!({"workspace_tar_gz_base64": "aGVsbG8="}),
            422,
            "workspace_tar_gz_base64",
        ),
        (
            json!({"workspace_tar_gz_base64": no_lang_b64}),
            422,
            "workspace_tar_gz_base64",
        ),
        (
            json!({"workspace_tar_gz_base64": b64, "languages": ["cobol"]}),
            422,
            "languages[0]",
        ),
        (
            json!({"workspace_tar_gz_base64": b64, "timeout_secs": 0}),
            422,
            "timeout_secs",
        ),
        (
            json!({"workspace_tar_gz_base64": b64, "colour": "red"}),
            422,
            "colour",
        ),
        (json!({"git": {"source": ""}}), 422, "git.source"),
        (
            json!({"git": {"source": "/nonexistent/repo", "branch": "x"}}),
            422,
            "git.branch",
        ),
        // A path on the API's machine: only from the CLI.
        (
            json!({"git": {"source": no_lang.path().to_str().unwrap()}}),
            422,
            "git.source",
        ),
    ];
    for (b, status, field) in bad {
        let (s, r) = api.call(post(Some(&api.writer), &b)).await;
        assert_error(s, &r, status, Some(field));
    }
    // Even for an admin: the API fetches https:// only.
    let (s, r) = api
        .post_admin(
            "/v1/pipelines/validate",
            json!({"git": {"source": no_lang.path().to_str().unwrap()}}),
        )
        .await;
    assert_error(s, &r, 422, Some("git.source"));
    assert_eq!(job_count(&db).await, 0);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_pipelines")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Over the body cap: 413 naming `body`.
    let small = ApiServer::start_with(
        &db.pool,
        kiln_api::ApiConfig {
            pipeline_body_limit: 100,
            ..Default::default()
        },
    )
    .await;
    let (s, r) = small
        .call(
            small
                .req(Method::POST, "/v1/pipelines/validate", Some(&small.writer))
                .json(&body),
        )
        .await;
    assert_error(s, &r, 413, Some("body"));

    // Accepted: the pipeline and its three jobs, with the right payloads.
    let (s, sub) = api.call(post(Some(&api.writer), &body)).await;
    assert_eq!(s, 201, "{sub}");
    let id = sub["pipeline_id"].as_i64().unwrap();
    assert_eq!(sub["workspace"], digest.as_str());
    assert_eq!(sub["languages"], json!(["python"]));
    let job_ids: Vec<i64> = serde_json::from_value(sub["jobs"].clone()).unwrap();
    assert_eq!(job_ids.len(), 3);
    let rows: Vec<(i64, String, String, Value, Option<i64>, i32)> = sqlx::query_as(
        "SELECT id, kind::text, queue, payload, pipeline_id, timeout_ms FROM kiln_jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(kinds, ["test", "lint", "security-scan"]);
    for (jid, kind, queue, payload, pipeline, timeout_ms) in &rows {
        assert!(job_ids.contains(jid));
        assert_eq!(queue, kind);
        assert_eq!(*pipeline, Some(id));
        assert_eq!(*timeout_ms, 90_000);
        assert_eq!(payload, &json!({"workspace": digest, "languages": ["python"]}));
    }

    // Read it: jobs:read suffices; running, with its jobs and a null summary verdict.
    let (s, view) = api
        .call(api.req(Method::GET, &format!("/v1/pipelines/{id}"), Some(&api.reader)))
        .await;
    assert_eq!(s, 200, "{view}");
    assert_eq!(view["pipeline_id"], id);
    assert_eq!(view["state"], "running");
    assert_eq!(view["workspace"], digest.as_str());
    assert_eq!(view["tags"], json!(["ci"]));
    assert_eq!(view["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(view["summary"]["pipeline_id"], id);
    assert!(view["summary"]["verdict"].is_null());
    let (s, b) = api
        .call(api.req(Method::GET, &format!("/v1/pipelines/{id}"), None))
        .await;
    assert_error(s, &b, 401, None);
    let (s, b) = api.get_admin("/v1/pipelines/999999").await;
    assert_error(s, &b, 404, Some("pipeline_id"));
    let (s, b) = api.get_admin("/v1/pipelines/abc").await;
    assert_error(s, &b, 400, Some("id"));
    // Waiting on a pipeline nobody runs returns it, still running, after the timeout.
    let (s, w) = api
        .get_admin(&format!("/v1/pipelines/{id}/wait?timeout_secs=1"))
        .await;
    assert_eq!((s, w["state"].as_str()), (200, Some("running")), "{w}");
    let (s, b) = api
        .get_admin(&format!("/v1/pipelines/{id}/wait?timeout_secs=0"))
        .await;
    assert_error(s, &b, 400, Some("timeout_secs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipeline_submitted_over_the_api_gets_its_verdict() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let rig = kiln_tests::validation::Rig::start(&db.pool, "api-pipeline").await;
    let (b64, _) = packed_b64(&kiln_tests::validation::fixture("python"));
    let (s, sub) = api
        .call(
            api.req(Method::POST, "/v1/pipelines/validate", Some(&api.writer))
                .json(&json!({"workspace_tar_gz_base64": b64, "languages": ["python"]})),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    let id = sub["pipeline_id"].as_i64().unwrap();
    let mut view = Value::Null;
    for _ in 0..10 {
        let (s, v) = api
            .call(api.req(
                Method::GET,
                &format!("/v1/pipelines/{id}/wait?timeout_secs=60"),
                Some(&api.reader),
            ))
            .await;
        assert_eq!(s, 200, "{v}");
        view = v;
        if view["state"] == "finished" {
            break;
        }
    }
    assert_eq!(view["state"], "finished", "{view}");
    // The API's summary is exactly what the library computes for the embedded path, and
    // the python fixture's known verdict (see tests/validate.rs).
    let lib = kiln_pipeline::get(&db.pool, id).await.unwrap();
    assert_eq!(view["summary"], lib.summary());
    let summary = &view["summary"];
    assert_eq!(
        (summary["verdict"].as_str(), summary["quality_score"].as_u64()),
        (Some("failed"), Some(6)),
        "{summary}"
    );
    let n = |k: &str| summary["test"][k].as_u64().unwrap();
    assert_eq!(
        (n("passed"), n("failed"), n("skipped"), n("errors")),
        (3, 2, 1, 0)
    );
    assert!(summary["lint"]["findings"].is_array(), "{summary}");
    assert!(summary["security"]["findings"].is_array(), "{summary}");

    // `kiln submit validate DIR --api URL --wait --json` packs DIR, submits it over the API
    // and prints the same one object; the token comes from KILN_TOKEN.
    let out = tokio::process::Command::new(kiln_tests::kiln_binary())
        .args(["submit", "validate"])
        .arg(kiln_tests::validation::fixture("python"))
        .args(["--api", &api.base, "--wait", "--json"])
        .env("KILN_TOKEN", &api.admin)
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let cli = kiln_tests::validation::one_summary_object(&out.stdout);
    let cli_id = cli["pipeline_id"].as_i64().unwrap();
    assert_ne!(cli_id, id);
    assert_eq!(cli, kiln_pipeline::get(&db.pool, cli_id).await.unwrap().summary());
    assert_eq!(
        (cli["verdict"].as_str(), cli["quality_score"].as_u64()),
        (Some("failed"), Some(6))
    );
    rig.stop().await;

    // Refusals come back naming the field; a token without jobs:write gets 403.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "no code here\n").unwrap();
    let run = |dir: &std::path::Path, token: &str| {
        tokio::process::Command::new(kiln_tests::kiln_binary())
            .args(["--api", &api.base, "--token", token, "submit", "validate"])
            .arg(dir)
            .env_remove("DATABASE_URL")
            .env_remove("KILN_TOKEN")
            .output()
    };
    let out = run(empty.path(), &api.admin).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(stderr.contains("[field: workspace_tar_gz_base64]"), "{stderr}");
    let out = run(&kiln_tests::validation::fixture("python"), &api.reader)
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(stderr.contains("403"), "{stderr}");
}

#[tokio::test]
async fn kiln_up_and_api_refuse_a_port_in_use_at_once_naming_the_flag() {
    let db = TestDb::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    for cmd in [&["up", "--no-images"][..], &["api"]] {
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            tokio::process::Command::new(kiln_tests::kiln_binary())
                .arg("--data-dir")
                .arg(data.path())
                .args(cmd)
                .args(["--listen", &addr])
                .env("DATABASE_URL", &db.url)
                .env("RUST_BACKTRACE", "0")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("kiln {cmd:?} kept running with its port taken"))
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd:?}: {stderr}");
        assert!(
            stderr.contains(&format!("listen on {addr} (--listen)")),
            "{cmd:?}: {stderr}"
        );
    }
    // Nothing was started: no worker registered, no scheduler.
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_workers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 0);
}

#[tokio::test]
async fn generation_pipelines_are_accepted_and_refused_by_field() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let post = |tok: Option<&str>, body: &Value| api.req(Method::POST, "/v1/pipelines", tok).json(body);
    let ok = json!({"kind": "generation", "prompt": "Write a CLI that adds two numbers", "max_iterations": 3,
                    "budget_usd": 0.5, "preference": "fast", "language": "python"});
    let (s, b) = api.call(post(None, &ok)).await;
    assert_error(s, &b, 401, None);
    let (s, b) = api.call(post(Some(&api.reader), &ok)).await;
    assert_error(s, &b, 403, None);

    let (b64, digest) = packed_b64(&kiln_tests::validation::fixture("python"));
    let bad = [
        (json!({"prompt": "x"}), 422, "kind"),
        (json!({"kind": "validation", "prompt": "x"}), 422, "kind"),
        (json!({"kind": "generation"}), 422, "prompt"),
        (json!({"kind": "generation", "prompt": "  "}), 422, "prompt"),
        (
            json!({"kind": "generation", "prompt": "x", "max_iterations": 11}),
            422,
            "max_iterations",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "max_iterations": 0}),
            422,
            "max_iterations",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "budget_usd": -1.0}),
            422,
            "budget_usd",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "preference": "cheap"}),
            422,
            "preference",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "language": "cobol"}),
            422,
            "language",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "workspace": "sha256:abc"}),
            422,
            "workspace",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "workspace": digest}),
            422,
            "workspace",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "workspace_tar_gz_base64": "not base64!!"}),
            422,
            "workspace_tar_gz_base64",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "workspace_tar_gz_base64": b64, "git": {"source": "https://example.com/r.git"}}),
            422,
            "git",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "git": {"source": "/srv/repo"}}),
            422,
            "git.source",
        ),
        (
            json!({"kind": "generation", "prompt": "x", "colour": "red"}),
            422,
            "colour",
        ),
    ];
    for (b, status, field) in bad {
        let (s, r) = api.call(post(Some(&api.writer), &b)).await;
        assert_error(s, &r, status, Some(field));
    }
    assert_eq!(job_count(&db).await, 0);

    // Accepted: 202 with the pipeline, its first generation job enqueued; then from an upload.
    let (s, b) = api.call(post(Some(&api.writer), &ok)).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["kind"], "generation");
    assert_eq!(b["state"], "running");
    assert_eq!(b["workspace"], Value::Null);
    assert_eq!(b["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(b["jobs"][0]["kind"], "generation");
    assert_eq!(b["summary"]["stop_reason"], Value::Null);
    let payload: Value = sqlx::query_scalar("SELECT payload FROM kiln_jobs WHERE id = $1")
        .bind(b["jobs"][0]["id"].as_i64().unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(payload["iteration"], 1);
    assert_eq!(payload["max_iterations"], 3);
    assert_eq!(payload["preference"], "fast");
    let body =
        json!({"kind": "generation", "prompt": "Fix the failing tests", "workspace_tar_gz_base64": b64});
    let (s, b) = api.call(post(Some(&api.writer), &body)).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["workspace"], Value::from(digest.clone()));
    // A stored artifact may be named by digest.
    let body = json!({"kind": "generation", "prompt": "Add a docstring", "workspace": digest});
    let (s, b) = api.call(post(Some(&api.writer), &body)).await;
    assert_eq!(s, 202, "{b}");
    let (s, got) = api
        .call(api.req(
            Method::GET,
            &format!("/v1/pipelines/{}", b["pipeline_id"]),
            Some(&api.reader),
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["kind"], "generation");
}
