-- A job's attempts, oldest first.
SELECT id, job_id, attempt, worker_id, started_at, finished_at, outcome::text AS outcome,
       error, exit_code, container_id, result
FROM kiln_attempts
WHERE job_id = $1
ORDER BY id
