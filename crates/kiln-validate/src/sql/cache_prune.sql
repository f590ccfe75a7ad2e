-- Removes entries neither written nor used in the last $1 seconds.
WITH gone AS (
    DELETE FROM kiln_validation_cache
    WHERE coalesce(last_hit_at, created_at) < now() - make_interval(secs => $1)
    RETURNING 1
)
SELECT count(*) FROM gone
