//! The warm pool against the real Docker engine: a warm container removed behind the pool's
//! back costs a cold start, never the job.

mod common;

use bollard::query_parameters::RemoveContainerOptionsBuilder;
use common::{finish, job, python_image, sandbox};
use kiln_sandbox::reaper::containers_of;
use kiln_sandbox::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_warm_container_falls_back_to_a_cold_start() {
    let sb = sandbox("warm-gone").await;
    let image = python_image();
    let pool = sb.start_pool(std::slice::from_ref(&image), 1);
    assert!(pool.wait_full(std::time::Duration::from_secs(60)).await);
    // Another fleet's reaper (or an operator) removes the waiting container.
    let ids = containers_of(sb.docker(), &sb.owner().worker_id).await.unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    sb.docker().remove_container(&ids[0], Some(rm)).await.unwrap();
    let r = sb.run(&job(&sb, "echo ran"), None).await.expect("the job runs");
    assert_eq!(r.outcome, Outcome::Success, "stderr: {}", r.stderr.text());
    assert_eq!(r.stdout.text(), "ran\n");
    assert!(!r.warm, "it ran in a cold container");
    assert_ne!(r.container_id, ids[0]);
    finish(sb).await;
}

/// A container removed while its job runs (its engine restarted, or another fleet's reaper
/// took it) is an error the job can be retried for, never a tool that "exited non-zero with no
/// exit code": that reading failed validation jobs permanently in the chaos run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_removed_under_its_job_is_a_retryable_error() {
    let sb = sandbox("run-gone").await;
    let spec = job(&sb, "echo started; sleep 30");
    let running = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(&spec, None).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = loop {
        let ids = containers_of(sb.docker(), &sb.owner().worker_id).await.unwrap();
        if let Some(id) = ids.first() {
            let running = sb.docker().inspect_container(id, None).await.ok();
            if running.and_then(|c| c.state).and_then(|s| s.running) == Some(true) {
                break id.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job's container never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    sb.docker().remove_container(&id, Some(rm)).await.unwrap();
    match running.await.unwrap() {
        Err(e) => assert!(e.is_retryable(), "not retryable: {e}"),
        Ok(r) => panic!(
            "a removed container read as a finished run: {:?}, exit {:?}",
            r.outcome, r.exit_code
        ),
    }
    finish(sb).await;
}

/// A warm container stopped behind the pool's back (its engine restarted: the engine stops
/// every container) costs a cold start, never the job: the chaos run's lint job failed with
/// "409: Container … is not running" before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_warm_container_falls_back_to_a_cold_start() {
    let sb = sandbox("warm-stopped").await;
    let image = python_image();
    let pool = sb.start_pool(std::slice::from_ref(&image), 1);
    assert!(pool.wait_full(std::time::Duration::from_secs(60)).await);
    let ids = containers_of(sb.docker(), &sb.owner().worker_id).await.unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    sb.docker().kill_container(&ids[0], None).await.unwrap();
    let r = sb.run(&job(&sb, "echo ran"), None).await.expect("the job runs");
    assert_eq!(r.outcome, Outcome::Success, "stderr: {}", r.stderr.text());
    assert_eq!(r.stdout.text(), "ran\n");
    assert!(!r.warm, "it ran in a cold container");
    finish(sb).await;
}
