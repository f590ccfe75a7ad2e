//! The runner: one job in a fresh hardened container, warm when the pool has one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::containers::{remove_container, start_container, Started};
use crate::diff::{DiffCaps, WorkspaceDiff};
use crate::error::{Result, SandboxError};
use crate::exec::{run_command, upload_workspace};
use crate::isolation::{log_in_force, read as read_isolation, Isolation};
use crate::outputs::Outputs;
use crate::policy::Owner;
use crate::pool::WarmPool;
use crate::quota::work_usage;
use crate::readback::read_work;
use crate::reaper::{reap, Liveness, Reaped, REGISTRY_GRACE};
use crate::report::{JobReport, LogChunk, Outcome, Timings};
use crate::snapshot::{Snapshot, SnapshotCaps};
use crate::spec::{JobSpec, Limits};

/// A connection to the local Docker engine that runs jobs for one worker.
#[derive(Clone)]
pub struct Sandbox {
    docker: Docker,
    owner: Owner,
    isolation: Isolation,
    pool: Arc<Mutex<Option<Arc<WarmPool>>>>,
    image_ids: Arc<Mutex<HashMap<String, String>>>,
    background: TaskTracker,
    removals: TaskTracker,
    /// This worker's containers whose removal failed: every reaper pass tries them again.
    leftovers: Arc<Mutex<Vec<Started>>>,
    stop: CancellationToken,
}

/// Where the periodic reaper learns which workers are alive (e.g. a query of `kiln_workers`);
/// None from the future: the registry could not be read this time.
pub type LiveWorkers =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Option<Vec<String>>> + Send + Sync>;

impl Sandbox {
    /// Connects (`DOCKER_HOST` or the local socket), logs the isolation in force, and reaps
    /// what dead workers left behind.
    pub async fn connect(worker_id: &str) -> Result<Sandbox> {
        Self::connect_as(Owner::current(worker_id)).await
    }

    /// Like [`Sandbox::connect`] as `owner` (a worker of a fleet: [`Owner::in_fleet`]).
    pub async fn connect_as(owner: Owner) -> Result<Sandbox> {
        let docker =
            Docker::connect_with_defaults().map_err(|e| SandboxError::DaemonUnavailable(e.to_string()))?;
        Self::with_docker_as(docker, owner).await
    }

    /// Like [`Sandbox::connect`] with a given client.
    pub async fn with_docker(docker: Docker, worker_id: &str) -> Result<Sandbox> {
        Self::with_docker_as(docker, Owner::current(worker_id)).await
    }

    /// Like [`Sandbox::connect_as`] with a given client.
    pub async fn with_docker_as(docker: Docker, owner: Owner) -> Result<Sandbox> {
        let isolation = read_isolation(&docker).await?;
        Self::with_isolation_as(docker, owner, isolation).await
    }

    /// Like [`Sandbox::with_docker`] with the engine's facts given (an engine that misreports,
    /// or an operator who wants Kiln's seccomp profile: set `isolation.seccomp = false`).
    pub async fn with_isolation(docker: Docker, worker_id: &str, isolation: Isolation) -> Result<Sandbox> {
        Self::with_isolation_as(docker, Owner::current(worker_id), isolation).await
    }

    /// Like [`Sandbox::with_isolation`] as `owner`.
    pub async fn with_isolation_as(docker: Docker, owner: Owner, isolation: Isolation) -> Result<Sandbox> {
        log_in_force(&isolation);
        let sandbox = Sandbox {
            docker,
            owner,
            isolation,
            pool: Arc::new(Mutex::new(None)),
            image_ids: Arc::new(Mutex::new(HashMap::new())),
            background: TaskTracker::new(),
            removals: TaskTracker::new(),
            leftovers: Arc::new(Mutex::new(Vec::new())),
            stop: CancellationToken::new(),
        };
        sandbox.reap(None).await?;
        Ok(sandbox)
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The isolation the engine reported at connect time.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// This worker's identity (labels of its containers).
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Starts a warm pool of `size` containers per image (default limits), refilled in the
    /// background until [`Sandbox::shutdown`].
    pub fn start_pool(&self, images: &[String], size: usize) -> Arc<WarmPool> {
        let pool = WarmPool::new(images, size, Limits::default(), self.isolation.security_opts());
        if let Ok(mut slot) = self.pool.lock() {
            *slot = Some(pool.clone());
        }
        let task = pool
            .clone()
            .refill_loop(self.docker.clone(), self.owner.clone(), self.stop.clone());
        self.background.spawn(task);
        pool
    }

    /// Runs the periodic reaper every `every` until [`Sandbox::shutdown`], asking `live` for
    /// the worker registry before each pass (without it, only this host's dead processes are
    /// judged).
    pub fn start_reaper(&self, every: Duration, live: Option<LiveWorkers>) {
        let me = self.clone();
        self.background.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = me.stop.cancelled() => break,
                }
                let workers = match &live {
                    Some(f) => f().await,
                    None => None,
                };
                if let Err(e) = me.reap(workers.as_deref()).await {
                    tracing::warn!(error = %e, "periodic reap failed");
                }
            }
        });
    }

    /// One reaper pass: this worker's own failed removals again, then what dead workers left
    /// (`live_workers` from the registry; absent workers' objects go once older than
    /// [`REGISTRY_GRACE`]).
    pub async fn reap(&self, live_workers: Option<&[String]>) -> Result<Reaped> {
        self.reap_with(live_workers.map(|w| Liveness {
            live_workers: w,
            min_age: REGISTRY_GRACE,
        }))
        .await
    }

    /// [`Sandbox::reap`] with the registry's grace given.
    pub async fn reap_with(&self, live: Option<Liveness<'_>>) -> Result<Reaped> {
        self.retry_leftovers().await;
        reap(&self.docker, &self.owner, live).await
    }

    /// Tries again to remove this worker's containers whose removal failed.
    async fn retry_leftovers(&self) {
        let pending: Vec<Started> = match self.leftovers.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => return,
        };
        for c in pending {
            if remove_container(&self.docker, &c).await {
                tracing::info!(container = %c.id, volume = %c.volume, "removed on retry");
            } else if let Ok(mut l) = self.leftovers.lock() {
                l.push(c);
            }
        }
    }

    /// Runs one job; the warm pool serves it when it has a matching container. Log chunks go
    /// to `logs` while the job runs. The container and its volume are removed in the background.
    /// A warm container that is gone when the job arrives (removed behind the pool's back: an
    /// operator, another fleet's reaper on the same engine) costs a cold start, not the job.
    pub async fn run(&self, spec: &JobSpec, logs: Option<mpsc::Sender<LogChunk>>) -> Result<JobReport> {
        let warm = self
            .pool
            .lock()
            .ok()
            .and_then(|p| p.as_ref().and_then(|p| p.take(&spec.image, &spec.limits)));
        let Some(warm) = warm else {
            return self.run_in(spec, logs, None).await;
        };
        let id = warm.id.clone();
        match self.run_in(spec, logs.clone(), Some(warm)).await {
            Err(e) if is_gone(&e) => {
                tracing::warn!(container = %id, error = %e, "warm container gone or stopped before its job; starting a cold one");
                self.run_in(spec, logs, None).await
            }
            other => other,
        }
    }

    /// Creates and starts a container for `spec` in a task of its own: a caller that gives up
    /// meanwhile (a cancelled or fenced attempt) cannot leave it behind, since the task
    /// removes what it started when nobody is left to take it.
    async fn start_detached(&self, spec: &JobSpec) -> Result<Started> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let docker = self.docker.clone();
        let (image, limits) = (spec.image.clone(), spec.limits.clone());
        let labels = self.owner.labels(Some(&spec.labels));
        let security = self.isolation.security_opts();
        let leftovers = self.leftovers.clone();
        self.removals.spawn(async move {
            let started = start_container(&docker, &image, &limits, labels, &security).await;
            if let Err(Ok(orphan)) = tx.send(started) {
                tracing::info!(container = %orphan.id, "job abandoned while its container started: removing it");
                if !remove_container(&docker, &orphan).await {
                    if let Ok(mut l) = leftovers.lock() {
                        l.push(orphan);
                    }
                }
            }
        });
        rx.await
            .map_err(|_| SandboxError::Docker("the container start task ended without an answer".into()))?
    }

    /// Runs one job in a newly created container, bypassing the warm pool.
    pub async fn run_cold(&self, spec: &JobSpec, logs: Option<mpsc::Sender<LogChunk>>) -> Result<JobReport> {
        self.run_in(spec, logs, None).await
    }

    async fn run_in(
        &self,
        spec: &JobSpec,
        logs: Option<mpsc::Sender<LogChunk>>,
        warm: Option<Started>,
    ) -> Result<JobReport> {
        if spec.command.is_empty() {
            return Err(SandboxError::InvalidSpec("empty command".into()));
        }
        let span = tracing::info_span!("sandbox_job", job = spec.labels.job_id, attempt = spec.labels.attempt, worker = %self.owner.worker_id, image = %spec.image);
        let _enter = span.enter();
        drop(_enter);
        let is_warm = warm.is_some();
        let asked = std::time::Instant::now();
        let container = match warm {
            Some(c) => c,
            None => self.start_detached(spec).await?,
        };
        let acquired = asked.elapsed();
        tracing::info!(parent: &span, container = %container.id, warm = is_warm, "job starting");
        // Removal is scheduled on drop, so a caller that abandons the job (cancellation)
        // leaves nothing behind either.
        let guard = RemoveOnDrop {
            docker: self.docker.clone(),
            container: Some(container),
            removals: self.removals.clone(),
            leftovers: self.leftovers.clone(),
        };
        let container = guard.container.as_ref().expect("set above");
        let start_ms = asked.elapsed().as_secs_f64() * 1e3;
        let result = self
            .execute(container, spec, logs, is_warm, acquired)
            .await
            .map(|mut r| {
                r.timings.container_start_ms = start_ms;
                r.timings.total_ms = asked.elapsed().as_secs_f64() * 1e3;
                r
            });
        drop(guard);
        match &result {
            Ok(r) => {
                tracing::info!(parent: &span, outcome = ?r.outcome, exit = ?r.exit_code, wall_ms = r.usage.wall.as_millis() as u64, "job finished")
            }
            Err(e) => tracing::warn!(parent: &span, error = %e, "job could not run"),
        }
        result
    }

    async fn execute(
        &self,
        c: &Started,
        spec: &JobSpec,
        logs: Option<mpsc::Sender<LogChunk>>,
        warm: bool,
        acquired: Duration,
    ) -> Result<JobReport> {
        let t = std::time::Instant::now();
        upload_workspace(&self.docker, c, spec).await?;
        let uploaded = t.elapsed();
        let ran = run_command(&self.docker, c, spec, logs.as_ref()).await?;
        let disk = work_usage(&self.docker, c).await;
        let ran_at = t.elapsed();
        // Container start latency: cold = create + start + exec, warm = exec into a pool
        // container (the workspace upload in between is the job's, not the start's).
        let image = c.image.split(':').next().unwrap_or(&c.image);
        kiln_metrics::metrics()
            .container_start_seconds
            .with_label_values(&[image, if warm { "true" } else { "false" }])
            .observe((acquired + ran.exec_start).as_secs_f64());
        let caps = SnapshotCaps::new(
            spec.limits.output_bytes,
            spec.limits.workspace_bytes + spec.limits.output_bytes,
        );
        let (after, image_id) = tokio::join!(read_work(&self.docker, c, caps), self.image_id(&c.image));
        let after = after?;
        let outputs = Outputs::select(&after, &spec.outputs, spec.limits.output_bytes);
        let diff_truncated = after.truncated;
        let input = spec.workspace.clone();
        let ignore = spec.diff_ignore.clone();
        // Hashing the input and diffing are CPU-bound (the diff up to its deadline): off the
        // async runtime.
        let diff = tokio::task::spawn_blocking(move || {
            let before = Snapshot::of_workspace(&input);
            if ignore.is_empty() {
                WorkspaceDiff::bounded(&before, &after, DiffCaps::default())
            } else {
                WorkspaceDiff::bounded(
                    &before.without(&ignore),
                    &after.without(&ignore),
                    DiffCaps::default(),
                )
            }
        })
        .await
        .map_err(|e| SandboxError::Docker(format!("diff task: {e}")))?;
        tracing::debug!(
            upload_ms = uploaded.as_secs_f64() * 1e3,
            command_ms = (ran_at - uploaded).as_secs_f64() * 1e3,
            wall_ms = ran.usage.wall.as_secs_f64() * 1e3,
            readback_ms = (t.elapsed() - ran_at).as_secs_f64() * 1e3,
            "job phases"
        );
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let timings = Timings {
            upload_ms: ms(uploaded),
            run_ms: ms(ran_at - uploaded),
            readback_ms: ms(t.elapsed() - ran_at),
            ..Timings::default()
        };
        let truncated = ran.stdout.truncated() || ran.stderr.truncated();
        let quota_hit = disk.is_some_and(|d| d.exceeds(&spec.limits));
        if quota_hit {
            tracing::info!(container = %c.id, ?disk, "job ran into its workspace quota");
        }
        Ok(JobReport {
            outcome: Outcome::decide(quota_hit, ran.timed_out, ran.oom_killed, ran.exit_code, truncated),
            exit_code: ran.exit_code,
            usage: ran.usage,
            stdout: ran.stdout,
            stderr: ran.stderr,
            outputs,
            diff,
            diff_truncated,
            container_id: c.id.clone(),
            image_id,
            warm,
            timings,
            live_lost_bytes: ran.live_lost_bytes,
            disk,
        })
    }

    /// The engine's id for `image` (empty when the engine cannot say), cached.
    pub async fn image_id(&self, image: &str) -> String {
        if let Some(id) = self.image_ids.lock().ok().and_then(|m| m.get(image).cloned()) {
            return id;
        }
        let id = match self.docker.inspect_image(image).await {
            Ok(i) => i.id.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if let Ok(mut m) = self.image_ids.lock() {
            m.insert(image.to_string(), id.clone());
        }
        id
    }

    /// Waits until the containers of finished jobs are removed.
    pub async fn removals_done(&self) {
        while !self.removals.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the pool and the reaper, removes the warm containers and waits for every pending
    /// removal.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.background.close();
        self.background.wait().await;
        self.removals.close();
        self.removals.wait().await;
        let pool = self.pool.lock().ok().and_then(|p| p.clone());
        if let Some(pool) = pool {
            pool.drain(&self.docker).await;
        }
        self.retry_leftovers().await;
        self.remove_untracked().await;
        tracing::info!(worker = %self.owner.worker_id, "sandbox shut down");
    }
}

impl Sandbox {
    /// Removes every container and volume still labelled with this worker: at shutdown nothing
    /// of it may stay, and some objects are tracked nowhere (a warm container whose start, or
    /// whose removal after a failed start, met an engine restart). The reaper never takes a
    /// live worker's objects, so this is their last chance.
    async fn remove_untracked(&self) {
        use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveVolumeOptions};
        let me = &self.owner.worker_id;
        let ids = crate::reaper::containers_of(&self.docker, me)
            .await
            .unwrap_or_default();
        for id in &ids {
            let opts = RemoveContainerOptionsBuilder::new().force(true).build();
            if let Err(e) = self.docker.remove_container(id, Some(opts)).await {
                tracing::warn!(container = %id, error = %e, "removing an untracked container failed");
            }
        }
        let volumes = crate::reaper::volumes_of(&self.docker, me)
            .await
            .unwrap_or_default();
        for v in &volumes {
            if let Err(e) = self.docker.remove_volume(v, None::<RemoveVolumeOptions>).await {
                tracing::warn!(volume = %v, error = %e, "removing an untracked volume failed");
            }
        }
        if !ids.is_empty() || !volumes.is_empty() {
            tracing::info!(
                containers = ids.len(),
                volumes = volumes.len(),
                "removed this worker's untracked objects"
            );
        }
    }
}

/// True when the container was removed or stopped under the job (see [`SandboxError::from_docker`]).
fn is_gone(e: &SandboxError) -> bool {
    matches!(e, SandboxError::ContainerGone(_))
}

/// Schedules a container's removal when dropped.
struct RemoveOnDrop {
    docker: Docker,
    container: Option<Started>,
    removals: TaskTracker,
    leftovers: Arc<Mutex<Vec<Started>>>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(container) = self.container.take() else {
            return;
        };
        let docker = self.docker.clone();
        let leftovers = self.leftovers.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            self.removals.spawn(async move {
                if !remove_container(&docker, &container).await {
                    if let Ok(mut l) = leftovers.lock() {
                        l.push(container);
                    }
                }
            });
        } else {
            tracing::warn!(container = %container.id, "no runtime to remove the container: the reaper will");
        }
    }
}
