//! The compose fleet for real, on this machine with no registry: `scripts/compose-images`
//! builds Postgres, Prometheus and Kiln from the debootstrap base; `docker-compose up` runs the
//! API, two workers, two schedulers and Prometheus; pipelines, a webhook and a schedule run
//! through the API from the host; Prometheus scrapes every Kiln process and every expression of
//! the shipped dashboard returns data; `docker-compose down -v` leaves nothing behind.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.current_dir(ROOT).output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The project: `docker-compose -p NAME` with its own host ports; taken down when dropped.
struct Fleet {
    project: String,
    api_port: u16,
    prom_port: u16,
}

impl Fleet {
    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-f", "docker-compose.yml", "-p", &self.project])
            .args(args)
            .env("KILN_API_PORT", self.api_port.to_string())
            .env("KILN_PROMETHEUS_PORT", self.prom_port.to_string());
        c
    }

    fn containers(&self, filter: &str) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut args = vec!["ps", "-aq", "--filter", label.as_str()];
        if !filter.is_empty() {
            args.extend(["--filter", filter]);
        }
        lines(&run(Command::new("docker").args(&args)).stdout)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self
            .compose(&["down", "-v", "--remove-orphans", "--timeout", "40"])
            .current_dir(ROOT)
            .output();
    }
}

async fn until<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn packed_b64(dir: &std::path::Path) -> (String, String) {
    use base64::Engine;
    let p = kiln_artifacts::pack_dir(dir, kiln_artifacts::DEFAULT_MAX_BYTES).expect("pack");
    (
        base64::engine::general_purpose::STANDARD.encode(&p.data),
        p.digest,
    )
}

/// Sends `req` and decodes its JSON answer.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2_hmac::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_fleet_runs_pipelines_is_scraped_whole_and_leaves_nothing() {
    run(Command::new("scripts/compose-images").arg("--debug"));
    let fleet = Fleet {
        project: format!("kilntest{}", std::process::id()),
        api_port: free_port(),
        prom_port: free_port(),
    };
    run(&mut fleet.compose(&["up", "-d", "--scale", "worker=2"]));
    let workers = fleet.containers("label=com.docker.compose.service=worker");
    assert_eq!(workers.len(), 2, "{workers:?}");

    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{}", fleet.api_port);
    until("the API", 120, async || {
        let r = http.get(format!("{api}/healthz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let out = run(&mut fleet.compose(&[
        "exec", "-T", "api", "kiln", "tokens", "create", "--scope", "admin",
    ]));
    let token = lines(&out.stdout).pop().expect("a token line");
    assert!(token.starts_with("kiln_"), "{token}");
    let call = |m: reqwest::Method, path: &str| http.request(m, format!("{api}{path}")).bearer_auth(&token);

    // Two validation pipelines from the host, run by the compose workers.
    let (b64, digest) = packed_b64(&kiln_tests::validation::fixture("python"));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = json_of(
            call(reqwest::Method::POST, "/v1/pipelines/validate")
                .json(&json!({"workspace_tar_gz_base64": b64})),
        )
        .await;
        ids.push(r["pipeline_id"].as_i64().unwrap_or_else(|| panic!("{r}")));
    }
    for id in &ids {
        let wait = format!("/v1/pipelines/{id}/wait?timeout_secs=240");
        let p = json_of(call(reqwest::Method::GET, &wait).timeout(Duration::from_secs(300))).await;
        assert_eq!(p["state"], "finished", "{p}");
        assert!(matches!(p["verdict"].as_str(), Some("passed" | "failed")), "{p}");
        assert!(p["result"]["test"]["passed"].as_i64().unwrap_or(0) > 0, "{p}");
    }

    // A signed webhook delivery and a schedule ticking every 2 s, both enqueuing lint jobs on
    // the stored workspace: the rest of a mixed workload.
    let job = json!({"kind": "lint", "payload": {"workspace": digest, "languages": ["python"]}});
    let secret = "compose-hook-secret-0123";
    let r = call(reqwest::Method::POST, "/v1/hooks")
        .json(&json!({"name": "ci", "secret": secret, "job": job}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let body = serde_json::to_vec(&json!({"repository": "acme/api", "commit": "cafe"})).unwrap();
    let r = http
        .post(format!("{api}/v1/hooks/generic/ci"))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", sign(secret, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let r = call(reqwest::Method::POST, "/v1/schedules")
        .json(&json!({"name": "tick", "cron": "*/2 * * * * *", "job": job}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // Prometheus scrapes the API, both workers and both schedulers.
    let prom = format!("http://127.0.0.1:{}", fleet.prom_port);
    until("every Kiln process up in Prometheus", 120, async || {
        let t: Value = http
            .get(format!("{prom}/api/v1/targets"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let up = |job: &str| {
            t["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["labels"]["job"] == job && x["health"] == "up")
                .count()
        };
        (up("kiln-api") == 1 && up("kiln-worker") == 2 && up("kiln-scheduler") == 2).then_some(())
    })
    .await;

    // Every expression of the shipped dashboard returns data.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/grafana/dashboards/kiln.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut empty = exprs.clone();
    let start = Instant::now();
    while !empty.is_empty() && start.elapsed() < Duration::from_secs(120) {
        let mut still = Vec::new();
        for e in empty {
            let r = json_of(
                http.get(format!("{prom}/api/v1/query"))
                    .query(&[("query", e.as_str())]),
            )
            .await;
            if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
                still.push(e);
            }
        }
        empty = still;
        if !empty.is_empty() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    assert!(empty.is_empty(), "dashboard expressions with no data: {empty:#?}");

    // Down: no container, network or volume of the project, and no job container of its
    // workers, is left.
    let hosts: Vec<String> = workers.iter().map(|w| w.chars().take(12).collect()).collect();
    run(&mut fleet.compose(&["down", "-v", "--remove-orphans", "--timeout", "40"]));
    assert!(fleet.containers("").is_empty());
    let label = format!("label=com.docker.compose.project={}", fleet.project);
    let vols = lines(&run(Command::new("docker").args(["volume", "ls", "-q", "--filter", &label])).stdout);
    assert!(vols.is_empty(), "{vols:?}");
    for host in hosts {
        let filter = format!("label=kiln.host={host}");
        let left = lines(&run(Command::new("docker").args(["ps", "-aq", "--filter", &filter])).stdout);
        assert!(left.is_empty(), "job containers of worker {host} left: {left:?}");
    }
}
