//! `kiln`: Kiln's one binary. Every role runs alone or together.

mod fleet;
mod images;
mod submit;
mod validation;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiln_queue::{admin, JobSpec};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: a durable job queue and sandboxed worker fleet"
)]
struct Cli {
    /// Postgres to use; unset means the embedded default (a private cluster under --data-dir).
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Where the embedded default keeps its Postgres cluster.
    #[arg(long, env = "KILN_DATA_DIR", default_value = ".kiln", global = true)]
    data_dir: PathBuf,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring the database schema up to date.
    Migrate,
    /// Pull and run jobs from the queues named in workers.toml until SIGTERM/SIGINT.
    Worker(WorkerArgs),
    /// Everything on one machine: embedded Postgres, migrations, images, workers.
    Up(UpArgs),
    /// Enqueue one job, given as JSON (the fields of `JobSpec`), and print its id.
    Enqueue {
        /// e.g. '{"kind": "test", "payload": {...}, "priority": 5}'
        job: String,
    },
    /// Inspect and steer jobs.
    Jobs {
        #[command(subcommand)]
        cmd: JobsCommand,
    },
    /// Inspect and steer queues fleet-wide.
    Queues {
        #[command(subcommand)]
        cmd: QueuesCommand,
    },
    /// Build and list the job images.
    Images {
        #[command(subcommand)]
        cmd: images::ImagesCommand,
    },
    /// Submit work: `kiln submit validate DIR [--language L] [--wait] [--json]`.
    Submit {
        #[command(subcommand)]
        cmd: submit::SubmitCommand,
    },
    /// Manage the embedded Postgres cluster under --data-dir (used by the scripts).
    Postgres {
        #[command(subcommand)]
        cmd: PostgresCommand,
    },
}

#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// The fleet configuration.
    #[arg(long, default_value = "workers.toml")]
    config: PathBuf,
    /// Override the worker id.
    #[arg(long)]
    id: Option<String>,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Skip building missing images.
    #[arg(long)]
    no_images: bool,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Print a job and its attempts as JSON.
    Show { id: i64 },
    /// Cancel a job (a running one is stopped by its worker).
    Cancel { id: i64 },
    /// Run a finished job again.
    Retry { id: i64 },
}

#[derive(Debug, Subcommand)]
enum QueuesCommand {
    /// Jobs per queue and state.
    List,
    /// Stop claiming from a queue across the fleet.
    Pause { name: String },
    /// Resume a paused queue.
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
enum PostgresCommand {
    /// Start (or attach to) the cluster and print `DATABASE_URL=…`.
    Start,
    /// Stop the cluster.
    Stop,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.json_logs);
    match cli.command {
        Command::Images { cmd } => tokio::task::spawn_blocking(move || images::run(cmd)).await??,
        Command::Postgres { cmd } => {
            let cluster = kiln_pg::LocalCluster::start(&cli.data_dir.join("postgres"))?;
            match cmd {
                PostgresCommand::Start => println!("DATABASE_URL={}", cluster.url()),
                PostgresCommand::Stop => cluster.stop()?,
            }
        }
        Command::Submit { cmd } => submit::run(cmd, &cli.database_url, &cli.data_dir).await?,
        Command::Migrate => {
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            kiln_queue::migrate(&pool).await.context("migrate")?;
            println!("schema up to date");
        }
        Command::Worker(args) => {
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            run_worker(pool, &args).await?;
        }
        Command::Up(args) => {
            if !args.no_images {
                let names = fleet::FleetFile::load(&args.worker.config)?.images;
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    for name in names {
                        let opts = kiln_images::BuildOptions {
                            images_dir: kiln_images::default_images_dir(),
                            only: Some(name),
                            force: false,
                        };
                        kiln_images::build(&opts)?;
                    }
                    Ok(())
                })
                .await??;
            }
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            kiln_queue::migrate(&pool).await.context("migrate")?;
            run_worker(pool, &args.worker).await?;
        }
        Command::Enqueue { job } => {
            let spec: JobSpec = serde_json::from_str(&job).context("parse the job JSON")?;
            let job = spec.into_new_job()?;
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            let out = kiln_queue::enqueue(&pool, &job).await?;
            println!("{}", serde_json::to_string(&out)?);
        }
        Command::Jobs { cmd } => {
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            match cmd {
                JobsCommand::Show { id } => {
                    let job = admin::get_job(&pool, id).await?;
                    let attempts = admin::attempts(&pool, id).await?;
                    println!("{}", serde_json::json!({"job": job, "attempts": attempts}));
                }
                JobsCommand::Cancel { id } => println!("{}", admin::cancel(&pool, id).await?),
                JobsCommand::Retry { id } => {
                    admin::retry(&pool, id).await?;
                    println!("available");
                }
            }
        }
        Command::Queues { cmd } => {
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            match cmd {
                QueuesCommand::List => {
                    for c in admin::queue_counts(&pool).await? {
                        let state = c.state.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                        let paused = if c.paused { " (paused)" } else { "" };
                        println!("{:<24} {:<10} {:>8}{paused}", c.queue, state, c.count);
                    }
                }
                QueuesCommand::Pause { name } => println!("{:?}", admin::pause(&pool, &name).await?),
                QueuesCommand::Resume { name } => println!("{:?}", admin::resume(&pool, &name).await?),
            }
        }
    }
    Ok(())
}

/// Connects to `DATABASE_URL`, or starts the embedded cluster under `data_dir`.
async fn connect(url: &Option<String>, data_dir: &std::path::Path) -> anyhow::Result<PgPool> {
    let url = match url.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        None => {
            let dir = data_dir.join("postgres");
            let cluster = tokio::task::spawn_blocking(move || kiln_pg::LocalCluster::start(&dir)).await??;
            tracing::info!(url = %cluster.url(), "using the embedded Postgres");
            cluster.url()
        }
    };
    PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&url)
        .await
        .with_context(|| format!("connect to {}", redact(&url)))
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://…@{}", &url[..s], &url[a + 1..]),
        _ => url.to_owned(),
    }
}

async fn run_worker(pool: PgPool, args: &WorkerArgs) -> anyhow::Result<()> {
    let mut fleet = fleet::FleetFile::load(&args.config)?;
    if args.id.is_some() {
        fleet.worker.id = args.id.clone();
    }
    let dir = kiln_images::default_images_dir();
    for name in &fleet.images {
        let tag =
            kiln_images::image_tag(&dir, name).with_context(|| format!("image `{name}` in workers.toml"))?;
        tracing::info!(image = %name, %tag, "job image available to this worker");
    }
    let (worker, validation) =
        validation::build_worker(pool, fleet.worker, fleet.warm_pool, &fleet.images).await?;
    tracing::info!(
        worker = worker.id(),
        "starting; SIGTERM or Ctrl-C stops it gracefully"
    );
    worker.run(shutdown_signal()).await?;
    if let Some(v) = validation {
        v.shutdown().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
