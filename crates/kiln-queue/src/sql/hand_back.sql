-- Give jobs back without spending an attempt (graceful shutdown, unstarted prefetch).
-- Jobs whose handler had started ($3 not null) get an `interrupted` attempt row saying why
-- ($4; null: the worker shut down).
WITH back AS (
    SELECT * FROM unnest($2::bigint[], $3::timestamptz[], $4::text[]) AS b(id, started_at, reason)
), upd AS (
    UPDATE kiln_jobs j
    SET state = 'available', attempt = j.attempt - 1, locked_by = NULL,
        lease_expires_at = NULL, run_at = now()
    FROM back b
    WHERE j.id = b.id AND j.locked_by = $1 AND j.state::text = 'running'
    RETURNING j.id, j.attempt + 1 AS spent_attempt, j.queue
), attempts AS (
    INSERT INTO kiln_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT u.id, u.spent_attempt, $1, b.started_at, now(), 'interrupted',
           coalesce(b.reason, 'worker shut down before the job finished') || '; handed back without spending an attempt'
    FROM upd u JOIN back b USING (id)
    WHERE b.started_at IS NOT NULL
)
SELECT count(*) AS handed_back, ARRAY(SELECT id FROM upd) AS ids,
       (SELECT count(*) FROM (SELECT pg_notify('kiln_jobs', q.queue)
                              FROM (SELECT DISTINCT queue FROM upd) q) n) AS notified
FROM upd
