//! Runs one job in the sandbox and prints its report as JSON; prints each log chunk as it
//! arrives. Used by the reaper test (it is killed mid-job) and handy by hand:
//! `kiln-sandbox-run --worker W --image IMAGE [--timeout SECS] -- CMD ARGS…`.

use std::time::Duration;

use kiln_sandbox::{JobLabels, JobSpec, Sandbox, Stream};

fn usage() -> ! {
    eprintln!("usage: kiln-sandbox-run --worker W --image IMAGE [--timeout SECS] -- CMD ARGS...");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let (mut worker, mut image, mut timeout, mut command) = (None, None, 120u64, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--worker" => worker = args.next(),
            "--image" => image = args.next(),
            "--timeout" => {
                timeout = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--" => command = args.by_ref().collect(),
            _ => usage(),
        }
    }
    let (Some(worker), Some(image)) = (worker, image) else {
        usage()
    };
    if command.is_empty() {
        usage();
    }
    let sandbox = match Sandbox::connect(&worker).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let labels = JobLabels {
        job_id: 0,
        attempt: 1,
        worker_id: worker,
    };
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut spec = JobSpec::new(image, &argv, labels);
    spec.timeout = Duration::from_secs(timeout);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<kiln_sandbox::LogChunk>(256);
    let printer = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            let tag = match chunk.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            println!("{tag}: {}", String::from_utf8_lossy(&chunk.data).trim_end());
        }
    });
    let result = sandbox.run(&spec, Some(tx)).await;
    let _ = printer.await;
    sandbox.shutdown().await;
    match result {
        Ok(report) => println!("{}", serde_json::to_string(&report).unwrap_or_default()),
        Err(e) => {
            eprintln!("error: {e} (retryable: {})", e.is_retryable());
            std::process::exit(1);
        }
    }
}
