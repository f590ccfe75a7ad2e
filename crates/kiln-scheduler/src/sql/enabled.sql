-- What the leader needs of each enabled schedule.
SELECT name, cron, timezone, job, catch_up, fired_through FROM kiln_schedules WHERE enabled
