//! The corpus: real projects from PyPI, crates.io and Debian (`tests/corpus/projects.json`),
//! fetched and pinned by version and sha256 by `scripts/corpus`. Kiln's counts and findings
//! must equal the tools' own, run by hand in the same images (`tests/corpus/expected/`), and
//! its verdict must be the one the manifest states. CI runs the projects marked `ci`, one test
//! each; `scripts/corpus` runs the ignored `the_selected_projects` on `KILN_CORPUS` (`all`, or
//! a comma-separated list of names).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_pipeline::{Source, SubmitOptions};
use kiln_testkit::TestDb;
use kiln_tests::validation::Rig;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The manifest's projects.
fn manifest() -> Vec<Value> {
    let m: Value =
        serde_json::from_slice(&std::fs::read(repo().join("tests/corpus/projects.json")).unwrap()).unwrap();
    m["projects"].as_array().unwrap().clone()
}

/// The projects CI runs, one test each below.
const CI: [&str; 3] = ["idna", "heck", "pkg-errors"];

/// Fetches (or finds already fetched) a project through `scripts/corpus fetch`.
fn fetch(name: &str) -> PathBuf {
    let out = std::process::Command::new(repo().join("scripts/corpus"))
        .args(["fetch", name])
        .output()
        .expect("run scripts/corpus");
    assert!(
        out.status.success(),
        "scripts/corpus fetch {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.trim().lines().last().expect("the project's directory"))
}

/// (tool, rule, file, line) of each finding, as a sorted multiset.
fn tuples(findings: &Value) -> Vec<(String, String, String, Option<u64>)> {
    // A job that could not run has no findings (its error is reported with the verdict).
    let mut v: Vec<_> = findings
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f[0].as_str().or(f["tool"].as_str()).unwrap().to_string(),
                f[1].as_str().or(f["rule"].as_str()).unwrap().to_string(),
                f[2].as_str().or(f["file"].as_str()).unwrap().to_string(),
                f[3].as_u64().or(f["line"].as_u64()),
            )
        })
        .collect();
    v.sort();
    v
}

/// What differs between Kiln's findings and the recorded ones, in a few lines.
fn difference(
    what: &str,
    kiln: &[(String, String, String, Option<u64>)],
    hand: &[(String, String, String, Option<u64>)],
) -> Option<String> {
    if kiln == hand {
        return None;
    }
    let k: BTreeSet<_> = kiln.iter().collect();
    let h: BTreeSet<_> = hand.iter().collect();
    let only_kiln: Vec<_> = k.difference(&h).take(10).collect();
    let only_hand: Vec<_> = h.difference(&k).take(10).collect();
    Some(format!(
        "{what}: Kiln {} findings, by hand {}; only Kiln: {only_kiln:?}; only by hand: {only_hand:?}",
        kiln.len(),
        hand.len()
    ))
}

/// Runs Kiln on each project and compares; panics listing every difference.
async fn check(names: &[String]) {
    let projects: Vec<Value> = manifest()
        .into_iter()
        .filter(|p| names.iter().any(|n| p["name"] == n.as_str()))
        .collect();
    assert_eq!(projects.len(), names.len(), "unknown project among {names:?}");
    let db = TestDb::new().await;
    let rig = Rig::start(&db.pool, "val-corpus").await;
    let mut problems = Vec::new();
    for p in &projects {
        let name = p["name"].as_str().unwrap();
        let dir = fetch(name);
        let expected: Value = serde_json::from_slice(
            &std::fs::read(repo().join(format!("tests/corpus/expected/{name}.json"))).unwrap_or_else(|e| {
                panic!("{name}: no recorded results ({e}); run scripts/corpus record {name}")
            }),
        )
        .unwrap();
        let t = Instant::now();
        // Real projects on a shared machine: room beyond the 120 s default, which is about the
        // fixtures' speed, not the corpus's.
        let opts = SubmitOptions {
            timeout: Duration::from_secs(600),
            ..SubmitOptions::default()
        };
        let sub = kiln_pipeline::submit(&db.pool, Source::Dir(dir), &opts)
            .await
            .expect("submit");
        let view = kiln_pipeline::wait(&db.pool, None, sub.pipeline_id, Duration::from_secs(900))
            .await
            .expect("pipeline finishes");
        let s = view.summary();
        eprintln!("corpus {name}: {} in {:?}", s["verdict"], t.elapsed());
        let keys = ["passed", "failed", "skipped", "errors"];
        let counts: Vec<u64> = keys
            .iter()
            .map(|k| s["test"][k].as_u64().unwrap_or(u64::MAX))
            .collect();
        let hand: Vec<u64> = keys
            .iter()
            .map(|k| expected["tests"][k].as_u64().unwrap())
            .collect();
        if counts != hand {
            problems.push(format!(
                "{name}: tests (passed, failed, skipped, errors) Kiln {counts:?}, by hand {hand:?}"
            ));
        }
        for part in ["lint", "security"] {
            let kiln = tuples(&s[part]["findings"]);
            let hand = tuples(&expected[part]);
            problems.extend(difference(&format!("{name} {part}"), &kiln, &hand));
        }
        let want = p["verdict"].as_str().unwrap_or("passed");
        if s["verdict"] != want {
            problems.push(format!(
                "{name}: verdict {} where {want} is expected ({}); errors: {}",
                s["verdict"],
                p["reason"]
                    .as_str()
                    .unwrap_or("a well-kept project whose tests pass"),
                s["errors"]
            ));
        }
    }
    rig.stop().await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_ci_subset_is_the_one_the_manifest_marks() {
    let marked: Vec<String> = manifest()
        .into_iter()
        .filter(|p| p["ci"] == true)
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut ci: Vec<String> = CI.iter().map(|s| s.to_string()).collect();
    ci.sort();
    let mut marked = marked;
    marked.sort();
    assert_eq!(ci, marked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idna_from_pypi() {
    check(&[CI[0].to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heck_from_crates_io() {
    check(&[CI[1].to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pkg_errors_from_debian() {
    check(&[CI[2].to_string()]).await;
}

/// The projects `KILN_CORPUS` names (`all` for every one): `scripts/corpus` runs this.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the whole corpus takes many minutes: scripts/corpus runs it"]
async fn the_selected_projects() {
    let want = std::env::var("KILN_CORPUS").unwrap_or_else(|_| "all".into());
    let names: Vec<String> = manifest()
        .into_iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .filter(|n| want == "all" || want.split(',').any(|w| w == n))
        .collect();
    check(&names).await;
}
