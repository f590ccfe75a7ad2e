-- Schedules declared in workers.toml that the file no longer declares: the file is the
-- source of truth for `config` schedules (those created through the API are not touched).
DELETE FROM kiln_schedules
WHERE source = 'config' AND NOT (name = ANY ($1))
RETURNING name
