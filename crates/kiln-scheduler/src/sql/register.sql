-- A scheduler process starts (or restarts under the same id); returns its start time.
INSERT INTO kiln_schedulers (id, host, pid) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE
SET host = EXCLUDED.host, pid = EXCLUDED.pid, started_at = now(), last_seen_at = now(),
    stopped_at = NULL, leading_since = NULL
RETURNING started_at
