//! The generation loop end to end: a loopback model speaking the real protocols, the real
//! generation module and advancer, the real validation jobs on the Docker engine.

use std::time::Duration;

use kiln_generate::{submit_generation, GenerateRequest, Start};
use kiln_pipeline::{Source, SubmitOptions};
use kiln_testkit::llm::{overloaded, text, write_file, FakeModel};
use kiln_testkit::TestDb;
use kiln_tests::generation::{
    anthropic_section, calc_project, names_the_failing_test, openai_section, scripted, scripted_with,
    scripted_without_tools, GenRig, FIXED,
};
use kiln_tests::validation::Rig;
use serde_json::Value;

fn request(dir: &std::path::Path, budget: Option<f64>) -> GenerateRequest {
    GenerateRequest {
        prompt: "Write calc.py with add(a, b) so that the tests pass.".into(),
        start: Start::Source(Source::Dir(dir.to_path_buf())),
        language: None,
        max_iterations: Some(5),
        budget_usd: budget,
        preference: Default::default(),
    }
}

/// Runs `req` to its end on a validation rig named `name` and a generation worker configured
/// by `section`, and returns the finished pipeline.
async fn run_to_end(
    db: &TestDb,
    name: &str,
    section: &str,
    req: GenerateRequest,
) -> kiln_pipeline::PipelineView {
    let rig = Rig::start(&db.pool, name).await;
    let gen = GenRig::start(&db.pool, section).await;
    let s = submit_generation(&db.pool, req, &SubmitOptions::default())
        .await
        .unwrap();
    let view = kiln_pipeline::wait(&db.pool, None, s.pipeline_id, Duration::from_secs(600))
        .await
        .unwrap();
    gen.stop().await;
    rig.stop().await;
    view
}

async fn event_types(pool: &sqlx::PgPool, pid: i64) -> Vec<String> {
    let filter = kiln_queue::events::EventFilter {
        limit: 1000,
        pipeline_id: Some(pid),
        ..Default::default()
    };
    kiln_queue::events::list(pool, &filter)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind_of_event)
        .filter(|t| !t.starts_with("job."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scripted_model_passes_at_iteration_two_with_exact_tokens_and_cost() {
    let db = TestDb::new().await;
    let model = FakeModel::start(scripted).await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let view = run_to_end(
        &db,
        "gen-pass",
        &openai_section(&model.url(), ""),
        request(dir.path(), None),
    )
    .await;

    assert_eq!(view.kind, "generation");
    assert_eq!(view.verdict.as_deref(), Some("passed"), "{:#?}", view.result);
    assert_eq!(view.stop_reason, None);
    let result = view.result.clone().unwrap();
    assert_eq!(result["iterations"], 2);
    // Four answered calls: write + "Done." per iteration.
    assert_eq!(
        result["tokens"],
        serde_json::json!({"input": 1000 + 50 + 1200 + 50, "output": 60 + 5 + 80 + 5, "cache_read": 0, "cache_write": 0})
    );
    // 2300 × $2.50 + 150 × $10 per million = $0.00725, exactly.
    assert_eq!(result["cost_usd"].as_f64(), Some(0.00725));
    let pico = ledger_pico(&db, view.pipeline_id).await;
    assert_eq!(pico, 7_250_000_000);
    assert_eq!(model.hits(), 4);
    let third = &model.seen()[2];
    assert!(
        third.first_text().contains("Failing tests:\n- "),
        "feedback names the failing test"
    );
    assert!(third.first_text().contains("test_add"));
    assert!(
        third.first_text().contains("-    return a - b") || third.first_text().contains("+    return a - b")
    );

    assert_eq!(view.iterations.len(), 2);
    assert_eq!(view.iterations[0].verdict.as_deref(), Some("failed"));
    assert_eq!(view.iterations[1].verdict.as_deref(), Some("passed"));
    assert_eq!(
        result["workspace"],
        Value::from(view.iterations[1].workspace.clone())
    );
    assert_eq!(result["test"]["failed"], 0);
    assert_eq!(view.quality_score, view.iterations[1].quality_score);
    let diff = result["diff"].as_str().unwrap();
    assert!(
        diff.contains("+++ b/calc.py") && diff.contains("+    return a + b"),
        "{diff}"
    );
    let out = kiln_artifacts::load(&db.pool, &view.iterations[1].workspace, 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        out.entries["calc.py"],
        kiln_artifacts::TreeEntry::File {
            data: FIXED.as_bytes().to_vec(),
            executable: false
        }
    );

    // Each iteration is on its generation job's attempt, with the verdict of its validation.
    let details: Value = sqlx::query_scalar(
        "SELECT a.details FROM kiln_attempts a WHERE a.job_id = $1 AND a.outcome = 'succeeded'",
    )
    .bind(view.iterations[0].job_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(details["provider"], "o");
    assert_eq!(details["model"], "gpt-test");
    assert_eq!(details["tokens"]["input"], 1050);
    assert_eq!(details["cost_usd"].as_f64(), Some(0.003275));
    assert_eq!(details["verdict"], "failed");
    assert!(details["diff"].as_str().unwrap().contains("+    return a - b"));
    assert!(details["messages"].as_str().unwrap().starts_with("sha256:"));

    assert_eq!(
        event_types(&db.pool, view.pipeline_id).await,
        [
            "generation.iteration",
            "generation.iteration",
            "pipeline.finished"
        ]
    );

    // Every artifact the pipeline refers to survives pruning while it is kept.
    kiln_artifacts::prune_unreferenced(&db.pool, Duration::ZERO)
        .await
        .unwrap();
    for it in &view.iterations {
        for d in [&it.workspace, &it.messages] {
            kiln_artifacts::info(&db.pool, d)
                .await
                .expect("kept while the pipeline is");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_stops_the_loop_before_the_call_that_would_exceed_it() {
    let db = TestDb::new().await;
    // The first call costs $0.015 (4000 in, 500 out); the next one's worst case (its input
    // plus 1000 output tokens at $10/M ≥ $0.01) would take the $0.02 budget over.
    let model = FakeModel::start(|seen| {
        if seen.answers_tools() {
            text(seen, "Done.", (10, 1, 0, 0))
        } else {
            write_file(seen, "calc.py", kiln_tests::generation::BUGGY, (4000, 500, 0, 0))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let rig = Rig::start(&db.pool, "gen-budget").await;
    let gen = GenRig::start(&db.pool, &openai_section(&model.url(), "max_tokens = 1000")).await;
    let s = submit_generation(
        &db.pool,
        request(dir.path(), Some(0.02)),
        &SubmitOptions::default(),
    )
    .await
    .unwrap();
    let view = kiln_pipeline::wait(&db.pool, None, s.pipeline_id, Duration::from_secs(600))
        .await
        .unwrap();
    gen.stop().await;
    rig.stop().await;

    assert_eq!(model.hits(), 1, "the refused call was not made");
    assert_eq!(view.verdict.as_deref(), Some("partial"));
    assert_eq!(view.stop_reason.as_deref(), Some("budget"));
    let result = view.result.unwrap();
    assert_eq!(result["stop_reason"], "budget");
    assert_eq!(result["cost_usd"].as_f64(), Some(0.015));
    assert_eq!(result["iterations"], 1);
    assert_eq!(
        result["workspace"],
        Value::from(view.iterations[0].workspace.clone())
    );
    assert!(view.iterations[0].budget_stop);
    assert_eq!(
        event_types(&db.pool, s.pipeline_id).await,
        ["budget.exceeded", "generation.iteration", "pipeline.finished"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_below_the_first_call_fails_the_pipeline_with_no_call_made() {
    let db = TestDb::new().await;
    let model = FakeModel::start(scripted).await;
    let gen = GenRig::start(&db.pool, &openai_section(&model.url(), "")).await;
    let req = GenerateRequest {
        start: Start::Empty,
        ..request(std::path::Path::new("/nonexistent"), Some(0.0001))
    };
    let s = submit_generation(&db.pool, req, &SubmitOptions::default())
        .await
        .unwrap();
    let view = kiln_pipeline::wait(&db.pool, None, s.pipeline_id, Duration::from_secs(60))
        .await
        .unwrap();
    gen.stop().await;
    assert_eq!(model.hits(), 0);
    assert_eq!(view.verdict.as_deref(), Some("failed"));
    assert_eq!(view.workspace, None);
    let result = view.result.unwrap();
    assert_eq!(result["workspace"], Value::Null);
    assert_eq!(result["cost_usd"].as_f64(), Some(0.0));
    assert!(result["errors"]["generation"]
        .as_str()
        .unwrap()
        .contains("budget"));
    assert_eq!(
        event_types(&db.pool, s.pipeline_id).await,
        ["budget.exceeded", "pipeline.finished"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loop_fails_over_to_the_second_provider_when_the_first_is_down() {
    let db = TestDb::new().await;
    let down = FakeModel::start(|_| overloaded()).await;
    let model = FakeModel::start(scripted).await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let section = format!(
        r#"
[[llm.providers]]
name = "a"
api = "anthropic"
base_url = "{}"
timeout_secs = 10
[[llm.providers.models]]
name = "claude-test"
input_per_mtok = 3.0
output_per_mtok = 15.0
{}"#,
        down.url(),
        openai_section(&model.url(), "").replace(
            "balanced = [\"o/gpt-test\"]",
            "balanced = [\"a/claude-test\", \"o/gpt-test\"]"
        )
    );
    let view = run_to_end(&db, "gen-failover", &section, request(dir.path(), None)).await;

    assert_eq!(view.verdict.as_deref(), Some("passed"));
    assert_eq!(model.hits(), 4);
    // 3 tries per call until 5 consecutive failures open a's breaker; then it is skipped but
    // for one half-open trial per cool-down (1 s here), which fails and reopens it.
    assert!(down.hits() >= 5, "{}", down.hits());
    let first = &view.iterations[0].record;
    assert_eq!(first["provider"], "o");
    assert!(first["retries"].as_u64().unwrap() >= 3, "{first}");
    let state: String = sqlx::query_scalar(
        "SELECT state FROM kiln_llm_breakers WHERE provider = 'a' AND model = 'claude-test'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, "open");
    // Only the answering provider's calls are in the ledger.
    let providers: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT provider FROM kiln_llm_calls WHERE pipeline_id = $1")
            .bind(view.pipeline_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(providers, ["o"]);
}

/// `kiln ARGS` with the test's database and no API.
fn kiln(db: &TestDb) -> std::process::Command {
    let mut cmd = std::process::Command::new(kiln_tests::kiln_binary());
    cmd.env("DATABASE_URL", &db.url)
        .env_remove("KILN_API_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "info,sqlx=warn");
    cmd
}

/// The scripted model whose first request is answered through `hold` (the others at once).
async fn first_call_held(
    hold: impl Fn(kiln_testkit::llm::Reply) -> kiln_testkit::llm::Reply + Send + Sync + 'static,
) -> FakeModel {
    let first = std::sync::atomic::AtomicBool::new(true);
    FakeModel::start(move |seen| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            hold(scripted(seen))
        } else {
            scripted(seen)
        }
    })
    .await
}

/// A fleet file for a generation-only worker process (one slot, a 3 s lease) calling the model
/// at `model_url`; the directory holds it.
fn one_slot_fleet(model_url: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let fleet = tempfile::tempdir().unwrap();
    let config = fleet.path().join("workers.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nkinds = [\"generation\"]\nlease = 3\nheartbeat_every = 1\npoll_every = 0.2\nmaintenance_every = 0.5\n\
             [[worker.queues]]\nname = \"generation\"\nconcurrency = 1\nbatch = 1\n{}",
            openai_section(model_url, "")
        ),
    )
    .unwrap();
    (fleet, config)
}

/// `kiln worker --config CONFIG` on the database at `url`, its output discarded.
fn spawn_worker(db: &TestDb, config: &std::path::Path, url: &str) -> std::process::Child {
    kiln(db)
        .env("DATABASE_URL", url)
        .args(["worker", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn kiln worker")
}

/// Waits (up to `deadline`) until the model has received a request.
async fn wait_for_a_call(model: &FakeModel, deadline: std::time::Instant) {
    while model.hits() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never called the model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What both kill tests show: the pipeline passed at iteration 2, four calls were paid for,
/// and the first generation job has one `lost` and one `succeeded` attempt.
async fn assert_recovered(db: &TestDb, view: &kiln_pipeline::PipelineView, pid: i64, job: i64) {
    assert_eq!(view.verdict.as_deref(), Some("passed"), "{:#?}", view.result);
    assert_eq!(view.iterations.len(), 2);
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_llm_calls WHERE pipeline_id = $1")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 4);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome::text FROM kiln_attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["lost", "succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_iteration_loses_nothing_and_repeats_only_that_call() {
    let db = TestDb::new().await;
    // The very first call hangs (the worker is killed while waiting for it); then the script.
    let model =
        first_call_held(|r| kiln_testkit::llm::Reply::Delay(Duration::from_secs(120), Box::new(r))).await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let (_fleet, config) = one_slot_fleet(&model.url());
    let rig = Rig::start(&db.pool, "gen-kill").await;
    let s = submit_generation(&db.pool, request(dir.path(), None), &SubmitOptions::default())
        .await
        .unwrap();
    let mut first = spawn_worker(&db, &config, &db.url);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    wait_for_a_call(&model, deadline).await;
    std::process::Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait().unwrap();
    let mut second = spawn_worker(&db, &config, &db.url);
    let view = kiln_pipeline::wait(&db.pool, None, s.pipeline_id, Duration::from_secs(600))
        .await
        .unwrap();
    kiln_tests::terminate(&mut second);
    rig.stop().await;

    // The killed call was made again, once; nothing else was repeated. The unanswered call
    // cost nothing.
    assert_recovered(&db, &view, s.pipeline_id, s.job).await;
    assert_eq!(model.hits(), 5);
    let generation_jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE pipeline_id = $1 AND kind = 'generation'")
            .bind(s.pipeline_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(generation_jobs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kiln_submit_generate_wait_json_prints_the_issue_object_and_a_line_per_iteration() {
    let db = TestDb::new().await;
    let model = FakeModel::start(scripted).await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let fleet = tempfile::tempdir().unwrap();
    let config = fleet.path().join("workers.toml");
    std::fs::write(&config, openai_section(&model.url(), "")).unwrap();
    let out = tokio::process::Command::from(kiln(&db))
        .args(["submit", "generate"])
        .arg(dir.path())
        .args(["--prompt", "Write calc.py with add(a, b) so that the tests pass."])
        .args(["--config", config.to_str().unwrap(), "--wait", "--json"])
        .output()
        .await
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("iteration 1: failed"), "{stderr}");
    assert!(stderr.contains("iteration 2: passed"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cost_usd",
            "diff",
            "iterations",
            "lint",
            "pipeline_id",
            "quality_score",
            "security",
            "stop_reason",
            "test",
            "tokens",
            "verdict"
        ]
    );
    assert_eq!(v["verdict"], "passed");
    assert_eq!(v["stop_reason"], Value::Null);
    assert_eq!(v["iterations"], 2);
    assert_eq!(
        v["tokens"],
        serde_json::json!({"input": 2300, "output": 150, "cache_read": 0, "cache_write": 0})
    );
    assert_eq!(v["cost_usd"].as_f64(), Some(0.00725));
    assert_eq!(v["test"]["failed"], 0);
    assert!(v["lint"]["findings"].is_array() && v["security"]["findings"].is_array());
    assert!(v["diff"].as_str().unwrap().contains("+    return a + b"));

    // Flags are named when refused.
    for (args, flag) in [
        (vec!["--prompt", " "], "--prompt"),
        (
            vec!["--prompt", "x", "--max-iterations", "11"],
            "--max-iterations",
        ),
        (vec!["--prompt", "x", "--budget-usd", "0"], "--budget-usd"),
        (vec!["--prompt", "x", "--preference", "cheap"], "--preference"),
        (vec!["--prompt", "x", "--language", "cobol"], "--language"),
    ] {
        let out = kiln(&db)
            .args(["submit", "generate"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loop_through_the_anthropic_protocol_passes_at_iteration_two_with_exact_tokens_and_cost() {
    let db = TestDb::new().await;
    std::env::set_var("KILN_TEST_ANTHROPIC_KEY", "sk-ant-test-LOOP-SECRET");
    // Cache tokens too: the first write creates a 500-token cache entry, the fix reads 1000.
    let model = FakeModel::start(scripted_with(
        (1000, 60, 0, 500),
        (200, 80, 1000, 0),
        (50, 5, 0, 0),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let view = run_to_end(
        &db,
        "gen-anthropic",
        &anthropic_section(&model.url()),
        request(dir.path(), None),
    )
    .await;

    assert_eq!(view.verdict.as_deref(), Some("passed"), "{:#?}", view.result);
    let result = view.result.clone().unwrap();
    assert_eq!(result["iterations"], 2);
    assert_eq!(
        result["tokens"],
        serde_json::json!({"input": 1000 + 50 + 200 + 50, "output": 60 + 5 + 80 + 5,
                           "cache_read": 1000, "cache_write": 500})
    );
    // 1300 × $3 + 150 × $15 + 1000 × $0.30 + 500 × $3.75 per million = $0.008325, exactly.
    assert_eq!(result["cost_usd"].as_f64(), Some(0.008325));
    let pico = ledger_pico(&db, view.pipeline_id).await;
    assert_eq!(pico, 8_325_000_000);
    assert_eq!(model.hits(), 4);
    for seen in model.seen() {
        assert_eq!(seen.path, "/v1/messages");
        assert_eq!(seen.headers["x-api-key"], "sk-ant-test-LOOP-SECRET");
        assert!(seen.headers.contains_key("anthropic-version"));
        assert_eq!(
            seen.body["tools"].as_array().map(Vec::len),
            Some(2),
            "write_file and delete_file"
        );
    }
    // The tool result answers the tool_use in Anthropic's shape.
    let second = &model.seen()[1];
    let last = second.body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_01A09q90qw90lq917835lq9");
    assert!(model.seen()[2].first_text().contains("test_add"));
    let first = &view.iterations[0].record;
    assert_eq!(
        (first["provider"].as_str(), first["model"].as_str()),
        (Some("a"), Some("claude-test"))
    );
    // The key is nowhere in the database.
    let leaked: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM kiln_llm_calls c WHERE c::text LIKE '%LOOP-SECRET%')
             OR EXISTS (SELECT 1 FROM kiln_events e WHERE e::text LIKE '%LOOP-SECRET%')
             OR EXISTS (SELECT 1 FROM kiln_generation_iterations i WHERE i::text LIKE '%LOOP-SECRET%')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!leaked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_without_tools_edits_through_file_blocks_and_the_loop_passes() {
    let db = TestDb::new().await;
    let model = FakeModel::start(scripted_without_tools).await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let section = openai_section(&model.url(), "").replace(
        "cache_read_per_mtok = 1.25",
        "cache_read_per_mtok = 1.25\ntools = false",
    );
    let view = run_to_end(&db, "gen-notools", &section, request(dir.path(), None)).await;

    assert_eq!(view.verdict.as_deref(), Some("passed"), "{:#?}", view.result);
    // One answer per iteration: no tools offered, so no tool turns.
    assert_eq!(model.hits(), 2);
    for seen in model.seen() {
        assert!(seen.body.get("tools").is_none(), "{}", seen.body);
        assert!(seen.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("File: PATH"));
    }
    assert!(names_the_failing_test(&model.seen()[1]));
    let result = view.result.clone().unwrap();
    assert_eq!(result["iterations"], 2);
    assert_eq!(
        result["tokens"],
        serde_json::json!({"input": 1800, "output": 80, "cache_read": 0, "cache_write": 0})
    );
    // 1800 × $2.50 + 80 × $10 per million = $0.0053.
    assert_eq!(result["cost_usd"].as_f64(), Some(0.0053));
    assert_eq!(view.iterations[0].verdict.as_deref(), Some("failed"));
    assert_eq!(view.iterations[0].record["edits"], 1);
    let out = kiln_artifacts::load(&db.pool, &view.iterations[1].workspace, 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        out.entries["calc.py"],
        kiln_artifacts::TreeEntry::File {
            data: FIXED.as_bytes().to_vec(),
            executable: false
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kiln_submit_generate_through_the_api_waits_and_prints_the_issue_object() {
    let db = TestDb::new().await;
    let model = FakeModel::start(scripted).await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let api = kiln_tests::api::ApiServer::start(&db.pool).await;
    let rig = Rig::start(&db.pool, "gen-api").await;
    let gen = GenRig::start(&db.pool, &openai_section(&model.url(), "")).await;
    let out = tokio::process::Command::new(kiln_tests::kiln_binary())
        .args(["--api", &api.base, "submit", "generate"])
        .arg(dir.path())
        .args(["--prompt", "Write calc.py with add(a, b) so that the tests pass."])
        .args(["--max-iterations", "3", "--wait", "--json"])
        .env("KILN_TOKEN", &api.admin)
        .env_remove("DATABASE_URL")
        .env_remove("KILN_API_URL")
        .output()
        .await
        .expect("run kiln");
    gen.stop().await;
    rig.stop().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("iteration 1: failed"), "{stderr}");
    assert!(stderr.contains("iteration 2: passed"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let id = v["pipeline_id"].as_i64().unwrap();
    // The same object the embedded path prints, from the same pipeline.
    let lib = kiln_pipeline::get(&db.pool, id).await.unwrap();
    assert_eq!(v, lib.summary());
    assert_eq!(v["verdict"], "passed");
    assert_eq!(v["iterations"], 2);
    assert_eq!(
        v["tokens"],
        serde_json::json!({"input": 2300, "output": 150, "cache_read": 0, "cache_write": 0})
    );
    assert_eq!(v["cost_usd"].as_f64(), Some(0.00725));
    assert!(v["diff"].as_str().unwrap().contains("+    return a + b"));
    // The request went over the API with the flags: the pipeline's request says so, and the
    // ledger charges the API token that submitted it.
    let request: Value = sqlx::query_scalar("SELECT request FROM kiln_pipelines WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(request["max_iterations"], 3);
    let tokens: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT DISTINCT api_token_id FROM kiln_llm_calls WHERE pipeline_id = $1")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].is_some(), "the ledger names the submitting token");

    // A refused flag comes back from the API naming it.
    let out = tokio::process::Command::new(kiln_tests::kiln_binary())
        .args(["--api", &api.base, "submit", "generate", "--prompt", "x"])
        .args(["--max-iterations", "11"])
        .env("KILN_TOKEN", &api.admin)
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_iterations") || err.contains("--max-iterations"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_after_the_iteration_commits_but_before_its_job_completes_repeats_nothing() {
    let db = TestDb::new().await;
    // The worker's connections give up a statement whose client is gone (Linux), as a killed
    // worker's blocked completion must.
    sqlx::query(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET client_connection_check_interval = %L', \
         current_database(), '100ms'); END $$",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    // The first call is held until the test has taken the lock.
    let model = first_call_held(move |r| kiln_testkit::llm::Reply::Gate(g.clone(), Box::new(r))).await;
    let dir = tempfile::tempdir().unwrap();
    calc_project(dir.path());
    let (_fleet, config) = one_slot_fleet(&model.url());
    let rig = Rig::start(&db.pool, "gen-kill-commit").await;
    let s = submit_generation(&db.pool, request(dir.path(), None), &SubmitOptions::default())
        .await
        .unwrap();
    // The first worker's sessions are named, so the test can tell when they are all gone.
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let victim_url = format!("{}{sep}application_name=kiln-killed-worker", db.url);
    let mut worker = spawn_worker(&db, &config, &victim_url);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    wait_for_a_call(&model, deadline).await;
    // The job is running, its first call held. Lock the event counter: the iteration's
    // transaction does not need it (it emits no event), the job's completion does (its
    // `job.succeeded` event), and heartbeats do not.
    let job_id = s.job;
    let mut lock = db.pool.begin().await.unwrap();
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM kiln_event_counter FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    gate.add_permits(1);
    // The iteration's transaction commits; the job cannot complete.
    let recorded = loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kiln_generation_iterations WHERE pipeline_id = $1 AND iteration = 1",
        )
        .bind(s.pipeline_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if n == 1 {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the iteration was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(recorded, 1);
    let state: String = sqlx::query_scalar("SELECT state::text FROM kiln_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "running");
    // The handler has returned: its completion (the worker's only statement that needs the
    // counter) waits on the lock.
    loop {
        let completing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kiln-killed-worker'
               AND $1 = ANY (pg_blocking_pids(pid))",
        )
        .bind(holder)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if completing == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the completion never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill")
        .args(["-KILL", &worker.id().to_string()])
        .status()
        .unwrap();
    worker.wait().unwrap();
    // Wait until the dead worker has no session left (its statement waiting on the lock is
    // given up once its client is found gone), then let go. Other sessions (this test's
    // validation worker) may wait on the lock too.
    loop {
        let sessions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kiln-killed-worker'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if sessions == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead worker still has {sessions} sessions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.rollback().await.unwrap();
    let mut second = spawn_worker(&db, &config, &db.url);
    let view = kiln_pipeline::wait(&db.pool, None, s.pipeline_id, Duration::from_secs(600))
        .await
        .unwrap();
    kiln_tests::terminate(&mut second);
    rig.stop().await;

    // No call was made again: the next attempt found its iteration on record.
    assert_recovered(&db, &view, s.pipeline_id, job_id).await;
    assert_eq!(model.hits(), 4);
    // The iteration is recorded once and validated once.
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln_generation_iterations WHERE pipeline_id = $1")
            .bind(s.pipeline_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, 2);
    let validation_jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM kiln_jobs WHERE pipeline_id = $1 AND kind <> 'generation' AND 'iteration:1' = ANY (tags)",
    )
    .bind(s.pipeline_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(validation_jobs, 3);
    assert_eq!(
        event_types(&db.pool, s.pipeline_id).await,
        [
            "generation.iteration",
            "generation.iteration",
            "pipeline.finished"
        ]
    );
}

/// The pipeline's cost as the ledger has it, in pico-dollars.
async fn ledger_pico(db: &TestDb, pipeline_id: i64) -> i64 {
    sqlx::query_scalar("SELECT sum(cost_pico)::bigint FROM kiln_llm_calls WHERE pipeline_id = $1")
        .bind(pipeline_id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}
