//! Kind modules: a job kind registers, in one call, its handlers, its background services, its
//! section of `workers.toml`, its metric families and its shutdown. A worker process is built
//! from the [`Registry`] of modules; `workers.toml` says which kinds it serves.

use futures::future::BoxFuture;
use kiln_queue::{JobKind, Listener};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{QueueConfig, WorkerConfig};
use crate::handler::{typed, Handler, JobHandler};
use crate::runtime::{Worker, WorkerError};

/// A module's failure to start (its section is invalid, its engine unreachable…).
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The module's `workers.toml` section is invalid; the message names the key.
    #[error("[{section}] {message}")]
    Config {
        /// The section.
        section: &'static str,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A section of `workers.toml` that no module owns.
    #[error("unknown section `{0}` in the fleet file")]
    UnknownSection(String),
    /// The module could not start.
    #[error("{module}: {message}")]
    Start {
        /// The module's name.
        module: &'static str,
        /// Why.
        message: String,
    },
    /// The worker itself could not be built.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// What a module gets when it registers: the process's shared resources.
#[derive(Clone)]
pub struct ModuleContext {
    /// The database.
    pub pool: PgPool,
    /// This worker's id (labels, leases).
    pub worker_id: String,
    /// The process's one LISTEN connection.
    pub listener: Listener,
    /// Fires when the worker stops: background services end with it.
    pub stop: CancellationToken,
    /// The top-level `images` of `workers.toml` (job images this worker may use).
    pub images: Vec<String>,
    /// The top-level `warm_pool` of `workers.toml`.
    pub warm_pool: usize,
    /// The queues this worker serves, with their per-queue settings (workspace quotas).
    pub queues: Vec<QueueConfig>,
    /// `[worker] live_log_cap_bytes`: bytes of live log stored per attempt.
    pub live_log_cap_bytes: u64,
}

/// Collects what a module registers.
pub struct Registration {
    context: ModuleContext,
    handlers: HashMap<JobKind, Arc<dyn Handler>>,
    services: Vec<(&'static str, JoinHandle<()>)>,
    shutdowns: Vec<BoxFuture<'static, ()>>,
}

impl Registration {
    /// The shared resources.
    pub fn context(&self) -> &ModuleContext {
        &self.context
    }

    /// Runs jobs of each of `kinds` with `handler` (typed; adapted once).
    pub fn handler<H: JobHandler>(&mut self, kinds: &[JobKind], handler: H) {
        let handler: Arc<dyn Handler> = Arc::new(typed(handler));
        for kind in kinds {
            self.handlers.insert(*kind, handler.clone());
        }
    }

    /// Runs jobs of `kind` with an untyped handler.
    pub fn untyped_handler(&mut self, kind: JobKind, handler: impl Handler) {
        self.handlers.insert(kind, Arc::new(handler));
    }

    /// Starts a background service (settler, sweeper, scheduler); it must end when
    /// `context().stop` fires, and the worker waits for it at shutdown.
    pub fn service(&mut self, name: &'static str, service: impl Future<Output = ()> + Send + 'static) {
        self.services.push((name, tokio::spawn(service)));
    }

    /// Runs `done` after the worker and the services stopped (release engines, flush).
    pub fn on_shutdown(&mut self, done: impl Future<Output = ()> + Send + 'static) {
        self.shutdowns.push(Box::pin(done));
    }
}

/// A job kind's module.
pub trait KindModule: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// The kinds it runs.
    fn kinds(&self) -> &'static [JobKind];
    /// Its section of `workers.toml` (`[validation]`, `[llm]`…), if it has one.
    fn section(&self) -> Option<&'static str> {
        None
    }
    /// Checks its section (`None`: absent, defaults apply) before anything starts; unknown
    /// keys are an error naming the key.
    fn check_section(&self, _section: Option<&toml::Value>) -> Result<(), String> {
        Ok(())
    }
    /// Registers its metric families in `kiln_metrics`' registry (called once per process,
    /// by every process, so `/metrics` shows them before the first job).
    fn register_metrics(&self) {}
    /// Registers everything, in one call: handlers, services, shutdown. Called only when the
    /// worker serves at least one of its kinds.
    fn register<'a>(
        &'a self,
        section: Option<&'a toml::Value>,
        registration: &'a mut Registration,
    ) -> BoxFuture<'a, Result<(), ModuleError>>;
}

/// The modules this build of Kiln knows.
#[derive(Default, Clone)]
pub struct Registry {
    modules: Vec<Arc<dyn KindModule>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a module.
    pub fn with(mut self, module: impl KindModule) -> Self {
        self.modules.push(Arc::new(module));
        self
    }

    /// The modules, in registration order.
    pub fn modules(&self) -> impl Iterator<Item = &Arc<dyn KindModule>> {
        self.modules.iter()
    }

    /// Every kind some module runs.
    pub fn kinds(&self) -> Vec<JobKind> {
        let mut kinds: Vec<JobKind> = self
            .modules
            .iter()
            .flat_map(|m| m.kinds().iter().copied())
            .collect();
        kinds.sort_by_key(|k| *k as usize);
        kinds.dedup();
        kinds
    }

    /// The section names modules own.
    pub fn sections(&self) -> Vec<&'static str> {
        self.modules.iter().filter_map(|m| m.section()).collect()
    }

    /// Checks `sections` (the non-core tables of `workers.toml`): each must belong to a module
    /// and pass its check. Run before anything starts.
    pub fn check(&self, sections: &toml::Table) -> Result<(), ModuleError> {
        let owned: HashSet<&str> = self.sections().into_iter().collect();
        if let Some(unknown) = sections.keys().find(|k| !owned.contains(k.as_str())) {
            return Err(ModuleError::UnknownSection(unknown.clone()));
        }
        for m in &self.modules {
            if let Some(name) = m.section() {
                m.check_section(sections.get(name))
                    .map_err(|message| ModuleError::Config {
                        section: name,
                        message,
                    })?;
            }
        }
        Ok(())
    }

    /// Registers every module's metric families.
    pub fn register_metrics(&self) {
        for m in &self.modules {
            m.register_metrics();
        }
    }

    /// Builds a worker serving `config.kinds` (all kinds of the registry when unset), from the
    /// queues of `config.queues` (one queue per served kind, named after it, when none are
    /// listed). Only modules with a served kind register.
    pub async fn build_worker(
        &self,
        pool: PgPool,
        mut config: WorkerConfig,
        sections: &toml::Table,
        context: FleetContext,
    ) -> Result<(Worker, Services), ModuleError> {
        self.check(sections)?;
        let known = self.kinds();
        let served: Vec<JobKind> = match &config.kinds {
            Some(kinds) => {
                if let Some(k) = kinds.iter().find(|k| !known.contains(k)) {
                    return Err(
                        WorkerError::Config(format!("kinds: no module of this build runs `{k}`")).into(),
                    );
                }
                kinds.clone()
            }
            None => known.clone(),
        };
        if config.queues.is_empty() {
            config.queues = served.iter().map(|k| QueueConfig::new(k.as_str())).collect();
        }
        let worker_id = config
            .id
            .clone()
            .unwrap_or_else(crate::runtime::default_worker_id);
        config.id = Some(worker_id.clone());
        let stop = CancellationToken::new();
        let mut registration = Registration {
            context: ModuleContext {
                pool: pool.clone(),
                worker_id,
                listener: context.listener.clone(),
                stop: stop.clone(),
                images: context.images,
                warm_pool: context.warm_pool,
                queues: config.queues.clone(),
                live_log_cap_bytes: config.live_log_cap_bytes,
            },
            handlers: HashMap::new(),
            services: Vec::new(),
            shutdowns: Vec::new(),
        };
        for m in &self.modules {
            if m.kinds().iter().any(|k| served.contains(k)) {
                let section = m.section().and_then(|s| sections.get(s));
                m.register(section, &mut registration).await?;
                tracing::info!(module = m.name(), kinds = ?m.kinds().iter().map(|k| k.as_str()).collect::<Vec<_>>(), "kind module registered");
            }
        }
        let mut builder = Worker::builder(pool, config).listener(context.listener);
        for (kind, handler) in registration.handlers {
            if served.contains(&kind) {
                builder = builder.shared_handler(kind, handler);
            }
        }
        let worker = builder.build()?;
        Ok((
            worker,
            Services {
                stop,
                services: registration.services,
                shutdowns: registration.shutdowns,
            },
        ))
    }
}

/// Process-level inputs of [`Registry::build_worker`].
pub struct FleetContext {
    /// The process's listener.
    pub listener: Listener,
    /// The top-level `images` of `workers.toml`.
    pub images: Vec<String>,
    /// The top-level `warm_pool` of `workers.toml`.
    pub warm_pool: usize,
}

/// The background services and shutdowns the modules registered.
pub struct Services {
    stop: CancellationToken,
    services: Vec<(&'static str, JoinHandle<()>)>,
    shutdowns: Vec<BoxFuture<'static, ()>>,
}

impl Services {
    /// Stops the services, waits for them, then runs the modules' shutdowns.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for (name, task) in self.services {
            if let Err(e) = task.await {
                tracing::warn!(service = name, error = %e, "background service ended abnormally");
            }
        }
        for done in self.shutdowns {
            done.await;
        }
    }
}
