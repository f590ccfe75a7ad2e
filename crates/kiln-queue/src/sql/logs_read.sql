-- Log chunks of job $1 after position ($2 attempt, $3 seq), in order, at most $4.
SELECT attempt, seq, stream, data, at
FROM kiln_job_logs
WHERE job_id = $1 AND (attempt, seq) > ($2, $3)
ORDER BY attempt, seq
LIMIT $4
