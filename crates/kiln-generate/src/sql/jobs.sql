-- The jobs of a pipeline carrying tag $2 (an iteration's validation: `iteration:N`), or every
-- job when $2 is NULL, with what merging and the loop need of each.
SELECT id, kind::text AS kind, state::text AS state, attempt, max_attempts, result, last_error,
       created_at, finalized_at, coalesce((payload ->> 'iteration')::int, 1) AS iteration
FROM kiln_jobs
WHERE pipeline_id = $1 AND ($2::text IS NULL OR $2 = ANY (tags))
ORDER BY id
