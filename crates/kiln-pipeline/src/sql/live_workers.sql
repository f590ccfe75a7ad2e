-- Workers the reaper counts as alive: registered, not stopped, heard from in the last five
-- minutes (a worker silent that long has lost every lease it held, so its containers go).
SELECT id FROM kiln_workers
WHERE stopped_at IS NULL AND last_heartbeat_at > now() - interval '5 minutes'
