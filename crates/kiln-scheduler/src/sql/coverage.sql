-- When schedulers were running: from start to stop, or to the last heartbeat plus $1
-- seconds of slack for one that vanished (killed, or cut off from the database).
SELECT started_at, coalesce(stopped_at, last_seen_at + make_interval(secs => $1::float8)) AS until
FROM kiln_schedulers
WHERE coalesce(stopped_at, last_seen_at + make_interval(secs => $1::float8)) >= $2
