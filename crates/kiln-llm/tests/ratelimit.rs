//! Fleet-wide rate limits: three worker processes share one Redis (and, without Redis, one
//! Postgres) and together hold a requests-per-minute limit; a Redis outage mid-run falls back
//! to Postgres without losing or doubling a call.

mod common;

use common::*;
use kiln_llm::{Backend, Budgets, CallFor, Limits, Llm, Options, RateLimiter, Tier};
use kiln_testkit::TestDb;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RPM: u32 = 20;
const WORKER_SECS: u64 = 4;

/// A private redis-server on a free loopback port, killed on drop.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One worker process of the fleet tests: calls the model as fast as the fleet-wide limit
/// allows for `WORKER_SECS`, then prints how many calls were answered.
#[tokio::test]
#[ignore = "a worker process started by the fleet tests, not a test of its own"]
async fn fleet_worker() {
    let db_url = std::env::var("KILN_LLM_FLEET_DB").expect("started by a fleet test");
    let fake = std::env::var("KILN_LLM_FLEET_URL").unwrap();
    let redis_url = std::env::var("KILN_LLM_FLEET_REDIS").ok();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await
        .unwrap();
    let cfg = config(&fake, &fake, &format!("requests_per_minute = {RPM}"));
    let llm = Llm::new(
        cfg,
        pool,
        Options {
            redis_url,
            ..options()
        },
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(WORKER_SECS);
    let req = request(100);
    let mut answered = 0;
    while let Ok(done) = tokio::time::timeout_at(
        deadline,
        llm.complete(Tier::Balanced, &req, CallFor::default(), Budgets::default()),
    )
    .await
    {
        done.unwrap();
        answered += 1;
    }
    println!("FLEET_CALLS {answered}");
}

/// Runs three worker processes against `fake` and returns each one's answered calls.
fn run_fleet(db: &TestDb, fake: &FakeModel, redis_url: Option<&str>) -> Vec<usize> {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = Command::new(&exe);
            cmd.args([
                "fleet_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("KILN_LLM_FLEET_DB", &db.url)
            .env("KILN_LLM_FLEET_URL", fake.url())
            .env_remove("KILN_LLM_FLEET_REDIS")
            .stdout(Stdio::piped());
            if let Some(url) = redis_url {
                cmd.env("KILN_LLM_FLEET_REDIS", url);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "worker failed:\n{text}");
            text.lines()
                .find_map(|l| l.split_once("FLEET_CALLS ").map(|(_, n)| n))
                .unwrap_or_else(|| panic!("no count in:\n{text}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect()
}

/// The calls a token bucket of `RPM` admits over a run of `elapsed`: a full bucket plus the
/// refill (RPM/60 per second), plus one for a refill crossing the edge.
fn fleet_allowance(elapsed: Duration) -> usize {
    RPM as usize + (elapsed.as_secs_f64() * RPM as f64 / 60.0).ceil() as usize + 1
}

async fn fleet_holds_the_limit(redis: Option<&RedisServer>) -> TestDb {
    let redis_url = redis.map(RedisServer::url);
    let db = TestDb::new().await;
    let fake = FakeModel::replay().await;
    fake.always(Reply::Json(anthropic_tool_use(
        "claude-test",
        "a.py",
        "x",
        (10, 5, 0, 0),
    )));
    let started = Instant::now();
    let (db, fake, counts) = tokio::task::spawn_blocking(move || {
        let counts = run_fleet(&db, &fake, redis_url.as_deref());
        (db, fake, counts)
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let total: usize = counts.iter().sum();
    eprintln!("fleet calls per worker {counts:?}, total {total} in {elapsed:?}");
    // Every answered call is exactly one request the server saw: none lost, none doubled.
    assert_eq!(total, fake.hits(), "{counts:?}");
    // Alone, each process would admit RPM calls from its own bucket (3 × RPM in total).
    assert!(
        total >= RPM as usize && total <= fleet_allowance(elapsed),
        "{counts:?} in {elapsed:?} (limit {RPM}/min)"
    );
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_a_requests_per_minute_limit_through_redis() {
    let redis = RedisServer::start();
    let db = fleet_holds_the_limit(Some(&redis)).await;
    // Redis held the buckets: Postgres has none.
    let pg_buckets: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_llm_rate_buckets")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(pg_buckets, 0);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg("kiln:llm:rate:a:requests")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_a_requests_per_minute_limit_through_postgres() {
    let db = fleet_holds_the_limit(None).await;
    let pg_buckets: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kiln_llm_rate_buckets WHERE provider = 'a'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(pg_buckets, 1);
}

#[tokio::test]
async fn redis_going_away_mid_run_falls_back_to_postgres_without_losing_or_doubling_calls() {
    let db = TestDb::new().await;
    let mut redis = RedisServer::start();
    let fake = FakeModel::replay().await;
    fake.always(Reply::Json(anthropic_tool_use(
        "claude-test",
        "a.py",
        "x",
        (10, 5, 0, 0),
    )));
    let cfg = config(&fake.url(), &fake.url(), "requests_per_minute = 1000");
    let opts = Options {
        redis_url: Some(redis.url()),
        ..options()
    };
    let llm = Llm::new(cfg, db.pool.clone(), opts).await.unwrap();
    let req = request(100);
    for _ in 0..10 {
        llm.complete(Tier::Balanced, &req, CallFor::default(), Budgets::default())
            .await
            .unwrap();
    }
    redis.stop();
    for _ in 0..10 {
        llm.complete(Tier::Balanced, &req, CallFor::default(), Budgets::default())
            .await
            .unwrap();
    }
    assert_eq!(fake.hits(), 20, "each answered call made exactly one request");
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_llm_calls")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 20);
    // The last ten were granted by Postgres: its bucket started full (1000) and lost ten
    // grants, less what refilled meanwhile.
    let level: f64 = sqlx::query_scalar(
        "SELECT level FROM kiln_llm_rate_buckets WHERE provider = 'a' AND kind = 'requests'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!((990.0..1000.0).contains(&level), "{level}");
}

#[tokio::test]
async fn limiter_reports_its_backend_and_the_wait_for_an_empty_bucket() {
    let db = TestDb::new().await;
    let mut redis = RedisServer::start();
    let limiter = RateLimiter::with_redis(db.pool.clone(), &redis.url())
        .await
        .unwrap();
    let limits = Limits {
        requests_per_minute: Some(2),
        tokens_per_minute: Some(1_000),
    };
    assert_eq!(
        limiter.try_acquire("p", limits, 400).await.unwrap(),
        (Backend::Redis, None)
    );
    assert_eq!(
        limiter.try_acquire("p", limits, 400).await.unwrap(),
        (Backend::Redis, None)
    );
    // Requests are spent: about 30 s until one refills (2 per minute).
    let (b, wait) = limiter.try_acquire("p", limits, 100).await.unwrap();
    assert_eq!(b, Backend::Redis);
    let wait = wait.expect("the bucket is empty");
    assert!(
        wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    redis.stop();
    let (b, wait) = limiter.try_acquire("p", limits, 400).await.unwrap();
    assert_eq!((b, wait), (Backend::Postgres, None));
    // Tokens: 1000 − 400 = 600 left; 700 more must wait (100 tokens at 1000/min = 6 s).
    let (_, wait) = limiter.try_acquire("p", limits, 700).await.unwrap();
    let wait = wait.expect("tokens are short");
    assert!(
        wait > Duration::from_secs(5) && wait <= Duration::from_secs(6),
        "{wait:?}"
    );
}

#[tokio::test]
async fn acquire_waits_for_the_refill_and_counts_the_wait() {
    let db = TestDb::new().await;
    let limiter = RateLimiter::postgres(db.pool.clone());
    let limits = Limits {
        requests_per_minute: None,
        tokens_per_minute: Some(6_000),
    };
    assert_eq!(
        limiter.acquire("w", limits, 6_000).await.unwrap(),
        Backend::Postgres
    );
    // 100 tokens at 6000/min refill in 1 s.
    let started = Instant::now();
    limiter.acquire("w", limits, 100).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let text = kiln_metrics::render();
    assert!(
        text.contains(r#"kiln_llm_rate_limit_waits_total{provider="w"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_redis_that_is_down_at_start_leaves_the_limits_to_postgres() {
    let db = TestDb::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let limiter = RateLimiter::with_redis(db.pool.clone(), &format!("redis://127.0.0.1:{closed}/"))
        .await
        .unwrap();
    let limits = Limits {
        requests_per_minute: Some(1),
        tokens_per_minute: None,
    };
    assert_eq!(
        limiter.try_acquire("d", limits, 1).await.unwrap(),
        (Backend::Postgres, None)
    );
    let (b, wait) = limiter.try_acquire("d", limits, 1).await.unwrap();
    assert_eq!(b, Backend::Postgres);
    assert!(wait.is_some(), "one request per minute was spent");
}
