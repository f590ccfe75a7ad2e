//! Isolation in force, against the real Docker engine: core dumps off, and Kiln's own seccomp
//! profile on every container where the engine reports none.

mod common;

use bollard::query_parameters::InspectContainerOptions;
use common::{finish, job, python_image, sandbox};
use kiln_sandbox::isolation::SeccompSource;
use kiln_sandbox::reaper::containers_of;
use kiln_sandbox::{Outcome, Sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_dumps_are_off_soft_and_hard() {
    let sb = sandbox("core").await;
    let r = sb
        .run(&job(&sb, "ulimit -c; ulimit -Hc; ulimit -c unlimited"), None)
        .await
        .unwrap();
    assert_eq!(r.stdout.text(), "0\n0\n");
    // Raising it is refused.
    assert_eq!(r.outcome, Outcome::NonZeroExit, "stderr: {}", r.stderr.text());
    finish(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiln_applies_its_seccomp_profile_where_the_engine_reports_none() {
    let probe = sandbox("seccomp-probe").await;
    let mut iso = probe.isolation().clone();
    finish(probe).await;
    iso.seccomp = false;
    let worker = format!("test-seccomp-{}", uuid::Uuid::new_v4().simple());
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    let sb = Sandbox::with_isolation_as(docker, common::owner(&worker), iso)
        .await
        .unwrap();
    assert_eq!(sb.isolation().in_force().seccomp, SeccompSource::Kiln);
    let image = python_image();
    let pool = sb.start_pool(std::slice::from_ref(&image), 1);
    assert!(pool.wait_full(std::time::Duration::from_secs(60)).await);
    let ids = containers_of(sb.docker(), &worker).await.unwrap();
    assert_eq!(ids.len(), 1);
    let c = sb
        .docker()
        .inspect_container(&ids[0], None::<InspectContainerOptions>)
        .await
        .unwrap();
    let opts = c.host_config.and_then(|h| h.security_opt).unwrap_or_default();
    let profile = opts
        .iter()
        .find_map(|o| o.strip_prefix("seccomp="))
        .unwrap_or_else(|| {
            panic!(
                "no seccomp profile among {:?}",
                opts.iter().map(|o| &o[..o.len().min(40)]).collect::<Vec<_>>()
            )
        });
    assert!(profile.contains("SCMP_ACT_ERRNO"));
    assert!(opts.iter().any(|o| o == "no-new-privileges"));
    let r = sb
        .run(&job(&sb, "grep '^Seccomp:' /proc/self/status"), None)
        .await
        .unwrap();
    assert!(r.warm);
    assert_eq!(
        r.stdout.text().split_whitespace().nth(1),
        Some("2"),
        "{}",
        r.stdout.text()
    );
    finish(sb).await;
}
