-- A job's attempts, oldest first.
SELECT id, job_id, attempt, worker_id, started_at, finished_at, outcome::text AS outcome,
       error, result, details
FROM kiln_attempts
WHERE job_id = $1
ORDER BY id
