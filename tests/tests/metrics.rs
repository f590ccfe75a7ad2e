//! Metrics end to end: a real worker's counts by outcome, the one-process depth exporter,
//! and the shipped Grafana dashboard and docker-compose file.

use kiln_metrics::{metrics, render, DepthExporter, DepthGauges, ExporterConfig};
use kiln_queue::{enqueue, lease, JobKind, NewJob};
use kiln_testkit::TestDb;
use kiln_tests::{create_executions_table, fast_config, recording_worker, wait_for_count};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The value of the series `name{labels}` in `text` (labels in any order); 0 when absent.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sorted: Vec<_> = labels.to_vec();
    sorted.sort();
    let series = if sorted.is_empty() {
        name.to_string()
    } else {
        let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", inner.join(","))
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_counts_enqueued_started_finished_and_attempts_by_outcome() {
    let db = TestDb::new().await;
    create_executions_table(&db.pool).await;
    let q = "metered";
    // Queue labels come from a fixed set (issue 14): queues configured or served by a worker.
    // This process serves both queues (the worker starts below, after the enqueues).
    kiln_metrics::queues::allow(q);
    kiln_metrics::queues::allow("metered-tx");
    let test = |payload| NewJob::new(q, JobKind::Test, payload);
    // A job whose worker "dies": claimed by a ghost with a 1 s lease that nobody extends.
    enqueue(&db.pool, &test(json!({})).max_attempts(2)).await.unwrap();
    let ghost = lease::claim(&db.pool, q, "ghost", 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(ghost.len(), 1);
    for _ in 0..3 {
        enqueue(&db.pool, &test(json!({}))).await.unwrap();
    }
    for _ in 0..2 {
        enqueue(&db.pool, &test(json!({"fail": "boom", "permanent": true})))
            .await
            .unwrap();
    }
    let slow = NewJob::new(q, JobKind::Lint, json!({"sleep_ms": 3000}))
        .timeout(Duration::from_secs(1))
        .max_attempts(1);
    enqueue(&db.pool, &slow).await.unwrap();
    // The same unique key twice: one row, counted once.
    let first = enqueue(&db.pool, &test(json!({})).unique_key("once"))
        .await
        .unwrap();
    let again = enqueue(&db.pool, &test(json!({})).unique_key("once"))
        .await
        .unwrap();
    assert!(first.created && !again.created && first.id == again.id);
    // Inside a transaction: a rollback enqueues (and counts) nothing; a commit counts when the
    // caller says it committed.
    let in_tx = [0, 1].map(|i| NewJob::new("metered-tx", JobKind::Test, json!({"i": i})));
    let mut tx = db.pool.begin().await.unwrap();
    kiln_queue::enqueue_many(&mut *tx, &in_tx).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let out = kiln_queue::enqueue_many(&mut *tx, &in_tx[..1]).await.unwrap();
    tx.commit().await.unwrap();
    kiln_queue::count_committed(&in_tx[..1], &out);

    let mut config = fast_config(q, 8);
    config.shutdown_grace = Duration::from_secs(1);
    let worker = recording_worker(&db.pool, config);
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_jobs WHERE finalized_at IS NOT NULL",
        8,
        Duration::from_secs(30),
    )
    .await;
    // One more that is still running at shutdown: handed back, `interrupted`.
    enqueue(&db.pool, &test(json!({"sleep_ms": 20_000})))
        .await
        .unwrap();
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM test_executions e JOIN kiln_jobs j ON j.id = e.job_id \
         WHERE j.payload ? 'sleep_ms' AND j.kind = 'test'",
        1,
        Duration::from_secs(10),
    )
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();

    let text = render();
    let m = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);
    assert_eq!(
        m("kiln_jobs_enqueued_total", &[("queue", q), ("kind", "test")]),
        8.0,
        "{text}"
    );
    assert_eq!(
        m("kiln_jobs_enqueued_total", &[("queue", q), ("kind", "lint")]),
        1.0
    );
    assert_eq!(
        m(
            "kiln_jobs_enqueued_total",
            &[("queue", "metered-tx"), ("kind", "test")]
        ),
        1.0,
        "only the committed job counts"
    );
    // Started by this worker: everything but the ghost's claim.
    assert_eq!(
        m("kiln_jobs_started_total", &[("queue", q), ("kind", "test")]),
        8.0
    );
    assert_eq!(
        m("kiln_jobs_started_total", &[("queue", q), ("kind", "lint")]),
        1.0
    );
    for (kind, outcome, n) in [
        ("test", "succeeded", 5.0),
        ("test", "failed", 2.0),
        ("lint", "timed_out", 1.0),
        ("test", "lost", 1.0),
        ("test", "interrupted", 1.0),
    ] {
        let labels = [("queue", q), ("kind", kind), ("outcome", outcome)];
        assert_eq!(
            m("kiln_jobs_finished_total", &labels),
            n,
            "{kind} {outcome}\n{text}"
        );
        assert_eq!(m("kiln_attempts_total", &[("outcome", outcome)]), n, "{outcome}");
    }
    assert_eq!(m("kiln_leases_rescued_total", &[]), 1.0);
    assert_eq!(m("kiln_job_wait_seconds_count", &[("kind", "test")]), 8.0);
    assert_eq!(m("kiln_job_run_seconds_count", &[("kind", "test")]), 7.0);
    assert_eq!(m("kiln_job_run_seconds_count", &[("kind", "lint")]), 1.0);
    assert!(
        m("kiln_job_run_seconds_sum", &[("kind", "lint")]) >= 1.0,
        "the timed-out run took its 1 s"
    );
    // The database agrees with what was counted.
    let attempts: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome::text, count(*) FROM kiln_attempts GROUP BY 1 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    for (outcome, n) in attempts {
        assert_eq!(
            m("kiln_attempts_total", &[("outcome", &outcome)]),
            n as f64,
            "{outcome}"
        );
    }
}

/// Waits until exactly one of `a`, `b` exports (failing if both ever do); true if `a`.
async fn one_exporting(a: &DepthGauges, b: &DepthGauges, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let (ea, eb) = (a.is_exporting(), b.is_exporting());
        assert!(!(ea && eb), "both instances export the fleet gauges");
        if ea != eb {
            return ea;
        }
        assert!(Instant::now() < deadline, "no instance exports after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn own_pool(url: &str) -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_is_exported_by_exactly_one_instance_which_hands_over_when_it_stops() {
    let db = TestDb::new().await;
    for _ in 0..3 {
        enqueue(&db.pool, &NewJob::new("qa", JobKind::Test, json!({})))
            .await
            .unwrap();
    }
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    for _ in 0..2 {
        enqueue(
            &db.pool,
            &NewJob::new("qb", JobKind::Lint, json!({})).run_at(later),
        )
        .await
        .unwrap();
    }
    lease::register_worker(&db.pool, "w-1", "host", 1, &["qa".into()])
        .await
        .unwrap();
    let config = ExporterConfig {
        every: Duration::from_millis(200),
        alive_within: Duration::from_secs(30),
    };
    let start = |gauges: std::sync::Arc<DepthGauges>, pool: sqlx::PgPool| {
        let stop = CancellationToken::new();
        let task = tokio::spawn(DepthExporter::new(pool, config, gauges).run(stop.clone()));
        (stop, task)
    };
    let a = DepthGauges::standalone();
    let b = DepthGauges::standalone();
    let (stop_a, task_a) = start(a.clone(), own_pool(&db.url).await);
    let (stop_b, task_b) = start(b.clone(), own_pool(&db.url).await);

    // Exactly one exports, and never both.
    let a_holds = one_exporting(&a, &b, Duration::from_secs(5)).await;
    for _ in 0..10 {
        assert_eq!(
            one_exporting(&a, &b, Duration::from_secs(1)).await,
            a_holds,
            "the lock stayed put"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (holder, other) = if a_holds { (&a, &b) } else { (&b, &a) };
    let text = holder.render();
    let m = |labels: &[(&str, &str)]| value(&text, "kiln_queue_depth", labels);
    assert_eq!(m(&[("queue", "qa"), ("state", "available")]), 3.0, "{text}");
    // Nobody serves or configured `qb`: its jobs count under `other` (issue 14).
    assert_eq!(m(&[("queue", "other"), ("state", "scheduled")]), 2.0, "{text}");
    assert!(!text.contains("qb"), "{text}");
    assert!(
        text.contains(r#"kiln_queue_depth{queue="qa",state="running"} 0"#),
        "{text}"
    );
    assert_eq!(value(&text, "kiln_workers_alive", &[]), 1.0);
    assert_eq!(
        other.render(),
        "",
        "the other instance exports no series of these families"
    );

    // The holder stops: the other takes over within a couple of periods.
    let (stop_holder, task_holder, stop_other, task_other) = if a_holds {
        (stop_a, task_a, stop_b, task_b)
    } else {
        (stop_b, task_b, stop_a, task_a)
    };
    stop_holder.cancel();
    task_holder.await.unwrap();
    assert_eq!(holder.render(), "");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !other.is_exporting() {
        assert!(Instant::now() < deadline, "no hand-over within 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value(
            &other.render(),
            "kiln_queue_depth",
            &[("queue", "qa"), ("state", "available")]
        ),
        3.0
    );

    // A holder whose connection dies stops exporting; a contender takes over.
    let c = DepthGauges::standalone();
    let (stop_c, task_c) = start(c.clone(), own_pool(&db.url).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!c.is_exporting());
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (eo, ec) = (other.is_exporting(), c.is_exporting());
        assert!(!(eo && ec), "both instances export after the hand-over");
        if eo ^ ec && Instant::now() > deadline - Duration::from_secs(4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no instance exports after the holder's connection died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_other.cancel();
    stop_c.cancel();
    task_other.await.unwrap();
    task_c.await.unwrap();
}

/// Every metric family of this process, by the `# TYPE` lines of `render()`.
fn exported_families() -> BTreeSet<String> {
    let m = metrics();
    m.jobs_enqueued.with_label_values(&["q", "test"]).inc_by(0);
    m.jobs_started.with_label_values(&["q", "test"]).inc_by(0);
    m.jobs_finished
        .with_label_values(&["q", "test", "succeeded"])
        .inc_by(0);
    m.queue_depth.with_label_values(&["q", "available"]).set(0);
    m.wait_seconds.with_label_values(&["test"]);
    m.run_seconds.with_label_values(&["test"]);
    m.attempts.with_label_values(&["succeeded"]).inc_by(0);
    m.container_start_seconds
        .with_label_values(&["kiln-python", "true"]);
    m.webhook_deliveries
        .with_label_values(&["github", "accepted"])
        .inc_by(0);
    m.schedule_ticks.with_label_values(&["s"]).inc_by(0);
    m.http_requests
        .with_label_values(&["/v1/jobs", "POST", "201"])
        .inc_by(0);
    m.http_seconds.with_label_values(&["/v1/jobs", "POST"]);
    DepthGauges::global().set_exporting(true);
    let text = render();
    DepthGauges::global().set_exporting(false);
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The `kiln_*` metric names a PromQL expression reads (histogram series mapped to their family).
fn queried_families(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("kiln_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(family.to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_kiln_exports_and_shows_them_all() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/kiln.json"
    );
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exported = exported_families();
    let mut queried = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for family in queried_families(expr) {
                assert!(
                    exported.contains(&family),
                    "panel {:?} queries {family}, which Kiln does not export (exported: {exported:?})",
                    panel["title"]
                );
                queried.insert(family);
            }
        }
    }
    let unshown: Vec<_> = exported.difference(&queried).collect();
    assert!(unshown.is_empty(), "families with no panel: {unshown:?}");
}

#[test]
fn docker_compose_file_is_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(root)
            .output()
            .ok()
    };
    let out = run("docker-compose", &["-f", "docker-compose.yml", "config", "-q"])
        .or_else(|| run("docker", &["compose", "-f", "docker-compose.yml", "config", "-q"]))
        .expect("docker-compose (or the docker compose plugin) is installed: .ci/run installs it");
    assert!(
        out.status.success(),
        "docker-compose.yml is invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    for needed in [
        "postgres:",
        "api:",
        "worker:",
        "scheduler:",
        "prometheus:",
        "grafana:",
        "--metrics-listen",
    ] {
        assert!(text.contains(needed), "docker-compose.yml lacks {needed}");
    }
}
