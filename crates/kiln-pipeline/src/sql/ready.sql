-- Running validation pipelines none of whose jobs is still live: ready to settle.
SELECT p.id
FROM kiln_pipelines p
WHERE p.state = 'running' AND p.kind = 'validation'
  AND EXISTS (SELECT 1 FROM kiln_jobs j WHERE j.pipeline_id = p.id)
  AND NOT EXISTS (
      SELECT 1 FROM kiln_jobs j
      WHERE j.pipeline_id = p.id AND j.state NOT IN ('succeeded', 'failed', 'cancelled'))
ORDER BY p.id
LIMIT $1
