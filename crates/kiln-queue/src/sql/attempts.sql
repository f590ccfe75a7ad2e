-- A job's attempts, oldest first.
SELECT id, job_id, attempt, worker_id, started_at, finished_at, outcome::text AS outcome,
       error, result, exit_code, container_id, image_digest, peak_memory_bytes, cpu_time_ms,
       stdout_head, stdout_tail, stderr_head, stderr_tail, diff, diff_files, diff_insertions,
       diff_deletions, timings
FROM kiln_attempts
WHERE job_id = $1
ORDER BY id
