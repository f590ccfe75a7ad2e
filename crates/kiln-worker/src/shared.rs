//! State shared by a worker's fetchers, lease layer, heartbeat and completer.

use chrono::{DateTime, Utc};
use kiln_queue::lease::{Completion, HandBack};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;

/// Why a running job is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StopReason {
    /// Not stopped.
    None = 0,
    /// Cancelled by request: record a `cancelled` attempt.
    Cancelled = 1,
    /// Our lease is gone (rescued elsewhere): record nothing.
    LeaseLost = 2,
    /// Worker shutting down past its grace: hand back without spending the attempt.
    Shutdown = 3,
}

/// A job this worker holds a lease on.
pub(crate) struct Held {
    /// The attempt this lease is for: a later claim of the same job (after a rescue) is
    /// another attempt, and the end of the earlier one must not release it.
    pub attempt: i32,
    /// The queue it came from: its concurrency permit goes back there once the outcome is
    /// written, so a worker never holds more leases than its concurrency.
    pub queue: Arc<str>,
    /// What it is, and its queue's metric handles (resolved once per queue).
    pub kind: kiln_queue::JobKind,
    pub metrics: Arc<kiln_queue::metrics::QueueHandles>,
    pub started_at: Option<DateTime<Utc>>,
    pub cancel: CancellationToken,
    pub reason: Arc<AtomicU8>,
}

impl Held {
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.cancel.cancel();
    }
}

/// Reads the stop reason set by [`Held::stop`].
pub(crate) fn reason_of(cell: &AtomicU8) -> StopReason {
    match cell.load(Ordering::SeqCst) {
        1 => StopReason::Cancelled,
        2 => StopReason::LeaseLost,
        3 => StopReason::Shutdown,
        _ => StopReason::None,
    }
}

/// Work for the completer.
pub(crate) enum Report {
    Done(Completion),
    HandBack(HandBack),
    /// Nothing will hold a lease any more: forget attempt `.1` of job `.0` without writing
    /// anything.
    Forget(i64, i32),
    /// Flush everything received so far, then stop.
    Close,
}

pub(crate) struct Shared {
    pub pool: PgPool,
    pub worker_id: Arc<str>,
    pub config: WorkerConfig,
    /// Kinds this worker has handlers for; it claims no others.
    pub kinds: Vec<kiln_queue::JobKind>,
    pub held: Mutex<HashMap<i64, Held>>,
    /// Each queue's fetcher wake-up, registered with the process's listener.
    pub wakeups: HashMap<String, kiln_queue::wake::FetcherWake>,
    pub permits: HashMap<String, Arc<Semaphore>>,
    pub reports: mpsc::UnboundedSender<Report>,
    /// Fires when the worker stops claiming.
    pub stopping: CancellationToken,
    /// Set by a fetcher whenever a claim comes back full (more work is waiting); the
    /// maintenance pass clears it, so a pass that finds it clear knows no backlog was seen.
    pub backlogged: std::sync::atomic::AtomicBool,
    /// Fetchers whose last claim came back full; see [`Shared::claimed`].
    pub full_fetchers: std::sync::atomic::AtomicUsize,
    /// Fires when the last full fetcher's claim comes back short: the backlog this worker saw
    /// is gone, and the maintenance loop checks for a vacuum at once.
    pub drained: tokio::sync::Notify,
    /// Set when a handler reported this worker unavailable: fetchers claim nothing before it.
    pub claim_paused_until: Mutex<Option<tokio::time::Instant>>,
}

impl Shared {
    /// Records whether a fetcher's claim came back full (`now_full`) given its previous one
    /// (`was_full`), and returns the new state. When the last full fetcher of this worker
    /// comes back short, [`Shared::drained`] fires.
    pub fn claimed(&self, was_full: bool, now_full: bool) -> bool {
        if now_full {
            self.backlogged.store(true, Ordering::Relaxed);
        }
        if now_full && !was_full {
            self.full_fetchers.fetch_add(1, Ordering::AcqRel);
        } else if was_full && !now_full && self.full_fetchers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_one();
        }
        now_full
    }

    /// Marks a job's handler as started and returns its queue's metric handles; `None` when
    /// the job was handed back meanwhile.
    pub fn mark_started(&self, id: i64, at: DateTime<Utc>) -> Option<Arc<kiln_queue::metrics::QueueHandles>> {
        let mut held = self.held.lock().expect("held lock");
        let h = held.get_mut(&id)?;
        h.started_at = Some(at);
        Some(h.metrics.clone())
    }

    /// Records a claimed job. A job still held from an earlier attempt (its lease was lost
    /// and the job rescued and claimed again) is stopped and its permit returned at once, so
    /// the new claim is never dropped when the old attempt ends.
    pub fn hold(&self, id: i64, h: Held) {
        let old = self.held.lock().expect("held lock").insert(id, h);
        if let Some(old) = old {
            tracing::warn!(
                job = id,
                attempt = old.attempt,
                "claimed again while an earlier attempt was held; stopping that one"
            );
            old.stop(StopReason::LeaseLost);
            if let Some(p) = self.permits.get(&*old.queue) {
                p.add_permits(1);
            }
        }
    }

    /// Removes job `id` when it is held for `attempt` (None: any attempt, for hand-backs).
    pub fn release(held: &mut HashMap<i64, Held>, id: i64, attempt: Option<i32>) -> Option<Held> {
        match held.get(&id) {
            Some(h) if attempt.is_none_or(|a| a == h.attempt) => held.remove(&id),
            _ => None,
        }
    }

    /// Ids of all held jobs.
    pub fn held_ids(&self) -> Vec<i64> {
        self.held.lock().expect("held lock").keys().copied().collect()
    }

    /// Stops a held job for `reason`; false when it is not held.
    pub fn stop_job(&self, id: i64, reason: StopReason) -> bool {
        match self.held.lock().expect("held lock").get(&id) {
            Some(h) => {
                h.stop(reason);
                true
            }
            None => false,
        }
    }

    /// Wakes every fetcher (after a reconnect, or when a queue setting changed).
    pub fn wake_all(&self) {
        for w in self.wakeups.values() {
            w.wake();
        }
    }
}
