//! Many fleets and many hosts on Docker engines: each fleet's reaper judges only its own
//! fleet's containers by its registry (issue 13, "Many hosts").

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
use bollard::Docker;
use kiln_sandbox::containers::start_container;
use kiln_sandbox::policy::{Owner, LABEL_FLEET, LABEL_MANAGED, LABEL_WORKER};
use kiln_sandbox::reaper::{containers_of, volumes_of, Liveness};
use kiln_sandbox::{Limits, Sandbox};
use kiln_testkit::TestDb;

/// The python job image's tag.
fn python_image() -> String {
    kiln_tests::validation::images()
        .tag("python")
        .expect("python image tag")
        .to_string()
}

/// Live workers of a fleet, as the worker's reaper reads them (kiln-pipeline's
/// `live_workers.sql`).
async fn registry(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(include_str!(
        "../../crates/kiln-pipeline/src/sql/live_workers.sql"
    ))
    .fetch_all(pool)
    .await
    .expect("read the registry")
}

/// Workers of the Kiln objects on `docker` that carry no fleet label: sandboxes of other tests
/// running without a database. A registry pass with no grace would judge them by this test's
/// registry (the rule for unlabelled objects), so they count as live here.
async fn unlabelled_workers(docker: &Docker) -> Vec<String> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])]);
    let mut labels: Vec<HashMap<String, String>> = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.labels.unwrap_or_default())
        .collect();
    let vols = docker
        .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&filters).build()))
        .await
        .unwrap();
    labels.extend(vols.volumes.unwrap_or_default().into_iter().map(|v| v.labels));
    labels
        .into_iter()
        .filter(|l| !l.contains_key(LABEL_FLEET))
        .filter_map(|l| l.get(LABEL_WORKER).cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_fleets_reaper_leaves_a_fleets_containers_alone() {
    // Two fleets (two databases) on one engine, as two tests are, or two deployments.
    let (a_db, b_db) = (TestDb::new().await, TestDb::new().await);
    let fleet_a = kiln_queue::fleet_id(&a_db.pool).await.unwrap();
    let fleet_b = kiln_queue::fleet_id(&b_db.pool).await.unwrap();
    assert_ne!(fleet_a, fleet_b);
    assert!(fleet_a.ends_with(&format!("/{}", a_db.name())), "{fleet_a}");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (a_id, b_id) = (format!("fleet-a-{tag}"), format!("fleet-b-{tag}"));
    let host = kiln_sandbox::policy::host_name();
    for (pool, id) in [(&a_db.pool, &a_id), (&b_db.pool, &b_id)] {
        kiln_queue::lease::register_worker(pool, id, &host, std::process::id(), &[])
            .await
            .unwrap();
    }

    // Fleet A: a live worker with a running container, and a dead worker's leftover on
    // another host (only A's registry can condemn it).
    let a = Sandbox::connect_as(Owner::current(&a_id).in_fleet(fleet_a.clone()))
        .await
        .unwrap();
    let pool = a.start_pool(&[python_image()], 1);
    assert!(pool.wait_full(Duration::from_secs(60)).await);
    let running = containers_of(a.docker(), &a_id).await.unwrap();
    assert_eq!(running.len(), 1);
    let mut ghost = Owner::current(&format!("fleet-a-ghost-{tag}")).in_fleet(fleet_a.clone());
    ghost.host = "another-host.invalid".into();
    let left = start_container(
        a.docker(),
        &python_image(),
        &Limits::default(),
        ghost.labels(None),
        &["no-new-privileges".to_string()],
    )
    .await
    .unwrap();

    // Fleet B's reaper, with B's registry (where A's workers are absent) and no grace.
    let b = Sandbox::connect_as(Owner::current(&b_id).in_fleet(fleet_b))
        .await
        .unwrap();
    let mut live = registry(&b_db.pool).await;
    assert_eq!(live, std::slice::from_ref(&b_id));
    live.extend(unlabelled_workers(b.docker()).await);
    let reaped = b
        .reap_with(Some(Liveness {
            live_workers: &live,
            min_age: Duration::ZERO,
        }))
        .await
        .unwrap();
    assert!(!reaped.containers.contains(&running[0]), "{reaped:?}");
    assert!(!reaped.containers.contains(&left.id), "{reaped:?}");
    assert_eq!(containers_of(a.docker(), &a_id).await.unwrap(), running);
    assert_eq!(
        containers_of(a.docker(), &ghost.worker_id).await.unwrap(),
        std::slice::from_ref(&left.id)
    );

    // Fleet A's own reaper condemns its dead worker's leftover and spares its live one.
    let mut live = registry(&a_db.pool).await;
    live.extend(unlabelled_workers(a.docker()).await);
    let reaped = a
        .reap_with(Some(Liveness {
            live_workers: &live,
            min_age: Duration::ZERO,
        }))
        .await
        .unwrap();
    assert!(reaped.containers.contains(&left.id), "{reaped:?}");
    assert!(reaped.volumes.contains(&left.volume), "{reaped:?}");
    assert!(!reaped.containers.contains(&running[0]), "{reaped:?}");
    assert_eq!(containers_of(a.docker(), &a_id).await.unwrap(), running);
    assert!(volumes_of(a.docker(), &ghost.worker_id).await.unwrap().is_empty());

    for sb in [a, b] {
        sb.removals_done().await;
        sb.shutdown().await;
        assert!(containers_of(sb.docker(), &sb.owner().worker_id)
            .await
            .unwrap()
            .is_empty());
    }
}

/// Kiln containers on `docker` labelled with worker `id`.
async fn on_engine(docker: &Docker, id: &str) -> (Vec<String>, Vec<String>) {
    (
        containers_of(docker, id).await.unwrap(),
        volumes_of(docker, id).await.unwrap(),
    )
}

/// A Python project whose one test sleeps `secs` and passes.
fn sleepy(dir: &std::path::Path, secs: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        "[project]\nname = \"sleepy\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("test_sleepy.py"),
        format!("import time\n\n\ndef test_sleeps():\n    time.sleep({secs})\n"),
    )
    .unwrap();
}

/// Attempt outcomes per job, in attempt order.
async fn outcomes(pool: &sqlx::PgPool, ids: &[i64]) -> HashMap<i64, Vec<String>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT job_id, outcome::text FROM kiln_attempts WHERE job_id = ANY($1) ORDER BY job_id, attempt, id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: HashMap<i64, Vec<String>> = HashMap::new();
    for (id, o) in rows {
        out.entry(id).or_default().push(o);
    }
    out
}

/// Polls `check` every 250 ms until it is true; panics with `what` after `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_two_engines_share_a_queue_and_each_engine_reaps_only_dead_workers() {
    let db = TestDb::new().await;
    let engine = kiln_testkit::engine::SecondEngine::start().await.unwrap();
    let image = python_image();
    let loaded = engine.load_images(&[&image]).await.unwrap();
    eprintln!(
        "second engine ({}) up in {:?}, {image} loaded in {loaded:?}",
        engine.storage_driver(),
        engine.started_in
    );
    let main = Docker::connect_with_defaults().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("workers.toml");
    std::fs::write(
        &config,
        "images = [\"python\"]\nwarm_pool = 0\n\n[worker]\nkinds = [\"test\"]\n\
         lease = 3\nheartbeat_every = 0.5\npoll_every = 0.5\nmaintenance_every = 0.5\nshutdown_grace = 5\n\n\
         [[worker.queues]]\nname = \"test\"\nconcurrency = 2\nbatch = 1\n\n\
         [validation]\nreap_every_secs = 1\n",
    )
    .unwrap();
    sleepy(&dir.path().join("ws"), 45);
    let ws = kiln_tests::store_workspace(&db.pool, &dir.path().join("ws")).await;
    let tag = std::process::id();
    let (a, b1, b2) = (
        format!("host-a-{tag}"),
        format!("host-b1-{tag}"),
        format!("host-b2-{tag}"),
    );
    let log = |id: &str| dir.path().join(format!("{id}.log"));
    let logs = || {
        [&a, &b1, &b2]
            .iter()
            .map(|id| {
                format!(
                    "== {id}\n{}",
                    std::fs::read_to_string(log(id)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let on_b = [("DOCKER_HOST", engine.docker_host())];
    let on_b: Vec<(&str, &str)> = on_b.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut worker_a = kiln_tests::kiln_worker_process(&db.url, &config, &a, &log(&a));
    let mut worker_b1 = kiln_tests::kiln_worker_process_env(&db.url, &config, &b1, &log(&b1), &on_b);

    // Four 45 s jobs, two slots per worker: both hosts run two each (still running when
    // B1 is killed and reaped).
    let job = || {
        kiln_queue::NewJob::new(
            "test",
            kiln_queue::JobKind::Test,
            serde_json::json!({"workspace": ws}),
        )
    };
    let first = kiln_tests::enqueue_ids(&db.pool, &[job(), job(), job(), job()]).await;
    until(
        "two containers on each engine",
        Duration::from_secs(120),
        || async {
            on_engine(&main, &a).await.0.len() == 2 && on_engine(engine.docker(), &b1).await.0.len() == 2
        },
    )
    .await;
    let a_running = on_engine(&main, &a).await.0;
    assert!(on_engine(engine.docker(), &a).await.0.is_empty());
    assert!(on_engine(&main, &b1).await.0.is_empty());
    let fleet = kiln_queue::fleet_id(&db.pool).await.unwrap();
    for id in &a_running {
        let c = main.inspect_container(id, None).await.unwrap();
        let labels = c.config.unwrap().labels.unwrap();
        assert_eq!(labels.get(LABEL_FLEET), Some(&fleet));
    }

    // SIGKILL B's worker mid-job: its containers stay on B until B's next worker reaps them
    // at start-up; A's live containers, on the other engine, are untouched.
    worker_b1.kill().unwrap();
    worker_b1.wait().unwrap();
    let (left, vols) = on_engine(engine.docker(), &b1).await;
    assert_eq!((left.len(), vols.len()), (2, 2), "{}", logs());
    let mut worker_b2 = kiln_tests::kiln_worker_process_env(&db.url, &config, &b2, &log(&b2), &on_b);
    until(
        "B1's containers and volumes reaped",
        Duration::from_secs(60),
        || async { on_engine(engine.docker(), &b1).await == (Vec::new(), Vec::new()) },
    )
    .await;
    for id in &a_running {
        let c = main.inspect_container(id, None).await.unwrap();
        assert_eq!(c.state.and_then(|s| s.running), Some(true), "{}", logs());
    }
    for id in &first {
        let rec = kiln_tests::wait_final(&db.pool, *id, Duration::from_secs(300)).await;
        assert_eq!(rec.state, kiln_queue::JobState::Succeeded, "{rec:?}\n{}", logs());
    }
    let tries = outcomes(&db.pool, &first).await;
    let lost: Vec<usize> = first
        .iter()
        .map(|id| tries[id].iter().filter(|o| *o == "lost").count())
        .collect();
    assert_eq!(lost.iter().sum::<usize>(), 2, "{tries:?}");
    assert!(lost.iter().all(|l| *l <= 1), "{tries:?}");

    // B's engine dies mid-job: B2's jobs are retried and finish on A. Another workspace
    // (the validation cache would answer the same one without running it).
    sleepy(&dir.path().join("ws2"), 15);
    let ws2 = kiln_tests::store_workspace(&db.pool, &dir.path().join("ws2")).await;
    let job2 = || {
        kiln_queue::NewJob::new(
            "test",
            kiln_queue::JobKind::Test,
            serde_json::json!({"workspace": ws2}),
        )
    };
    let second = kiln_tests::enqueue_ids(&db.pool, &[job2(), job2(), job2(), job2()]).await;
    until("B2 runs jobs on its engine", Duration::from_secs(120), || async {
        !on_engine(engine.docker(), &b2).await.0.is_empty()
    })
    .await;
    let mut engine = engine;
    engine.stop();
    for id in &second {
        let rec = kiln_tests::wait_final(&db.pool, *id, Duration::from_secs(300)).await;
        assert_eq!(rec.state, kiln_queue::JobState::Succeeded, "{rec:?}\n{}", logs());
    }
    let tries = outcomes(&db.pool, &second).await;
    eprintln!("after the engine died: {tries:?}");
    for id in &second {
        assert!(
            tries[id].iter().filter(|o| *o == "lost").count() <= 1,
            "{tries:?}"
        );
        assert_eq!(
            tries[id].last().map(String::as_str),
            Some("succeeded"),
            "{tries:?}"
        );
    }

    for w in [&mut worker_a, &mut worker_b2] {
        kiln_tests::terminate(w);
    }
    assert_eq!(on_engine(&main, &a).await, (Vec::new(), Vec::new()), "{}", logs());
}
