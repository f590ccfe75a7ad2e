//! A worker killed with SIGKILL mid-job leaves its container behind; the reaper of the next
//! worker removes it (and its volume).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptionsBuilder,
};
use common::{finish, job, python_image, sandbox};
use kiln_sandbox::containers::start_container;
use kiln_sandbox::policy::{process_start, Owner};
use kiln_sandbox::reaper::{containers_of, volumes_of, Liveness};
use kiln_sandbox::Limits;

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

/// Starts a container and volume labelled as `owner`'s, as a worker of another process would.
async fn plant(owner: &Owner) -> kiln_sandbox::containers::Started {
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    start_container(
        &docker,
        &python_image(),
        &Limits::default(),
        owner.labels(None),
        &["no-new-privileges".to_string()],
    )
    .await
    .unwrap()
}

/// The `kiln.worker` labels of every Kiln container and volume on the engine.
fn workers_on_the_engine() -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        [
            "ps",
            "-a",
            "--filter",
            "label=kiln.managed=true",
            "--format",
            "{{.Label \"kiln.worker\"}}",
        ],
        [
            "volume",
            "ls",
            "--filter",
            "label=kiln.managed=true",
            "--format",
            "{{.Label \"kiln.worker\"}}",
        ],
    ] {
        let o = Command::new("docker").args(args).output().expect("docker CLI");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_owned()),
        );
    }
    out.retain(|w| !w.is_empty());
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_objects_go_whatever_host_label_they_carry() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox("registry").await;
    // A worker absent from the registry whose labels name this host and a running pid (pid 1
    // with its real start time: the pid check alone calls it alive), and one on another host.
    let mut here = Owner::current("ghost-here");
    here.worker_id = format!("test-ghost-here-{}", uuid::Uuid::new_v4().simple());
    here.pid = 1;
    here.pid_start = process_start(1).expect("pid 1 is readable");
    let mut elsewhere = Owner::current("ghost-elsewhere");
    elsewhere.worker_id = format!("test-ghost-elsewhere-{}", uuid::Uuid::new_v4().simple());
    elsewhere.host = "another-host.invalid".into();
    let (a, b) = (plant(&here).await, plant(&elsewhere).await);
    // Without the registry both are spared; with it (grace 0 here) both go.
    let spared = sb.reap(None).await.unwrap();
    assert!(!spared.containers.contains(&a.id) && !spared.containers.contains(&b.id));
    // Every other worker with objects on the engine counts as live: the tests of other
    // binaries run beside this one on the same engine, each its own fleet, and a registry of
    // this test alone would condemn their running jobs (it did: their writers were SIGKILLed).
    let ghosts = [here.worker_id.clone(), elsewhere.worker_id.clone()];
    let live: Vec<String> = workers_on_the_engine()
        .into_iter()
        .filter(|w| !ghosts.contains(w))
        .collect();
    let reaped = sb
        .reap_with(Some(Liveness {
            live_workers: &live,
            min_age: Duration::ZERO,
        }))
        .await
        .unwrap();
    for c in [&a, &b] {
        assert!(reaped.containers.contains(&c.id), "{reaped:?}");
        assert!(reaped.volumes.contains(&c.volume), "{reaped:?}");
    }
    for w in [&here.worker_id, &elsewhere.worker_id] {
        assert!(leftovers(w).await.is_empty());
        assert!(volumes_of(sb.docker(), w).await.unwrap().is_empty());
    }
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_removal_is_retried_by_the_next_pass() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox("retry").await;
    let image = python_image();
    let pool = sb.start_pool(std::slice::from_ref(&image), 1);
    assert!(pool.wait_full(Duration::from_secs(60)).await);
    let ids = containers_of(sb.docker(), &sb.owner().worker_id).await.unwrap();
    let warm = sb
        .docker()
        .inspect_container(&ids[0], None::<InspectContainerOptions>)
        .await
        .unwrap();
    let volume = warm.mounts.unwrap()[0].name.clone().unwrap();
    // Another container holding the job's volume makes its removal fail.
    let blocker = sb
        .docker()
        .create_container(
            None::<CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["true".into()]),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!("{volume}:/held")]),
                    network_mode: Some("none".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let r = sb.run(&job(&sb, "echo hi"), None).await.unwrap();
    assert!(r.warm);
    sb.removals_done().await;
    let vols = volumes_of(sb.docker(), &sb.owner().worker_id).await.unwrap();
    assert!(vols.contains(&volume), "the removal should have failed: {vols:?}");
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    sb.docker().remove_container(&blocker.id, Some(rm)).await.unwrap();
    sb.reap(None).await.unwrap();
    let vols = volumes_of(sb.docker(), &sb.owner().worker_id).await.unwrap();
    assert!(!vols.contains(&volume), "not retried: {vols:?}");
    finish(sb).await;
}

/// A container of this worker that nothing tracks (a warm container whose start, or whose
/// removal after a failed start, hit an engine restart) goes when the worker shuts down: the
/// reaper never takes a live worker's objects, so shutdown is the last chance. Seen in the chaos
/// run: two warm containers and their volumes left on the restarted engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_this_workers_untracked_objects() {
    let sb = sandbox("untracked").await;
    let planted = plant(sb.owner()).await;
    let mine = containers_of(sb.docker(), &sb.owner().worker_id).await.unwrap();
    assert!(mine.contains(&planted.id), "{mine:?}");
    finish(sb).await;
}
