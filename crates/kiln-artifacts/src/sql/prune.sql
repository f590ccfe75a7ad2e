-- Removes artifacts older than $1 seconds that no pipeline, generation iteration (its
-- workspace and its messages) and no job payload refers to.
DELETE FROM kiln_artifacts a
WHERE a.created_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM kiln_pipelines p WHERE p.workspace = a.digest)
  AND NOT EXISTS (SELECT 1 FROM kiln_generation_iterations g
                  WHERE g.workspace = a.digest OR g.messages = a.digest)
  AND NOT EXISTS (SELECT 1 FROM kiln_jobs j WHERE j.payload ->> 'workspace' = a.digest)
RETURNING a.digest
