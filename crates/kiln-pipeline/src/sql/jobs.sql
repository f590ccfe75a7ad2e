-- The jobs of a pipeline, with what the pipeline view needs of each.
SELECT id, kind::text AS kind, state::text AS state, attempt, max_attempts, result, last_error,
       created_at, finalized_at
FROM kiln_jobs WHERE pipeline_id = $1
ORDER BY id
