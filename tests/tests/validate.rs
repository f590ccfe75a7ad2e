//! Validation pipelines end to end: real Postgres, the real images on the real Docker engine,
//! the fixtures under `tests/fixtures/`, counts and findings asserted exactly.

use std::time::{Duration, Instant};

use kiln_pipeline::{PipelineError, Source, SubmitOptions};
use kiln_testkit::TestDb;
use kiln_tests::validation::{counts, findings, fixture, validate, Rig};
use serde_json::Value;

fn f(
    tool: &str,
    rule: &str,
    file: &str,
    line: u64,
    sev: &str,
) -> (String, String, String, Option<u64>, String) {
    (tool.into(), rule.into(), file.into(), Some(line), sev.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_fixture_gives_exactly_what_its_tools_report() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-python").await;
    let (s, wall, view) = validate(&db, Source::Dir(fixture("python")), SubmitOptions::default()).await;
    eprintln!("python pipeline: {wall:?}");
    assert_eq!(counts(&s["test"]), (3, 2, 1, 0));
    assert_eq!(s["test"]["coverage_percent"], 87.1);
    let names: Vec<&str> = s["test"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "test_calc.py::test_add",
            "test_calc.py::test_div",
            "test_calc.py::test_is_none",
            "test_calc.py::test_add_wrong",
            "test_calc.py::test_div_by_zero",
            "test_calc.py::test_later"
        ]
    );
    assert_eq!(
        findings(&s["lint"]),
        [
            f("ruff", "F401", "calc.py", 2, "medium"),
            f("ruff", "F401", "calc.py", 4, "medium"),
            f("ruff", "F541", "calc.py", 30, "medium"),
        ]
    );
    let mut sec = vec![
        f("bandit", "B404", "calc.py", 3, "low"),
        f("bandit", "B105", "calc.py", 6, "low"),
        f("detect-secrets", "AWS Access Key", "calc.py", 6, "high"),
        f("bandit", "B307", "calc.py", 22, "medium"),
        f("semgrep", "kiln.python.eval", "calc.py", 22, "high"),
        f("bandit", "B602", "calc.py", 26, "high"),
        f("semgrep", "kiln.python.shell-injection", "calc.py", 26, "high"),
    ];
    for line in [7, 11, 15, 19, 23, 28] {
        sec.push(f("bandit", "B101", "test_calc.py", line, "low"));
    }
    assert_eq!(findings(&s["security"]), sec);
    // The test file's findings are marked as test code, the module's are not.
    for x in s["security"]["findings"].as_array().unwrap() {
        assert_eq!(x["in_test"], x["file"] == "test_calc.py", "{x}");
    }
    // 10 − 1 (3 lint findings) − 3 (4 high) − 0.5 (1 medium) = 5.5 → 6.
    assert_eq!(s["verdict"], "failed");
    assert_eq!(s["quality_score"], 6);
    assert_eq!(view.jobs.len(), 3);
    assert!(
        view.jobs.iter().all(|j| j.state == "succeeded"),
        "{:?}",
        view.jobs
    );

    // Each attempt records what the sandbox reported, and its logs were stored while it ran.
    for j in &view.jobs {
        let attempts = kiln_queue::admin::attempts(&db.pool, j.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        let d = &attempts[0].sandbox_details().expect("a sandbox report");
        assert!(d.container_id.is_some() && d.image_digest.as_deref().unwrap().starts_with("sha256:"));
        assert!(d.exit_code.is_some());
        let timings = d.timings.as_ref().expect("timings");
        assert!(timings["container_start_ms"].as_f64().unwrap() > 0.0, "{timings}");
        assert!(timings["run_ms"].as_f64().unwrap() > 0.0, "{timings}");
        assert_eq!(
            d.diff_files,
            Some(0),
            "validation changes nothing in the workspace: {:?}",
            d.diff
        );
        let logs = kiln_queue::logs::read(&db.pool, j.id, None, 10_000)
            .await
            .unwrap();
        assert!(!logs.is_empty(), "job {} ({}) stored no log", j.id, j.kind);
        assert!(logs
            .iter()
            .enumerate()
            .all(|(i, l)| l.seq == i as i32 && l.attempt == 1));
    }
    let test_job = view.jobs.iter().find(|j| j.kind == "test").unwrap();
    let logs = kiln_queue::logs::read(&db.pool, test_job.id, None, 10_000)
        .await
        .unwrap();
    let text: String = logs.iter().map(|l| l.data.as_str()).collect();
    assert!(
        text.contains("test_add_wrong"),
        "pytest's own output is in the logs: {text}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_fixture_gives_exactly_what_its_tools_report() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-node").await;
    let (s, wall, _) = validate(&db, Source::Dir(fixture("node")), SubmitOptions::default()).await;
    eprintln!("node pipeline: {wall:?}");
    assert_eq!(counts(&s["test"]), (2, 2, 1, 0));
    assert_eq!(s["test"]["coverage_percent"], 81.48);
    let cases: Vec<(&str, &str)> = s["test"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        cases,
        [
            ("test/calc.test.js::add", "passed"),
            ("test/calc.test.js::div", "passed"),
            ("test/calc.test.js::add wrong", "failed"),
            ("test/calc.test.js::later", "skipped"),
            ("test/calc.test.js::div by zero", "failed"),
        ]
    );
    assert_eq!(
        findings(&s["lint"]),
        [
            f("eslint", "no-unused-vars", "src/calc.js", 4, "medium"),
            f("eslint", "no-empty", "src/calc.js", 13, "medium"),
            f("eslint", "no-undef", "src/calc.js", 27, "medium"),
        ]
    );
    assert_eq!(
        findings(&s["security"]),
        [
            f("detect-secrets", "AWS Access Key", "src/calc.js", 6, "high"),
            f("semgrep", "kiln.javascript.eval", "src/calc.js", 19, "high"),
            f(
                "semgrep",
                "kiln.javascript.shell-injection",
                "src/calc.js",
                23,
                "high"
            ),
        ]
    );
    // 10 − 1 (lint) − 3 (3 high) = 6.
    assert_eq!(
        (s["verdict"].as_str(), s["quality_score"].as_u64()),
        (Some("failed"), Some(6))
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_go_fixture_gives_exactly_what_its_tools_report() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-go").await;
    let (s, wall, _) = validate(&db, Source::Dir(fixture("go")), SubmitOptions::default()).await;
    eprintln!("go pipeline: {wall:?}");
    assert_eq!(counts(&s["test"]), (2, 2, 1, 0));
    assert_eq!(s["test"]["coverage_percent"], 44.44);
    let failed: Vec<&str> = s["test"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "example.com/calc::TestAddWrong",
            "example.com/calc::TestDivByZero"
        ]
    );
    assert_eq!(
        findings(&s["lint"]),
        [
            f("go vet", "printf", "calc.go", 26, "medium"),
            f("go vet", "printf", "calc.go", 41, "medium")
        ]
    );
    assert_eq!(
        findings(&s["security"]),
        [
            f("detect-secrets", "AWS Access Key", "calc.go", 9, "high"),
            f("semgrep", "kiln.go.shell-injection", "calc.go", 31, "high"),
            f("semgrep", "kiln.go.eval", "calc.go", 36, "high"),
        ]
    );
    // 10 − 2 (coverage 44 %) − 1 (lint) − 3 (3 high) = 4.
    assert_eq!(
        (s["verdict"].as_str(), s["quality_score"].as_u64()),
        (Some("failed"), Some(4))
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_fixture_gives_exactly_what_its_tools_report() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-rust").await;
    let (s, wall, _) = validate(&db, Source::Dir(fixture("rust")), SubmitOptions::default()).await;
    eprintln!("rust pipeline: {wall:?}");
    assert_eq!(counts(&s["test"]), (2, 2, 1, 0));
    // 24 of 41 lines, as `llvm-cov report` by hand (the_pipeline_agrees_with_the_tools_run_by_hand).
    assert_eq!(s["test"]["coverage_percent"], 58.54);
    let cases: Vec<(&str, &str)> = s["test"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert!(cases.contains(&("tests::later", "skipped")) && cases.contains(&("tests::adds_wrong", "failed")));
    assert_eq!(
        findings(&s["lint"]),
        [f("clippy", "clippy::needless_return", "src/lib.rs", 7, "low")]
    );
    assert_eq!(
        findings(&s["security"]),
        [
            f("detect-secrets", "AWS Access Key", "src/lib.rs", 4, "high"),
            f("semgrep", "kiln.rust.shell-injection", "src/lib.rs", 22, "high"),
            f("semgrep", "kiln.rust.eval", "src/lib.rs", 26, "high"),
        ]
    );
    // 10 − 1 (coverage 59 %) − 1 (lint) − 3 (3 high) = 5.
    assert_eq!(
        (s["verdict"].as_str(), s["quality_score"].as_u64()),
        (Some("failed"), Some(5))
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_coverage_keeps_the_projects_own_rustflags() {
    // A project whose build depends on its `.cargo/config.toml` flags: measuring coverage
    // must add to them, not replace them.
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("rust");
    for rel in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
        std::fs::create_dir_all(dir.path().join(rel).parent().unwrap()).unwrap();
        std::fs::copy(src.join(rel), dir.path().join(rel)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join(".cargo")).unwrap();
    std::fs::write(
        dir.path().join(".cargo/config.toml"),
        "[build]\nrustflags = [\"--cfg\", \"kiln_probe\"]\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/probe.rs"),
        "#[test]\nfn built_with_the_projects_flags() {\n    assert!(cfg!(kiln_probe));\n}\n",
    )
    .unwrap();
    let rig = Rig::start(&db.pool, "val-rustflags").await;
    let (s, _, _) = validate(&db, Source::Dir(dir.path().into()), SubmitOptions::default()).await;
    rig.stop().await;
    // The fixture's 2 passed / 2 failed / 1 skipped, plus the probe passing.
    assert_eq!(counts(&s["test"]), (3, 2, 1, 0), "{}", s["test"]);
    assert!(s["test"]["coverage_percent"].as_f64().is_some(), "{}", s["test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rust_project_whose_dependencies_cannot_resolve_is_an_error_not_a_pass() {
    // The sandbox has no network: a crate that is not vendored cannot be fetched. cargo exits
    // 101 — its code for failing tests too — before any test runs; that must not read as zero
    // tests and a pass.
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"needs-serde\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nserde = \"1\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/lib.rs"),
        "pub fn one() -> u8 {\n    1\n}\n\n#[test]\nfn one_is_one() {\n    assert_eq!(one(), 1);\n}\n",
    )
    .unwrap();
    let rig = Rig::start(&db.pool, "val-nodeps").await;
    let (s, _, _) = validate(&db, Source::Dir(dir.path().into()), SubmitOptions::default()).await;
    rig.stop().await;
    assert_eq!(counts(&s["test"]), (0, 0, 0, 1), "{}", s["test"]);
    let message = s["test"]["cases"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("cargo-test exited 101") && message.contains("serde"),
        "{message}"
    );
    // clippy cannot build it either: a linter that cannot run fails its job, so the verdict
    // is `error` (no verdict on the code), and it says why.
    assert_eq!(s["verdict"], "error", "{s}");
    let lint = s["errors"]["lint"].as_str().unwrap_or_default();
    assert!(lint.contains("lint job") && lint.contains("serde"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_with_no_recognised_language_is_refused_clearly() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "# nothing to run\n").unwrap();
    std::fs::write(dir.path().join("data.csv"), "a,b\n1,2\n").unwrap();
    let err = kiln_pipeline::submit(
        &db.pool,
        Source::Dir(dir.path().into()),
        &SubmitOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::Validate(kiln_validate::ValidateError::NoLanguage)
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("no recognised language") && msg.contains("go.mod"),
        "{msg}"
    );
    let pipelines: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_pipelines")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (pipelines, jobs),
        (0, 0),
        "nothing is written for a refused workspace"
    );

    // A job enqueued directly on such a workspace fails for good with the same message.
    let packed = kiln_artifacts::pack_dir(dir.path(), kiln_artifacts::DEFAULT_MAX_BYTES).unwrap();
    kiln_artifacts::store(&db.pool, &packed).await.unwrap();
    let job = kiln_queue::NewJob::new(
        "lint",
        kiln_queue::JobKind::Lint,
        serde_json::json!({"workspace": packed.digest}),
    );
    let id = kiln_queue::enqueue(&db.pool, &job).await.unwrap().id;
    let rig = Rig::start(&db.pool, "val-nolang").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let rec = loop {
        let rec = kiln_queue::admin::get_job(&db.pool, id).await.unwrap();
        if rec.state.is_final() || Instant::now() > deadline {
            break rec;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rec.state, kiln_queue::JobState::Failed, "not retried: {rec:?}");
    assert_eq!(rec.attempt, 1);
    assert!(rec.last_error.unwrap().contains("no recognised language"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hanging_tests_are_cut_at_the_timeout_and_say_so() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("test_hang.py"),
        "import time\n\n\ndef test_quick():\n    assert True\n\n\ndef test_hangs():\n    time.sleep(3600)\n",
    )
    .unwrap();
    let rig = Rig::start(&db.pool, "val-hang").await;
    let opts = SubmitOptions {
        test_timeout: Some(Duration::from_secs(20)),
        ..SubmitOptions::default()
    };
    let (s, wall, view) = validate(&db, Source::Dir(dir.path().into()), opts).await;
    assert!(
        wall < Duration::from_secs(60),
        "cut at its timeout, not later: {wall:?}"
    );
    assert_eq!(s["test"]["errors"], 1);
    let case = &s["test"]["cases"].as_array().unwrap()[0];
    assert_eq!(case["status"], "error");
    let msg = case["message"].as_str().unwrap();
    assert!(
        msg.contains("timed out") && msg.contains("killed after 18 s"),
        "{msg}"
    );
    assert_eq!(s["verdict"], "failed");
    let test_job = view.jobs.iter().find(|j| j.kind == "test").unwrap();
    assert_eq!(
        test_job.state, "succeeded",
        "a hanging test is data, not a job failure"
    );
    let attempts = kiln_queue::admin::attempts(&db.pool, test_job.id).await.unwrap();
    let runs = &attempts[0].details["timings"]["runs"];
    assert_eq!(runs[0]["outcome"], "timed_out");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_workspace_runs_each_language_found() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, sub) in [("python", "py"), ("go", "svc")] {
        let src = fixture(name);
        let dest = dir.path().join(sub);
        std::fs::create_dir_all(&dest).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
    let rig = Rig::start(&db.pool, "val-mixed").await;
    let (s, _, view) = validate(&db, Source::Dir(dir.path().into()), SubmitOptions::default()).await;
    assert_eq!(view.languages, ["python", "go"]);
    // The python fixture's 3/2/1 plus the go fixture's 2/2/1.
    assert_eq!(counts(&s["test"]), (5, 4, 2, 0));
    let names: Vec<&str> = s["test"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"py/test_calc.py::test_add") && names.contains(&"example.com/calc::TestAdd"),
        "{names:?}"
    );
    let lint = findings(&s["lint"]);
    assert_eq!(
        lint.iter()
            .filter(|x| x.0 == "ruff" && x.2 == "py/calc.py")
            .count(),
        3
    );
    assert_eq!(
        lint.iter()
            .filter(|x| x.0 == "go vet" && x.2 == "svc/calc.go")
            .count(),
        2
    );
    let sec = findings(&s["security"]);
    assert!(sec.contains(&f("semgrep", "kiln.go.eval", "svc/calc.go", 36, "high")));
    assert!(sec.contains(&f("bandit", "B602", "py/calc.py", 26, "high")));
    assert_eq!(sec.len(), 13 + 3);
    rig.stop().await;
}

/// Runs `script` in `image` with `fixture` copied to a scratch directory, with `docker run`
/// (not Kiln's sandbox), and returns its stdout.
fn by_hand(image: &str, fixture_dir: &std::path::Path, script: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--label", "kiln.test=by-hand"])
        .args([
            "--tmpfs",
            "/tmp:exec,mode=1777",
            "-e",
            "HOME=/tmp",
            "-e",
            "CARGO_TARGET_DIR=/tmp/target",
        ])
        .arg("-v")
        .arg(format!("{}:/src:ro", fixture_dir.display()))
        .args([image, "sh", "-c"])
        .arg(format!("cp -r /src /tmp/w && cd /tmp/w && {script}"))
        .output()
        .expect("docker run");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_agrees_with_the_tools_run_by_hand() {
    let images = kiln_tests::validation::images();
    let python = images.tag("python").unwrap().to_string();
    // Counts straight from each tool's own machine-readable output, computed in the image.
    let script = r#"python3 -m pytest -q -p no:cacheprovider --junitxml=/tmp/j.xml >/dev/null 2>&1
ruff check --no-cache --output-format=json --exit-zero . > /tmp/ruff.json
bandit -q -r . -f json -o /tmp/bandit.json >/dev/null 2>&1
detect-secrets scan --all-files . > /tmp/secrets.json
python3 - <<'PY'
import json, xml.etree.ElementTree as ET
s = ET.parse('/tmp/j.xml').getroot().find('testsuite')
b = json.load(open('/tmp/bandit.json'))['results']
print(json.dumps({
  'tests': [int(s.get('tests')), int(s.get('failures')), int(s.get('skipped')), int(s.get('errors'))],
  'ruff': sorted([r['code'], r['location']['row']] for r in json.load(open('/tmp/ruff.json'))),
  'bandit': sorted([r['test_id'], r['line_number']] for r in b),
  'secrets': sum(len(v) for v in json.load(open('/tmp/secrets.json'))['results'].values()),
}))
PY"#;
    let hand: Value =
        serde_json::from_str(by_hand(&python, &fixture("python"), script).trim()).expect("by-hand JSON");

    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-byhand").await;
    let (s, _, _) = validate(&db, Source::Dir(fixture("python")), SubmitOptions::default()).await;
    rig.stop().await;

    let (p, fl, sk, er) = counts(&s["test"]);
    assert_eq!(hand["tests"], serde_json::json!([p + fl + sk + er, fl, sk, er]));
    let ruff: Vec<Value> = findings(&s["lint"])
        .into_iter()
        .map(|x| serde_json::json!([x.1, x.3]))
        .collect();
    assert_eq!(hand["ruff"], Value::Array(ruff));
    let mut bandit: Vec<Value> = findings(&s["security"])
        .into_iter()
        .filter(|x| x.0 == "bandit")
        .map(|x| serde_json::json!([x.1, x.3]))
        .collect();
    bandit.sort_by_key(|v| (v[0].as_str().unwrap().to_string(), v[1].as_u64()));
    assert_eq!(hand["bandit"], Value::Array(bandit));
    let secrets = findings(&s["security"])
        .iter()
        .filter(|x| x.0 == "detect-secrets")
        .count();
    assert_eq!(hand["secrets"], secrets);

    // go test -json by hand in the go image: the same passes, failures and skips.
    let go = images.tag("go").unwrap().to_string();
    let out = by_hand(&go, &fixture("go"), "go test -vet=off -json ./... 2>/dev/null");
    let mut got = (0, 0, 0);
    for line in out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        if line["Test"].is_string() {
            match line["Action"].as_str() {
                Some("pass") => got.0 += 1,
                Some("fail") => got.1 += 1,
                Some("skip") => got.2 += 1,
                _ => {}
            }
        }
    }
    assert_eq!(got, (2, 2, 1), "go test by hand: {out}");

    // Rust line coverage by hand in the rust image: llvm-cov's own text report, TOTAL row.
    let rust = images.tag("rust").unwrap().to_string();
    let script = r#"export RUSTC_BOOTSTRAP=1 CARGO_HOME=/tmp/cargo LLVM_PROFILE_FILE=/tmp/prof/%p.profraw
export RUSTFLAGS="-C instrument-coverage -Z no-profiler-runtime -C link-arg=/usr/local/lib/libclang_rt.profile.a -C link-arg=-lc"
cargo test --offline --no-run --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' > /tmp/bins
for b in $(cat /tmp/bins); do "$b" >/dev/null 2>&1; done
llvm-profdata-14 merge /tmp/prof/*.profraw -o /tmp/all.profdata
llvm-cov-14 report -instr-profile=/tmp/all.profdata $(sed 's/^/-object=/' /tmp/bins) | grep '^TOTAL'"#;
    let total = by_hand(&rust, &fixture("rust"), script);
    let cols: Vec<&str> = total.split_whitespace().collect();
    // TOTAL regions missed cover functions missed executed lines missed cover …
    let lines_cover = cols
        .get(9)
        .unwrap_or_else(|| panic!("llvm-cov report by hand: {total:?}"));
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-byhand-rust").await;
    let (s, _, _) = validate(&db, Source::Dir(fixture("rust")), SubmitOptions::default()).await;
    rig.stop().await;
    assert_eq!(
        format!("{:.2}%", s["test"]["coverage_percent"].as_f64().unwrap()),
        *lines_cover
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kiln_submit_validate_wait_json_prints_one_object_with_no_worker_running() {
    let db = TestDb::new().await;
    let out = tokio::process::Command::new(kiln_tests::kiln_binary())
        .args(["--database-url", &db.url, "submit", "validate"])
        .arg(fixture("python"))
        .args(["--wait", "--json"])
        .env_remove("KILN_API_URL")
        .output()
        .await
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("running one in this process"), "{stderr}");
    let v = kiln_tests::validation::one_summary_object(&out.stdout);
    assert_eq!(
        (v["verdict"].as_str(), v["quality_score"].as_u64()),
        (Some("failed"), Some(6))
    );
    assert_eq!(counts(&v["test"]), (3, 2, 1, 0));
    let mut test_keys: Vec<&str> = v["test"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    test_keys.sort();
    assert_eq!(
        test_keys,
        [
            "cases",
            "coverage_percent",
            "errors",
            "failed",
            "passed",
            "skipped"
        ]
    );
    let mut finding_keys: Vec<&str> = v["security"]["findings"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    finding_keys.sort();
    assert_eq!(
        finding_keys,
        ["file", "in_test", "line", "message", "rule", "severity", "tool"]
    );
    // The in-process worker deregistered when the wait was over.
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_workers WHERE stopped_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(live, 0);

    // Bad input names the flag.
    let out = tokio::process::Command::new(kiln_tests::kiln_binary())
        .args([
            "--database-url",
            &db.url,
            "submit",
            "validate",
            "--language",
            "cobol",
        ])
        .arg(fixture("python"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--language: unknown language \"cobol\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_logs_of_a_steady_trickle_are_written_while_it_runs() {
    // A tool printing a line every 50 ms never leaves the forwarder 200 ms of quiet; its lines
    // must still reach the database while it runs, not when 64 have piled up.
    let db = TestDb::new().await;
    let job = kiln_queue::enqueue(
        &db.pool,
        &kiln_queue::NewJob::new("trickle", kiln_queue::JobKind::Test, serde_json::json!({})),
    )
    .await
    .unwrap();
    let fwd = kiln_validate::logs::LogForwarder::start(db.pool.clone(), job.id, 1);
    let tx = fwd.sender();
    for i in 0..40 {
        tx.send(kiln_sandbox::LogChunk {
            stream: kiln_sandbox::Stream::Stdout,
            data: format!("line {i}\n").into_bytes(),
        })
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stored = kiln_queue::logs::read(&db.pool, job.id, None, 100).await.unwrap();
    assert!(!stored.is_empty(), "nothing written during 2 s of steady output");
    assert_eq!(stored[0].data, "line 0\n");
    drop(tx);
    assert_eq!(fwd.finish().await, 40);
    assert_eq!(
        kiln_queue::logs::read(&db.pool, job.id, None, 100)
            .await
            .unwrap()
            .len(),
        40
    );
}

/// A small Python project whose tests pass and whose lint is clean, holding one AWS key.
fn clean_python_with_a_key(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        "[project]\nname = \"app\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("app.py"),
        "\"\"\"An app.\"\"\"\n\nAPI_TOKEN = \"AKIAIOSFODNN7REALKEY\"\n\n\ndef add(a, b):\n    return a + b\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("test_app.py"),
        "from app import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shell_injection_directory_name_runs_nothing_and_forges_nothing() {
    // The Python project lives in a directory named `x';sh e.sh;'`. Spliced into a shell
    // string, that name closes the quote and runs e.sh, which overwrites the scanners' reports
    // with empty ones and drops a file in the workspace. Passed as an argument it is a name.
    let db = TestDb::new().await;
    let top = tempfile::tempdir().unwrap();
    let proj = top.path().join("x';sh e.sh;'");
    clean_python_with_a_key(&proj);
    std::fs::write(
        top.path().join("e.sh"),
        "R=/work/.kiln-validate/reports\necho '{\"results\":{}}' > $R/secrets.json\necho '{\"results\":[]}' > $R/semgrep.json\necho '{\"results\":[]}' > $R/bandit.json\necho owned > /work/pwned\n",
    )
    .unwrap();
    let rig = Rig::start(&db.pool, "val-inject").await;
    let (s, _, view) = validate(&db, Source::Dir(top.path().into()), SubmitOptions::default()).await;
    rig.stop().await;
    assert_eq!(counts(&s["test"]), (1, 0, 0, 0), "{}", s["test"]);
    assert!(
        findings(&s["security"]).contains(&f(
            "detect-secrets",
            "AWS Access Key",
            "x';sh e.sh;'/app.py",
            3,
            "high"
        )),
        "{}",
        s["security"]
    );
    assert_eq!(s["verdict"], "failed", "{s}");
    let scan = view.jobs.iter().find(|j| j.kind == "security-scan").unwrap();
    let attempts = kiln_queue::admin::attempts(&db.pool, scan.id).await.unwrap();
    assert_eq!(
        attempts[0].diff_counts().map(|c| c.0),
        Some(0),
        "e.sh did not run: {:?}",
        attempts[0].diff()
    );
}

/// Runs one security-scan job on `dir` with `honour_suppressions` and returns its findings.
async fn scan_with(db: &TestDb, dir: &std::path::Path, honour: bool) -> Value {
    let packed = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES).unwrap();
    kiln_artifacts::store(&db.pool, &packed).await.unwrap();
    let job = kiln_queue::NewJob::new(
        "security-scan",
        kiln_queue::JobKind::SecurityScan,
        serde_json::json!({"workspace": packed.digest, "honour_suppressions": honour}),
    );
    let id = kiln_queue::enqueue(&db.pool, &job).await.unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rec = kiln_queue::admin::get_job(&db.pool, id).await.unwrap();
        if rec.state.is_final() {
            assert_eq!(rec.state, kiln_queue::JobState::Succeeded, "{rec:?}");
            return rec.result.expect("a result");
        }
        assert!(Instant::now() < deadline, "scan did not finish: {rec:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workspace_suppressions_are_ignored_unless_the_request_honours_them() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("pyproject.toml"),
        "[project]\nname = \"quiet\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("quiet.py"),
        "import subprocess\n\nTOKEN = \"AKIAIOSFODNN7REALKEY\"  # pragma: allowlist secret\n\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)  # nosec # nosemgrep\n\n\ndef calc(expr):\n    return eval(expr)  # nosec\n",
    )
    .unwrap();
    // Configuration that would silence each scanner wholesale.
    std::fs::write(p.join(".semgrepignore"), "*.py\n").unwrap();
    std::fs::write(p.join(".bandit"), "[bandit]\nskips = B602,B307,B404\n").unwrap();
    std::fs::write(p.join(".secrets.baseline"), "{\"results\": {}}\n").unwrap();
    let rig = Rig::start(&db.pool, "val-nosec").await;
    let strict = scan_with(&db, p, false).await;
    let lenient = scan_with(&db, p, true).await;
    rig.stop().await;
    let rules = |v: &Value| -> Vec<(String, String, u64)> {
        findings(v)
            .into_iter()
            .filter(|x| x.4 == "high" || x.4 == "medium")
            .map(|x| (x.0, x.1, x.3.unwrap()))
            .collect()
    };
    let strict = rules(&strict);
    for want in [
        ("detect-secrets", "AWS Access Key", 3),
        ("bandit", "B602", 7),
        ("semgrep", "kiln.python.shell-injection", 7),
        ("bandit", "B307", 11),
        ("semgrep", "kiln.python.eval", 11),
    ] {
        assert!(
            strict.contains(&(want.0.into(), want.1.into(), want.2)),
            "{want:?} in {strict:?}"
        );
    }
    // Asked to honour them, the same workspace's suppressions hold.
    assert_eq!(rules(&lenient), Vec::<(String, String, u64)>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mib_stdout_flood_stores_at_most_the_live_log_cap_and_counts_the_rest() {
    use kiln_queue::logs::DEFAULT_LIVE_LOG_CAP;
    use kiln_sandbox::{JobLabels, JobSpec, Outcome};
    const TOTAL: u64 = 300 << 20;
    let db = TestDb::new().await;
    let job = kiln_queue::enqueue(
        &db.pool,
        &kiln_queue::NewJob::new("flood", kiln_queue::JobKind::Test, serde_json::json!({})),
    )
    .await
    .unwrap();
    let worker = format!("flood-{}", std::process::id());
    let fleet = kiln_queue::fleet_id(&db.pool).await.unwrap();
    let owner = kiln_sandbox::policy::Owner::current(&worker).in_fleet(fleet);
    let sb = kiln_sandbox::Sandbox::connect_as(owner)
        .await
        .expect("docker engine");
    let fwd = kiln_validate::logs::LogForwarder::start(db.pool.clone(), job.id, 1);
    let labels = JobLabels {
        job_id: job.id,
        attempt: 1,
        worker_id: worker.clone(),
    };
    let image = kiln_tests::validation::images()
        .tag("python")
        .unwrap()
        .to_string();
    let script = format!("yes kiln | head -c {TOTAL}");
    let mut spec = JobSpec::new(image, &["sh", "-c", &script], labels);
    spec.timeout = Duration::from_secs(120);
    let r = sb.run(&spec, Some(fwd.sender())).await.expect("the job runs");
    assert_eq!(r.outcome, Outcome::OutputTruncated);
    assert_eq!(r.stdout.total_bytes, TOTAL);
    fwd.count_lost(r.live_lost_bytes);
    fwd.finish().await;

    let (mut stdout, mut all, mut marker, mut after) = (0u64, 0u64, false, None);
    loop {
        let page = kiln_queue::logs::read(&db.pool, job.id, after, 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.attempt, last.seq));
        for c in &page {
            let n = c.bytes().len() as u64;
            all += n;
            if c.stream == "stdout" {
                stdout += n;
            } else {
                marker |= c.data.contains("live log cap of 8388608 bytes reached");
            }
        }
    }
    assert!(all <= DEFAULT_LIVE_LOG_CAP, "{all} bytes stored");
    assert!(stdout > 0 && marker, "stdout {stdout}, marker {marker}");
    let drops = kiln_queue::logs::drops(&db.pool, job.id).await.unwrap();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(
        (drops[0].attempt, drops[0].cap_bytes),
        (1, DEFAULT_LIVE_LOG_CAP as i64)
    );
    assert_eq!(
        stdout + drops[0].dropped_bytes as u64,
        TOTAL,
        "stored + counted = written"
    );
    sb.docker().ping().await.expect("the engine still answers");
    sb.removals_done().await;
    sb.shutdown().await;
    let left = kiln_sandbox::reaper::containers_of(sb.docker(), &worker)
        .await
        .unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
}

/// A Python project under `dir` whose one test fails, with `conftest.py` holding `forger`
/// (Python run by pytest as it starts: the code under test).
fn failing_python_with(dir: &std::path::Path, name: &str, forger: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        format!("[project]\nname = \"{name}\"\nversion = \"0.1.0\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("calc.py"), "def add(a, b):\n    return a - b\n").unwrap();
    std::fs::write(
        dir.join("test_calc.py"),
        "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    )
    .unwrap();
    std::fs::write(dir.join("conftest.py"), forger).unwrap();
}

/// Python that builds a JUnit report saying `test_calc.py::test_add` passed, nested `depth`
/// `<testsuite>` levels deep.
const FAKE_JUNIT: &str = r#"import atexit
import os

REPORTS = "/work/.kiln-validate/reports"


def fake_junit(depth=1):
    case = '<testcase classname="test_calc" name="test_add" file="test_calc.py" time="0.001"/>'
    open_ = '<testsuite name="pytest" errors="0" failures="0" skipped="0" tests="1">'
    return '<?xml version="1.0" encoding="utf-8"?>' + open_ * depth + case + "</testsuite>" * depth
"#;

/// Validates each of `tops` in turn on one rig: their summaries, and what the rig's worker
/// left on the engine once stopped.
async fn run_forgers(db: &TestDb, tops: &[&std::path::Path], rig_name: &str) -> (Vec<Value>, Vec<String>) {
    let rig = Rig::start(&db.pool, rig_name).await;
    let mut summaries = Vec::new();
    for top in tops {
        let (s, _, view) = validate(db, Source::Dir(top.to_path_buf()), SubmitOptions::default()).await;
        // The worker survived: it still runs a job after this one.
        let test = view.jobs.iter().find(|j| j.kind == "test").unwrap();
        let payload = kiln_queue::admin::get_job(&db.pool, test.id)
            .await
            .unwrap()
            .payload;
        let job = kiln_queue::NewJob::new("test", kiln_queue::JobKind::Test, payload);
        let id = kiln_queue::enqueue(&db.pool, &job).await.unwrap().id;
        let again = kiln_tests::wait_final(&db.pool, id, Duration::from_secs(300)).await;
        assert_eq!(again.state, kiln_queue::JobState::Succeeded, "{again:?}");
        assert_eq!(again.result.as_ref().unwrap()["failed"], s["test"]["failed"]);
        summaries.push(s);
    }
    let docker = rig.sandbox.docker().clone();
    let worker = rig.worker_id.clone();
    rig.stop().await;
    let mut left = kiln_sandbox::reaper::containers_of(&docker, &worker)
        .await
        .unwrap();
    left.extend(kiln_sandbox::reaper::volumes_of(&docker, &worker).await.unwrap());
    (summaries, left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_20000_deep_report_written_by_the_code_under_test_neither_crashes_nor_passes() {
    // Item 1 as a pipeline: as pytest exits, the code under test writes a JUnit report
    // 20,000 `<testsuite>` levels deep saying its failing test passed, where the pytest
    // report was read, and prints it as pytest's output.
    let db = TestDb::new().await;
    let top = tempfile::tempdir().unwrap();
    let forger = format!(
        "{FAKE_JUNIT}\n\ndef forge():\n    deep = fake_junit(20000)\n    os.makedirs(REPORTS, exist_ok=True)\n    with open(REPORTS + \"/pytest.xml\", \"w\") as f:\n        f.write(deep)\n    os.write(1, deep.encode())\n\n\natexit.register(forge)\n"
    );
    failing_python_with(top.path(), "deep", &forger);
    let (s, left) = run_forgers(&db, &[top.path()], "val-deep").await;
    let s = &s[0];
    assert_eq!(counts(&s["test"]), (0, 1, 0, 0), "{}", s["test"]);
    assert_ne!(s["verdict"], "passed", "{s}");
    assert!(left.is_empty(), "left on the engine: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn test_reports_cannot_be_forged_by_the_code_under_test() {
    // Item 9: three projects (one pipeline each) whose one test fails, each trying another forgery: overwrite
    // the report file as pytest exits, plant a fake JUnit report before pytest writes its
    // own (and beside it), print fake tool output (a JUnit report and pytest's summary line).
    let db = TestDb::new().await;
    let top = tempfile::tempdir().unwrap();
    failing_python_with(
        &top.path().join("overwrite"),
        "overwrite",
        &format!(
            "{FAKE_JUNIT}\n\ndef forge():\n    with open(REPORTS + \"/pytest.xml\", \"w\") as f:\n        f.write(fake_junit())\n    with open(REPORTS + \"/pytest.exit\", \"w\") as f:\n        f.write(\"0\\n\")\n\n\natexit.register(forge)\n"
        ),
    );
    failing_python_with(
        &top.path().join("plant"),
        "plant",
        &format!(
            "{FAKE_JUNIT}\n\nos.makedirs(REPORTS, exist_ok=True)\nfor name in (\"pytest.xml\", \"junit.xml\", \"report.xml\"):\n    with open(REPORTS + \"/\" + name, \"w\") as f:\n        f.write(fake_junit())\n    with open(name, \"w\") as f:\n        f.write(fake_junit())\n"
        ),
    );
    failing_python_with(
        &top.path().join("print"),
        "print",
        &format!(
            "{FAKE_JUNIT}\nimport sys\n\nprint(fake_junit())\nsys.stdout.flush()\n\n\ndef forge():\n    os.write(1, fake_junit().encode())\n    os.write(2, fake_junit().encode())\n    os.write(1, b\"\\n==== 1 passed in 0.01s ====\\n\")\n\n\natexit.register(forge)\n"
        ),
    );
    let tops: Vec<std::path::PathBuf> = ["overwrite", "plant", "print"]
        .iter()
        .map(|n| top.path().join(n))
        .collect();
    let tops: Vec<&std::path::Path> = tops.iter().map(|p| p.as_path()).collect();
    let (summaries, left) = run_forgers(&db, &tops, "val-forge").await;
    for (s, top) in summaries.iter().zip(&tops) {
        assert_eq!(
            counts(&s["test"]),
            (0, 1, 0, 0),
            "{}: {}",
            top.display(),
            s["test"]
        );
        assert_eq!(s["verdict"], "failed", "{}: {s}", top.display());
    }
    assert!(left.is_empty(), "left on the engine: {left:?}");
}

/// Runs a pipeline on a one-project workspace whose failing test suite also runs `hostile`
/// (Python, in `conftest.py`), then shows the worker survived (it runs a lint job of the same
/// workspace) and nothing of it is left on the engine. Returns the summary and the test job.
async fn hostile_pipeline(name: &str, hostile: &str) -> (Value, kiln_queue::JobRecord, TestDb) {
    hostile_pipeline_with(name, hostile, |_| {}).await
}

/// [`hostile_pipeline`] with `more` adding files to the project first.
async fn hostile_pipeline_with(
    name: &str,
    hostile: &str,
    more: impl FnOnce(&std::path::Path),
) -> (Value, kiln_queue::JobRecord, TestDb) {
    let db = TestDb::new().await;
    let top = tempfile::tempdir().unwrap();
    failing_python_with(top.path(), name, hostile);
    more(top.path());
    let rig = Rig::start(&db.pool, &format!("val-{name}")).await;
    let (s, _, view) = validate(&db, Source::Dir(top.path().into()), SubmitOptions::default()).await;
    let test = view.jobs.iter().find(|j| j.kind == "test").unwrap();
    let test = kiln_queue::admin::get_job(&db.pool, test.id).await.unwrap();
    let lint = kiln_queue::NewJob::new("lint", kiln_queue::JobKind::Lint, test.payload.clone());
    let id = kiln_queue::enqueue(&db.pool, &lint).await.unwrap().id;
    let after = kiln_tests::wait_final(&db.pool, id, Duration::from_secs(300)).await;
    assert_eq!(
        after.state,
        kiln_queue::JobState::Succeeded,
        "the worker runs on: {after:?}"
    );
    let docker = rig.sandbox.docker().clone();
    let worker = rig.worker_id.clone();
    rig.stop().await;
    let mut left = kiln_sandbox::reaper::containers_of(&docker, &worker)
        .await
        .unwrap();
    left.extend(kiln_sandbox::reaper::volumes_of(&docker, &worker).await.unwrap());
    assert!(left.is_empty(), "left on the engine: {left:?}");
    assert_ne!(s["verdict"], "passed", "{s}");
    (s, test, db)
}

/// The test job ended `disk_quota`: failed at once (not retried), saying so.
async fn ended_disk_quota(db: &TestDb, test: &kiln_queue::JobRecord) {
    assert_eq!(test.state, kiln_queue::JobState::Failed, "{test:?}");
    let attempts = kiln_queue::admin::attempts(&db.pool, test.id).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let error = attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("workspace quota was exceeded"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_4_gib_write_in_many_files_through_a_pipeline_is_disk_quota_not_a_pass() {
    let hostile = "for i in range(64):\n    try:\n        with open(f\"blob{i}\", \"wb\") as f:\n            f.write(b\"x\" * (64 << 20))\n    except OSError:\n        pass\n";
    let (_, test, db) = hostile_pipeline("fourgib", hostile).await;
    ended_disk_quota(&db, &test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_thousand_empty_files_through_a_pipeline_are_disk_quota_not_a_pass() {
    let hostile = "import os\n\nfor d in range(300):\n    try:\n        os.mkdir(f\"d{d}\")\n        for f in range(1000):\n            open(f\"d{d}/f{f}\", \"w\").close()\n    except OSError:\n        break\n";
    let (_, test, db) = hostile_pipeline("manyfiles", hostile).await;
    ended_disk_quota(&db, &test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_300_mib_flood_from_the_code_under_test_is_capped_and_not_a_pass() {
    // As pytest exits, the code under test writes 300 MiB to its output.
    let hostile = "import atexit\nimport os\n\n\ndef flood():\n    chunk = b\"kiln\\n\" * (1 << 18)\n    for _ in range(300):\n        os.write(1, chunk)\n\n\natexit.register(flood)\n";
    let (s, test, db) = hostile_pipeline("flood", hostile).await;
    assert_eq!(counts(&s["test"]), (0, 1, 0, 0), "{}", s["test"]);
    let drops = kiln_queue::logs::drops(&db.pool, test.id).await.unwrap();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert!(drops[0].dropped_bytes >= 290 << 20, "{drops:?}");
    let mut stored = 0u64;
    let mut after = None;
    loop {
        let page = kiln_queue::logs::read(&db.pool, test.id, after, 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.attempt, last.seq));
        stored += page.iter().map(|c| c.bytes().len() as u64).sum::<u64>();
    }
    assert!(
        stored <= kiln_queue::logs::DEFAULT_LIVE_LOG_CAP,
        "{stored} bytes stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pathological_diff_through_a_pipeline_is_cut_with_counts_and_not_a_pass() {
    // Item 2 as a pipeline: as its tests start, the code under test rewrites every line of a
    // 50,000-line file (1.3 MiB of diff text, past the 1 MiB cap; 300,000 lines would only make the
    // security scan slower: detect-secrets takes about 90 s on them here) and turns a one-line
    // file into a 4 MiB line. The diff is cut at its cap, says so, and counts every line.
    let hostile = "with open(\"big.txt\") as f:\n    big = f.read()\nwith open(\"big.txt\", \"w\") as f:\n    f.write(big.replace(\"line \", \"changed \"))\nwith open(\"one.txt\", \"w\") as f:\n    f.write(\"y\" * (4 << 20) + \"\\n\")\n";
    let started = Instant::now();
    let (s, test, db) = hostile_pipeline_with("bigdiff", hostile, |dir| {
        let big: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.join("big.txt"), big).unwrap();
        std::fs::write(dir.join("one.txt"), "x\n").unwrap();
    })
    .await;
    eprintln!("pipeline and the follow-up job: {:?}", started.elapsed());
    assert_eq!(counts(&s["test"]), (0, 1, 0, 0), "{}", s["test"]);
    assert_eq!(test.state, kiln_queue::JobState::Succeeded, "{test:?}");
    let attempts = kiln_queue::admin::attempts(&db.pool, test.id).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].diff_counts(), Some((2, 50_001, 50_001)));
    let diff = attempts[0].diff().expect("a diff");
    assert!(
        diff.len() <= kiln_sandbox::DiffCaps::default().unified_bytes + 512,
        "{}",
        diff.len()
    );
    let last = diff.lines().last().unwrap_or_default();
    assert!(last.starts_with("# diff too large"), "{last}");
}
