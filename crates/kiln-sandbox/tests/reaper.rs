//! A worker killed with SIGKILL mid-job leaves its container behind; the reaper of the next
//! worker removes it (and its volume).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{finish, python_image, sandbox};
use kiln_sandbox::reaper::{containers_of, volumes_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_container_is_reaped() {
    let worker = format!("test-killed-{}", uuid::Uuid::new_v4().simple());
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

    let sb = sandbox("reaper").await; // connecting reaps at start-up
    let left = containers_of(sb.docker(), &worker).await.unwrap();
    let vols = volumes_of(sb.docker(), &worker).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(vols.is_empty(), "volumes left behind: {vols:?}");
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_spares_live_workers() {
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
