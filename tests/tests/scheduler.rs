//! Cron schedules end to end: real Postgres, real scheduler processes (killed for real).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use kiln_scheduler::{store, SchedulePatch, ScheduleSpec, Scheduler, SchedulerConfig, SchedulerError};
use kiln_testkit::TestDb;
use kiln_tests::{scheduler_process, terminate, wait_for_count};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn every_second(name: &str, catch_up: bool) -> ScheduleSpec {
    serde_json::from_value(json!({
        "name": name,
        "cron": "* * * * * *",
        "catch_up": catch_up,
        "job": {"kind": "notification", "queue": "cron", "payload": {"event_id": 1, "endpoint": {"type": "webhook", "url": format!("https://example.com/{name}")}}},
    }))
    .unwrap()
}

/// (tick, enqueued at, tags) of the jobs `schedule` enqueued, by tick.
async fn fired(pool: &PgPool, schedule: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>, Vec<String>)> {
    sqlx::query_as("SELECT run_at, created_at, tags FROM kiln_jobs WHERE $1 = ANY (tags) ORDER BY run_at, id")
        .bind(format!("schedule:{schedule}"))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await.unwrap()
}

/// The first whole second strictly after `t`.
fn next_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap() + TimeDelta::seconds(1)
}

/// Asserts the ticks are whole seconds, each once, with no gap.
fn assert_contiguous(ticks: &[DateTime<Utc>]) {
    for w in ticks.windows(2) {
        assert_ne!(w[0], w[1], "tick {} fired twice", w[0]);
        assert_eq!(
            w[1] - w[0],
            TimeDelta::seconds(1),
            "gap between ticks {} and {}",
            w[0],
            w[1]
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scheduler_processes_fire_each_tick_of_20_seconds_exactly_once() {
    let db = TestDb::new().await;
    store::create(&db.pool, every_second("every-second", false))
        .await
        .unwrap();
    let mut procs: Vec<_> = (0..3)
        .map(|i| scheduler_process(&db.url, &format!("sched-{i}")))
        .collect();
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_schedulers WHERE stopped_at IS NULL",
        3,
        Duration::from_secs(30),
    )
    .await;
    let first_start: DateTime<Utc> = sqlx::query_scalar("SELECT min(started_at) FROM kiln_schedulers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let stop_at = db_now(&db.pool).await;
    let leaders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln_schedulers WHERE leading_since IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(leaders, 1, "exactly one scheduler leads");
    for p in &mut procs {
        terminate(p);
    }

    let jobs = fired(&db.pool, "every-second").await;
    let ticks: Vec<_> = jobs.iter().map(|j| j.0).collect();
    assert_contiguous(&ticks);
    assert_eq!(
        ticks[0],
        next_second(first_start),
        "the first tick after the first scheduler started fired"
    );
    assert!(
        *ticks.last().unwrap()
            >= stop_at.duration_trunc(TimeDelta::seconds(1)).unwrap() - TimeDelta::seconds(1),
        "ticks fired until the schedulers stopped: last {} stop {stop_at}",
        ticks.last().unwrap()
    );
    assert!(ticks.len() >= 20, "{} ticks in 20 s", ticks.len());
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT idempotency_key) FROM kiln_jobs WHERE idempotency_key LIKE 'schedule:every-second:%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        keys as usize,
        ticks.len(),
        "one job, with its own tick key, per tick"
    );
    let s = store::get(&db.pool, "every-second").await.unwrap();
    assert_eq!(s.fired_count as usize, ticks.len());

    // Lateness of the ticks fired on time (not those fired late at start-up).
    let mut late: Vec<f64> = jobs
        .iter()
        .filter(|j| j.0 > next_second(first_start) + TimeDelta::seconds(2))
        .map(|j| (j.1 - j.0).num_microseconds().unwrap() as f64 / 1e3)
        .collect();
    late.sort_by(f64::total_cmp);
    println!(
        "tick lateness over {} ticks: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_is_replaced_within_5_seconds_and_no_tick_doubles() {
    let db = TestDb::new().await;
    store::create(&db.pool, every_second("handover", false))
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("sched-{i}")).collect();
    let mut procs: Vec<_> = ids.iter().map(|id| scheduler_process(&db.url, id)).collect();
    wait_for_count(
        &db.pool,
        "SELECT count(*) FROM kiln_schedulers WHERE stopped_at IS NULL",
        3,
        Duration::from_secs(30),
    )
    .await;
    let first_start: DateTime<Utc> = sqlx::query_scalar("SELECT min(started_at) FROM kiln_schedulers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    wait_for_count(
        &db.pool,
        "SELECT least(count(*), 4) FROM kiln_jobs WHERE 'schedule:handover' = ANY (tags)",
        4,
        Duration::from_secs(30),
    )
    .await;
    let leader: String = sqlx::query_scalar("SELECT id FROM kiln_schedulers WHERE leading_since IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let i = ids.iter().position(|id| *id == leader).unwrap();
    let killed_at = db_now(&db.pool).await;
    procs[i].kill().unwrap(); // SIGKILL
    procs[i].wait().unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;

    let (next_leader, since): (String, DateTime<Utc>) = sqlx::query_as(
        "SELECT id, leading_since FROM kiln_schedulers WHERE leading_since IS NOT NULL AND id <> $1",
    )
    .bind(&leader)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let takeover = since - killed_at;
    println!(
        "{leader} killed; {next_leader} leads {} ms later",
        takeover.num_milliseconds()
    );
    assert!(takeover <= TimeDelta::seconds(5), "took over after {takeover}");
    let jobs = fired(&db.pool, "handover").await;
    let first_after = jobs
        .iter()
        .map(|j| j.1)
        .filter(|c| *c > killed_at)
        .min()
        .expect("ticks fired after the kill");
    assert!(
        first_after - killed_at <= TimeDelta::seconds(5),
        "first job after the kill came {} later",
        first_after - killed_at
    );
    for (j, p) in procs.iter_mut().enumerate() {
        if j != i {
            terminate(p);
        }
    }
    let jobs = fired(&db.pool, "handover").await;
    let ticks: Vec<_> = jobs.iter().map(|j| j.0).collect();
    // Followers were up all along: the ticks of the handover are fired late, not skipped.
    assert_contiguous(&ticks);
    assert_eq!(ticks[0], next_second(first_start));
    assert!(*ticks.last().unwrap() > killed_at + TimeDelta::seconds(6));
}

async fn run_scheduler_for(pool: &PgPool, id: &str, secs: u64) {
    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(
        pool.clone(),
        SchedulerConfig {
            id: Some(id.into()),
            ..SchedulerConfig::default()
        },
    );
    let run = tokio::spawn(scheduler.run(stop.clone().cancelled_owned()));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_while_no_scheduler_ran_are_skipped_or_caught_up_once() {
    let db = TestDb::new().await;
    store::create(&db.pool, every_second("no-replay", false))
        .await
        .unwrap();
    store::create(&db.pool, every_second("catch-up", true))
        .await
        .unwrap();
    run_scheduler_for(&db.pool, "first", 3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    run_scheduler_for(&db.pool, "second", 3).await;
    let (stop1, start2): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT (SELECT stopped_at FROM kiln_schedulers WHERE id = 'first'), \
                (SELECT started_at FROM kiln_schedulers WHERE id = 'second')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let in_gap = |t: &DateTime<Utc>| *t > stop1 && *t < start2;
    let mut gap_ticks = Vec::new();
    let mut t = next_second(stop1);
    while t < start2 {
        gap_ticks.push(t);
        t += TimeDelta::seconds(1);
    }
    assert!(gap_ticks.len() >= 3, "the gap spans {} ticks", gap_ticks.len());

    let skipped = fired(&db.pool, "no-replay").await;
    assert!(
        skipped.iter().all(|j| !in_gap(&j.0)),
        "no tick of the gap was replayed"
    );
    let before: Vec<_> = skipped.iter().map(|j| j.0).filter(|t| *t <= stop1).collect();
    let after: Vec<_> = skipped.iter().map(|j| j.0).filter(|t| *t >= start2).collect();
    assert!(
        before.len() >= 2 && after.len() >= 2,
        "{} before, {} after",
        before.len(),
        after.len()
    );
    assert_contiguous(&before);
    assert_contiguous(&after);
    let s = store::get(&db.pool, "no-replay").await.unwrap();
    assert!(
        s.missed_count >= gap_ticks.len() as i64,
        "missed {}",
        s.missed_count
    );

    let caught = fired(&db.pool, "catch-up").await;
    let gap_runs: Vec<_> = caught.iter().filter(|j| in_gap(&j.0)).collect();
    assert_eq!(gap_runs.len(), 1, "one catch-up run for the whole gap");
    assert_eq!(
        gap_runs[0].0,
        *gap_ticks.last().unwrap(),
        "for the latest missed tick"
    );
    assert!(gap_runs[0].2.contains(&"catch-up".to_string()));
    assert!(gap_runs[0].1 >= start2, "fired by the second scheduler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_declared_in_workers_toml_are_upserted_and_fired_by_kiln_scheduler() {
    let db = TestDb::new().await;
    let kiln = kiln_tests::kiln_binary();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("workers.toml");
    let file = |cron: &str| {
        format!(
            r#"
[worker]
[[worker.queues]]
name = "cron"

[[schedules]]
name = "from-file"
cron = "{cron}"
timezone = "Europe/Paris"
[schedules.job]
kind = "lint"
queue = "cron"
payload = {{ workspace = "{ws}" }}

[[schedules]]
name = "switched-off"
cron = "* * * * * *"
enabled = false
[schedules.job]
kind = "test"
payload = {{ workspace = "{ws}" }}
"#,
            ws = kiln_tests::WORKSPACE
        )
    };
    std::fs::write(&path, file("* * * * * *")).unwrap();
    let start = || {
        std::process::Command::new(&kiln)
            .args(["scheduler", "--config"])
            .arg(&path)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn kiln scheduler")
    };
    let mut child = start();
    wait_for_count(
        &db.pool,
        "SELECT least(count(*), 3) FROM kiln_jobs WHERE 'schedule:from-file' = ANY (tags)",
        3,
        Duration::from_secs(60),
    )
    .await;
    terminate(&mut child);
    let s = store::get(&db.pool, "from-file").await.unwrap();
    assert_eq!(
        (s.source.as_str(), s.timezone.as_str()),
        ("config", "Europe/Paris")
    );
    let off = store::get(&db.pool, "switched-off").await.unwrap();
    assert!(!off.enabled && off.next_tick.is_none());
    assert!(fired(&db.pool, "switched-off").await.is_empty());
    let job: (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT queue, kind::text, payload FROM kiln_jobs WHERE 'schedule:from-file' = ANY (tags) LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        job,
        (
            "cron".into(),
            "lint".into(),
            json!({"workspace": kiln_tests::WORKSPACE})
        )
    );

    // Edit the file (a new expression, one schedule dropped) and create one through the API:
    // the next start brings the stored schedules in line with the file and leaves the API's.
    store::create(&db.pool, every_second("from-api", false))
        .await
        .unwrap();
    let edited = file("*/2 * * * * *");
    let edited = &edited[..edited.find("[[schedules]]\nname = \"switched-off\"").unwrap()];
    std::fs::write(&path, edited).unwrap();
    let mut child = start();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if store::get(&db.pool, "from-file").await.unwrap().cron == "*/2 * * * * *" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edited schedule was not upserted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&mut child);
    let names: Vec<String> = store::list(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["from-api", "from-file"]);
}

fn invalid_field(r: Result<impl std::fmt::Debug, SchedulerError>) -> String {
    match r {
        Err(SchedulerError::Invalid(v)) => v.field,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_by_field_and_nothing_is_written() {
    let db = TestDb::new().await;
    let with = |patch: serde_json::Value| {
        let mut v = serde_json::to_value(every_second("s", false)).unwrap();
        v.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        serde_json::from_value::<ScheduleSpec>(v).unwrap()
    };
    for (patch, field) in [
        (json!({"cron": "*/0 * * * * *"}), "cron"),
        (json!({"cron": "every day at noon"}), "cron"),
        (json!({"cron": "1 2 3"}), "cron"),
        (json!({"timezone": "Europe/Atlantis"}), "timezone"),
        (json!({"name": "no spaces please"}), "name"),
        (json!({"job": {"kind": "compile"}}), "job.kind"),
        (
            json!({"job": {"kind": "test", "max_attempts": 0}}),
            "job.max_attempts",
        ),
        (
            json!({"job": {"kind": "test", "idempotency_key": "x"}}),
            "job.idempotency_key",
        ),
    ] {
        let got = invalid_field(store::create(&db.pool, with(patch.clone())).await);
        assert_eq!(got, field, "{patch}");
    }
    assert!(
        store::list(&db.pool).await.unwrap().is_empty(),
        "nothing half-written"
    );
    let err = serde_json::from_value::<ScheduleSpec>(
        json!({"name": "s", "cron": "* * * * * *", "job": {"kind": "test"}, "every": "1s"}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("every"), "{err}");

    let created = store::create(&db.pool, every_second("s", false)).await.unwrap();
    assert!(matches!(
        store::create(&db.pool, every_second("s", false)).await,
        Err(SchedulerError::AlreadyExists(n)) if n == "s"
    ));
    let bad = SchedulePatch {
        timezone: Some("Moon/Base".into()),
        ..SchedulePatch::default()
    };
    assert_eq!(
        invalid_field(store::update(&db.pool, "s", &bad).await),
        "timezone"
    );
    let unchanged = store::get(&db.pool, "s").await.unwrap();
    assert_eq!(
        (unchanged.timezone.as_str(), unchanged.updated_at),
        ("UTC", created.updated_at)
    );
    assert!(matches!(
        store::update(&db.pool, "nope", &SchedulePatch::default()).await,
        Err(SchedulerError::NotFound(_))
    ));
    assert!(matches!(
        store::delete(&db.pool, "nope").await,
        Err(SchedulerError::NotFound(_))
    ));
    let declared = store::declare(
        &db.pool,
        &[
            every_second("ok", false),
            with(json!({"name": "bad", "timezone": "Nowhere"})),
        ],
    )
    .await;
    assert_eq!(invalid_field(declared), "schedules[1].timezone");
    let twice = store::declare(&db.pool, &[every_second("ok", false), every_second("ok", true)]).await;
    assert_eq!(invalid_field(twice), "schedules[1].name");
    assert!(
        matches!(store::get(&db.pool, "ok").await, Err(SchedulerError::NotFound(_))),
        "a refused declaration writes none of its entries"
    );

    // The switch: off has no next tick; back on fires from now, not the ticks it was off.
    let off = store::set_enabled(&db.pool, "s", false).await.unwrap();
    assert!(!off.enabled && off.next_tick.is_none());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let on = store::set_enabled(&db.pool, "s", true).await.unwrap();
    assert!(on.enabled && on.next_tick.is_some());
    assert!(on.fired_through >= db_now(&db.pool).await - TimeDelta::seconds(1));
    let changed = store::update(
        &db.pool,
        "s",
        &SchedulePatch {
            cron: Some("0 30 9 * * Mon-Fri".into()),
            timezone: Some("America/New_York".into()),
            ..SchedulePatch::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(changed.cron, "0 30 9 * * Mon-Fri");
    store::delete(&db.pool, "s").await.unwrap();
    assert!(matches!(
        store::get(&db.pool, "s").await,
        Err(SchedulerError::NotFound(_))
    ));
}
