-- Settles a running pipeline once; a second settler finds nothing to update.
UPDATE kiln_pipelines
SET state = 'finished', verdict = $2, quality_score = $3, result = $4, finished_at = now()
WHERE id = $1 AND state = 'running'
RETURNING id
