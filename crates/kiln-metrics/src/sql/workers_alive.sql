-- Registered workers that have not stopped and heartbeated within $1 seconds.
SELECT count(*) AS alive FROM kiln_workers
WHERE stopped_at IS NULL AND last_heartbeat_at > now() - make_interval(secs => $1::float8)
