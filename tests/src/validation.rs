//! Support for the validation tests: a worker running the real validation handlers on the
//! real images and Docker engine, a pipeline settler, and the fixtures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_pipeline::{Source, SubmitOptions};
use kiln_sandbox::Sandbox;
use kiln_validate::{Images, Validator};
use kiln_worker::{QueueConfig, Worker, WorkerConfig};
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A fixture project under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The job images' tags, from the source tree's `images/`.
pub fn images() -> Images {
    Images::from_dir(&kiln_images::default_images_dir()).expect("image tags")
}

/// A validation worker (test, lint and security-scan, one of each at a time) and a settler,
/// on `pool`, until [`Rig::stop`].
pub struct Rig {
    /// The sandbox the worker runs jobs in.
    pub sandbox: Sandbox,
    /// The worker's id.
    pub worker_id: String,
    /// The warm pool, when the rig has one.
    pub pool: Option<std::sync::Arc<kiln_sandbox::pool::WarmPool>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Rig {
    /// Starts the worker and the settler.
    pub async fn start(pool: &PgPool, name: &str) -> Rig {
        Self::start_with_pool(pool, name, 0).await
    }

    /// Like [`Rig::start`], with a warm pool of `warm` containers per job image.
    pub async fn start_with_pool(pool: &PgPool, name: &str, warm: usize) -> Rig {
        let worker_id = format!("{name}-{}", std::process::id());
        let fleet = kiln_queue::fleet_id(pool).await.expect("the fleet's identity");
        let owner = kiln_sandbox::policy::Owner::current(&worker_id).in_fleet(fleet);
        let sandbox = Sandbox::connect_as(owner).await.expect("docker engine");
        let warm_pool = (warm > 0).then(|| {
            let imgs = images();
            let tags: Vec<String> = kiln_images::JOB_IMAGES
                .iter()
                .map(|n| imgs.tag(n).unwrap().to_string())
                .collect();
            sandbox.start_pool(&tags, warm)
        });
        let validator = Validator::new(pool.clone(), sandbox.clone(), images());
        let config = WorkerConfig {
            id: Some(worker_id.clone()),
            queues: ["test", "lint", "security-scan"]
                .iter()
                .map(|q| QueueConfig::new(*q).concurrency(1).batch(1))
                .collect(),
            poll_every: Duration::from_millis(200),
            maintenance_every: Duration::from_millis(500),
            ..WorkerConfig::default()
        };
        let stop = CancellationToken::new();
        let listener = kiln_queue::Listener::start(pool.clone(), stop.clone());
        let worker = validator
            .register(Worker::builder(pool.clone(), config).listener(listener.clone()))
            .build()
            .expect("worker config");
        let s = stop.clone();
        let w = tokio::spawn(async move { worker.run(s.cancelled_owned()).await.expect("worker runs") });
        let settler = tokio::spawn(kiln_pipeline::settler(
            pool.clone(),
            listener,
            Duration::from_millis(500),
            stop.clone(),
        ));
        Rig {
            sandbox,
            worker_id,
            pool: warm_pool,
            stop,
            tasks: vec![w, settler],
        }
    }

    /// Stops the worker and settler and waits until every container is removed.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.sandbox.removals_done().await;
        self.sandbox.shutdown().await;
    }
}

/// The stdout of `kiln submit validate --wait --json`: exactly one line, one JSON object with
/// the pipeline summary's keys and no others.
pub fn one_summary_object(stdout: &[u8]) -> serde_json::Value {
    let stdout = String::from_utf8(stdout.to_vec()).expect("UTF-8 stdout");
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON object: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON stdout");
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "lint",
            "pipeline_id",
            "quality_score",
            "security",
            "test",
            "verdict"
        ]
    );
    v
}

/// (passed, failed, skipped, errors) of a test result.
pub fn counts(test: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| test[k].as_u64().unwrap_or_else(|| panic!("{k} in {test}"));
    (n("passed"), n("failed"), n("skipped"), n("errors"))
}

/// Submits `source`, waits for the verdict, returns the summary and the wall time.
pub async fn validate(
    db: &kiln_testkit::TestDb,
    source: Source,
    opts: SubmitOptions,
) -> (Value, Duration, kiln_pipeline::PipelineView) {
    let t = Instant::now();
    let sub = kiln_pipeline::submit(&db.pool, source, &opts)
        .await
        .expect("submit");
    let view = kiln_pipeline::wait(&db.pool, None, sub.pipeline_id, Duration::from_secs(400))
        .await
        .expect("pipeline finishes");
    let wall = t.elapsed();
    let summary = view.summary();
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap());
    (summary, wall, view)
}

/// (tool, rule, file, line, severity) of every finding, sorted as the result is.
pub fn findings(v: &Value) -> Vec<(String, String, String, Option<u64>, String)> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["tool"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap().to_string(),
                f["file"].as_str().unwrap().to_string(),
                f["line"].as_u64(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
