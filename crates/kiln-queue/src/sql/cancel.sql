-- Cancel a job: at once when it is not running; a running job is marked and its
-- worker told (NOTIFY now, heartbeat otherwise) so it stops and records the attempt.
UPDATE kiln_jobs
SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
    finalized_at = CASE WHEN state = 'running' THEN NULL ELSE now() END,
    cancel_requested_at = now(),
    last_error = CASE WHEN state = 'running' THEN last_error ELSE 'cancelled by request' END
WHERE id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled')
RETURNING state::text AS state, pg_notify('kiln_cancel', id::text) IS NULL AS notified
