-- Record (or refresh) a worker in the registry.
INSERT INTO kiln_workers (id, host, pid, queues)
VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE
SET host = $2, pid = $3, queues = $4, last_heartbeat_at = now(), stopped_at = NULL
