-- Delete up to $2 events older than $1 seconds. Ids grow with time, so the oldest are the
-- lowest ids: walk the primary key from the start (no index on `at` to keep up on the hot path).
WITH old AS (
    SELECT id FROM kiln_events
    WHERE at < now() - make_interval(secs => $1::float8)
    ORDER BY id
    LIMIT $2
)
DELETE FROM kiln_events e USING old WHERE e.id = old.id
