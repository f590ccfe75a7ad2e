-- A cached result by key ($1), counted as a hit.
UPDATE kiln_validation_cache
SET hits = hits + 1, last_hit_at = now()
WHERE key = $1
RETURNING result, source_job
