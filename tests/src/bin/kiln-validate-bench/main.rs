//! `scripts/bench-validate`: the wall time of a validation pipeline on each fixture, from
//! enqueue to verdict (the pipeline row's `created_at` → `finished_at`), and how much of it
//! is container start-up as the sandbox runner measured it.
//!
//! With `--corpus`, per corpus project (and the python fixture): each tool alone by hand,
//! then Kiln with the warm pool on, same run (see `corpus.rs`).
//!
//! Usage: kiln-validate-bench [-n RUNS] [--warm N] [--json] [--corpus [NAME...]]

use std::time::Duration;

use kiln_pipeline::{Source, SubmitOptions};
use kiln_testkit::TestDb;
use kiln_tests::validation::{fixture, Rig};

mod corpus;

#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    fixture: String,
    run: usize,
    warm_pool: usize,
    /// created_at → finished_at of the pipeline.
    enqueue_to_verdict_ms: f64,
    /// Per job: kind, queue wait, container start-up, command, readback, handler total.
    jobs: Vec<serde_json::Value>,
    /// Container start-up of the job that finished last (the critical path).
    critical_start_ms: f64,
    /// Container start-up summed over the pipeline's runs.
    total_start_ms: f64,
    /// From the last job's completion to the pipeline's verdict.
    settle_lag_ms: f64,
}

/// The command line.
const USAGE: &str = "usage: kiln-validate-bench [-n RUNS] [--warm N] [--json] [--corpus [NAME...]]";

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = None;
    let mut warm = None;
    let mut json = false;
    let mut corpus = false;
    let mut names = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-n" => {
                runs = Some(args.get(i + 1).and_then(|v| v.parse().ok()).expect("-n RUNS"));
                i += 1;
            }
            "--warm" => {
                warm = Some(args.get(i + 1).and_then(|v| v.parse().ok()).expect("--warm N"));
                i += 1;
            }
            "--json" => json = true,
            "--corpus" => corpus = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            name if corpus && !name.starts_with('-') => names.push(name.to_string()),
            other => {
                eprintln!("kiln-validate-bench: unknown argument {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    if corpus {
        // The corpus mode's defaults: one Kiln run per project, the warm pool on.
        let args = corpus::Args {
            runs: runs.unwrap_or(1),
            warm: warm.unwrap_or(1),
            json,
            names,
        };
        corpus::run(args).await;
        return;
    }
    let runs = runs.unwrap_or(3);
    let warm = warm.unwrap_or(0);
    let mut samples = Vec::new();
    for name in ["python", "node", "go", "rust"] {
        let db = TestDb::new().await;
        let rig = Rig::start_with_pool(&db.pool, &format!("bench-{name}"), warm).await;
        if warm > 0 {
            tokio::time::sleep(Duration::from_secs(5)).await; // let the pool fill
        }
        for run in 0..runs {
            let sub = kiln_pipeline::submit(&db.pool, Source::Dir(fixture(name)), &SubmitOptions::default())
                .await
                .expect("submit");
            let view = kiln_pipeline::wait(&db.pool, None, sub.pipeline_id, Duration::from_secs(600))
                .await
                .expect("pipeline");
            let wall = (view.finished_at.unwrap() - view.created_at)
                .num_microseconds()
                .unwrap() as f64
                / 1e3;
            let mut jobs = Vec::new();
            let mut last: Option<(chrono::DateTime<chrono::Utc>, f64)> = None;
            let mut total_start = 0.0;
            let last_final = view
                .jobs
                .iter()
                .filter_map(|j| j.finalized_at)
                .max()
                .expect("final jobs");
            let settle_lag = (view.finished_at.unwrap() - last_final)
                .num_microseconds()
                .unwrap() as f64
                / 1e3;
            for j in &view.jobs {
                let job = kiln_queue::admin::get_job(&db.pool, j.id).await.unwrap();
                let attempts = kiln_queue::admin::attempts(&db.pool, j.id).await.unwrap();
                let a = attempts.last().expect("an attempt");
                let t = a.details.get("timings").cloned().unwrap_or_default();
                let f = |k: &str| t[k].as_f64().unwrap_or(0.0);
                let wait = (job.attempted_at.unwrap() - job.created_at)
                    .num_microseconds()
                    .unwrap() as f64
                    / 1e3;
                let handler = (a.finished_at - a.started_at).num_microseconds().unwrap() as f64 / 1e3;
                total_start += f("container_start_ms");
                if last.is_none_or(|(at, _)| a.finished_at > at) {
                    last = Some((a.finished_at, f("container_start_ms")));
                }
                jobs.push(serde_json::json!({
                    "kind": j.kind, "queue_wait_ms": wait, "container_start_ms": f("container_start_ms"),
                    "upload_ms": f("upload_ms"), "run_ms": f("run_ms"), "readback_ms": f("readback_ms"),
                    "attempt_ms": handler,
                }));
            }
            samples.push(Sample {
                fixture: name.to_string(),
                run,
                warm_pool: warm,
                enqueue_to_verdict_ms: wall,
                jobs,
                critical_start_ms: last.map(|l| l.1).unwrap_or(0.0),
                total_start_ms: total_start,
                settle_lag_ms: settle_lag,
            });
        }
        rig.stop().await;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&samples).unwrap());
        return;
    }
    println!("validation pipeline, enqueue → verdict (3 jobs in parallel, one worker, warm pool {warm}):");
    println!(
        "{:<8} {:>4} {:>10} {:>16} {:>15} {:>9}   per job: start / run ms (test, lint, security-scan)",
        "fixture", "run", "wall ms", "start crit. ms", "start sum ms", "settle ms"
    );
    for s in &samples {
        let per: Vec<String> = s
            .jobs
            .iter()
            .map(|j| {
                format!(
                    "{:.0}/{:.0}",
                    j["container_start_ms"].as_f64().unwrap(),
                    j["run_ms"].as_f64().unwrap()
                )
            })
            .collect();
        println!(
            "{:<8} {:>4} {:>10.0} {:>9.0} ({:>4.1}%) {:>15.0} {:>9.1}   {}",
            s.fixture,
            s.run,
            s.enqueue_to_verdict_ms,
            s.critical_start_ms,
            100.0 * s.critical_start_ms / s.enqueue_to_verdict_ms,
            s.total_start_ms,
            s.settle_lag_ms,
            per.join(", ")
        );
    }
}
