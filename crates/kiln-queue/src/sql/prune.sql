-- Delete up to $3 jobs in final state $1 that finished more than $2 seconds ago
-- (their attempts go with them).
DELETE FROM kiln_jobs
WHERE id IN (
    SELECT id FROM kiln_jobs
    WHERE state = $1::kiln_job_state AND finalized_at < now() - make_interval(secs => $2::float8)
    LIMIT $3
)
