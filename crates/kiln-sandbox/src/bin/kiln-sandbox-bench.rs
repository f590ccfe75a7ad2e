//! `kiln-sandbox-bench [-n N] [--json] [--without-kiln-seccomp]`: runs `true` in the python image N times and reports
//! p50/p99 of the whole job for `docker run --rm` (CLI), Kiln's cold path and Kiln's warm path,
//! and the throughput with 8 jobs in flight for Kiln and for the CLI. Driven by
//! `scripts/bench-sandbox`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_sandbox::{JobLabels, JobSpec, Outcome, Sandbox};
use tokio::sync::Semaphore;

const IN_FLIGHT: usize = 8;

fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (ms.len() as f64 - 1.0)).round() as usize;
    ms[idx.min(ms.len() - 1)]
}

fn docker_run(image: &str) -> Duration {
    let t = Instant::now();
    let status = Command::new("docker")
        .args(["run", "--rm", "--network", "none", image, "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("docker CLI");
    assert!(status.success(), "docker run failed");
    t.elapsed()
}

fn spec(image: &str, worker: &str, i: usize) -> JobSpec {
    let labels = JobLabels {
        job_id: i as i64,
        attempt: 1,
        worker_id: worker.to_string(),
    };
    JobSpec::new(image, &["true"], labels)
}

async fn kiln_job(sb: &Sandbox, spec: &JobSpec, cold: bool) -> Duration {
    kiln_job_phases(sb, spec, cold).await.0
}

/// A job's wall time and its phases as the sandbox timed them (start, upload, run, readback).
async fn kiln_job_phases(sb: &Sandbox, spec: &JobSpec, cold: bool) -> (Duration, [f64; 4]) {
    let t = Instant::now();
    let r = if cold {
        sb.run_cold(spec, None).await
    } else {
        sb.run(spec, None).await
    }
    .expect("kiln job");
    let took = t.elapsed();
    assert_eq!(r.outcome, Outcome::Success);
    let p = &r.timings;
    (took, [p.container_start_ms, p.upload_ms, p.run_ms, p.readback_ms])
}

/// `{"start":…,"upload":…,"run":…,"readback":…}`: the median of each phase, in ms.
fn phases_json(phases: &[[f64; 4]]) -> String {
    let med = |i: usize| {
        let mut v: Vec<f64> = phases.iter().map(|p| p[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    format!(
        "{{\"start\":{:.2},\"upload\":{:.2},\"run\":{:.2},\"readback\":{:.2}}}",
        med(0),
        med(1),
        med(2),
        med(3)
    )
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut n = 50usize;
    let mut json = false;
    // Measures what Kiln's own seccomp profile costs: containers get none, as on an engine
    // that applies none (never for jobs: only here).
    let mut without_kiln_seccomp = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => n = args.next().and_then(|v| v.parse().ok()).expect("-n N"),
            "--json" => json = true,
            "--without-kiln-seccomp" => without_kiln_seccomp = true,
            other => panic!("unknown argument {other} (usage: [-n N] [--json] [--without-kiln-seccomp])"),
        }
    }
    let image =
        kiln_images::image_tag(&kiln_images::default_images_dir(), "python").expect("images/ readable");
    let worker = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let docker = bollard::Docker::connect_with_defaults().expect("docker engine");
    let mut isolation = kiln_sandbox::isolation::read(&docker)
        .await
        .expect("docker engine");
    if without_kiln_seccomp {
        isolation.seccomp = true;
    }
    let sb = Sandbox::with_isolation(docker, &worker, isolation)
        .await
        .expect("docker engine");
    let say = |s: &str| {
        if !json {
            eprintln!("{s}");
        }
    };

    // Warm-up: page in the image and the code paths.
    docker_run(&image);
    kiln_job(&sb, &spec(&image, &worker, 0), true).await;
    sb.removals_done().await;

    say(&format!("docker run --rm ({n} sequential)…"));
    let cli: Vec<Duration> = (0..n).map(|_| docker_run(&image)).collect();

    say(&format!("kiln cold ({n} sequential)…"));
    let mut cold = Vec::with_capacity(n);
    let mut cold_phases = Vec::with_capacity(n);
    for i in 0..n {
        let (d, p) = kiln_job_phases(&sb, &spec(&image, &worker, i), true).await;
        cold.push(d);
        cold_phases.push(p);
        sb.removals_done().await;
    }

    say(&format!("kiln warm ({n} sequential)…"));
    let pool = sb.start_pool(std::slice::from_ref(&image), IN_FLIGHT);
    let mut warm = Vec::with_capacity(n);
    let mut warm_phases = Vec::with_capacity(n);
    for i in 0..n {
        // A warm job is one that finds a ready container: wait (untimed) for one.
        pool.wait_full(Duration::from_secs(60)).await;
        sb.removals_done().await;
        let (d, p) = kiln_job_phases(&sb, &spec(&image, &worker, i), false).await;
        warm.push(d);
        warm_phases.push(p);
    }

    say(&format!("throughput, {IN_FLIGHT} in flight ({n} jobs each)…"));
    pool.wait_full(Duration::from_secs(60)).await;
    sb.removals_done().await;
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let (sb, spec) = (sb.clone(), spec(&image, &worker, i));
        tasks.push(tokio::spawn(async move {
            let d = kiln_job(&sb, &spec, false).await;
            drop(permit);
            d
        }));
    }
    for task in tasks {
        task.await.expect("job task");
    }
    sb.removals_done().await; // the used containers are gone too, like `--rm`
    let kiln_tput = n as f64 / t.elapsed().as_secs_f64();
    sb.shutdown().await;

    let t = Instant::now();
    let gate = Arc::new(std::sync::Mutex::new(0usize));
    let threads: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (gate, image) = (gate.clone(), image.clone());
            std::thread::spawn(move || loop {
                {
                    let mut started = gate.lock().expect("lock");
                    if *started >= n {
                        break;
                    }
                    *started += 1;
                }
                docker_run(&image);
            })
        })
        .collect();
    for th in threads {
        th.join().expect("cli thread");
    }
    let cli_tput = n as f64 / t.elapsed().as_secs_f64();

    let (cli_p50, cold_p50, warm_p50, warm_p99) = (
        percentile(&cli, 50.0),
        percentile(&cold, 50.0),
        percentile(&warm, 50.0),
        percentile(&warm, 99.0),
    );
    if json {
        println!(
            "{{\"docker_cli_p50_ms\":{cli_p50:.1},\"kiln_cold_p50_ms\":{cold_p50:.1},\"kiln_warm_p50_ms\":{warm_p50:.1},\"kiln_warm_p99_ms\":{warm_p99:.1},\"kiln_concurrent_jobs_per_s\":{kiln_tput:.2},\"docker_cli_concurrent_jobs_per_s\":{cli_tput:.2},\"kiln_cold_phases_p50_ms\":{},\"kiln_warm_phases_p50_ms\":{}}}",
                phases_json(&cold_phases),
                phases_json(&warm_phases)
        );
    } else {
        println!("image: {image}, n = {n}");
        println!(
            "docker run --rm   p50 {cli_p50:7.1} ms   p99 {:7.1} ms",
            percentile(&cli, 99.0)
        );
        println!(
            "kiln cold         p50 {cold_p50:7.1} ms   p99 {:7.1} ms",
            percentile(&cold, 99.0)
        );
        println!("kiln warm         p50 {warm_p50:7.1} ms   p99 {warm_p99:7.1} ms");
        println!("{IN_FLIGHT} in flight      kiln {kiln_tput:.2} jobs/s   docker CLI {cli_tput:.2} jobs/s");
        println!(
            "targets: warm p50 <= 0.35 x CLI p50: {}; cold p50 <= CLI p50: {}; kiln throughput >= CLI: {}",
            warm_p50 <= 0.35 * cli_p50,
            cold_p50 <= cli_p50,
            kiln_tput >= cli_tput
        );
    }
}
