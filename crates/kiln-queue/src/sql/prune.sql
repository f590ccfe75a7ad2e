-- Delete up to $3 jobs in final state $1 that finished more than $2 seconds ago, with their
-- attempts (no foreign key does it: see migration 0008) and logs (a cascading foreign key).
WITH gone AS (
    DELETE FROM kiln_jobs
    WHERE id IN (
        SELECT id FROM kiln_jobs
        WHERE state = $1::kiln_job_state AND finalized_at < now() - make_interval(secs => $2::float8)
        LIMIT $3
    )
    RETURNING id
), attempts AS (
    DELETE FROM kiln_attempts a USING gone g WHERE a.job_id = g.id
)
SELECT count(*) AS pruned FROM gone
