//! A worker's background loops: heartbeats, queue upkeep, and LISTEN/NOTIFY wake-ups.

use kiln_queue::admin::CANCEL_CHANNEL;
use kiln_queue::{lease, maintenance, AttemptOutcome, Listener, Signal};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::shared::{Shared, StopReason};

/// True when leases last extended at `extended` (the moment that heartbeat was sent) may
/// expire before the next check, one heartbeat period (plus its own time limit) away: the
/// jobs must stop now, before the rescuer lets another claim run them.
pub(crate) fn lease_at_risk(extended: Instant, now: Instant, lease: Duration, heartbeat: Duration) -> bool {
    now.saturating_duration_since(extended) + heartbeat * 2 >= lease
}

/// Extends leases on every held job, applies cancellations found there, stops jobs whose
/// lease was lost, and refreshes this worker's registry row. Fencing: when no heartbeat has
/// gone through for nearly a lease period (the database is unreachable), every held job is
/// stopped (its container killed) before its lease can expire and the job run elsewhere.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken, host: String) {
    let queues: Vec<String> = shared.config.queues.iter().map(|q| q.name.clone()).collect();
    let every = shared.config.heartbeat_every;
    let mut extended = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let ids = shared.held_ids();
        if ids.is_empty() {
            extended = Instant::now();
        }
        let sent = Instant::now();
        let beat = tokio::time::timeout(
            every,
            lease::heartbeat(&shared.pool, &shared.worker_id, &ids, shared.config.lease),
        )
        .await
        .unwrap_or_else(|_| Err(kiln_queue::QueueError::db("heartbeat")(sqlx::Error::PoolTimedOut)));
        if beat.is_err() && lease_at_risk(extended, Instant::now(), shared.config.lease, every) {
            let mut fenced = 0;
            for id in &ids {
                if shared.stop_job(*id, StopReason::LeaseLost) {
                    fenced += 1;
                }
            }
            if fenced > 0 {
                tracing::error!(jobs = fenced, since_ms = extended.elapsed().as_millis() as u64,
                    "leases could not be extended for nearly a lease period: stopping the jobs before they run elsewhere");
            }
        }
        match beat {
            Ok(statuses) => {
                extended = sent;
                let alive: HashSet<i64> = statuses.iter().map(|s| s.id).collect();
                for s in statuses.iter().filter(|s| s.cancel_requested) {
                    if shared.stop_job(s.id, StopReason::Cancelled) {
                        tracing::info!(job = s.id, "cancel request seen by heartbeat");
                    }
                }
                for id in ids.iter().filter(|id| !alive.contains(id)) {
                    if shared.stop_job(*id, StopReason::LeaseLost) {
                        tracing::warn!(job = id, "lease no longer ours; stopping the job");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, held = ids.len(), "heartbeat failed"),
        }
        // Bounded like the heartbeat: while the database is away, waiting here for a pool
        // connection (up to the pool's acquire timeout) would hold back the next fencing
        // check past the lease.
        let pid = std::process::id();
        let refresh = lease::register_worker(&shared.pool, &shared.worker_id, &host, pid, &queues);
        match tokio::time::timeout(every, refresh).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "worker registry refresh failed"),
            Err(_) => tracing::debug!("worker registry refresh timed out"),
        }
    }
}

/// Dead row versions in `kiln_jobs` that make a worker vacuum it (see
/// [`maintenance::vacuum_if_needed`]).
const VACUUM_MIN_DEAD: i64 = 10_000;

/// ... and more than this many times the live rows.
const VACUUM_RATIO: f64 = 0.2;

/// The least time between two vacuums of `kiln_jobs`, by this worker or anyone (a drain seen
/// by several workers at once, or statistics arriving late, vacuumed twice in a second).
const VACUUM_GAP: Duration = Duration::from_secs(30);

/// Rescues expired leases, promotes due jobs, settles pending ones, vacuums the jobs table
/// when claims and completions have left it full of dead rows (at once when this worker's
/// backlog drains, see [`vacuum_after_drain`]), prunes old jobs.
pub(crate) async fn maintenance_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last_prune = tokio::time::Instant::now();
    let mut vacuum_after = tokio::time::Instant::now();
    let mut next_pass = tokio::time::Instant::now() + shared.config.maintenance_every;
    loop {
        let after_drain = tokio::select! {
            _ = tokio::time::sleep_until(next_pass) => false,
            _ = shared.drained.notified() => true,
            _ = stop.cancelled() => return,
        };
        if after_drain {
            tokio::select! {
                _ = vacuum_after_drain(&shared, &mut vacuum_after) => {}
                _ = stop.cancelled() => return,
            }
            continue;
        }
        next_pass = tokio::time::Instant::now() + shared.config.maintenance_every;
        match maintenance::rescue_expired(&shared.pool, shared.config.rescue_delay).await {
            Ok(rescued) if !rescued.is_empty() => {
                kiln_metrics::metrics()
                    .leases_rescued
                    .inc_by(rescued.len() as u64);
                for r in &rescued {
                    kiln_queue::metrics::for_queue(&r.queue)
                        .finished(r.kind, AttemptOutcome::Lost)
                        .inc();
                    kiln_queue::metrics::attempts(AttemptOutcome::Lost).inc();
                    tracing::warn!(job = r.id, attempt = r.attempt, state = %r.state, "rescued a job whose lease expired");
                }
                shared.wake_all();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rescue failed"),
        }
        if let Err(e) = maintenance::promote_due(&shared.pool).await {
            tracing::warn!(error = %e, "promoting due jobs failed");
        }
        match maintenance::resolve_pending(&shared.pool).await {
            Ok((released, cancelled)) if released + cancelled > 0 => {
                tracing::info!(released, cancelled, "settled jobs waiting on parents");
                shared.wake_all();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "settling pending jobs failed"),
        }
        // Only a worker that saw no backlog since the last pass vacuums (after a burn-down,
        // before new jobs are claimed over the dead entries): a vacuum in the middle of a
        // burn-down cost 0.5-4 s of a 2-core machine and halved throughput. Tables that stay
        // backlogged are left to autovacuum.
        let drained = !shared
            .backlogged
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if drained {
            vacuum_step(&shared, &mut vacuum_after).await;
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = tokio::time::Instant::now();
            let pruned = match shared.pool.acquire().await {
                Ok(mut conn) => maintenance::prune(&mut conn, &shared.config.retention, 10_000).await,
                Err(e) => Err(kiln_queue::QueueError::db("prune")(e)),
            };
            match pruned {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned finished jobs"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning failed"),
            }
        }
    }
}

/// How late a backend's statistics may reach the server (`PGSTAT_MIN_INTERVAL`, plus slack).
const STATS_DELAY: Duration = Duration::from_millis(1_100);

/// How long a drained worker waits for the fleet's last running jobs before it leaves the
/// vacuum to its maintenance pass.
const DRAIN_SETTLE: Duration = Duration::from_secs(2);

/// After this worker's backlog drained: when `kiln_jobs` is due a vacuum (looking once more
/// after the statistics' delay), waits until no job of the fleet is running (the burn-down's
/// last completions are in: a vacuum that overlapped them slowed them) and vacuums — before
/// new jobs are claimed over the burn-down's dead index entries, which a claim walked for
/// 0.8-1 ms instead of 0.2 ms until the next pass. A new backlog, or jobs still running after
/// [`DRAIN_SETTLE`], leave it to the maintenance pass.
async fn vacuum_after_drain(shared: &Shared, vacuum_after: &mut tokio::time::Instant) {
    let backlog = || shared.full_fetchers.load(std::sync::atomic::Ordering::Acquire) > 0;
    let due = || maintenance::vacuum_due(&shared.pool, VACUUM_MIN_DEAD, VACUUM_RATIO, VACUUM_GAP);
    if backlog() || tokio::time::Instant::now() < *vacuum_after {
        return;
    }
    match due().await {
        Ok(true) => {}
        Ok(false) => {
            tokio::time::sleep(STATS_DELAY).await;
            if backlog() || !due().await.unwrap_or(false) {
                return;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading dead rows after a drain failed");
            return;
        }
    }
    let give_up = tokio::time::Instant::now() + DRAIN_SETTLE;
    loop {
        if backlog() {
            return;
        }
        match maintenance::any_running(&shared.pool).await {
            Ok(false) => break,
            Ok(true) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(true) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading running jobs after a drain failed");
                return;
            }
        }
    }
    vacuum_step(shared, vacuum_after).await;
}

/// Vacuums `kiln_jobs` when it is due (see [`maintenance::vacuum_if_needed`]) and the last
/// vacuum of this worker is half a minute old.
async fn vacuum_step(shared: &Shared, vacuum_after: &mut tokio::time::Instant) {
    if tokio::time::Instant::now() < *vacuum_after {
        return;
    }
    let started = tokio::time::Instant::now();
    let vacuumed = match shared.pool.acquire().await {
        Ok(mut conn) => {
            maintenance::vacuum_if_needed(&mut conn, VACUUM_MIN_DEAD, VACUUM_RATIO, VACUUM_GAP).await
        }
        Err(e) => Err(kiln_queue::QueueError::db("vacuum")(e)),
    };
    match vacuumed {
        Ok(true) => {
            tracing::info!(ms = started.elapsed().as_millis() as u64, "vacuumed kiln_jobs");
            // Other workers' queues may still be busy: at most one vacuum per half minute.
            *vacuum_after = tokio::time::Instant::now() + VACUUM_GAP;
        }
        Ok(false) => {}
        Err(e) => {
            // Typically a role that does not own the table: leave it to autovacuum.
            tracing::warn!(error = %e, "vacuum of kiln_jobs failed; retrying in 10 minutes");
            *vacuum_after = tokio::time::Instant::now() + Duration::from_secs(600);
        }
    }
}

/// Turns notifications of the process's [`Listener`] into wake-ups (new jobs: the one fetcher
/// of that queue) and stops (cancel requests). After a reconnect, or when this loop fell
/// behind, every fetcher is woken: notifications may have been missed.
pub(crate) async fn listen_loop(shared: Arc<Shared>, listener: Listener, stop: CancellationToken) {
    // `kiln_jobs` wake-ups reach the fetchers through the listener (one fetcher per
    // notification, see `Listener::register_fetcher`); cancels come here.
    let mut cancels = listener.subscribe(CANCEL_CHANNEL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            signal = cancels.recv() => match signal {
                Ok(Signal::Notified(id)) => {
                    if let Ok(id) = id.parse::<i64>() {
                        if shared.stop_job(id, StopReason::Cancelled) {
                            tracing::info!(job = id, "cancel request received");
                        }
                    }
                }
                // Missed cancels are found by the next heartbeat.
                Ok(Signal::Reconnected) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_fenced_before_their_lease_can_expire() {
        let (lease, beat) = (Duration::from_secs(30), Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(!lease_at_risk(t0, t0 + Duration::from_secs(19), lease, beat));
        assert!(lease_at_risk(t0, t0 + Duration::from_secs(20), lease, beat));
        // Checked at most every 2 heartbeat periods: the last check before expiry fences.
        let last_safe = t0 + lease - beat * 2;
        assert!(lease_at_risk(t0, last_safe, lease, beat));
    }
}
