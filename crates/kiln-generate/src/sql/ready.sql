-- Running generation pipelines none of whose jobs is live: the loop may move them on.
SELECT p.id
FROM kiln_pipelines p
WHERE p.state = 'running' AND p.kind = 'generation'
  AND NOT EXISTS (
      SELECT 1 FROM kiln_jobs j
      WHERE j.pipeline_id = p.id AND j.state NOT IN ('succeeded', 'failed', 'cancelled'))
ORDER BY p.id
LIMIT $1
