-- Replace a schedule's definition (already validated); see upsert.sql for the cursor rule.
UPDATE kiln_schedules s
SET cron = $2::text, timezone = $3::text, job = $4::jsonb, enabled = $5::boolean, catch_up = $6::boolean,
    fired_through = CASE
        WHEN (s.cron, s.timezone, s.enabled) IS DISTINCT FROM ($2::text, $3::text, $5::boolean)
            THEN greatest(s.fired_through, now())
        ELSE s.fired_through END,
    updated_at = now()
WHERE s.name = $1
RETURNING *
