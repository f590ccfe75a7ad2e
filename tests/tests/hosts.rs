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
