-- A schedule declared in workers.toml: created, or brought in line with the file. The
-- cursor moves to now when the expression, time zone or switch changes, so a changed
-- schedule does not fire ticks of its old definition (or ticks from while it was off).
INSERT INTO kiln_schedules AS s (name, cron, timezone, job, enabled, catch_up, source)
VALUES ($1, $2, $3, $4, $5, $6, 'config')
ON CONFLICT (name) DO UPDATE
SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, job = EXCLUDED.job,
    enabled = EXCLUDED.enabled, catch_up = EXCLUDED.catch_up, source = 'config',
    fired_through = CASE
        WHEN (s.cron, s.timezone, s.enabled) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.enabled)
            THEN greatest(s.fired_through, now())
        ELSE s.fired_through END,
    updated_at = CASE
        WHEN (s.cron, s.timezone, s.job, s.enabled, s.catch_up) IS DISTINCT FROM
             (EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.job, EXCLUDED.enabled, EXCLUDED.catch_up)
            THEN now()
        ELSE s.updated_at END
RETURNING *
