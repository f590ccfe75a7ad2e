//! Hardening settings of `workers.toml` in force in real `kiln worker` processes (issue 14
//! items 3 and 4): a queue's workspace quota, the per-attempt live-log cap.

use std::path::Path;
use std::time::Duration;

use kiln_queue::{JobKind, JobState, NewJob};
use kiln_testkit::TestDb;
use kiln_tests::{kiln_worker_process, store_workspace, wait_final};
use serde_json::json;

/// A Python project whose one test writes 32 MiB into its workspace and passes.
fn writes_32_mib(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        "[project]\nname = \"blob\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("test_blob.py"),
        "import os\n\n\ndef test_writes_32_mib():\n    with open(\"blob.bin\", \"wb\") as f:\n        f.write(b\"x\" * (32 << 20))\n    assert os.path.getsize(\"blob.bin\") == 32 << 20\n",
    )
    .unwrap();
}

/// A Python project whose one test prints 256 KiB and fails (pytest then prints it).
fn noisy(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        "[project]\nname = \"noisy\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("test_noisy.py"),
        "def test_noisy():\n    for i in range(4096):\n        print(\"noise \" * 9 + str(i).rjust(8))\n    assert False\n",
    )
    .unwrap();
}

/// The sandbox outcome of each run of an attempt (`timings.runs[].outcome`).
fn run_outcomes(a: &kiln_queue::AttemptRecord) -> Vec<String> {
    let d = a.sandbox_details().expect("sandbox details");
    d.timings.expect("timings")["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queues_quota_and_the_live_log_cap_come_from_workers_toml() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("workers.toml");
    std::fs::write(
        &config,
        "images = [\"python\"]\nwarm_pool = 0\n\n[worker]\nkinds = [\"test\"]\nlive_log_cap_bytes = 65536\n\n\
         [[worker.queues]]\nname = \"small\"\nconcurrency = 1\nbatch = 1\n\
         workspace_quota_bytes = 8388608\nworkspace_quota_files = 1000\n\n\
         [[worker.queues]]\nname = \"test\"\nconcurrency = 1\nbatch = 1\n",
    )
    .unwrap();
    writes_32_mib(&dir.path().join("blob"));
    noisy(&dir.path().join("noisy"));
    let blob = store_workspace(&db.pool, &dir.path().join("blob")).await;
    let loud = store_workspace(&db.pool, &dir.path().join("noisy")).await;
    let job = |queue: &str, ws: &str| NewJob::new(queue, JobKind::Test, json!({"workspace": ws}));
    let ids = kiln_tests::enqueue_ids(
        &db.pool,
        &[job("small", &blob), job("test", &blob), job("test", &loud)],
    )
    .await;
    let mut worker = kiln_worker_process(&db.url, &config, "quota-fleet", &dir.path().join("worker.log"));
    let limit = Duration::from_secs(300);
    let small = wait_final(&db.pool, ids[0], limit).await;
    let default = wait_final(&db.pool, ids[1], limit).await;
    let loud = wait_final(&db.pool, ids[2], limit).await;
    kiln_tests::terminate(&mut worker);
    let log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();

    // The small queue's 8 MiB quota ends the job `disk_quota`: failed, never retried, no pass.
    assert_eq!(small.state, JobState::Failed, "{small:?}\n{log}");
    assert!(small.result.is_none(), "{small:?}");
    let attempts = kiln_queue::admin::attempts(&db.pool, ids[0]).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(
        attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("workspace quota was exceeded")),
        "{:?}",
        attempts[0].error
    );
    assert_eq!(run_outcomes(&attempts[0]), ["disk_quota"]);

    // The same job on the default queue (1 GiB) passes.
    assert_eq!(default.state, JobState::Succeeded, "{default:?}\n{log}");
    let r = default.result.expect("a result");
    assert_eq!(
        (r["passed"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(0)),
        "{r}"
    );
    let attempts = kiln_queue::admin::attempts(&db.pool, ids[1]).await.unwrap();
    assert_eq!(run_outcomes(&attempts[0]), ["success"]);

    // The live log of the loud job stops at the configured 64 KiB; the rest is counted.
    assert_eq!(loud.state, JobState::Succeeded, "{loud:?}\n{log}");
    let mut stored = 0u64;
    let mut after = None;
    loop {
        let page = kiln_queue::logs::read(&db.pool, ids[2], after, 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.attempt, last.seq));
        stored += page.iter().map(|c| c.bytes().len() as u64).sum::<u64>();
    }
    assert!(stored <= 65536, "{stored} bytes stored");
    assert!(stored > 32768, "{stored} bytes stored");
    let drops = kiln_queue::logs::drops(&db.pool, ids[2]).await.unwrap();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(drops[0].cap_bytes, 65536);
    assert!(drops[0].dropped_bytes > 128 << 10, "{drops:?}");

    // Nothing of the worker is left on the engine.
    let docker = left_on_engine("quota-fleet");
    assert!(docker.is_empty(), "containers left: {docker:?}");
}

/// Containers and volumes still labelled with worker `id` (through the docker CLI).
fn left_on_engine(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for what in [&["ps", "-aq"][..], &["volume", "ls", "-q"][..]] {
        let out = std::process::Command::new("docker")
            .args(what)
            .args(["--filter", &format!("label=kiln.worker={id}")])
            .output()
            .unwrap();
        left.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string));
    }
    left
}

/// A workspace with a Python project and a Rust crate whose build script sleeps `build_secs`:
/// `test` runs pytest and cargo test, `lint` ruff and clippy, `security-scan` the scanners.
fn slow_mixed(dir: &Path, build_secs: u64) {
    std::fs::create_dir_all(dir.join("py")).unwrap();
    std::fs::create_dir_all(dir.join("rs/src")).unwrap();
    std::fs::write(
        dir.join("py/pyproject.toml"),
        "[project]\nname = \"calc\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("py/calc.py"),
        "import subprocess\n\n\ndef add(a, b):\n    return a + b\n\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("py/test_calc.py"),
        "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n\n\ndef test_wrong():\n    assert add(2, 2) == 5\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rs/Cargo.toml"),
        "[package]\nname = \"slow\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rs/build.rs"),
        format!("fn main() {{\n    std::thread::sleep(std::time::Duration::from_secs({build_secs}));\n}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("rs/src/lib.rs"),
        "pub fn one() -> u8 {\n    let x = 1;\n    return x;\n}\n\n#[test]\nfn one_is_one() {\n    assert_eq!(one(), 1);\n}\n",
    )
    .unwrap();
}

/// What a job's result says, without timings: counts and cases of a test, findings of the
/// others.
fn verdict_of(rec: &kiln_queue::JobRecord) -> serde_json::Value {
    let mut r = rec.result.clone().unwrap_or_default();
    if let Some(o) = r.as_object_mut() {
        o.remove("coverage_percent");
    }
    r
}

/// Samples the engine's running containers of workers `outage-*` every 200 ms until `stop`;
/// returns the most attempts of one job seen running at once, with the sample that showed
/// them (the kind-independent check: the engine's labels, not the database's rows).
fn watch_attempts(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut most, mut worst) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let out = std::process::Command::new("docker")
                .args(["ps", "--filter", "label=kiln.worker", "--format"])
                .arg("{{.Label \"kiln.job\"}} {{.Label \"kiln.attempt\"}} {{.Label \"kiln.worker\"}} {{.ID}} {{.Status}}")
                .output()
                .unwrap();
            let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.split(' ').nth(2).is_some_and(|w| w.starts_with("outage-")))
                .map(str::to_string)
                .collect();
            let mut by_job: std::collections::HashMap<&str, std::collections::HashSet<&str>> =
                Default::default();
            for l in &lines {
                let f: Vec<&str> = l.split(' ').collect();
                by_job.entry(f[0]).or_default().insert(f[1]);
            }
            let n = by_job.values().map(|a| a.len()).max().unwrap_or(0);
            if n > most {
                most = n;
                worst = lines.clone();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (most, worst)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiln_workers_ride_out_a_database_outage_longer_than_the_lease_for_every_kind() {
    // Item 6 with real `kiln worker` processes and real jobs of every kind that runs today
    // (test, lint, security-scan): Postgres stops while all three run, for more than twice the
    // lease. Each job must end as it did without an outage, spend at most one `lost`
    // attempt, and never have two attempts' containers running at once.
    let dir = tempfile::tempdir().unwrap();
    let cluster = kiln_pg::LocalCluster::start(&dir.path().join("pg")).unwrap();
    let url = cluster.url();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&url)
        .await
        .unwrap();
    kiln_queue::migrate(&pool).await.unwrap();
    slow_mixed(&dir.path().join("ws"), 15);
    let ws = store_workspace(&pool, &dir.path().join("ws")).await;
    let config = dir.path().join("workers.toml");
    std::fs::write(
        &config,
        "images = [\"python\", \"rust\"]\nwarm_pool = 0\n\n[worker]\nkinds = [\"test\", \"lint\", \"security-scan\"]\n\
         lease = 3\nheartbeat_every = 0.5\npoll_every = 0.5\nmaintenance_every = 0.5\nshutdown_grace = 5\n\n\
         [[worker.queues]]\nname = \"test\"\nconcurrency = 1\nbatch = 1\n\
         [[worker.queues]]\nname = \"lint\"\nconcurrency = 1\nbatch = 1\n\
         [[worker.queues]]\nname = \"security-scan\"\nconcurrency = 1\nbatch = 1\n",
    )
    .unwrap();
    let mut workers: Vec<_> = (0..2)
        .map(|i| {
            let id = format!("outage-{i}-{}", std::process::id());
            kiln_worker_process(&url, &config, &id, &dir.path().join(format!("worker-{i}.log")))
        })
        .collect();
    let jobs = |ws: &str| {
        [JobKind::Test, JobKind::Lint, JobKind::SecurityScan]
            .map(|k| NewJob::new(k.as_str(), k, json!({"workspace": ws})).max_attempts(3))
    };
    let logs = || {
        (0..2)
            .map(|i| std::fs::read_to_string(dir.path().join(format!("worker-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    // Without an outage: what each job ends with.
    let calm = kiln_tests::enqueue_ids(&pool, &jobs(&ws)).await;
    let mut expected = Vec::new();
    for id in &calm {
        let rec = wait_final(&pool, *id, Duration::from_secs(300)).await;
        assert_eq!(rec.state, JobState::Succeeded, "{rec:?}\n{}", logs());
        expected.push(verdict_of(&rec));
    }

    // The same code under another digest: the validation cache (keyed by the workspace's
    // digest) must not answer the outage run's jobs without running them.
    std::fs::write(dir.path().join("ws/NOTES.txt"), "the outage run\n").unwrap();
    let ws = store_workspace(&pool, &dir.path().join("ws")).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_attempts(stop.clone());
    let ids = kiln_tests::enqueue_ids(&pool, &jobs(&ws)).await;
    kiln_tests::wait_for_count(
        &pool,
        "SELECT count(*) FROM kiln_jobs WHERE state = 'running' AND id > (SELECT max(id) - 3 FROM kiln_jobs)",
        3,
        Duration::from_secs(60),
    )
    .await;
    cluster.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let cluster = kiln_pg::LocalCluster::start(&dir.path().join("pg")).unwrap();
    let mut ended = Vec::new();
    for id in &ids {
        ended.push(wait_final(&pool, *id, Duration::from_secs(300)).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (most, worst) = watcher.join().unwrap();
    for w in &mut workers {
        kiln_tests::terminate(w);
    }
    for (rec, want) in ended.iter().zip(&expected) {
        assert_eq!(rec.state, JobState::Succeeded, "{rec:?}\n{}", logs());
        assert_eq!(&verdict_of(rec), want, "job {} ({})", rec.id, rec.kind);
    }
    let tries: Vec<(i64, i32, String, String, String)> = sqlx::query_as(
        "SELECT job_id, attempt, worker_id, outcome::text, coalesce(error, '') FROM kiln_attempts WHERE job_id = ANY($1) ORDER BY job_id, attempt",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    eprintln!("attempts: {tries:#?}");
    let said: Vec<String> = logs()
        .lines()
        .filter(|l| {
            ["fenc", "lease", "rescued", "stopping", "lost"]
                .iter()
                .any(|w| l.contains(w))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(
        most,
        1,
        "two attempts of one job ran at the same time: {worst:#?}\n{}",
        said.join("\n")
    );
    let lost: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT job_id, count(*) FILTER (WHERE outcome = 'lost') FROM kiln_attempts WHERE job_id = ANY($1) GROUP BY job_id",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    // The outage reached running jobs: at least one attempt was stopped and run again.
    assert!(tries.len() > ids.len(), "no attempt was interrupted: {tries:?}");
    assert_eq!(lost.len(), 3, "{lost:?}");
    assert!(
        lost.iter().all(|(_, n)| *n <= 1),
        "lost attempts per job: {lost:?}"
    );
    let mut left = Vec::new();
    for i in 0..2 {
        left.extend(left_on_engine(&format!("outage-{i}-{}", std::process::id())));
    }
    assert!(left.is_empty(), "left on the engine: {left:?}");
    pool.close().await;
    cluster.remove().unwrap();
}

/// Writes `workers.toml` in `dir` for a worker of `test` jobs with `warm_pool` warm
/// containers of the python image, and returns its path.
fn test_worker_config(dir: &Path, warm_pool: u32) -> std::path::PathBuf {
    let config = dir.join("workers.toml");
    std::fs::write(
        &config,
        format!("images = [\"python\"]\nwarm_pool = {warm_pool}\n\n[worker]\nkinds = [\"test\"]\n"),
    )
    .unwrap();
    config
}

/// A `kiln worker` whose start fails (here its registration: a trigger refuses it after 3 s,
/// time enough for the warm pool to start its container) still shuts its services down: its
/// warm container and volume leave the engine with it. Before, the process exited with the
/// error and left them (found by the chaos run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_to_start_leaves_nothing_on_the_engine() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_worker() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(3); RAISE EXCEPTION 'registration refused by the test'; END $$; \
         CREATE TRIGGER refuse_worker BEFORE INSERT OR UPDATE ON kiln_workers \
         FOR EACH ROW EXECUTE FUNCTION refuse_worker();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = test_worker_config(dir.path(), 1);
    let log_path = dir.path().join("worker.log");
    let mut worker = kiln_worker_process(&db.url, &config, "fails-to-start", &log_path);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the worker never exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!status.success(), "{log}");
    assert!(log.contains("registration refused by the test"), "{log}");
    let left = left_on_engine("fails-to-start");
    assert!(left.is_empty(), "left on the engine: {left:?}\n{log}");
}

/// A test that panics while its `kiln worker` runs leaves no worker behind: the process is
/// killed when its handle is dropped (before, two workers of a failed outage test kept running
/// after it, re-parented to PID 1).
#[tokio::test]
async fn a_worker_of_a_panicking_test_does_not_outlive_it() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_worker_config(dir.path(), 0);
    let log = dir.path().join("worker.log");
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = pid.clone();
    let url = db.url.clone();
    let (config_at, log_at) = (config.clone(), log.clone());
    let panicked = std::thread::spawn(move || {
        let worker = kiln_worker_process(&url, &config_at, "panicking-test", &log_at);
        seen.store(worker.id(), std::sync::atomic::Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log_at)
            .unwrap_or_default()
            .contains("worker started")
        {
            assert!(std::time::Instant::now() < deadline, "the worker never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the test fails while its worker runs");
    })
    .join();
    assert!(panicked.is_err());
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("worker started"),
        "the worker never started: {said}"
    );
    let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(pid, 0);
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    if alive {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        !alive,
        "worker {pid} outlived its test\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
