//! Coalesced enqueue: concurrent single-job requests share one `enqueue_many` statement (and
//! so one commit). There is no timer: a few flusher tasks each take whatever requests are
//! waiting (up to [`Coalescer::max_batch`]) and write them while new requests queue up behind,
//! so an idle server answers a lone request at once and a busy one batches naturally.
//!
//! Each request gets its own id back after the shared commit. Idempotency and unique keys are
//! resolved per row by `enqueue_many`; when a shared statement fails, its rows are retried one
//! by one, so a bad row only ever fails its own request.
//!
//! Statements run on an [`enqueue_pool`] whose sessions skip the insert trigger's NOTIFY
//! (`kiln.defer_notify`); a [`Notifier`] wakes the workers after the commit instead. A
//! transaction that NOTIFYs holds a database-wide lock through its WAL flush, which would
//! otherwise make every enqueue commit wait for the one before it.

use crate::{Enqueued, NewJob, QueueError};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

const NOTIFY_SQL: &str = include_str!("sql/notify_queues.sql");

/// A pool over the same database as `pool` whose sessions defer the enqueue trigger's NOTIFY
/// (see migration 0006); whoever enqueues through it must [`Notifier::wake`] afterwards.
pub fn enqueue_pool(pool: &sqlx::PgPool, max_connections: u32) -> sqlx::PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("kiln.defer_notify", "on")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_lazy_with(options)
}

/// Sends the `kiln_jobs` wake-ups of deferred enqueues, folding concurrent ones together.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<Vec<String>>,
}

impl Notifier {
    /// Starts the task that notifies on `pool`.
    pub fn start(pool: sqlx::PgPool) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut queues: BTreeSet<String> = first.into_iter().collect();
                while let Ok(more) = rx.try_recv() {
                    queues.extend(more);
                }
                let queues: Vec<String> = queues.into_iter().collect();
                if let Err(e) = sqlx::query(NOTIFY_SQL).bind(&queues).execute(&pool).await {
                    // Workers poll as well: a lost wake-up only delays a pickup.
                    tracing::warn!(error = %e, "could not notify workers of new jobs");
                }
            }
        });
        Notifier { tx }
    }

    /// Wakes the workers of the queues of `jobs`.
    pub fn wake<'a>(&self, jobs: impl IntoIterator<Item = &'a NewJob>) {
        let mut queues: Vec<String> = Vec::new();
        for j in jobs {
            if !queues.contains(&j.queue) {
                queues.push(j.queue.clone());
            }
        }
        if !queues.is_empty() {
            let _ = self.tx.send(queues);
        }
    }
}

type Reply = oneshot::Sender<Result<Enqueued, QueueError>>;

/// Handle to the flusher tasks; cheap to clone.
#[derive(Clone)]
pub struct Coalescer {
    tx: mpsc::Sender<(NewJob, Reply)>,
    max_batch: usize,
}

impl Coalescer {
    /// Starts `flushers` tasks writing batches of up to `max_batch` jobs to `pool` (an
    /// [`enqueue_pool`]) and waking workers through `notifier`.
    pub fn start(pool: sqlx::PgPool, notifier: Notifier, flushers: usize, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel(max_batch * flushers * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..flushers.max(1) {
            tokio::spawn(flusher(pool.clone(), notifier.clone(), rx.clone(), max_batch));
        }
        Coalescer { tx, max_batch }
    }

    /// Largest batch one statement carries.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Enqueues one job, sharing the statement with whatever else is waiting.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send((job, reply)).await.is_err() {
            return Err(QueueError::db("enqueue")(sqlx::Error::PoolClosed));
        }
        rx.await
            .unwrap_or_else(|_| Err(QueueError::db("enqueue")(sqlx::Error::WorkerCrashed)))
    }
}

async fn flusher(
    pool: sqlx::PgPool,
    notifier: Notifier,
    rx: Arc<Mutex<mpsc::Receiver<(NewJob, Reply)>>>,
    max_batch: usize,
) {
    let mut batch: Vec<(NewJob, Reply)> = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let (jobs, replies): (Vec<NewJob>, Vec<Reply>) = batch.drain(..).unzip();
        tracing::trace!(jobs = jobs.len(), "coalesced enqueue");
        let result = crate::enqueue_many(&pool, &jobs).await;
        notifier.wake(&jobs);
        match result {
            Ok(out) => {
                for (reply, e) in replies.into_iter().zip(out) {
                    let _ = reply.send(Ok(e));
                }
            }
            Err(e) if jobs.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            Err(e) => {
                tracing::debug!(error = %e, jobs = jobs.len(), "shared enqueue failed; retrying its rows one by one");
                let singles = jobs.iter().zip(replies).map(|(job, reply)| {
                    let pool = pool.clone();
                    async move {
                        let _ = reply.send(crate::enqueue(&pool, job).await);
                    }
                });
                futures::future::join_all(singles).await;
            }
        }
    }
}
