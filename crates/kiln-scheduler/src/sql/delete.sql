DELETE FROM kiln_schedules WHERE name = $1
