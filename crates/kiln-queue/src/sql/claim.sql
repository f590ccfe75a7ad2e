-- Claim up to $2 runnable jobs of queue $1 for worker $3, with a lease of $4 seconds.
-- A paused queue yields nothing; a queue with a fleet-wide cap yields at most the room left.
WITH settings AS (
    SELECT paused, max_running FROM kiln_queues WHERE name = $1
), room AS (
    SELECT CASE
        WHEN coalesce((SELECT paused FROM settings), false) THEN 0
        WHEN (SELECT max_running FROM settings) IS NULL THEN $2::int
        ELSE greatest(0, least($2::int, (SELECT max_running FROM settings)
             - (SELECT count(*) FROM kiln_jobs WHERE state = 'running' AND queue = $1)::int))
    END AS n
), next AS (
    SELECT id FROM kiln_jobs
    WHERE queue = $1 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT (SELECT n FROM room)
    FOR UPDATE SKIP LOCKED
)
UPDATE kiln_jobs j
SET state = 'running',
    attempt = j.attempt + 1,
    attempted_at = now(),
    locked_by = $3,
    lease_expires_at = now() + make_interval(secs => $4::float8)
FROM next
WHERE j.id = next.id
RETURNING j.id, j.queue, j.kind::text AS kind, j.payload, j.priority, j.attempt, j.max_attempts,
          j.timeout_ms, j.tags, j.pipeline_id, j.created_at, j.attempted_at
