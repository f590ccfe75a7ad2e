-- A new schedule; its first tick is the first one after now. Nothing on a taken name.
INSERT INTO kiln_schedules (name, cron, timezone, job, enabled, catch_up, source)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name) DO NOTHING
RETURNING *
