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
