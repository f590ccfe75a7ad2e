//! Validation's speed paths end to end (real Postgres, images and Docker engine): results
//! cached by content, and what the faster tool set-up must still find.

use std::time::{Duration, Instant};

use kiln_pipeline::{Source, SubmitOptions};
use kiln_testkit::TestDb;
use kiln_tests::validation::{fixture, Rig};
use serde_json::Value;

/// Submits `dir`, waits for the verdict; returns the summary and the pipeline.
async fn validate(db: &TestDb, dir: &std::path::Path) -> (Value, kiln_pipeline::PipelineView) {
    let sub = kiln_pipeline::submit(&db.pool, Source::Dir(dir.into()), &SubmitOptions::default())
        .await
        .expect("submit");
    let view = kiln_pipeline::wait(&db.pool, None, sub.pipeline_id, Duration::from_secs(400))
        .await
        .expect("pipeline finishes");
    (view.summary(), view)
}

/// Each job's kind and its (only) attempt's details.
async fn details(db: &TestDb, view: &kiln_pipeline::PipelineView) -> Vec<(String, i64, Value)> {
    let mut v = Vec::new();
    for j in &view.jobs {
        let attempts = kiln_queue::admin::attempts(&db.pool, j.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "one attempt for {}", j.kind);
        v.push((j.kind.clone(), j.id, Value::Object(attempts[0].details.clone())));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The parts of a summary a cached answer must repeat exactly.
fn verdict_parts(s: &Value) -> Value {
    serde_json::json!([
        s["verdict"],
        s["test"],
        s["lint"],
        s["security"],
        s["quality_score"]
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_workspace_is_answered_from_the_cache_but_failing_tests_run_again() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-cache").await;

    // A clean project: all three results are kept, and the second pipeline runs no tool.
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(
        clean.path().join("lib.py"),
        "import os\n\n\ndef add(a, b):\n    return a + b\n",
    )
    .unwrap();
    std::fs::write(
        clean.path().join("test_lib.py"),
        "from lib import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    )
    .unwrap();
    let (first, v1) = validate(&db, clean.path()).await;
    assert_eq!(first["verdict"], "passed", "{first}");
    let ran = details(&db, &v1).await;
    for (kind, _, d) in &ran {
        assert!(d.get("cache").is_none(), "{kind} ran its tools: {d}");
        assert!(d["container_id"].is_string(), "{kind}: {d}");
    }
    let t = Instant::now();
    let (second, v2) = validate(&db, clean.path()).await;
    eprintln!("cached pipeline: {:?}", t.elapsed());
    assert_eq!(verdict_parts(&second), verdict_parts(&first));
    let cached = details(&db, &v2).await;
    for ((kind, _, d), (_, source, _)) in cached.iter().zip(&ran) {
        assert_eq!(
            d["cache"]["source_job"], *source,
            "{kind} answered from the first run: {d}"
        );
        assert!(
            d.get("container_id").is_none(),
            "{kind} started no container: {d}"
        );
    }

    // The python fixture's tests fail: its test job runs again, lint and security do not.
    let dir = fixture("python");
    let (a, _) = validate(&db, &dir).await;
    let (b, v4) = validate(&db, &dir).await;
    assert_eq!(verdict_parts(&a), verdict_parts(&b));
    assert_eq!(a["test"]["failed"], 2);
    for (kind, _, d) in details(&db, &v4).await {
        if kind == "test" {
            assert!(d.get("cache").is_none(), "failing tests are run again: {d}");
        } else {
            assert!(d["cache"]["source_job"].is_i64(), "{kind} cached: {d}");
        }
    }
    rig.stop().await;
}

/// Runs one security-scan job on `dir`; returns its findings as (rule, file, line).
async fn scan(db: &TestDb, dir: &std::path::Path) -> Vec<(String, String, u64)> {
    let packed = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES).unwrap();
    kiln_artifacts::store(&db.pool, &packed).await.unwrap();
    let job = kiln_queue::NewJob::new(
        "security-scan",
        kiln_queue::JobKind::SecurityScan,
        serde_json::json!({"workspace": packed.digest}),
    );
    let id = kiln_queue::enqueue(&db.pool, &job).await.unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rec = kiln_queue::admin::get_job(&db.pool, id).await.unwrap();
        if rec.state.is_final() {
            assert_eq!(rec.state, kiln_queue::JobState::Succeeded, "{rec:?}");
            let r = rec.result.expect("a result");
            let mut v: Vec<(String, String, u64)> = r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["tool"] == "semgrep")
                .map(|f| {
                    (
                        f["rule"].as_str().unwrap().to_string(),
                        f["file"].as_str().unwrap().to_string(),
                        f["line"].as_u64().unwrap(),
                    )
                })
                .collect();
            v.sort();
            return v;
        }
        assert!(Instant::now() < deadline, "scan did not finish: {rec:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_regexp_exec_is_not_a_shell_but_child_process_exec_still_is() {
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-jsexec").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("package.json"),
        "{\"name\": \"x\", \"version\": \"1.0.0\"}\n",
    )
    .unwrap();
    // path-is-absolute 2.0.0's own code: a RegExp's exec, no child_process anywhere.
    std::fs::write(
        dir.path().join("regexp.js"),
        "var re = /^([a-z]:)?([\\\\/])?/;\nmodule.exports = function (p) {\n  return re.exec(p);\n};\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("shell.js"),
        "const { exec } = require('node:child_process');\nconst cp = require('child_process');\n\
         module.exports = function (d) {\n  exec('ls ' + d);\n  cp.execSync(d);\n};\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("esm.mjs"),
        "import * as cp from 'child_process';\nexport function run(d) {\n  return cp.exec(d);\n}\n",
    )
    .unwrap();
    let found = scan(&db, dir.path()).await;
    let rule = "kiln.javascript.shell-injection".to_string();
    assert_eq!(
        found,
        [
            (rule.clone(), "esm.mjs".to_string(), 3),
            (rule.clone(), "shell.js".to_string(), 4),
            (rule, "shell.js".to_string(), 5),
        ]
    );
    rig.stop().await;
}
