//! Support shared by the integration tests: test handlers, worker processes, an API server.

pub mod api;
pub mod byhand;

use kiln_queue::{ClaimedJob, JobKind};
use kiln_worker::{JobContext, JobError, QueueConfig, Worker, WorkerConfig};
use sqlx::PgPool;
use std::time::{Duration, Instant};

pub mod generation;
pub mod validation;

/// A handler for tests: sleeps `payload.sleep_ms`, fails when `payload.fail` is set, and
/// records each execution in `test_executions` (created on demand) so tests can count them.
pub async fn recording_handler(
    pool: PgPool,
    job: ClaimedJob,
    ctx: JobContext,
) -> Result<serde_json::Value, JobError> {
    let sleep_ms = job.payload.get("sleep_ms").and_then(|v| v.as_u64()).unwrap_or(0);
    if job
        .payload
        .get("record")
        .and_then(|v| v.as_bool())
        .unwrap_or(true)
    {
        sqlx::query("INSERT INTO test_executions (job_id, attempt, worker_id) VALUES ($1, $2, $3)")
            .bind(job.id)
            .bind(job.attempt)
            .bind(&*ctx.worker_id)
            .execute(&pool)
            .await
            .map_err(|e| JobError::retryable(format!("record execution: {e}")))?;
    }
    if sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    }
    // The worker cannot run it (its engine is gone) on the first execution only.
    if let Some(msg) = job.payload.get("unavailable_once").and_then(|v| v.as_str()) {
        let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM test_executions WHERE job_id = $1")
            .bind(job.id)
            .fetch_one(&pool)
            .await
            .map_err(|e| JobError::retryable(format!("count executions: {e}")))?;
        if runs == 1 {
            return Err(JobError::Unavailable {
                message: msg.to_string(),
                pause: Duration::from_millis(100),
            });
        }
    }
    if job
        .payload
        .get("panic")
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
    {
        panic!("handler asked to panic");
    }
    if let Some(msg) = job.payload.get("fail").and_then(|v| v.as_str()) {
        return Err(
            if job
                .payload
                .get("permanent")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
            {
                JobError::permanent(msg)
            } else {
                JobError::retryable(msg)
            },
        );
    }
    Ok(serde_json::json!({"slept_ms": sleep_ms, "attempt": job.attempt}))
}

/// Creates the table [`recording_handler`] writes to.
pub async fn create_executions_table(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS test_executions (job_id bigint NOT NULL, attempt int NOT NULL, \
         worker_id text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(pool)
    .await
    .expect("create test_executions");
}

/// A worker running [`recording_handler`] for every kind on `queues`.
pub fn recording_worker(pool: &PgPool, config: WorkerConfig) -> Worker {
    let mut builder = Worker::builder(pool.clone(), config);
    for kind in JobKind::ALL {
        let pool = pool.clone();
        builder = builder.handler(*kind, move |job, ctx| recording_handler(pool.clone(), job, ctx));
    }
    builder.build().expect("valid worker config")
}

/// Worker settings for tests: short lease and timers so rescue and shutdown are quick.
pub fn fast_config(queue: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        queues: vec![QueueConfig::new(queue).concurrency(concurrency).batch(100)],
        lease: Duration::from_secs(3),
        heartbeat_every: Duration::from_millis(500),
        poll_every: Duration::from_millis(200),
        maintenance_every: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

/// Polls `query` (a count) until it equals `want`, or panics after `limit`.
pub async fn wait_for_count(pool: &PgPool, query: &'static str, want: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got: i64 = sqlx::query_scalar(query).fetch_one(pool).await.unwrap_or(-1);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} for `{query}` = {want}, last saw {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `kiln-test-worker` as a separate process (so tests can SIGKILL it).
pub fn worker_process(db_url: &str, queue: &str, id: &str) -> std::process::Child {
    std::process::Command::new(test_worker_binary())
        .args([db_url, queue, "4", id])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn kiln-test-worker")
}

/// Path of the `kiln-test-worker` binary built next to the test executables.
fn test_worker_binary() -> std::path::PathBuf {
    binary("kiln-test-worker")
}

/// Path of a binary of the workspace built next to the test executables.
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join(name)
}

/// Starts `kiln-test-scheduler` as a separate process (so tests can SIGKILL it).
pub fn scheduler_process(db_url: &str, id: &str) -> std::process::Child {
    std::process::Command::new(binary("kiln-test-scheduler"))
        .args([db_url, id])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn kiln-test-scheduler")
}

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Enqueues `jobs` and returns their ids, in order.
pub async fn enqueue_ids(pool: &PgPool, jobs: &[kiln_queue::NewJob]) -> Vec<i64> {
    kiln_queue::enqueue_many(pool, jobs)
        .await
        .expect("enqueue")
        .iter()
        .map(|e| e.id)
        .collect()
}

/// The `kiln` binary, built (or found up to date) by cargo for tests that run the real CLI.
pub fn kiln_binary() -> std::path::PathBuf {
    built_binary("kiln-cli", "kiln")
}

/// Binary `bin` of workspace package `package`, built (or found up to date) by cargo.
pub fn built_binary(package: &str, bin: &str) -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .env("SQLX_OFFLINE", "true");
    // The test runner sets the test crate's CARGO_MANIFEST_DIR, CARGO_PKG_* and OUT_DIR;
    // build scripts (ring's) rerun when those differ, so a build from here would rebuild what
    // `scripts/test` built from the shell, and the next shell build would rebuild it back.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let from_runner = (k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_MANIFEST_"))
            || k == "OUT_DIR"
            || k == "CARGO_CRATE_NAME"
            || k == "CARGO_PRIMARY_PACKAGE";
        if from_runner {
            cmd.env_remove(k.as_ref());
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} --bin {bin} failed");
    binary(bin)
}

/// A workspace digest that is well-formed (payloads are checked at enqueue; no job in these
/// tests runs it).
pub const WORKSPACE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A well-formed payload for a job of `kind` (validation kinds: a workspace digest).
pub fn payload_for(kind: &str) -> serde_json::Value {
    match kind {
        "generation" => serde_json::json!({"prompt": "write a test"}),
        "preview" => serde_json::json!({"workspace": WORKSPACE, "port": 8000}),
        "notification" => {
            serde_json::json!({"event_id": 1, "endpoint": {"type": "webhook", "url": "https://example.com/hook"}})
        }
        _ => serde_json::json!({"workspace": WORKSPACE}),
    }
}

/// A real `kiln worker` process on `db_url` with the fleet file `config`, its log (stderr)
/// written to `log`. Stop it with [`terminate`]; dropped while running, it is killed.
pub fn kiln_worker_process(
    db_url: &str,
    config: &std::path::Path,
    id: &str,
    log: &std::path::Path,
) -> WorkerProcess {
    kiln_worker_process_env(db_url, config, id, log, &[])
}

/// [`kiln_worker_process`] with extra environment (e.g. `DOCKER_HOST`: a worker on another
/// engine).
pub fn kiln_worker_process_env(
    db_url: &str,
    config: &std::path::Path,
    id: &str,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> WorkerProcess {
    let log = std::fs::File::create(log).expect("worker log file");
    let child = std::process::Command::new(kiln_binary())
        .args(["worker", "--config"])
        .arg(config)
        .args(["--id", id])
        .envs(env.iter().copied())
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn kiln worker");
    WorkerProcess(child)
}

/// A `kiln worker` child process that is killed (SIGKILL) and reaped when dropped still
/// running, so a test that panics leaves no worker behind; it derefs to its `Child`.
pub struct WorkerProcess(std::process::Child);

impl std::ops::Deref for WorkerProcess {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Stores `dir` as a workspace artifact and returns its digest.
pub async fn store_workspace(pool: &PgPool, dir: &std::path::Path) -> String {
    let packed = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES).expect("pack");
    kiln_artifacts::store(pool, &packed).await.expect("store");
    packed.digest
}

/// Waits until job `id` is final (panics after `limit`) and returns it. A read that fails
/// (a pool timing out on a loaded machine, a database restarting) is tried again until then.
pub async fn wait_final(pool: &PgPool, id: i64, limit: Duration) -> kiln_queue::JobRecord {
    let deadline = Instant::now() + limit;
    loop {
        match kiln_queue::admin::get_job(pool, id).await {
            Ok(rec) if rec.state.is_final() => return rec,
            Ok(rec) => assert!(
                Instant::now() < deadline,
                "job {id} not final after {limit:?}: {rec:?}"
            ),
            Err(e) => assert!(
                Instant::now() < deadline,
                "job {id} could not be read for {limit:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
