//! A worker process: one apalis worker per queue over [`KilnBackend`], plus the loops
//! that keep leases, wake-ups and upkeep going, and a graceful shutdown.

use apalis::prelude::WorkerBuilderExt;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use kiln_queue::lease::{self, HandBack};
use kiln_queue::{JobKind, Listener};

use crate::handler::database_unreachable;
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backend::{fetch_loop, KilnBackend};
use crate::background::{heartbeat_loop, listen_loop, maintenance_loop};
use crate::completer::complete_loop;
use crate::config::WorkerConfig;
use crate::handler::{Handler, Router};
use crate::shared::{Report, Shared, StopReason};

/// Errors that stop a worker from starting.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// Registering the worker failed.
    #[error(transparent)]
    Queue(#[from] kiln_queue::QueueError),
}

/// Builds a [`Worker`]: the pool, the settings and one handler per kind it runs.
pub struct WorkerBuilderKiln {
    pool: PgPool,
    config: WorkerConfig,
    handlers: HashMap<JobKind, Arc<dyn Handler>>,
    listener: Option<Listener>,
}

impl WorkerBuilderKiln {
    /// Runs jobs of `kind` with `handler`.
    pub fn handler(mut self, kind: JobKind, handler: impl Handler) -> Self {
        self.handlers.insert(kind, Arc::new(handler));
        self
    }

    /// Runs jobs of `kind` with an already shared handler.
    pub fn shared_handler(mut self, kind: JobKind, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(kind, handler);
        self
    }

    /// Shares the process's [`Listener`] (one LISTEN connection per process); without one the
    /// worker starts its own.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Checks the settings and returns the worker, ready to [`run`](Worker::run).
    pub fn build(self) -> Result<Worker, WorkerError> {
        self.config.validate().map_err(WorkerError::Config)?;
        let id = self.config.id.clone().unwrap_or_else(default_worker_id);
        Ok(Worker {
            id,
            pool: self.pool,
            config: self.config,
            router: Router::new(self.handlers),
            listener: self.listener,
        })
    }
}

/// A configured worker process.
pub struct Worker {
    id: String,
    pool: PgPool,
    config: WorkerConfig,
    router: Router,
    listener: Option<Listener>,
}

/// `host-pid-random`: the id of a worker that was given none.
pub(crate) fn default_worker_id() -> String {
    format!("{}-{}-{:04x}", hostname(), std::process::id(), rand_u16())
}

fn rand_u16() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 65_536) as u16
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

impl Worker {
    /// Starts building a worker on `pool` with `config`.
    pub fn builder(pool: PgPool, config: WorkerConfig) -> WorkerBuilderKiln {
        WorkerBuilderKiln {
            pool,
            config,
            handlers: HashMap::new(),
            listener: None,
        }
    }

    /// This worker's id (its leases and attempt rows carry it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` completes, then shuts down gracefully: stops claiming, hands
    /// back jobs not yet started, gives running ones `shutdown_grace` to finish, hands back
    /// the rest without spending their attempt, and flushes every outcome.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError> {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let background_stop = CancellationToken::new();
        let listener = match &self.listener {
            Some(l) => l.clone(),
            None => Listener::start(self.pool.clone(), background_stop.clone()),
        };
        let mut wakeups = HashMap::new();
        let mut permits = HashMap::new();
        for q in &self.config.queues {
            wakeups.insert(q.name.clone(), listener.register_fetcher(&q.name));
            permits.insert(q.name.clone(), Arc::new(Semaphore::new(q.concurrency)));
        }
        let shared = Arc::new(Shared {
            pool: self.pool.clone(),
            worker_id: Arc::from(self.id.as_str()),
            config: self.config.clone(),
            kinds: self.router.kinds().collect(),
            held: Mutex::new(HashMap::new()),
            wakeups,
            permits,
            reports: reports_tx,
            stopping: CancellationToken::new(),
            backlogged: Default::default(),
            full_fetchers: Default::default(),
            drained: Default::default(),
            claim_paused_until: Mutex::new(None),
        });
        let host = hostname();
        let queue_names: Vec<String> = self.config.queues.iter().map(|q| q.name.clone()).collect();
        tokio::pin!(shutdown);
        // A worker started while the database is unreachable (restarting, or not up yet) waits
        // for it instead of exiting, and a shutdown meanwhile ends it cleanly.
        loop {
            match lease::register_worker(&self.pool, &self.id, &host, std::process::id(), &queue_names).await
            {
                Ok(()) => break,
                Err(kiln_queue::QueueError::Database { source, .. }) if database_unreachable(&source) => {
                    tracing::warn!(error = %source, "the database is unreachable; registering again in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = &mut shutdown => {
                            background_stop.cancel();
                            tracing::info!(worker = %self.id, "stopped before it could register");
                            return Ok(());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let kinds: Vec<String> = self.router.kinds().map(|k| k.to_string()).collect();
        tracing::info!(worker = %self.id, queues = ?queue_names, kinds = ?kinds, "worker started");
        if kinds.is_empty() {
            tracing::warn!(worker = %self.id, "no job handler is registered: this worker claims nothing");
        }

        let completer = tokio::spawn(complete_loop(shared.clone(), reports_rx));
        let background = [
            tokio::spawn(heartbeat_loop(shared.clone(), background_stop.clone(), host)),
            tokio::spawn(maintenance_loop(shared.clone(), background_stop.clone())),
            tokio::spawn(listen_loop(shared.clone(), listener, background_stop.clone())),
        ];
        // Queue depth and workers alive: exported by whichever process of the fleet holds
        // the exporter lock (a no-op when this process already runs its exporter).
        let exporter = kiln_metrics::DepthExporter::spawn_for_process(
            &self.pool,
            kiln_metrics::ExporterConfig::default(),
            background_stop.clone(),
        );

        let mut workers = Vec::new();
        let mut contexts = Vec::new();
        for q in &self.config.queues {
            let (tx, rx) = mpsc::channel(q.concurrency + q.batch);
            tokio::spawn(fetch_loop(shared.clone(), q.clone(), tx));
            let context = WorkerContext::new(&format!("{}/{}", self.id, q.name));
            contexts.push(context.clone());
            let worker = WorkerBuilder::new(&context)
                .backend(KilnBackend::new(rx, shared.clone()))
                .enable_tracing()
                .build(self.router.clone());
            let name = q.name.clone();
            workers.push(tokio::spawn(async move {
                if let Err(e) = worker.run().await {
                    tracing::error!(queue = %name, error = %e, "apalis worker stopped with an error");
                }
            }));
        }

        shutdown.await;
        tracing::info!(worker = %self.id, "shutting down: no new claims");
        shared.stopping.cancel();
        for (context, task) in contexts.iter().zip(&workers) {
            // Lets apalis drain the in-flight jobs and finish its worker.
            stop_apalis(context, task).await;
        }
        // Jobs claimed but not started go back at once.
        let unstarted: Vec<HandBack> = {
            let mut held = shared.held.lock().expect("held lock");
            let ids: Vec<i64> = held
                .iter()
                .filter(|(_, h)| h.started_at.is_none())
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| held.remove(id)).count();
            ids.into_iter()
                .map(|id| HandBack {
                    id,
                    started_at: None,
                    reason: None,
                })
                .collect()
        };
        if !unstarted.is_empty() {
            match lease::hand_back(&self.pool, &self.id, &unstarted).await {
                Ok(n) => tracing::info!(handed_back = n, "handed back jobs that had not started"),
                Err(e) => {
                    tracing::warn!(error = %e, "hand back failed; leases will expire and the rescuer will return them")
                }
            }
        }
        let all_workers = futures::future::join_all(workers);
        tokio::pin!(all_workers);
        if tokio::time::timeout(self.config.shutdown_grace, &mut all_workers)
            .await
            .is_err()
        {
            let running = shared.held_ids();
            tracing::warn!(
                running = running.len(),
                "grace period over: handing back running jobs"
            );
            for id in running {
                shared.stop_job(id, StopReason::Shutdown);
            }
            all_workers.await;
        }
        let _ = shared.reports.send(Report::Close);
        let _ = completer.await;
        background_stop.cancel();
        for b in background {
            let _ = b.await;
        }
        if let Some(e) = exporter {
            let _ = e.await;
        }
        if let Err(e) = lease::deregister_worker(&self.pool, &self.id).await {
            tracing::warn!(error = %e, "could not mark the worker stopped");
        }
        tracing::info!(worker = %self.id, "worker stopped");
        Ok(())
    }
}

/// Asks apalis to stop `context`'s worker. A stop requested while the worker has not started
/// yet (a shutdown right at start-up) is refused by apalis and would be lost, leaving the
/// worker running for ever: ask again until it has started, or until its task has ended.
async fn stop_apalis(context: &WorkerContext, task: &tokio::task::JoinHandle<()>) {
    loop {
        match context.stop() {
            Ok(()) => return,
            Err(_) if task.is_finished() => return,
            Err(e) => {
                tracing::debug!(worker = context.name(), error = %e, "apalis worker not started yet; asking again");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
}
