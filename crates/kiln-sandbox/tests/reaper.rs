//! A worker killed with SIGKILL mid-job leaves its container behind; the reaper of the next
//! worker removes it (and its volume).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{finish, python_image, sandbox};
use kiln_sandbox::reaper::{containers_of, volumes_of};

/// The tests of this file reap at connect: run them one at a time so each sees its own
/// leftovers before a reaper removes them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a worker process running `sleep` in a job, waits until the job runs, SIGKILLs it;
/// returns its worker id.
fn kill_a_worker_mid_job(name: &str) -> String {
    let worker = format!("test-{name}-{}", uuid::Uuid::new_v4().simple());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-sandbox-run"))
        .args(["--worker", &worker, "--image", &python_image(), "--"])
        .args(["sh", "-c", "echo ready; sleep 1000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("readable");
    assert_eq!(first, "stdout: ready");
    child.kill().expect("SIGKILL the worker mid-job");
    child.wait().unwrap();
    worker
}

/// Kiln containers of `worker`, seen through a plain client (no reaping).
async fn leftovers(worker: &str) -> Vec<String> {
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    containers_of(&docker, worker).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_container_is_reaped_at_start_up() {
    let _serial = SERIAL.lock().await;
    let worker = kill_a_worker_mid_job("killed");
    assert_eq!(
        leftovers(&worker).await.len(),
        1,
        "the killed worker left its container"
    );
    let sb = sandbox("reaper").await; // connecting reaps at start-up
    let left = containers_of(sb.docker(), &worker).await.unwrap();
    let vols = volumes_of(sb.docker(), &worker).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(vols.is_empty(), "volumes left behind: {vols:?}");
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_spares_live_workers() {
    let _serial = SERIAL.lock().await;
    let a = sandbox("live-a").await;
    let pool = a.start_pool(&[python_image()], 1);
    assert!(pool.wait_full(std::time::Duration::from_secs(60)).await);
    let b = sandbox("live-b").await;
    let reaped = b.reap(None).await.unwrap();
    let mine = containers_of(a.docker(), &a.owner().worker_id).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert!(!reaped.containers.contains(&mine[0]));
    finish(b).await;
    finish(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_reaper_removes_leftovers() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox("periodic").await;
    sb.start_reaper(std::time::Duration::from_millis(200), None);
    let worker = kill_a_worker_mid_job("killed-later");
    // Wait (bounded) until a reaper pass has removed both the container and its volume.
    let mut left = (Vec::new(), Vec::new());
    for _ in 0..100 {
        left = (
            containers_of(sb.docker(), &worker).await.unwrap(),
            volumes_of(sb.docker(), &worker).await.unwrap(),
        );
        if left.0.is_empty() && left.1.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(left.0.is_empty() && left.1.is_empty(), "left behind: {left:?}");
    finish(sb).await;
}
