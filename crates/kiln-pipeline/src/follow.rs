//! One outbox follower for every kind of pipeline: it reads final `job.*` events after its
//! cursor (woken through the process's [`Listener`]) and hands each pipeline they name to a
//! per-pipeline step; every `poll` it also runs a ready-poll in case it fell behind. The
//! validation settler and the generation loop's advancer are both this loop.

use std::future::Future;
use std::time::Duration;

use kiln_queue::events::{self, types, EventFilter};
use kiln_queue::{Listener, QueueError, Signal};
use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Events read per page of the outbox.
const PAGE: i64 = 1000;

/// What a follower does with the pipelines of final job events.
pub trait PipelineStep: Send {
    /// Its error (a queue error from reading the outbox converts into it).
    type Error: std::fmt::Display + From<QueueError> + Send;

    /// Its name in log lines (`validation settler`, `generation loop`).
    fn name(&self) -> &'static str;

    /// Moves pipeline `id` on if it can; true when it did something. Must be idempotent.
    fn step(&mut self, pool: &PgPool, id: i64) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Moves on whatever is ready without an event (the polling fallback); how many it moved.
    fn ready(&mut self, pool: &PgPool) -> impl Future<Output = Result<usize, Self::Error>> + Send;
}

/// Runs `step` for the pipelines of final job events after `cursor`, moving it; returns how
/// many pipelines moved on.
pub async fn follow_once<S: PipelineStep>(
    step: &mut S,
    pool: &PgPool,
    cursor: &mut i64,
) -> Result<usize, S::Error> {
    let mut moved = 0;
    loop {
        let filter = EventFilter {
            after: *cursor,
            limit: PAGE,
            types: Some(vec![
                types::JOB_SUCCEEDED.into(),
                types::JOB_FAILED.into(),
                types::JOB_CANCELLED.into(),
            ]),
            ..EventFilter::default()
        };
        let batch = events::list(pool, &filter).await?;
        let Some(last) = batch.last() else {
            return Ok(moved);
        };
        let last_id = last.id;
        let mut ids: Vec<i64> = batch.iter().filter_map(|e| e.pipeline_id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            moved += step.step(pool, id).await? as usize;
        }
        *cursor = last_id;
        if (batch.len() as i64) < PAGE {
            return Ok(moved);
        }
    }
}

/// Follows the outbox with `step` until `stop` fires (see the module doc). Any number of
/// followers may run: steps are idempotent.
pub async fn follower<S: PipelineStep>(
    mut step: S,
    pool: PgPool,
    listener: Listener,
    poll: Duration,
    stop: CancellationToken,
) {
    let name = step.name();
    let mut wakeups = listener.subscribe(events::CHANNEL);
    let mut cursor = loop {
        match events::last_id(&pool).await {
            Ok(id) => break id,
            Err(e) => tracing::warn!(error = %e, follower = name, "cannot read the event cursor; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.cancelled() => return,
        }
    };
    let mut next_poll = tokio::time::Instant::now();
    loop {
        match follow_once(&mut step, &pool, &mut cursor).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(moved = n, follower = name, "pipelines moved on from job events"),
            Err(e) => tracing::warn!(error = %e, follower = name, "following job events failed"),
        }
        tokio::select! {
            signal = wakeups.recv() => match signal {
                Ok(Signal::Notified(_)) => continue,
                Ok(Signal::Reconnected) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => tokio::time::sleep(poll).await,
            },
            _ = tokio::time::sleep_until(next_poll) => {}
            _ = stop.cancelled() => return,
        }
        next_poll = tokio::time::Instant::now() + poll;
        match step.ready(&pool).await {
            Ok(n) if n > 0 => tracing::info!(moved = n, follower = name, "pipelines moved on by polling"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, follower = name, "moving ready pipelines on failed"),
        }
    }
}
