-- Keep `state` honest for listings: due scheduled and retryable jobs become available.
-- (Claiming does not wait for this: it takes due scheduled and retryable rows directly.)
WITH due AS (
    SELECT id FROM kiln_jobs
    WHERE state IN ('scheduled', 'retryable') AND run_at <= now()
    LIMIT 10000
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE kiln_jobs j SET state = 'available' FROM due WHERE j.id = due.id RETURNING j.queue
)
SELECT count(*) AS promoted,
       (SELECT count(*) FROM (SELECT pg_notify('kiln_jobs', q.queue)
                              FROM (SELECT DISTINCT queue FROM upd) q) n) AS notified
FROM upd
