//! Writes attempt outcomes in batches, retrying through database outages.

use kiln_queue::lease::{self, Completion, HandBack};
use kiln_queue::{metrics, AttemptOutcome};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::shared::{Held, Report, Shared};

/// One attempt of a held job ended with `outcome` (and is on record).
fn count_attempt(h: &Held, outcome: AttemptOutcome) {
    h.metrics.finished(h.kind, outcome).inc();
    metrics::attempts(outcome).inc();
}

/// Drains reports until [`Report::Close`], writing each batch in one statement.
pub(crate) async fn complete_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Report>) {
    let max = shared.config.completion_batch.max(1);
    let mut done: Vec<Completion> = Vec::with_capacity(max);
    let mut back: Vec<HandBack> = Vec::new();
    let mut forget: Vec<(i64, i32)> = Vec::new();
    let mut closing = false;
    while !closing {
        let Some(first) = rx.recv().await else { break };
        let mut next = Some(first);
        while let Some(report) = next.take() {
            match report {
                Report::Done(c) => done.push(c),
                Report::HandBack(h) => back.push(h),
                Report::Forget(id, attempt) => forget.push((id, attempt)),
                Report::Close => closing = true,
            }
            if done.len() + back.len() < max && !closing {
                next = rx.try_recv().ok();
            }
        }
        let mut written: HashSet<i64> = HashSet::new();
        if !done.is_empty() {
            let states = retry("complete", &shared, || {
                lease::complete(&shared.pool, &shared.worker_id, &done)
            })
            .await;
            written.extend(states.unwrap_or_default().iter().map(|(id, _)| *id));
        }
        let mut interrupted: HashSet<i64> = HashSet::new();
        if !back.is_empty() {
            let ids = retry("hand back", &shared, || {
                lease::hand_back_ids(&shared.pool, &shared.worker_id, &back)
            })
            .await
            .unwrap_or_default();
            tracing::info!(handed_back = ids.len(), "handed jobs back to the queue");
            let started: HashSet<i64> = back
                .iter()
                .filter(|h| h.started_at.is_some())
                .map(|h| h.id)
                .collect();
            interrupted.extend(ids.into_iter().filter(|id| started.contains(id)));
        }
        let mut freed: HashMap<Arc<str>, usize> = HashMap::new();
        let mut held = shared.held.lock().expect("held lock");
        // Count what is on record: a stale completion (lease lost meanwhile) counts nothing.
        for c in done.iter().filter(|c| written.contains(&c.id)) {
            if let Some(h) = held.get(&c.id) {
                count_attempt(h, c.outcome);
                let ran = (c.finished_at - c.started_at)
                    .num_microseconds()
                    .unwrap_or(0)
                    .max(0);
                metrics::run_seconds(h.kind).observe(ran as f64 / 1e6);
            }
        }
        for id in &interrupted {
            if let Some(h) = held.get(id) {
                count_attempt(h, AttemptOutcome::Interrupted);
            }
        }
        // Only the attempt that ended is released: the job may be held again for a later one.
        let finished = done
            .iter()
            .map(|c| (c.id, Some(c.attempt)))
            .chain(back.iter().map(|h| (h.id, None)))
            .chain(forget.iter().map(|(id, a)| (*id, Some(*a))));
        for (id, attempt) in finished {
            if let Some(h) = Shared::release(&mut held, id, attempt) {
                *freed.entry(h.queue).or_default() += 1;
            }
        }
        drop(held);
        // Only now, with the outcome on record, may the fetchers claim more: a worker never
        // holds more leases than its concurrency, and heartbeats stay small.
        for (queue, n) in freed {
            if let Some(p) = shared.permits.get(&*queue) {
                p.add_permits(n);
            }
        }
        done.clear();
        back.clear();
        forget.clear();
    }
}

/// Runs `op` until it succeeds or fails for a reason waiting cannot fix. While the database
/// is unreachable the jobs stay leased by us (heartbeats keep trying too); if the outage
/// outlasts the lease, the rescuer re-runs them and these writes are skipped as stale.
async fn retry<T, F, Fut>(what: &'static str, shared: &Shared, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kiln_queue::Result<T>>,
{
    let mut pause = Duration::from_millis(50);
    let give_up = tokio::time::Instant::now() + shared.config.lease * 4;
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) if e.is_transient() && tokio::time::Instant::now() < give_up => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(error = %e, "{what} failed; the leases will expire and the rescuer will re-run these jobs");
                return None;
            }
        }
    }
}
