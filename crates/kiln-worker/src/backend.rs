//! The apalis backend over Kiln's queue: a fetcher claims batches into a channel the
//! apalis worker drains; the [`LeaseLayer`](crate::layer::LeaseLayer) reports outcomes.

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use kiln_queue::ClaimedJob;
use std::convert::Infallible;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::QueueConfig;
use crate::handler::JobContext;
use crate::layer::LeaseLayer;
use crate::shared::{Held, Shared, StopReason};

/// An apalis [`Backend`] yielding the jobs of one Kiln queue claimed for this worker.
pub struct KilnBackend {
    rx: mpsc::Receiver<Task<ClaimedJob>>,
    shared: Arc<Shared>,
}

impl KilnBackend {
    pub(crate) fn new(rx: mpsc::Receiver<Task<ClaimedJob>>, shared: Arc<Shared>) -> Self {
        Self { rx, shared }
    }
}

impl Backend for KilnBackend {
    type Task = Task<ClaimedJob>;
    type Error = Infallible;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Infallible>>> {
        if self.shared.stopping.is_cancelled() {
            return Poll::Ready(None);
        }
        self.rx.poll_recv(cx).map(|t| t.map(Ok))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for KilnBackend {
    type Args = ClaimedJob;
    type Id = i64;
    // Jobs arrive already decoded (typed rows), so no wire codec step is needed;
    // durability is Kiln's own (leases, completer), not apalis's `Durable` wrapper.
    type Kind = Ephemeral;
    type Config = ();
    type Layer = LeaseLayer;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> LeaseLayer {
        LeaseLayer::new(self.shared.clone())
    }
}

/// Claims jobs of `queue` whenever this worker has room, until the worker stops.
pub(crate) async fn fetch_loop(shared: Arc<Shared>, queue: QueueConfig, tx: mpsc::Sender<Task<ClaimedJob>>) {
    let permits = shared.permits[&queue.name].clone();
    let wakeup = &shared.wakeups[&queue.name];
    let low = (queue.batch.min(queue.concurrency) / 2).max(1) as u32;
    let queue_name: Arc<str> = Arc::from(queue.name.as_str());
    let handles = kiln_queue::metrics::for_queue(&queue.name);
    let mut failures = 0u32;
    // Whether this fetcher's last claim came back full (a backlog is waiting).
    let mut full = false;
    loop {
        let first = tokio::select! {
            p = permits.clone().acquire_many_owned(low) => p.expect("semaphore open"),
            _ = shared.stopping.cancelled() => return,
        };
        // A handler found this worker unable to run jobs (its engine is down): claim nothing
        // until the pause ends, so the queue's other workers take the jobs.
        let paused = shared.claim_paused_until.lock().ok().and_then(|u| *u);
        if let Some(until) = paused.filter(|u| *u > tokio::time::Instant::now()) {
            drop(first);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => continue,
                _ = shared.stopping.cancelled() => return,
            }
        }
        first.forget();
        let mut room = low as usize;
        while room < queue.batch {
            match permits.try_acquire() {
                Ok(p) => {
                    p.forget();
                    room += 1;
                }
                Err(_) => break,
            }
        }
        let claimed = kiln_queue::lease::claim_kinds(
            &shared.pool,
            &queue.name,
            &shared.worker_id,
            room,
            shared.config.lease,
            Some(&shared.kinds),
        )
        .await;
        let jobs = match claimed {
            Ok(jobs) => {
                failures = 0;
                jobs
            }
            Err(e) => {
                permits.add_permits(room);
                failures += 1;
                let pause = Duration::from_millis(100 * u64::from(failures.min(30)));
                tracing::warn!(queue = %queue.name, error = %e, retry_in_ms = pause.as_millis() as u64, "claim failed");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = shared.stopping.cancelled() => return,
                }
            }
        };
        let got = jobs.len();
        if got < room {
            permits.add_permits(room - got);
        }
        full = shared.claimed(full, got == room);
        if got > 0 {
            tracing::debug!(queue = %queue.name, claimed = got, "claimed jobs");
        }
        for job in jobs {
            let cancel = CancellationToken::new();
            let reason = Arc::new(AtomicU8::new(StopReason::None as u8));
            let ctx = JobContext {
                job_id: job.id,
                attempt: job.attempt,
                worker_id: shared.worker_id.clone(),
                timeout: Duration::from_millis(job.timeout_ms.max(1) as u64),
                cancel: cancel.clone(),
            };
            shared.hold(
                job.id,
                Held {
                    attempt: job.attempt,
                    queue: queue_name.clone(),
                    kind: job.kind,
                    metrics: handles.clone(),
                    started_at: None,
                    cancel,
                    reason: reason.clone(),
                },
            );
            let task = TaskBuilder::new(job)
                .task_id(TaskId::from_int(ctx.job_id as u64))
                .attempt(ctx.attempt.max(0) as usize)
                .data(ctx)
                .data(reason)
                .build();
            if tx.send(task).await.is_err() {
                // The apalis worker is gone; what we hold is handed back at shutdown.
                return;
            }
        }
        if got < room {
            tokio::select! {
                _ = wakeup.notified() => {}
                _ = tokio::time::sleep(shared.config.poll_every) => {}
                _ = shared.stopping.cancelled() => return,
            }
        }
    }
}
