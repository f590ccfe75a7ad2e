-- One job, every column, with enums as text.
SELECT id, queue, kind::text AS kind, state::text AS state, payload, priority, run_at,
       attempt, max_attempts, timeout_ms, unique_key, idempotency_key, tags, pipeline_id, depends_on,
       created_at, attempted_at, finalized_at, locked_by, lease_expires_at, cancel_requested_at,
       result, last_error
FROM kiln_jobs
WHERE id = $1
