//! The chaos run in CI: a whole fleet of real processes under every fault the run injects
//! (workers SIGKILLed, Postgres restarted fast and immediately, the second Docker engine
//! restarted, the scheduler leader killed), on a smaller load than `scripts/chaos`'s default.

use serde_json::Value;

#[test]
fn a_fleet_under_faults_loses_and_duplicates_nothing() {
    let kiln = kiln_tests::kiln_binary();
    let chaos = kiln_tests::built_binary("kiln-chaos", "chaos");
    let out = std::process::Command::new(chaos)
        .args(["--jobs", "1500", "--container-every", "30", "--json", "--kiln"])
        .arg(&kiln)
        .env("RUST_LOG", "kiln_chaos=info,warn")
        .output()
        .expect("run chaos");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("chaos printed no JSON ({e}): {stdout}\n{stderr}"));
    let n = |k: &str| report[k].as_i64().unwrap_or_else(|| panic!("no {k} in {report}"));
    assert_eq!(
        (n("lost"), n("duplicated"), n("inconsistent"), n("failed")),
        (0, 0, 0, 0),
        "{report}"
    );
    assert_eq!(report["leftovers"], serde_json::json!([]), "{report}");
    assert!(n("jobs") > 1500, "the schedule's jobs count too: {report}");
    assert!(n("worker_kills") >= 1, "{report}");
    assert_eq!(n("postgres_restarts"), 2, "{report}");
    assert_eq!(n("docker_restarts"), 1, "{report}");
    assert_eq!(n("scheduler_kills"), 1, "{report}");
    assert!(n("scheduled_jobs") >= 1, "{report}");
    assert!(out.status.success(), "chaos exited {:?}: {stderr}", out.status);
}
