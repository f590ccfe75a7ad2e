//! Shared helpers of the sandbox tests: the real Docker engine, the images built by
//! `scripts/build-images` (tags found through kiln-images), one worker id per test.

#![allow(dead_code)]

use std::time::Duration;

use kiln_sandbox::policy::Owner;
use kiln_sandbox::reaper::{containers_of, volumes_of};
use kiln_sandbox::{JobLabels, JobSpec, Sandbox};

/// The python image's tag for the current inputs; fails loudly when it was not built.
pub fn python_image() -> String {
    let tag = kiln_images::image_tag(&kiln_images::default_images_dir(), "python")
        .expect("images/ inputs readable");
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "image {tag} is missing: run scripts/build-images first"
    );
    tag
}

/// A sandbox for one test, under a worker id of its own.
pub async fn sandbox(test: &str) -> Sandbox {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
    let worker = format!("test-{test}-{}", uuid::Uuid::new_v4().simple());
    Sandbox::connect_as(owner(&worker))
        .await
        .expect("docker engine reachable")
}

/// `worker` of a fleet of its own (this test process): the registries of other tests' fleets
/// on the same engine never judge its containers.
pub fn owner(worker: &str) -> Owner {
    Owner::current(worker).in_fleet(format!("test-sandbox-{}", std::process::id()))
}

/// `sh -c SCRIPT` in the python image, 30 s timeout.
pub fn job(sb: &Sandbox, script: &str) -> JobSpec {
    let labels = JobLabels {
        job_id: 42,
        attempt: 1,
        worker_id: sb.owner().worker_id.clone(),
    };
    let mut spec = JobSpec::new(python_image(), &["sh", "-c", script], labels);
    spec.timeout = Duration::from_secs(30);
    spec
}

/// Shuts the sandbox down and checks that none of its containers or volumes is left.
pub async fn finish(sb: Sandbox) {
    sb.shutdown().await;
    let worker = sb.owner().worker_id.clone();
    let containers = containers_of(sb.docker(), &worker).await.unwrap();
    let volumes = volumes_of(sb.docker(), &worker).await.unwrap();
    assert!(containers.is_empty(), "containers left: {containers:?}");
    assert!(volumes.is_empty(), "volumes left: {volumes:?}");
}

/// The host is still healthy: it can start a process and the engine answers.
pub async fn host_healthy(sb: &Sandbox) {
    let status = std::process::Command::new("true")
        .status()
        .expect("spawn on host");
    assert!(status.success());
    sb.docker().ping().await.expect("engine answers");
}
