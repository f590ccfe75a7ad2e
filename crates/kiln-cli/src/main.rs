//! `kiln`: Kiln's one binary. Every role runs alone or together.

mod client;
mod commands;
mod costs;
mod db;
mod events;
mod fleet;
mod generate;
mod images;
mod kinds;
mod metrics_http;
mod pipelines;
mod scheduler;
mod serve;
mod submit;
mod tokens;
mod up;
mod validation;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Send client commands (enqueue, jobs, queues) to this Kiln API instead of the database.
    #[arg(long = "api", env = "KILN_API_URL", global = true)]
    api_url: Option<String>,
    /// API token for --api (default: the one in <data-dir>/admin-token).
    #[arg(long, env = "KILN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring the database schema up to date.
    Migrate,
    /// Pull and run jobs from the queues named in workers.toml (else the built-in defaults)
    /// until SIGTERM/SIGINT.
    Worker(WorkerCommandArgs),
    /// Everything on one machine: embedded Postgres, migrations, images, workers.
    Up(UpArgs),
    /// Enqueue one job, given as JSON (the fields of `JobSpec`), and print its id.
    Enqueue(commands::EnqueueArgs),
    /// Fire cron schedules (those of workers.toml are declared first); many may run, one leads.
    Scheduler(scheduler::SchedulerArgs),
    /// Inspect and steer jobs.
    Jobs {
        #[command(subcommand)]
        cmd: commands::JobsCommand,
    },
    /// Print job events (the outbox), one JSON object per line: `kiln events [--follow] [--type T]`.
    Events(events::EventsArgs),
    /// What LLM calls cost, grouped by provider, model, API token or day.
    Costs(costs::CostsArgs),
    /// Pipelines: download the workspace one ends with.
    Pipelines {
        #[command(subcommand)]
        cmd: pipelines::PipelinesCommand,
    },
    /// Inspect and steer queues fleet-wide.
    Queues {
        #[command(subcommand)]
        cmd: commands::QueuesCommand,
    },
    /// Serve the HTTP API.
    Api(serve::ApiArgs),
    /// Create, list and revoke API tokens.
    Tokens {
        #[command(subcommand)]
        cmd: tokens::TokensCommand,
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

/// Serves `/metrics` on `addr` when given; cancel the token to stop it.
async fn metrics_endpoint(
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<tokio_util::sync::CancellationToken> {
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = addr {
        metrics_http::serve(addr, stop.clone()).await?;
    }
    Ok(stop)
}

#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// The fleet configuration (default: ./workers.toml if there is one, else the built-in
    /// defaults, which are the workers.toml shipped with Kiln).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the worker id.
    #[arg(long)]
    id: Option<String>,
}

#[derive(Debug, clap::Args)]
struct WorkerCommandArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Serve this process's metrics at http://ADDR/metrics (e.g. 0.0.0.0:9100), for Prometheus.
    #[arg(long, env = "KILN_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Skip building missing images.
    #[arg(long)]
    no_images: bool,
    /// Leave the embedded Postgres running when `kiln up` ends (by default the cluster it
    /// started is stopped on exit, Ctrl-C, SIGTERM or an error).
    #[arg(long)]
    keep_postgres: bool,
    #[command(flatten)]
    api: serve::ApiArgs,
}

#[derive(Debug, Subcommand)]
enum PostgresCommand {
    /// Start (or attach to) the cluster and print `DATABASE_URL=…`.
    Start,
    /// Stop the cluster.
    Stop,
    /// Stop the cluster and delete it (its data, port and password files).
    Remove,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.json_logs);
    // Every kind module's metric families exist from the start in every process, so
    // `/metrics` shows them before the first job.
    kinds::registry().register_metrics();
    match cli.command {
        Command::Images { cmd } => tokio::task::spawn_blocking(move || images::run(cmd)).await??,
        Command::Postgres { cmd } => {
            let cluster = kiln_pg::LocalCluster::start(&cli.data_dir.join("postgres"))?;
            match cmd {
                PostgresCommand::Start => println!("DATABASE_URL={}", cluster.url()),
                PostgresCommand::Stop => cluster.stop()?,
                PostgresCommand::Remove => cluster.remove()?,
            }
        }
        Command::Submit { cmd } => {
            submit::run(cmd, &cli.api_url, &cli.token, &cli.database_url, &cli.data_dir).await?
        }
        Command::Migrate => {
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            kiln_queue::migrate(&pool).await.context("migrate")?;
            println!("schema up to date");
        }
        Command::Scheduler(args) => {
            fleet::FleetFile::load_or_default(args.config.as_deref())?;
            let shutdown = shutdown_signal();
            let metrics = metrics_endpoint(args.metrics_listen).await?;
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            kiln_queue::migrate(&pool).await.context("migrate")?;
            scheduler::run(pool, &args, shutdown).await?;
            metrics.cancel();
        }
        Command::Worker(args) => {
            fleet::FleetFile::load_or_default(args.worker.config.as_deref())?;
            let shutdown = shutdown_signal();
            let metrics = metrics_endpoint(args.metrics_listen).await?;
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            db::require_schema(&pool).await?;
            run_worker(pool, None, &args.worker, shutdown).await?;
            metrics.cancel();
        }
        Command::Up(args) => up::run(args, &cli.database_url, &cli.data_dir).await?,
        Command::Api(args) => {
            let listener = serve::bind(&args).await?;
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            kiln_queue::migrate(&pool).await.context("migrate")?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                signal.cancel();
            });
            serve::run_api(pool, None, listener, &args, &cli.data_dir, shutdown).await?;
        }
        Command::Tokens { cmd } => {
            let pool = connect(&cli.database_url, &cli.data_dir).await?;
            tokens::run(&pool, cmd).await?;
        }
        Command::Enqueue(args) => {
            commands::enqueue(
                &backend(&cli.api_url, &cli.token, &cli.database_url, &cli.data_dir).await?,
                args,
            )
            .await?
        }
        Command::Jobs { cmd } => {
            commands::jobs(
                &backend(&cli.api_url, &cli.token, &cli.database_url, &cli.data_dir).await?,
                cmd,
            )
            .await?
        }
        Command::Events(args) => {
            events::run(
                &backend(&cli.api_url, &cli.token, &cli.database_url, &cli.data_dir).await?,
                args,
            )
            .await?
        }
        Command::Costs(args) => {
            costs::run(
                &backend(&cli.api_url, &cli.token, &cli.database_url, &cli.data_dir).await?,
                args,
            )
            .await?
        }
        Command::Pipelines { cmd } => {
            pipelines::run(
                &backend(&cli.api_url, &cli.token, &cli.database_url, &cli.data_dir).await?,
                cmd,
            )
            .await?
        }
        Command::Queues { cmd } => {
            commands::queues(
                &backend(&cli.api_url, &cli.token, &cli.database_url, &cli.data_dir).await?,
                cmd,
            )
            .await?
        }
    }
    Ok(())
}

/// Connects to `DATABASE_URL`, or starts (or attaches to) the embedded cluster under
/// `data_dir`, which then keeps running.
async fn connect(url: &Option<String>, data_dir: &std::path::Path) -> anyhow::Result<PgPool> {
    Ok(db::connect_owned(url, data_dir).await?.0)
}

/// The API when `--api` is set (token from `--token`, else `<data-dir>/admin-token`), else
/// the database.
async fn backend(
    api_url: &Option<String>,
    token: &Option<String>,
    database_url: &Option<String>,
    data_dir: &std::path::Path,
) -> anyhow::Result<commands::Backend> {
    match api_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let token = match token {
                Some(t) => t.clone(),
                None => {
                    let path = serve::admin_token_path(data_dir);
                    std::fs::read_to_string(&path)
                        .with_context(|| {
                            format!("--api needs --token, KILN_TOKEN or a readable {}", path.display())
                        })?
                        .trim()
                        .to_owned()
                }
            };
            Ok(commands::Backend::Api(client::ApiClient::new(url, token)?))
        }
        None => Ok(commands::Backend::Db(connect(database_url, data_dir).await?)),
    }
}

async fn run_worker(
    pool: PgPool,
    listener: Option<kiln_queue::Listener>,
    args: &WorkerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut fleet = fleet::FleetFile::load_or_default(args.config.as_deref())?;
    if args.id.is_some() {
        fleet.worker.id = args.id.clone();
    }
    let dir = kiln_images::default_images_dir();
    for name in &fleet.images {
        let tag =
            kiln_images::image_tag(&dir, name).with_context(|| format!("image `{name}` in workers.toml"))?;
        tracing::info!(image = %name, %tag, "job image available to this worker");
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = match listener {
        Some(l) => l,
        None => kiln_queue::Listener::start(pool.clone(), stop.clone()),
    };
    let context = kiln_worker::FleetContext {
        listener,
        images: fleet.images.clone(),
        warm_pool: fleet.warm_pool,
    };
    let (worker, services) = validation::build_worker(pool, fleet.worker, &fleet.sections, context).await?;
    tracing::info!(
        worker = worker.id(),
        "starting; SIGTERM or Ctrl-C stops it gracefully"
    );
    // The services (the warm pool, the sandbox's containers) shut down however the worker
    // ended: a worker that failed left its warm containers behind on the engine.
    let ran = worker.run(shutdown).await;
    services.shutdown().await;
    stop.cancel();
    Ok(ran?)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// it is first awaited: a signal that arrives while the process is still starting is kept,
/// and the process stops gracefully as soon as it is running.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
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
