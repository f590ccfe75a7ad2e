-- Ends a running generation pipeline once; a second caller finds nothing to update.
UPDATE kiln_pipelines
SET state = 'finished', verdict = $2, stop_reason = $3, quality_score = $4, result = $5,
    finished_at = now()
WHERE id = $1 AND state = 'running'
RETURNING id
