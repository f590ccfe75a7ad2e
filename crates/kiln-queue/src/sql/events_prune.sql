-- Delete up to $2 outbox rows (blocks of events) older than $1 seconds. Ids grow with time,
-- so the oldest are the lowest: walk the primary key from the start (no index on `at` to keep up
-- on the hot path).
WITH old AS (
    SELECT last_id FROM kiln_events
    WHERE at < now() - make_interval(secs => $1::float8)
    ORDER BY last_id
    LIMIT $2
)
DELETE FROM kiln_events e USING old WHERE e.last_id = old.last_id
