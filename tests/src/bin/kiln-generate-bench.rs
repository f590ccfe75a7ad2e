//! `scripts/bench-generate`: generation pipelines on the python fixture against a loopback
//! model answering every call after a fixed 200 ms, on a worker shaped like the default fleet
//! (`workers.toml`: generation ×4, test/lint/security-scan ×2 each, a warm pool of 1).
//!
//! Two phases: N pipelines at once (default 20; pipelines per minute), then a few one at a
//! time (nothing queues behind anything), where each iteration's end-to-end time (generation
//! job enqueued → iteration validated) splits into model time (the calls' latencies),
//! validation time (the validation jobs enqueued → the last one final) and Kiln's own
//! overhead (the rest: claiming, workspace unpack/pack, diffs, artifacts, the transaction,
//! settling, enqueueing the next iteration).
//!
//! Usage: kiln-generate-bench [-n PIPELINES] [-s SEQUENTIAL] [-i ITERATIONS] [--json]

use std::time::{Duration, Instant};

use kiln_generate::{submit_generation, GenerateRequest, GenerationModule, Start};
use kiln_pipeline::{Source, SubmitOptions, ValidationModule};
use kiln_queue::JobKind;
use kiln_testkit::llm::{text, write_file, FakeModel, Reply};
use kiln_testkit::TestDb;
use kiln_tests::generation::{fast_options, openai_section};
use kiln_tests::validation::fixture;
use kiln_worker::{FleetContext, QueueConfig, Registry, WorkerConfig};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const LATENCY: Duration = Duration::from_millis(200);

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn submit(pool: &PgPool, iterations: u32) -> i64 {
    let req = GenerateRequest {
        prompt: "Make calc.py's tests pass.".into(),
        start: Start::Source(Source::Dir(fixture("python"))),
        language: None,
        max_iterations: Some(iterations),
        budget_usd: None,
        preference: Default::default(),
    };
    submit_generation(pool, req, &SubmitOptions::default())
        .await
        .expect("submit")
        .pipeline_id
}

/// One iteration's times in milliseconds: end to end (generation job enqueued → iteration
/// validated), model, validation (iteration recorded → its last validation job final), and
/// the parts of Kiln's overhead: claim (enqueued → handler started), generate (handler
/// started → iteration's transaction, model time excluded) and settle (last validation job
/// final → iteration validated and the next iteration enqueued).
#[derive(Clone, Copy)]
struct Split {
    e2e: f64,
    model: f64,
    validation: f64,
    claim: f64,
    generate: f64,
    settle: f64,
}

/// Per iteration of pipeline `pid`.
async fn split(pool: &PgPool, pid: i64) -> Vec<Split> {
    let rows: Vec<(f64, f64, f64, f64, f64, f64)> = sqlx::query_as(
        "SELECT (extract(epoch FROM i.validated_at - g.created_at) * 1000)::float8,
                (i.record ->> 'latency_ms')::float8,
                (extract(epoch FROM v.last_final - i.created_at) * 1000)::float8,
                (extract(epoch FROM a.started_at - g.created_at) * 1000)::float8,
                (extract(epoch FROM i.created_at - a.started_at) * 1000)::float8
                    - (i.record ->> 'latency_ms')::float8,
                (extract(epoch FROM i.validated_at - v.last_final) * 1000)::float8
         FROM kiln_generation_iterations i JOIN kiln_jobs g ON g.id = i.job_id
         JOIN LATERAL (SELECT min(started_at) AS started_at FROM kiln_attempts
                       WHERE job_id = g.id) a ON true
         JOIN LATERAL (SELECT max(j.finalized_at) AS last_final FROM kiln_jobs j
                       WHERE j.pipeline_id = i.pipeline_id AND j.kind <> 'generation'
                         AND ('iteration:' || i.iteration) = ANY (j.tags)) v ON true
         WHERE i.pipeline_id = $1 ORDER BY i.iteration",
    )
    .bind(pid)
    .fetch_all(pool)
    .await
    .expect("iterations");
    rows.into_iter()
        .map(|(e2e, model, validation, claim, generate, settle)| Split {
            e2e,
            model,
            validation,
            claim,
            generate,
            settle,
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut n, mut sequential, mut iterations, mut as_json) = (20usize, 3usize, 2u32, false);
    let mut i = 0;
    while i < args.len() {
        let num = |i: usize| args.get(i + 1).and_then(|v| v.parse::<usize>().ok());
        match args[i].as_str() {
            "-n" => n = num(i).expect("-n PIPELINES"),
            "-s" => sequential = num(i).expect("-s SEQUENTIAL"),
            "-i" => iterations = num(i).expect("-i ITERATIONS") as u32,
            "--json" => {
                as_json = true;
                i += 1;
                continue;
            }
            other => panic!(
                "unknown argument {other}; usage: [-n PIPELINES] [-s SEQUENTIAL] [-i ITERATIONS] [--json]"
            ),
        }
        i += 2;
    }
    let model = FakeModel::start(|seen| {
        let r = if seen.answers_tools() {
            text(seen, "Done.", (50, 5, 0, 0))
        } else {
            write_file(seen, "notes.md", "# Notes\n", (1000, 60, 0, 0))
        };
        Reply::Delay(LATENCY, Box::new(r))
    })
    .await;
    let db = TestDb::new().await;
    let sections: toml::Table = toml::from_str(&openai_section(&model.url(), "")).unwrap();
    let registry = Registry::new().with(ValidationModule).with(GenerationModule {
        options: fast_options(),
    });
    let queue = |name: &str, c: usize| QueueConfig::new(name).concurrency(c).batch(c);
    let config = WorkerConfig {
        id: Some(format!("bench-generate-{}", std::process::id())),
        kinds: Some(vec![
            JobKind::Generation,
            JobKind::Test,
            JobKind::Lint,
            JobKind::SecurityScan,
        ]),
        queues: vec![
            queue("generation", 4),
            queue("test", 2),
            queue("lint", 2),
            queue("security-scan", 2),
        ],
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let listener = kiln_queue::Listener::start(db.pool.clone(), stop.clone());
    let images = kiln_tests::validation::images();
    let (worker, services) = registry
        .build_worker(
            db.pool.clone(),
            config,
            &sections,
            FleetContext {
                listener,
                images: vec![images.tag("python").unwrap().to_string()],
                warm_pool: 1,
            },
        )
        .await
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(async move { worker.run(s.cancelled_owned()).await });
    tokio::time::sleep(Duration::from_secs(3)).await; // the warm pool fills

    // Phase 1: N at once.
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(submit(&db.pool, iterations).await);
    }
    for &id in &ids {
        let v = kiln_pipeline::wait(&db.pool, None, id, Duration::from_secs(3600))
            .await
            .expect("pipeline");
        assert!(v.verdict.is_some());
    }
    let wall = started.elapsed();
    let per_minute = n as f64 / wall.as_secs_f64() * 60.0;
    let mut loaded = Vec::new();
    for &id in &ids {
        loaded.extend(split(&db.pool, id).await);
    }

    // Phase 2: one at a time.
    let mut quiet = Vec::new();
    for _ in 0..sequential {
        let id = submit(&db.pool, iterations).await;
        kiln_pipeline::wait(&db.pool, None, id, Duration::from_secs(3600))
            .await
            .expect("pipeline");
        quiet.extend(split(&db.pool, id).await);
    }
    stop.cancel();
    let _ = handle.await;
    services.shutdown().await;

    let summarise = |s: &[Split]| {
        let m = |f: fn(&Split) -> f64| median(s.iter().map(f).collect());
        json!({"iterations": s.len(), "end_to_end_ms": m(|x| x.e2e), "model_ms": m(|x| x.model),
               "validation_ms": m(|x| x.validation),
               "overhead_ms": m(|x| x.e2e - x.model - x.validation),
               "overhead_parts_ms": {"claim": m(|x| x.claim), "generate": m(|x| x.generate),
                                     "settle": m(|x| x.settle)}})
    };
    let out = json!({
        "pipelines": n,
        "iterations_per_pipeline": iterations,
        "model_latency_ms": LATENCY.as_millis() as u64,
        "wall_s": wall.as_secs_f64(),
        "pipelines_per_minute": per_minute,
        "concurrent": summarise(&loaded),
        "one_at_a_time": summarise(&quiet),
        "model_calls": model.hits(),
    });
    if as_json {
        println!("{out}");
    } else {
        let q: &Value = &out["one_at_a_time"];
        let c: &Value = &out["concurrent"];
        println!(
            "{n} generation pipelines × {iterations} iterations, model latency {} ms: {:.1} s, {per_minute:.1} pipelines/min",
            LATENCY.as_millis(),
            wall.as_secs_f64()
        );
        println!(
            "per iteration, one at a time (median): end to end {:.0} ms = model {:.0} + validation {:.0} + Kiln overhead {:.0}",
            q["end_to_end_ms"].as_f64().unwrap(),
            q["model_ms"].as_f64().unwrap(),
            q["validation_ms"].as_f64().unwrap(),
            q["overhead_ms"].as_f64().unwrap()
        );
        let p = &q["overhead_parts_ms"];
        println!(
            "  overhead parts (medians): claim {:.0} ms, generate (without the model) {:.0} ms, settle {:.0} ms",
            p["claim"].as_f64().unwrap(),
            p["generate"].as_f64().unwrap(),
            p["settle"].as_f64().unwrap()
        );
        println!(
            "per iteration, {n} at once (median): end to end {:.0} ms = model {:.0} + validation {:.0} + the rest {:.0} (queueing included)",
            c["end_to_end_ms"].as_f64().unwrap(),
            c["model_ms"].as_f64().unwrap(),
            c["validation_ms"].as_f64().unwrap(),
            c["overhead_ms"].as_f64().unwrap()
        );
    }
}
