-- Return jobs whose lease expired (their worker died, hung or lost the database): a `lost`
-- attempt is recorded, and the job is retried after $1 seconds, or failed when out of
-- attempts. A job whose cancellation was requested is not retried: it ends `cancelled`, with a
-- `cancelled` attempt.
WITH expired AS (
    SELECT id, locked_by, attempted_at, cancel_requested_at IS NOT NULL AS cancel
    FROM kiln_jobs
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE kiln_jobs j
    SET state = CASE
            WHEN e.cancel THEN 'cancelled'
            WHEN j.attempt >= j.max_attempts THEN 'failed'
            ELSE 'retryable'
        END::kiln_job_state,
        finalized_at = CASE WHEN e.cancel OR j.attempt >= j.max_attempts THEN now() END,
        run_at = now() + make_interval(secs => $1::float8),
        locked_by = NULL,
        lease_expires_at = NULL,
        last_error = CASE WHEN e.cancel THEN 'cancelled by request; ' ELSE '' END
            || 'lease expired: worker ' || e.locked_by || ' stopped heartbeating'
    FROM expired e
    WHERE j.id = e.id
    RETURNING j.id, j.attempt, j.state, j.queue, j.kind, j.pipeline_id, j.last_error, j.run_at
), attempts AS (
    INSERT INTO kiln_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT u.id, u.attempt, e.locked_by, coalesce(e.attempted_at, now()), now(),
           (CASE WHEN e.cancel THEN 'cancelled' ELSE 'lost' END)::kiln_attempt_outcome,
           CASE WHEN e.cancel THEN 'cancelled by request; ' ELSE '' END
               || 'lease expired: worker ' || e.locked_by || ' stopped heartbeating'
    FROM upd u JOIN expired e USING (id)
), ev AS (
    SELECT kiln_event_ids((SELECT count(*) FROM upd)) AS first_id
), events AS (
    INSERT INTO kiln_events (first_id, last_id, types, job_ids, pipeline_ids, queues, kinds, data)
    SELECT ev.first_id, ev.first_id + count(*) - 1,
           array_agg('job.' || u.state::text ORDER BY u.id), array_agg(u.id ORDER BY u.id),
           array_agg(u.pipeline_id ORDER BY u.id), array_agg(u.queue ORDER BY u.id),
           array_agg(u.kind ORDER BY u.id), array_agg(jsonb_strip_nulls(jsonb_build_object('attempt', u.attempt, 'outcome', 'lost', 'error', u.last_error, 'retry_at', CASE WHEN u.state = 'retryable' THEN u.run_at END)) ORDER BY u.id)
    FROM upd u CROSS JOIN ev
    GROUP BY ev.first_id
)
SELECT id, attempt, state::text AS state, queue, kind FROM upd
