-- Adds the iteration's verdict and score to its generation job's succeeded attempt.
UPDATE kiln_attempts SET details = coalesce(details, '{}'::jsonb) || $2
WHERE job_id = $1 AND outcome = 'succeeded'
