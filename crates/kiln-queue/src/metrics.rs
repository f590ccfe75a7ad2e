//! Cached metric handles for the hot paths: resolved once per queue, kind and outcome, so
//! counting a job costs an atomic add, not a label hash and a string allocation.

use kiln_metrics::metrics;
use prometheus::{Histogram, IntCounter};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::model::{AttemptOutcome, JobKind};

const KINDS: usize = JobKind::COUNT;
const OUTCOMES: usize = AttemptOutcome::COUNT;

/// The counters of one queue, by kind (and outcome), created on first use.
pub struct QueueHandles {
    queue: Box<str>,
    enqueued: [OnceLock<IntCounter>; KINDS],
    started: [OnceLock<IntCounter>; KINDS],
    finished: [[OnceLock<IntCounter>; OUTCOMES]; KINDS],
}

impl QueueHandles {
    fn new(queue: &str) -> Self {
        Self {
            queue: queue.into(),
            enqueued: [const { OnceLock::new() }; KINDS],
            started: [const { OnceLock::new() }; KINDS],
            finished: [const { [const { OnceLock::new() }; OUTCOMES] }; KINDS],
        }
    }

    /// `kiln_jobs_enqueued_total{queue, kind}`.
    pub fn enqueued(&self, kind: JobKind) -> &IntCounter {
        self.enqueued[kind as usize].get_or_init(|| {
            metrics()
                .jobs_enqueued
                .with_label_values(&[&*self.queue, kind.as_str()])
        })
    }

    /// `kiln_jobs_started_total{queue, kind}`.
    pub fn started(&self, kind: JobKind) -> &IntCounter {
        self.started[kind as usize].get_or_init(|| {
            metrics()
                .jobs_started
                .with_label_values(&[&*self.queue, kind.as_str()])
        })
    }

    /// `kiln_jobs_finished_total{queue, kind, outcome}`.
    pub fn finished(&self, kind: JobKind, outcome: AttemptOutcome) -> &IntCounter {
        self.finished[kind as usize][outcome as usize].get_or_init(|| {
            metrics()
                .jobs_finished
                .with_label_values(&[&*self.queue, kind.as_str(), outcome.as_str()])
        })
    }
}

/// The handles of `queue` (one read lock and a hash; hold on to the `Arc` where you can).
/// A queue neither configured nor served by a worker counts as `other`
/// ([`kiln_metrics::queues`]).
pub fn for_queue(queue: &str) -> Arc<QueueHandles> {
    let queue = kiln_metrics::queues::label(queue);
    static QUEUES: OnceLock<RwLock<HashMap<Box<str>, Arc<QueueHandles>>>> = OnceLock::new();
    let map = QUEUES.get_or_init(Default::default);
    if let Some(h) = map.read().expect("metric handles").get(queue) {
        return h.clone();
    }
    map.write()
        .expect("metric handles")
        .entry(queue.into())
        .or_insert_with(|| Arc::new(QueueHandles::new(queue)))
        .clone()
}

/// `kiln_job_wait_seconds{kind}`: from `run_at` to the start of an attempt.
pub fn wait_seconds(kind: JobKind) -> &'static Histogram {
    static H: [OnceLock<Histogram>; KINDS] = [const { OnceLock::new() }; KINDS];
    H[kind as usize].get_or_init(|| metrics().wait_seconds.with_label_values(&[kind.as_str()]))
}

/// `kiln_job_run_seconds{kind}`: how long an attempt ran.
pub fn run_seconds(kind: JobKind) -> &'static Histogram {
    static H: [OnceLock<Histogram>; KINDS] = [const { OnceLock::new() }; KINDS];
    H[kind as usize].get_or_init(|| metrics().run_seconds.with_label_values(&[kind.as_str()]))
}

/// `kiln_attempts_total{outcome}`.
pub fn attempts(outcome: AttemptOutcome) -> &'static IntCounter {
    static C: [OnceLock<IntCounter>; OUTCOMES] = [const { OnceLock::new() }; OUTCOMES];
    C[outcome as usize].get_or_init(|| metrics().attempts.with_label_values(&[outcome.as_str()]))
}

/// Counts the inserted jobs of a batch: `inserted` yields (queue, kind) per row actually
/// inserted; runs of the same queue and kind (the usual batch) are added up first.
pub(crate) fn count_enqueued<'a>(inserted: impl Iterator<Item = (&'a str, JobKind)>) {
    let mut tally: Vec<(&str, JobKind, u64)> = Vec::new();
    for (queue, kind) in inserted {
        match tally.iter_mut().rev().find(|t| t.1 == kind && t.0 == queue) {
            Some(t) => t.2 += 1,
            None => tally.push((queue, kind, 1)),
        }
    }
    for (queue, kind, n) in tally {
        for_queue(queue).enqueued(kind).inc_by(n);
    }
}
