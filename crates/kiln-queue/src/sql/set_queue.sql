-- Pause, resume or cap a queue fleet-wide; workers are woken to notice.
INSERT INTO kiln_queues (name, paused, max_running, updated_at)
VALUES ($1, coalesce($2, false), $3, now())
ON CONFLICT (name) DO UPDATE
SET paused = coalesce($2, kiln_queues.paused),
    max_running = CASE WHEN $4 THEN $3 ELSE kiln_queues.max_running END,
    updated_at = now()
RETURNING name, paused, max_running, pg_notify('kiln_jobs', name) IS NULL AS notified
