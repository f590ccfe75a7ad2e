-- Run a finished job again by hand: it becomes available now, with room for one more attempt.
UPDATE kiln_jobs
SET state = 'available',
    finalized_at = NULL,
    run_at = now(),
    cancel_requested_at = NULL,
    max_attempts = least(100, greatest(max_attempts, attempt + 1))
WHERE id = $1 AND state IN ('succeeded', 'failed', 'cancelled') AND attempt < 100
RETURNING id
