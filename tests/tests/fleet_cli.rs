//! `kiln` as an installed binary on a fresh machine: run from any directory on built-in
//! defaults, checks before it starts anything, stops the Postgres it started, and says what
//! to do when a program or the schema is missing. These run the real binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kiln_tests::kiln_binary;

/// `kiln ARGS` in `cwd` with no DATABASE_URL, images dir or API from the test's environment.
fn kiln(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(kiln_binary());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("DATABASE_URL")
        .env_remove("KILN_DATA_DIR")
        .env_remove("KILN_IMAGES_DIR")
        .env_remove("KILN_API_URL")
        .env_remove("KILN_LISTEN")
        .env("RUST_LOG", "info,sqlx=warn")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    cmd
}

/// Starts `cmd` and returns it once it printed `listening on`, with its stderr lines so far
/// being collected into the returned receiver.
fn until_listening(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (err_tx, err_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let (out_tx, out_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    loop {
        match out_rx.recv_timeout(Duration::from_secs(180)) {
            Ok(line) if line.starts_with("listening on http://") => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                let said: Vec<String> = err_rx.try_iter().collect();
                panic!("kiln up never listened ({e}): {}", said.join("\n"));
            }
        }
    }
    (child, err_rx)
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `child` to exit (panics after `limit`).
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when something accepts connections on the embedded cluster's recorded port.
fn postgres_answers(pg_dir: &Path) -> bool {
    let port: u16 = std::fs::read_to_string(pg_dir.join("port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

/// Deletes the embedded cluster under `pg_dir` (started again first if it is stopped).
fn remove_cluster(pg_dir: &Path) {
    kiln_pg::LocalCluster::start(pg_dir).unwrap().remove().unwrap();
}

/// A fleet file with one light queue and no job images: no Docker needed.
fn light_config(dir: &Path) -> PathBuf {
    let path = dir.join("light.toml");
    std::fs::write(&path, "[worker]\n[[worker.queues]]\nname = \"generation\"\n").unwrap();
    path
}

#[test]
fn up_outside_a_checkout_runs_on_built_in_defaults_and_stops_its_postgres_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let (mut child, stderr) = until_listening(kiln(
        cwd.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "up",
            "--no-images",
            "--listen",
            "127.0.0.1:0",
        ],
    ));
    let pg_dir = data.join("postgres");
    assert!(
        postgres_answers(&pg_dir),
        "the embedded Postgres runs while kiln up does"
    );
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(90));
    let said: Vec<String> = stderr.try_iter().collect();
    assert!(
        status.success(),
        "kiln up ends cleanly on SIGTERM: {}",
        said.join("\n")
    );
    assert!(
        said.iter()
            .any(|l| l.contains("running on the built-in defaults")),
        "it says it runs on the built-in defaults: {}",
        said.join("\n")
    );
    assert!(
        !postgres_answers(&pg_dir),
        "the Postgres kiln up started is stopped"
    );
    remove_cluster(&pg_dir);
}

#[test]
fn up_with_keep_postgres_leaves_it_running_after_ctrl_c() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let config = light_config(cwd.path());
    let (mut child, _stderr) = until_listening(kiln(
        cwd.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "up",
            "--config",
            config.to_str().unwrap(),
            "--no-images",
            "--keep-postgres",
            "--listen",
            "127.0.0.1:0",
        ],
    ));
    signal(&child, "-INT");
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let pg_dir = data.join("postgres");
    assert!(postgres_answers(&pg_dir), "--keep-postgres keeps it");
    remove_cluster(&pg_dir);
}

#[test]
fn up_without_debootstrap_stops_at_once_naming_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    // Image inputs whose base is not built yet (a changed setup.sh gives it a new tag).
    let images = tmp.path().join("images");
    for (rel, content) in kiln_images::embedded_files() {
        let path = images.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
    let setup = images.join("base/setup.sh");
    let mut text = std::fs::read_to_string(&setup).unwrap();
    text.push_str("\n# fleet_cli test: a base nobody built\n");
    std::fs::write(&setup, text).unwrap();
    // A PATH with the Docker CLI and python3, but no debootstrap.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for program in ["docker", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .unwrap();
        let target = String::from_utf8(found.stdout).unwrap();
        std::os::unix::fs::symlink(target.trim(), bin.join(program)).unwrap();
    }
    let data = tmp.path().join("data");
    let out = kiln(
        tmp.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "up",
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .env("KILN_IMAGES_DIR", &images)
    .env("PATH", &bin)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert_eq!(
        last,
        "Error: `debootstrap` is not installed: install it with `sudo apt-get install debootstrap` (or run scripts/setup in a Kiln checkout)",
        "one line naming the package and the command: {stderr}"
    );
    assert!(!stderr.contains("Caused by"), "{stderr}");
    assert!(!data.join("postgres").exists(), "nothing was started: {stderr}");
}

#[test]
fn up_with_an_invalid_configuration_starts_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("workers.toml"),
        "images = [\"pyton\"]\n[worker]\n[[worker.queues]]\nname = \"generation\"\n",
    )
    .unwrap();
    let data = cwd.path().join("data");
    let out = kiln(
        cwd.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "up",
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("workers.toml: images[0]: unknown image \"pyton\""),
        "the field is named: {stderr}"
    );
    assert!(!data.join("postgres").exists(), "nothing was started: {stderr}");
}

#[tokio::test]
async fn worker_against_an_unmigrated_database_says_to_run_kiln_migrate() {
    use sqlx::{ConnectOptions, Connection};
    let server: sqlx::postgres::PgConnectOptions = kiln_testkit::server_url().parse().unwrap();
    let name = format!("kiln_test_blank_{:08x}", std::process::id());
    let mut admin = sqlx::PgConnection::connect_with(&server).await.unwrap();
    // The name is ours (a fixed prefix and a number): safe to splice into DDL.
    for ddl in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let url = server.clone().database(&name).to_url_lossy().to_string();
    let cwd = tempfile::tempdir().unwrap();
    let config = light_config(cwd.path());
    let out = kiln(cwd.path(), &["worker", "--config", config.to_str().unwrap()])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("this database has no Kiln schema: run `kiln migrate` first"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_keeps_waiting_through_a_postgres_restart() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let pg_dir = data.join("postgres");
    let fixture = kiln_tests::validation::fixture("python");
    let child = kiln(
        cwd.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "submit",
            "validate",
            fixture.to_str().unwrap(),
            "--language",
            "python",
            "--wait",
            "--json",
            "--wait-timeout",
            "300",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Attach to the cluster `kiln submit` started, once it answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !(pg_dir.join("password").exists() && pg_dir.join("port").exists() && postgres_answers(&pg_dir)) {
        assert!(
            std::time::Instant::now() < deadline,
            "kiln submit never started its Postgres"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cluster = kiln_pg::LocalCluster::start(&pg_dir).unwrap();
    assert!(!cluster.started(), "the test attached to the CLI's cluster");
    let pool = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    // Restart Postgres while the pipeline's jobs run.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM kiln_jobs WHERE state = 'running'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        if running > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job of the pipeline ever ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    cluster.stop().unwrap();
    // Longer than the CLI pool's 10 s acquire timeout.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let restarted = kiln_pg::LocalCluster::start(&pg_dir).unwrap();
    assert_eq!(
        restarted.port(),
        cluster.port(),
        "same port: the CLI's URL still points at it"
    );

    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the wait survived the restart: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The fixture's own verdict (two of its tests fail on purpose), not an error.
    assert_eq!(summary["verdict"], "failed", "{summary}");
    assert_eq!(summary["test"]["passed"], 3, "{summary}");
    assert_eq!(summary["test"]["failed"], 2, "{summary}");
    remove_cluster(&pg_dir);
}

/// Starts `cmd` and returns it with the address its `metrics on http://…/metrics` line gave.
fn until_metrics(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("metrics on ") {
                    return (child, url.to_owned());
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no `metrics on` line: {e}");
            }
        }
    }
}

// Multi-threaded: blocking child I/O while the test's runtime serves nothing itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_schedulers_serve_their_own_metrics_for_prometheus() {
    let db = kiln_testkit::TestDb::new().await;
    let cwd = tempfile::tempdir().unwrap();
    let config = light_config(cwd.path());
    let config = config.to_str().unwrap();
    let mut seen = Vec::new();
    for args in [
        vec!["worker", "--config", config, "--metrics-listen", "127.0.0.1:0"],
        vec!["scheduler", "--config", config, "--metrics-listen", "127.0.0.1:0"],
    ] {
        let mut cmd = kiln(cwd.path(), &args);
        cmd.env("DATABASE_URL", &db.url);
        let (mut child, url) = until_metrics(cmd);
        let res = reqwest::get(&url).await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let body = res.text().await.unwrap();
        assert!(body.contains("# TYPE kiln_"), "{}: {body}", args[0]);
        let health = reqwest::get(url.replace("/metrics", "/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = child.wait().unwrap();
        assert!(status.success(), "{} exited {status}", args[0]);
        seen.push(args[0]);
    }
    assert_eq!(seen, ["worker", "scheduler"]);

    // A port in use is refused at once, naming the flag.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = kiln(
        cwd.path(),
        &["worker", "--config", config, "--metrics-listen", &addr],
    )
    .env("DATABASE_URL", &db.url)
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
