//! The second engine is a good neighbour: the main engine's `docker0` stays while it runs and
//! after it stops, and the bridge it made for itself goes with it.

fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("ip link")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_leaves_the_main_engines_bridge_alone() {
    assert!(
        link_exists("docker0"),
        "the main engine's docker0 is missing before the test"
    );
    let engine = kiln_testkit::engine::SecondEngine::start()
        .await
        .expect("second engine");
    let own = engine.bridge();
    assert!(
        link_exists("docker0"),
        "docker0 deleted by the second engine's start"
    );
    assert!(link_exists(&own), "the engine's own bridge {own} is missing");
    drop(engine);
    assert!(
        link_exists("docker0"),
        "docker0 deleted by the second engine's stop"
    );
    assert!(!link_exists(&own), "the engine's bridge {own} left behind");
}
