//! What LLM calls cost, through `GET /v1/costs` and `kiln costs`, and the workspace a pipeline
//! ends with, through `GET /v1/pipelines/{id}/workspace` and `kiln pipelines download`.

use std::process::Command;

use kiln_llm::ledger::CallRecord;
use kiln_llm::{record_call, CallFor, Usage, Usd};
use kiln_testkit::TestDb;
use kiln_tests::api::ApiServer;
use kiln_tests::kiln_binary;
use reqwest::Method;
use serde_json::Value;

async fn token_id(db: &TestDb, name: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM kiln_api_tokens WHERE name = $1")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn call(db: &TestDb, provider: &str, model: &str, input: u64, pico: i64, token: Option<i64>) {
    let rec = CallRecord {
        provider,
        model,
        usage: Usage {
            input,
            output: 10,
            cache_read: 1,
            cache_write: 2,
        },
        cost: Usd(pico),
        who: CallFor {
            pipeline_id: None,
            job_id: None,
            api_token_id: token,
        },
    };
    record_call(&db.pool, &rec).await.unwrap();
}

fn keys_and_calls(report: &Value) -> Vec<(String, i64)> {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap().to_owned(),
                g["calls"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn kiln(db: &TestDb, args: &[&str]) -> std::process::Output {
    Command::new(kiln_binary())
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("KILN_API_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn costs_are_grouped_exactly_and_a_token_sees_only_its_own() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let reader = token_id(&db, "test jobs:read").await;
    let admin = token_id(&db, "test admin").await;
    call(&db, "anthropic", "claude", 100, 1_500_000, Some(reader)).await;
    call(&db, "anthropic", "claude", 200, 2_500_000, Some(admin)).await;
    call(&db, "local", "qwen", 300, 7, None).await;

    // An admin sees every call; exact pico-USD and tokens by type.
    let (s, all) = api.get_admin("/v1/costs?group_by=provider").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(
        keys_and_calls(&all),
        [("anthropic".to_owned(), 2), ("local".to_owned(), 1)]
    );
    assert_eq!(all["groups"][0]["cost_pico_usd"], 4_000_000);
    assert_eq!(all["groups"][0]["tokens"]["input"], 300);
    assert_eq!(all["groups"][0]["tokens"]["cache_write"], 4);
    assert_eq!(all["total"]["calls"], 3);
    assert_eq!(all["total"]["cost_pico_usd"], 4_000_007);
    assert_eq!(all["api_token_id"], Value::Null);
    let (_, by_token) = api.get_admin("/v1/costs?group_by=token").await;
    let mut want = vec![
        (admin.to_string(), 1),
        (reader.to_string(), 1),
        ("none".to_owned(), 1),
    ];
    want.sort();
    assert_eq!(keys_and_calls(&by_token), want);

    // A reader sees its own calls only; a writer-only token is refused.
    let (s, mine) = api
        .call(api.req(Method::GET, "/v1/costs?group_by=model", Some(&api.reader)))
        .await;
    assert_eq!(s, 200, "{mine}");
    assert_eq!(keys_and_calls(&mine), [("anthropic/claude".to_owned(), 1)]);
    assert_eq!(mine["total"]["cost_pico_usd"], 1_500_000);
    assert_eq!(mine["api_token_id"], reader);
    let (s, _) = api
        .call(api.req(Method::GET, "/v1/costs", Some(&api.writer)))
        .await;
    assert_eq!(s, 403);

    // A window that ends before the calls holds none.
    let (_, past) = api
        .get_admin("/v1/costs?since=2020-01-01T00:00:00Z&until=2020-02-01T00:00:00Z")
        .await;
    assert_eq!(past["total"]["calls"], 0);

    // Refusals name the field.
    for (q, field) in [
        ("group_by=week", "group_by"),
        ("since=yesterday", "since"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("colour=red", "colour"),
    ] {
        let (s, b) = api.get_admin(&format!("/v1/costs?{q}")).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_eq!(b["field"], field, "{q}: {b}");
    }

    // `kiln costs` on the database: the same report, as JSON and as a table.
    let out = kiln(&db, &["costs", "--group-by", "provider", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["groups"], all["groups"]);
    let out = kiln(&db, &["costs", "--group-by", "day"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.starts_with("day "), "{table}");
    assert!(
        table.contains(&chrono::Utc::now().format("%Y-%m-%d").to_string()),
        "{table}"
    );
    assert!(table.lines().last().unwrap().starts_with("total "), "{table}");
    let out = kiln(&db, &["costs", "--group-by", "week"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--group-by"));
}

// Multi-threaded: the CLI child talks to this test's in-process API while the test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_workspace_downloads_as_a_tar_and_into_a_directory() {
    let db = TestDb::new().await;
    let api = ApiServer::start(&db.pool).await;
    let fixture = kiln_tests::validation::fixture("python");
    let opts = kiln_pipeline::SubmitOptions::default();
    let sub = kiln_pipeline::submit(&db.pool, kiln_pipeline::Source::Dir(fixture.clone()), &opts)
        .await
        .unwrap();
    let id = sub.pipeline_id;

    // The API gives the workspace the pipeline ran on as a plain tar.
    let res = api
        .req(
            Method::GET,
            &format!("/v1/pipelines/{id}/workspace"),
            Some(&api.reader),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-tar");
    let tar = res.bytes().await.unwrap();
    let tree = kiln_artifacts::Tree::from_tar(&tar, 1 << 30).unwrap();
    let want = kiln_artifacts::load(&db.pool, &sub.workspace, 1 << 30)
        .await
        .unwrap();
    assert_eq!(tree, want);
    assert!(!tree.entries.is_empty());

    // A pipeline whose result names another workspace (what a generation pipeline ends
    // with) downloads that one.
    let mut edited = want.clone();
    edited.entries.insert(
        "generated.py".into(),
        kiln_artifacts::TreeEntry::File {
            data: b"print('made by the model')\n".to_vec(),
            executable: false,
        },
    );
    let packed = edited.pack(1 << 30).unwrap();
    kiln_artifacts::store(&db.pool, &packed).await.unwrap();
    sqlx::query("UPDATE kiln_pipelines SET result = jsonb_build_object('workspace', $2::text) WHERE id = $1")
        .bind(id)
        .bind(&packed.digest)
        .execute(&db.pool)
        .await
        .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("ws");
    let out = Command::new(kiln_binary())
        .args(["--api", &api.base, "pipelines", "download", &id.to_string(), "-o"])
        .arg(&target)
        .env("KILN_TOKEN", &api.reader)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(target.join("generated.py")).unwrap(),
        "print('made by the model')\n"
    );
    assert_eq!(
        kiln_artifacts::pack_dir(&target, 1 << 30).unwrap().digest,
        packed.digest
    );

    // The same through the database; a non-empty directory is refused, naming the flag.
    let again = out_dir.path().join("db");
    let id = id.to_string();
    let download = [
        "pipelines",
        "download",
        id.as_str(),
        "-o",
        again.to_str().unwrap(),
    ];
    let out = kiln(&db, &download);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(again.join("generated.py").exists());
    let out = kiln(&db, &download);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output"));

    // Unknown pipeline: 404.
    let (s, b) = api.get_admin("/v1/pipelines/999999/workspace").await;
    assert_eq!(s, 404, "{b}");
}
