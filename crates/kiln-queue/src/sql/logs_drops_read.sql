-- What went past the live-log cap, per attempt of job $1.
SELECT attempt, dropped_bytes, dropped_chunks, cap_bytes
FROM kiln_job_log_drops
WHERE job_id = $1
ORDER BY attempt
