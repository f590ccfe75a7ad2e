//! The second Docker engine: it starts, takes an image from the main engine, runs containers,
//! survives a crash and a restart, and leaves nothing behind.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use kiln_testkit::engine::{remove_leftovers, SecondEngine, DIR_PREFIX};

/// A `kiln-base:*` tag of the main engine (the smallest job image; scripts/build-images).
async fn base_image() -> String {
    let main = Docker::connect_with_defaults().unwrap();
    let filters = HashMap::from([("reference".to_string(), vec!["kiln-base".to_string()])]);
    let images = main
        .list_images(Some(ListImagesOptionsBuilder::new().filters(&filters).build()))
        .await
        .unwrap();
    images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .find(|t| t.starts_with("kiln-base:"))
        .expect("kiln-base image missing: run scripts/build-images first")
}

async fn run(docker: &Docker, image: &str, cmd: &[&str]) -> String {
    let body = ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        labels: Some(HashMap::from([("kiln.test".to_string(), "engine".to_string())])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .unwrap();
    docker.start_container(&c.id, None).await.unwrap();
    c.id
}

fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmd).contains(needle).then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_runs_containers_survives_a_crash_and_leaves_nothing() {
    let image = base_image().await;
    let mut engine = SecondEngine::start().await.unwrap();
    let dir = engine.dir().to_path_buf();
    let took = engine.load_images(&[&image]).await.unwrap();
    eprintln!(
        "second engine: {} started in {:?}; {image} loaded in {took:?}",
        engine.storage_driver(),
        engine.started_in
    );
    assert!(engine.docker_host().ends_with("/docker.sock"));

    // A container runs to completion on the second engine, and only there.
    let done = run(engine.docker(), &image, &["true"]).await;
    let mut wait = engine
        .docker()
        .wait_container(&done, None::<WaitContainerOptions>);
    let exit = wait.next().await.unwrap().unwrap();
    assert_eq!(exit.status_code, 0);
    let main = Docker::connect_with_defaults().unwrap();
    assert!(main.inspect_container(&done, None).await.is_err());

    // A long one keeps running through a crash of dockerd; after the restart the engine
    // answers and still knows it.
    let long = run(engine.docker(), &image, &["sleep", "1000"]).await;
    engine.kill();
    assert!(engine.docker().ping().await.is_err());
    engine.restart().await.unwrap();
    eprintln!(
        "second engine: restarted after a crash in {:?}",
        engine.started_in
    );
    let filters = HashMap::from([("label".to_string(), vec!["kiln.test=engine".to_string()])]);
    let listed = engine
        .docker()
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    assert!(
        listed.iter().any(|c| c.id.as_deref() == Some(long.as_str())),
        "{listed:?}"
    );
    // An image loaded once stays: a second load is a no-op.
    assert!(engine.load_images(&[&image]).await.unwrap() < Duration::from_secs(5));
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    engine.docker().remove_container(&done, Some(rm)).await.unwrap();

    // Dropped with a container still running: nothing of it is left.
    drop(engine);
    assert!(!dir.exists(), "{} left", dir.display());
    let needle = format!("{}/", dir.display());
    assert!(processes_mentioning(&needle).is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&needle), "mounts left under {needle}");
}

#[test]
fn a_dead_tests_engine_directory_is_removed() {
    // A directory named for a pid that is not running (pid_max is at most 2^22).
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}4999999-dead"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("owner"), "4999999 12345\n").unwrap();
    // And one of this live process, which must stay.
    let mine = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-live", std::process::id()));
    std::fs::create_dir_all(&mine).unwrap();
    remove_leftovers();
    assert!(!dir.exists());
    assert!(mine.exists());
    std::fs::remove_dir_all(&mine).unwrap();
}
